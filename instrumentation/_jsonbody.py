"""``json.loads`` for the bodies we read, without its pure-Python preamble.

``json.loads(bytes)`` first guesses the encoding (UTF-8, -16 or -32, with or without a BOM), then matches leading
and trailing whitespace with regular expressions around the C scanner. An LLM request or response body is UTF-8
and starts with ``{``, which settles all of that in two byte comparisons; the C scanner then does the same work
``json.loads`` would. Anything else goes to ``json.loads`` itself, so the result (and the kind of error) is always
exactly what ``json.loads`` gives.
"""

from __future__ import annotations

import json
from typing import Any, Final

# The scanner json.loads uses (the C one), from a decoder configured as json.loads's default one.
scan_once: Final = json.JSONDecoder().scan_once
WHITESPACE: Final = " \t\n\r"  # JSON's whitespace, as json.decoder.WHITESPACE


def loads(data: bytes) -> Any:
    """``json.loads(data)``: the same value, or a ``ValueError`` where it raises one."""
    # json.detect_encoding says UTF-8 for anything that starts with "{" followed by a non-NUL byte.
    if data[:1] != b"{" or data[1:2] == b"\x00":
        return json.loads(data)
    text = data.decode("utf-8", "surrogatepass")
    try:
        value, end = scan_once(text, 0)
    except StopIteration as error:
        raise json.JSONDecodeError("Expecting value", text, error.value) from None
    if end != len(text) and text[end:].strip(WHITESPACE):
        raise json.JSONDecodeError("Extra data", text, end)
    return value
