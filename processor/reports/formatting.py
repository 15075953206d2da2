"""Report rows as text: JSON (the HTTP body), CSV (for spreadsheets) and an aligned table (for people).

Money never passes through ``float`` here: JSON and CSV write a ``Decimal``'s exact digits, and only the table,
which is for reading, rounds for display.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

__all__ = [
    "FORMATS",
    "TRUNCATED_NOTE",
    "decimal_text",
    "exact_json",
    "format_csv",
    "format_rows",
    "format_table",
    "report_json",
]

FORMATS: Final = ("table", "json", "csv")

_DISPLAY_QUANTUM: Final = Decimal("0.000001")  # table cost precision: a millionth of a dollar
# Short table headers: the full metric names fill a terminal with underscores. JSON and CSV keep the API names.
TABLE_HEADERS: Final[Mapping[str, str]] = {
    "total_cost": "cost",
    "market_cost": "market cost",
    "input_tokens": "input",
    "output_tokens": "output",
    "cached_input_tokens": "cached in",
    "cache_creation_input_tokens": "cache write",
    "reasoning_tokens": "reasoning",
    "request_count": "requests",
    "unpriced_request_count": "unpriced",
    "credential_type": "credential",
}
UNPRICED_NOTE: Final = "* Costs cover priced requests only; 'unpriced' counts the requests with no known price."
TAG_NOTE: Final = "Tag rows overlap: a request counts in each of its tags, and untagged requests in none."
TRUNCATED_NOTE: Final = "More rows matched than were returned: narrow the query, or use --order-by and --limit."


def decimal_text(value: Decimal) -> str:
    """The exact digits as a plain number: no exponent, no trailing zeros (``Decimal('3E-12')`` →
    ``0.000000000003``). Works digit by digit, so unlike ``normalize()`` it never rounds to a context."""
    if not value.is_finite():
        raise ValueError(f"cannot write {value} as a JSON number")
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _json_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return decimal_text(value)  # a JSON number with every digit: json.dumps would need a float
    if isinstance(value, (int, float, str)):
        return json.dumps(value, allow_nan=False)
    raise TypeError(f"cannot write {type(value).__name__} in a report row")


def report_json(rows: Iterable[Mapping[str, object]]) -> str:
    """``{"results": [...]}`` exactly as ``GET /v1/report`` returns it (without the trailing newline); when the
    rows were cut at the row bound (``rows.truncated``), ``"truncated": true`` follows the results.

    Written by hand because ``json`` can emit a ``Decimal`` only through ``float``, which rounds money.
    """
    parts = [
        "{" + ", ".join(f"{json.dumps(key)}: {_json_value(value)}" for key, value in row.items()) + "}"
        for row in rows
    ]
    tail = ', "truncated": true' if getattr(rows, "truncated", False) else ""
    return '{"results": [' + ", ".join(parts) + "]" + tail + "}"


def exact_json(value: object) -> str:
    """Any JSON value (dicts, lists, strings, numbers, ``Decimal``, ``date``/``datetime`` as ISO text) on one
    line, every ``Decimal`` with all its digits. For the budgets, margins and spikes bodies."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {exact_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(exact_json(v) for v in value) + "]"
    if isinstance(value, (date, datetime)):
        return json.dumps(value.isoformat())
    return _json_value(value)


def _columns(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    return list(rows[0].keys()) if rows else []


def format_csv(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> str:
    """A header line and one line per row; costs exact, missing keys (e.g. no user) empty."""
    names = _columns(rows, columns)
    if not names:
        return ""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow(["" if (v := row.get(name)) is None else _csv_value(v) for name in names])
    return buffer.getvalue()


def _csv_value(value: object) -> str:
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    return str(value)


def _human(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        if value == 0:
            return "$0"
        shown = value.quantize(_DISPLAY_QUANTUM, rounding=ROUND_HALF_EVEN)
        if shown == 0:  # a real cost too small to show must not read as free
            return "<$0.000001" if value > 0 else ">-$0.000001"
        sign = "-" if shown < 0 else ""
        return f"{sign}${abs(shown):,.6f}"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _cell(row: Mapping[str, object], name: str) -> str:
    """A group whose every request is unpriced has no known cost: say so rather than print $0."""
    value = row.get(name)
    if isinstance(value, Decimal) and row.get("request_count") and row.get("unpriced_request_count") == row.get(
        "request_count"
    ):
        return "unpriced"
    return _human(value)


def format_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> str:
    """Aligned plain-text columns: text left, numbers right, costs rounded to a millionth of a dollar
    (use json or csv for exact values)."""
    names = _columns(rows, columns)
    if not rows or not names:
        return "No usage in this period."
    cells = [[_cell(row, name) for name in names] for row in rows]
    # A cost that leaves out unpriced requests is marked, so an unknown price never reads as a real $0.
    partly_unpriced = [bool(row.get("unpriced_request_count")) for row in rows]
    if any(partly_unpriced):
        for line_cells, row, marked in zip(cells, rows, partly_unpriced):
            for i, name in enumerate(names):
                if isinstance(row.get(name), Decimal):
                    line_cells[i] += "*" if marked else " "
    numeric = [
        any(isinstance(row.get(name), (int, Decimal)) and not isinstance(row.get(name), bool) for row in rows)
        for name in names
    ]
    headers = [TABLE_HEADERS.get(name, name) for name in names]
    widths = [max(len(header), *(len(line[i]) for line in cells)) for i, header in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric)
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths]), *(line(c) for c in cells)]
    if any(partly_unpriced):
        out += ["", UNPRICED_NOTE]
    if "tag" in names:
        out += ["", TAG_NOTE]
    if getattr(rows, "truncated", False):
        out += ["", TRUNCATED_NOTE]
    return "\n".join(out)


def format_rows(rows: Sequence[Mapping[str, object]], fmt: str, columns: Sequence[str] | None = None) -> str:
    """One entry point for the CLI's ``--format``."""
    if fmt == "json":
        return report_json(rows)
    if fmt == "csv":
        return format_csv(rows, columns)
    if fmt == "table":
        return format_table(rows, columns)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
