"""``json.loads`` for the bodies we read, and the few fields of them we want without decoding the rest.

``json.loads(bytes)`` first guesses the encoding (UTF-8, -16 or -32, with or without a BOM), then matches leading
and trailing whitespace with regular expressions around the C scanner. An LLM request or response body is UTF-8
and starts with ``{``, which settles all of that in two byte comparisons; the C scanner then does the same work
``json.loads`` would. Anything else goes to ``json.loads`` itself, so the result (and the kind of error) is always
exactly what ``json.loads`` gives.

``pick(data, spec)`` is ``project(loads(data), spec)``: only the fields ``spec`` names. The C walker of
``_jsonpick.c`` (when built) validates the whole body as json would but builds only those fields, so its cost no
longer grows with what we never read (a chat history, an embedding's floats); where it cannot vouch for its result
it says so and the body is decoded here whole, giving the same value or the same error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Union

try:
    from ._jsonpick import pick as _walk
except ImportError:  # built without a C compiler: the same results, through json
    _walk = None

# The scanner json.loads uses (the C one), from a decoder configured as json.loads's default one.
scan_once: Final = json.JSONDecoder().scan_once
WHITESPACE: Final = " \t\n\r"  # JSON's whitespace, as json.decoder.WHITESPACE

# Which fields to keep: a key's value whole (None), or picked again by a nested spec (see project).
Spec = Mapping[str, Union["Spec", None]]


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


def project(value: Any, spec: Spec) -> Any:
    """What ``spec`` keeps of a decoded JSON value: of an object, its keys in ``spec`` (each value whole, or projected
    by the nested spec); of an array, each element projected; anything else as it is."""
    if type(value) is dict:
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if key in spec:
                nested = spec[key]
                kept[key] = project(item, nested) if isinstance(nested, dict) else item
        return kept
    if type(value) is list:
        return [project(item, spec) for item in value]
    return value


def pick(data: bytes, spec: dict[str, Any]) -> Any:
    """``project(loads(data), spec)``: the same value, or a ``ValueError`` where ``loads`` raises one."""
    if _walk is not None:
        picked = _walk(data, spec)
        if picked is not None:
            return picked
    return project(loads(data), spec)


def walker_built() -> bool:
    """Whether the C walker is in use (for tests and benchmarks)."""
    return _walk is not None
