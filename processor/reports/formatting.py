"""Report rows as text: JSON (the HTTP body), CSV (for spreadsheets) and an aligned table (for people).

Money never passes through ``float`` here: JSON and CSV write a ``Decimal``'s exact digits (an unknown cost is
``null`` / empty), and only what is for people (the table, ``usd``) rounds. For people, money is shown to the cent,
unless a cost would then read as $0.00 though it is not: per-call costs are often fractions of a cent, so such a
column gets the decimals its smallest cost needs for two significant digits (``money_decimals``).
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

__all__ = [
    "FORMATS",
    "TRUNCATED_NOTE",
    "WIDTH_DROP_ORDER",
    "decimal_text",
    "exact_json",
    "format_csv",
    "format_rows",
    "format_table",
    "money_decimals",
    "report_json",
    "usd",
]

FORMATS: Final = ("table", "json", "csv")

CENTS: Final = 2  # decimals of money for people, unless a cost would then read as $0.00
MAX_MONEY_DECIMALS: Final = 12  # the stored scale (pico-dollars): every stored cost shows at this many
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
TOTAL_LABEL: Final = "total"
# What a table narrower than its rows leaves out first: the least asked-for columns. Group keys, cost, requests and
# unpriced (which the ``*`` marks refer to) always stay; a table that is still too wide then wraps, never cut.
WIDTH_DROP_ORDER: Final = (
    "market_cost",
    "cache_creation_input_tokens",
    "reasoning_tokens",
    "cached_input_tokens",
    "output_tokens",
    "input_tokens",
)
MIN_NOTE_WIDTH: Final = 40  # footnotes wrap to the table's width, but not into a column of single words
# Costs, and what is computed from cost alone: unknown in a row none of whose requests has a price.
_COST_COLUMNS: Final = frozenset({
    "total_cost", "market_cost", "cost", "cost_per_request", "cost_per_1k_tokens", "cost_per_customer", "spend",
    "projected_spend",
})
# Money that leaves out the unpriced requests' cost when a row has some: marked with ``*``.
_PARTIAL_COLUMNS: Final = _COST_COLUMNS | {"margin", "remaining"}


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


def money_decimals(values: Iterable[Decimal | None]) -> int:
    """Decimals to show a set of amounts with (a table column, say, so its points align): cents, unless one of
    them is not zero but would read as $0.00; then enough for that one's first two significant digits
    ($0.0012), at most ``MAX_MONEY_DECIMALS``."""
    decimals = CENTS
    for value in values:
        if value is None or not value.is_finite() or value == 0:
            continue
        if value.quantize(Decimal(1).scaleb(-CENTS), rounding=ROUND_HALF_EVEN) == 0:
            decimals = max(decimals, min(MAX_MONEY_DECIMALS, 1 - value.adjusted()))
    return decimals


def usd(value: Decimal, decimals: int | None = None) -> str:
    """Money for people: ``$1,234.50``, ``-$3.00``, ``$0.0012`` (``money_decimals`` of the value unless given).
    Exact values are for JSON and CSV; this rounds (half to even)."""
    places = money_decimals([value]) if decimals is None else decimals
    shown = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    sign = "-" if shown < 0 else ""
    return f"{sign}${abs(shown):,.{places}f}"


def _human(value: object, decimals: int = CENTS) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return usd(value, decimals)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _all_unpriced(row: Mapping[str, object]) -> bool:
    """No request of the row has a price (rows without ``request_count``, a budget's, say so by a None cost)."""
    unpriced = row.get("unpriced_request_count")
    return bool(unpriced) and row.get("request_count", unpriced) == unpriced


def _cell(row: Mapping[str, object], name: str, decimals: int) -> str:
    """A group whose every request is unpriced has no known cost: say so rather than print $0 or a bare dash."""
    value = row.get(name)
    if name in _COST_COLUMNS and (value is None or value == 0) and _all_unpriced(row):
        return "unpriced"
    return _human(value, decimals)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool)


def _totals_row(rows: Sequence[Mapping[str, object]], names: Sequence[str]) -> dict[str, object]:
    """Sums of every number column; a cost is unknown (None) only when it is unknown in every row. Its
    ``unpriced_request_count`` marks the total partial exactly when a row's sum is."""
    total: dict[str, object] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        if any(isinstance(v, Decimal) for v in values):
            known = [v for v in values if isinstance(v, Decimal)]
            total[name] = sum(known, Decimal(0)) if known else None
        elif any(_is_number(v) for v in values):
            total[name] = sum(v for v in values if isinstance(v, int))
        else:
            total[name] = None
    total[names[0]] = TOTAL_LABEL
    return total


