"""What the fake provider generates, the same for every API it speaks (OpenAI, Anthropic, Google).

The OpenAI/Anthropic routes (``fake_provider``) and the Google routes (``fake_gemini``) both derive their usage from
the same output limit and send the same text and vectors, so a test can compare APIs token for token; the one
definition lives here, below both, so neither imports the other's internals.
"""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["DEFAULT_OUTPUT_TOKENS", "EMBEDDING_DIMENSIONS", "canonical_length", "reply_pieces", "vector"]

DEFAULT_OUTPUT_TOKENS: Final = 16
EMBEDDING_DIMENSIONS: Final = 8
_WORDS: Final = ("The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog.")


def reply_pieces(m: int) -> list[str]:
    """One text piece per output token, so a stream has M content deltas."""
    return [_WORDS[i % len(_WORDS)] for i in range(m)]


def vector(index: int, dimensions: int) -> list[float]:
    """The embedding of the ``index``-th input: distinct per input, the same on every run."""
    return [round(0.001 * (index + 1) * (d + 1), 6) for d in range(dimensions)]


def canonical_length(material: Any) -> int:
    """The length of ``material``'s canonical JSON (sorted keys, no spaces): what the prompt token counts scale with."""
    return len(json.dumps(material, sort_keys=True, separators=(",", ":")))
