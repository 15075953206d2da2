"""What no single call can be: its usage per call (configurable) and its duration.

``values.MAX_TOKENS`` bounds each count a sender states (above it a count is a bug or an attack); these bound the
call they add up to. A span beyond a token limit is rejected like any span that cannot be billed honestly: one
record of 10^9 input and 10^9 output tokens on o1-pro would otherwise add $750,000 to a report (at the defaults,
$13,500 at most). The defaults leave a wide margin over any real call (context windows of 1-2M tokens served,
10M announced; outputs of 64k-128k, reasoning included), so only a broken or forged span meets them, and an
operator whose calls are larger raises them.

The limits are read from the environment once (``load_call_limits``; ``tokentrail serve`` calls it at start, so a
bad value stops the start with its message); a caller that never loads them reads the environment at the first
request it normalizes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tokentrail.processor import environment
from tokentrail.processor.errors import TokenTrailError
from tokentrail.processor.normalize.values import MAX_TOKENS

__all__ = [
    "DEFAULT_MAX_INPUT_TOKENS_PER_CALL",
    "DEFAULT_MAX_OUTPUT_TOKENS_PER_CALL",
    "MAX_CALL_NANOS",
    "CallLimits",
    "LimitsError",
    "call_limits",
    "limits_from_environment",
    "load_call_limits",
]

# 25x the largest context window served today (2M), 5x the largest announced (10M).
DEFAULT_MAX_INPUT_TOKENS_PER_CALL: Final = 50_000_000
# ~80x the largest output a model writes in one call today (128k, reasoning included).
DEFAULT_MAX_OUTPUT_TOKENS_PER_CALL: Final = 10_000_000
# A span longer than a day is a broken clock, not a call: its duration is stored NULL (with a note), the call kept.
MAX_CALL_NANOS: Final = 24 * 3600 * 10**9


class LimitsError(TokenTrailError, ValueError):
    """A limit variable that is not a whole number of tokens in [1, MAX_TOKENS]."""


@dataclass(frozen=True, slots=True)
class CallLimits:
    """Token limits of one call: inclusive input (cached input included) and output (reasoning included)."""

    max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS_PER_CALL
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS_PER_CALL

    def exceeded(self, input_tokens: int, output_tokens: int) -> str:
        """What a call over a limit exceeds, naming the variable that sets it (for the rejection message)."""
        if input_tokens > self.max_input_tokens:
            n, what, limit, variable = input_tokens, "input", self.max_input_tokens, environment.MAX_INPUT_TOKENS_PER_CALL
        else:
            n, what, limit = output_tokens, "output", self.max_output_tokens
            variable = environment.MAX_OUTPUT_TOKENS_PER_CALL
        return f"{n} {what} tokens, more than one call can have (at most {limit}: {variable})"


def limits_from_environment(environ: Mapping[str, str]) -> CallLimits:
    """The limits ``environ`` states (unset or empty: the default). Raises ``LimitsError`` naming the variable."""
    return CallLimits(
        _limit(environ, environment.MAX_INPUT_TOKENS_PER_CALL, DEFAULT_MAX_INPUT_TOKENS_PER_CALL),
        _limit(environ, environment.MAX_OUTPUT_TOKENS_PER_CALL, DEFAULT_MAX_OUTPUT_TOKENS_PER_CALL),
    )


def _limit(environ: Mapping[str, str], variable: str, default: int) -> int:
    raw = environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise LimitsError(f"{variable}={raw[:40]!r} is not a whole number of tokens") from None
    if not 1 <= value <= MAX_TOKENS:
        raise LimitsError(f"{variable}={value} is out of range [1, {MAX_TOKENS}]")
    return value


_loaded: CallLimits | None = None


def load_call_limits(environ: Mapping[str, str] | None = None) -> CallLimits:
    """Reads the limits (from ``os.environ`` unless given) and makes them the ones every later request uses.
    Raises ``LimitsError``: call it at start, before anything listens."""
    global _loaded
    _loaded = limits_from_environment(os.environ if environ is None else environ)
    return _loaded


def call_limits() -> CallLimits:
    """The limits in force (read from the environment the first time, when nothing loaded them)."""
    return _loaded if _loaded is not None else load_call_limits()
