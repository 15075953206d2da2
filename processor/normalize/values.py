"""Attribute values given the meaning their role needs: a count, a name, a flag, a list of strings, an amount.

Values arrive decoded (``otlp.any_value``: ``str``, ``int``, ``bool``, ``float``, ``BytesValue``, tuples for arrays,
dicts for kvlists, ``UNSET`` for a value with nothing set). Senders disagree on types (JavaScript SDKs send whole
numbers as doubles, baggage-derived flags arrive as text), so each role accepts what is unambiguous and refuses the
rest: a count that is not a count rejects the span (``SpanRejected``) rather than pricing a guess; a label that is not
sane is dropped with a note (``Notes``) and the record kept. Labels (``dialects.LABEL_KEYS``) reach ``name`` and
``optional_name`` without control characters: the reader removes them when it first decodes a value
(``without_controls``), so these helpers do not scan again.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal, InvalidOperation
from typing import Final, TypeGuard

from tokentrail.processor.errors import TokenTrailError
from tokentrail.processor.normalize.otlp import UNSET, BytesValue
from tokentrail.processor.schema import COST_PRECISION, COST_SCALE

__all__ = [
    "MAX_METADATA_JSON_CHARS",
    "MAX_NAME_CHARS",
    "MAX_REPORTED_COST",
    "MAX_TOKENS",
    "Notes",
    "SpanRejected",
    "amount",
    "as_lists",
    "count",
    "flag",
    "is_count",
    "json_object",
    "name",
    "optional_name",
    "plain",
    "text",
    "text_list",
    "without_controls",
]

MAX_TOKENS: Final = 1_000_000_000  # above this a count is a bug or an attack, not a call
MAX_NAME_CHARS: Final = 256  # provider, model, ids: longer is not a name
MAX_METADATA_JSON_CHARS: Final = 65_536
MAX_REPORTED_COST: Final = Decimal(10) ** (COST_PRECISION - COST_SCALE)  # the cost column's limit (exclusive)
# Control characters (Unicode Cc: C0, DEL, C1) are never part of a name, an id or a tag: a NUL in a user id splits
# one user in two in every report and breaks tools reading the Parquet files as C strings.
_CONTROLS: Final = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)])


class SpanRejected(TokenTrailError, ValueError):
    """A GenAI span that cannot become a record; the message goes back to the exporter in partial_success."""


# Warnings about one span's dropped or capped fields, attached to the result only if the span is kept.
Notes = list[str]


_KIND_NAMES: Final[dict[type, str]] = {
    str: "string",
    bool: "bool",
    float: "double",
    tuple: "array",
    dict: "kvlist",
    bytes: "bytes",
    BytesValue: "bytes",
}


def text(value: object) -> str | None:
    """A string attribute; numbers are accepted as their text because some SDKs send ids as numbers."""
    if isinstance(value, str):
        return value or None
    if type(value) is int:
        return str(value)
    if type(value) is float and math.isfinite(value):
        return repr(value)
    return None


def count(value: object, key: str) -> int | None:
    """A token count in [0, MAX_TOKENS]; no value is None. Integral doubles are accepted (JavaScript SDKs export
    whole numbers as doubles); anything else raises ``SpanRejected``."""
    if type(value) is int:
        n = value
    elif value is UNSET or value is None:
        return None
    elif type(value) is float and math.isfinite(value) and value.is_integer():
        n = int(value)
    else:
        kind = type(value)
        raise SpanRejected(f"{key} must be an integer, got {_KIND_NAMES.get(kind, kind.__name__)}")
    if n < 0 or n > MAX_TOKENS:
        raise SpanRejected(f"{key}={n} is out of range [0, {MAX_TOKENS}]")
    return n


def is_count(value: object) -> TypeGuard[int]:
    """A count inside a JSON payload (provider metadata): an int in range, nothing else."""
    return type(value) is int and 0 <= value <= MAX_TOKENS


def flag(value: object) -> bool:
    """A flag; the strings "true"/"1"/"yes" count because baggage-derived attributes arrive as text."""
    if type(value) is bool:
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    if type(value) is int:
        return value != 0
    return False


def text_list(value: object) -> list[str]:
    """A string array; a lone string becomes a one-item list and non-string items are dropped."""
    if isinstance(value, tuple):
        return [v for v in value if type(v) is str]
    if isinstance(value, str):
        return [value] if value else []
    return []


def plain(value: object) -> object:
    """The value, with ``UNSET`` as None (for values handed on as they are: metadata, amounts)."""
    return None if value is UNSET else value


def json_object(value: object, exact: bool = False) -> object:
    """A JSON object attribute, or None; ``exact`` reads numbers with a fraction as ``Decimal`` (amounts of money)."""
    if not isinstance(value, str):
        return None
    if len(value) > MAX_METADATA_JSON_CHARS or not value.lstrip().startswith("{"):
        return None
    try:
        return json.loads(value, parse_float=Decimal) if exact else json.loads(value)
    except (ValueError, RecursionError):
        return None


def name(value: object, what: str) -> str | None:
    """A provider or model name: a string of at most MAX_NAME_CHARS, else the span is rejected."""
    found = value if type(value) is str else text(value)
    if not found:
        return None
    stripped = found.strip()
    if len(stripped) > MAX_NAME_CHARS:
        raise SpanRejected(f"{what} is {len(stripped)} characters long (at most {MAX_NAME_CHARS})")
    return stripped or None


def optional_name(value: object, what: str, notes: Notes) -> str | None:
    """An id or label that the record can live without: dropped, with a note, when it is not a sane name."""
    found = value if type(value) is str else text(value)
    if not found:
        return None
    if len(found) > MAX_NAME_CHARS:
        notes.append(f"{what} dropped: {len(found)} characters (at most {MAX_NAME_CHARS})")
        return None
    return found


def without_controls(value: str) -> str | None:
    """``value`` without its control characters, or None when it has none (the common case: one scan in C)."""
    if value.isprintable():
        return None
    cleaned = value.translate(_CONTROLS)
    return None if cleaned == value else cleaned  # other non-printables (a no-break space) are kept


def amount(raw: object) -> Decimal | None:
    """An amount of money as sent (a number or decimal text), exactly; None when it is not a finite number."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, Decimal)):
        value = Decimal(raw)
    elif isinstance(raw, float):
        value = Decimal(repr(raw))  # the shortest text of the double: what the sender wrote
    elif isinstance(raw, str) and len(raw) <= 64:
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return value if value.is_finite() else None


def as_lists(value: object) -> object:
    """Tuples (decoded arrays) as lists, for a message that shows a value as the sender wrote it."""
    if isinstance(value, tuple):
        return [as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: as_lists(v) for k, v in value.items()}
    return value