def format_table(
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str] | None = None,
    *,
    totals: bool = False,
    width: int | None = None,
) -> str:
    """Aligned plain-text columns: text left, numbers right, money to the cent (more decimals in a column where a
    cost would otherwise read as $0.00: ``money_decimals``); use json or csv for exact values.

    ``totals`` adds a line of sums under a rule, for rows that add up (a report's, not tag rows, and not a list cut
    at the row bound, whose sum would be of the rows that happened to be shown).

    ``width`` (a terminal's columns; ``None`` keeps every column) leaves out ``WIDTH_DROP_ORDER``'s columns, in that
    order, until the lines fit, and a footnote names them: a wrapped table is unreadable, and a cut cell would lie."""
    names = _columns(rows, columns)
    if not rows or not names:
        return "No usage in this period."
    all_rows: list[Mapping[str, object]] = list(rows)
    with_totals = totals and len(rows) > 1 and "tag" not in names and not getattr(rows, "truncated", False)
    if with_totals:
        all_rows.append(_totals_row(rows, names))
    money = [any(isinstance(row.get(name), Decimal) for row in all_rows) for name in names]
    decimals = [
        money_decimals(v for row in all_rows if isinstance(v := row.get(name), Decimal)) if is_money else CENTS
        for name, is_money in zip(names, money)
    ]
    cells = [[_cell(row, name, d) for name, d in zip(names, decimals)] for row in all_rows]
    # A cost that leaves out unpriced requests is marked, so an unknown price never reads as a real $0.
    partly_unpriced = [bool(row.get("unpriced_request_count")) for row in all_rows]
    if any(partly_unpriced):
        for line_cells, row, marked in zip(cells, all_rows, partly_unpriced):
            for i, name in enumerate(names):
                if name in _PARTIAL_COLUMNS and (isinstance(row.get(name), Decimal) or line_cells[i] == "unpriced"):
                    line_cells[i] += "*" if marked else " "
    numeric = [money[i] or any(_is_number(row.get(name)) for row in all_rows) for i, name in enumerate(names)]
    headers = [TABLE_HEADERS.get(name, name) for name in names]
    widths = [max(len(header), *(len(line[i]) for line in cells)) for i, header in enumerate(headers)]
    shown = _fitting(names, widths, width)
    left_out = [headers[i] for i in range(len(names)) if i not in shown]
    if left_out:
        names, headers = [names[i] for i in shown], [headers[i] for i in shown]
        widths, numeric = [widths[i] for i in shown], [numeric[i] for i in shown]
        cells = [[line_cells[i] for i in shown] for line_cells in cells]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(w) if right else value.ljust(w)
            for value, w, right in zip(values, widths, numeric)
        ).rstrip()

    rule = line(["-" * w for w in widths])
    out = [line(headers), rule, *(line(c) for c in cells)]
    if with_totals:
        out.insert(-1, rule)
    notes = [
        *([UNPRICED_NOTE] if any(partly_unpriced) else []),
        *([TAG_NOTE] if "tag" in names else []),
        *([TRUNCATED_NOTE] if getattr(rows, "truncated", False) else []),
        *([f"Left out to fit {width} characters: {', '.join(left_out)}. Every column: --format csv or json, a wider "
           "terminal, or piped output (| less -S)."] if left_out else []),
    ]
    for note in notes:
        out += ["", *_wrapped(note, width)]
    return "\n".join(out)


def _wrapped(note: str, width: int | None) -> list[str]:
    if width is None:
        return [note]
    return textwrap.wrap(note, max(width, MIN_NOTE_WIDTH), break_on_hyphens=False, break_long_words=False)


def _fitting(names: Sequence[str], widths: Sequence[int], width: int | None) -> list[int]:
    """Indexes of the columns to show within ``width`` characters (two spaces between columns)."""
    shown = list(range(len(names)))
    if width is None:
        return shown
    for name in WIDTH_DROP_ORDER:
        if sum(widths[i] for i in shown) + 2 * (len(shown) - 1) <= width:
            break
        if name in names:
            shown.remove(names.index(name))
    return shown


def format_rows(
    rows: Sequence[Mapping[str, object]], fmt: str, columns: Sequence[str] | None = None, *, width: int | None = None
) -> str:
    """One entry point for the CLI's ``--format`` of report rows (the table ends with their totals, and fits
    ``width`` when given: ``format_table``; JSON and CSV always hold every column)."""
    if fmt == "json":
        return report_json(rows)
    if fmt == "csv":
        return format_csv(rows, columns)
    if fmt == "table":
        return format_table(rows, columns, totals=True, width=width)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
