"""A report table fits the width it is given (a terminal's): it leaves out the least asked-for columns, says which
and how to see them, and never cuts a number or a group key. JSON and CSV, and a table with no width, keep all."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from tokentrail.processor.reports.formatting import TABLE_HEADERS, WIDTH_DROP_ORDER, format_rows, format_table
from tokentrail.processor.reports.query import METRICS
from tokentrail.processor.reports.report import run_report
from tokentrail.processor.schema import UNPRICED

from tests.helpers.reports import q, rec, write

MARCH = {"start_date": "2025-03-01", "end_date": "2025-03-31"}
# What a table must always show: the rows' identity, what they cost, how many requests, how many unpriced.
KEPT = ("cost", "requests", "unpriced")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    write(tmp_path, [
        rec("2025-03-05T08:00:00", user_id="alice@corp", model="claude-sonnet-4-5", provider="anthropic",
            input_tokens=123_456_789, output_tokens=2_345_678, cached_input_tokens=3_456_789,
            cache_creation_input_tokens=456_789, reasoning_tokens=56_789, total_cost=Decimal("1234.567"),
            market_cost=Decimal("1500.1")),
        rec("2025-03-06T09:00:00", user_id="bob", total_cost=Decimal("0.0012"), market_cost=Decimal("0.0015")),
        rec("2025-03-06T10:00:00", user_id="bob", model="acme-llm", total_cost=None, market_cost=None,
            price_status=UNPRICED),
    ])
    return tmp_path


def _wide(data: Path) -> tuple[str, list[str], str]:
    """A day x user x model report: the 12 columns that wrapped on an 80-column terminal."""
    query = q(**MARCH, group_by="user,model", date_part="day")
    rows = run_report(data, query)
    return format_rows(rows, "table", query.columns), list(query.columns), format_rows(rows, "csv", query.columns)


def _table(text: str) -> list[str]:
    return text.split("\n\n")[0].splitlines()  # footnotes follow a blank line


def _headers(line: str) -> list[str]:
    return [h for h in line.split("  ") if h.strip()]


def test_without_a_width_every_column_is_shown(data: Path) -> None:
    text, columns, _ = _wide(data)
    assert [h.strip() for h in _headers(_table(text)[0])] == [TABLE_HEADERS.get(c, c) for c in columns]
    assert max(len(line) for line in _table(text)) > 80  # the table this file is about
    assert "Left out" not in text


def test_an_80_column_table_fits_and_keeps_keys_cost_requests_and_unpriced(data: Path) -> None:
    query = q(**MARCH, group_by="user,model", date_part="day")
    rows = run_report(data, query)
    text = format_rows(rows, "table", query.columns, width=80)
    table = _table(text)
    assert all(len(line) <= 80 for line in text.splitlines()), text  # footnotes wrap to the width too
    headers = [h.strip() for h in _headers(table[0])]
    assert headers == ["day", "user", "model", *KEPT]
    # Nothing cut: every group key and every shown number is whole.
    body = "\n".join(table)
    for value in ("alice@corp", "claude-sonnet-4-5", "acme-llm", "2025-03-05", "$1,234.5670", "$1,234.5682*", "unpriced*"):
        assert value in body, value
    # The footnote names every column left out, by the header a wide table shows, and how to see them.
    note = " ".join(text.split("\n\n")[-1].splitlines())
    left_out = [TABLE_HEADERS[name] for name in METRICS if TABLE_HEADERS[name] not in KEPT]
    assert note.startswith(f"Left out to fit 80 characters: {', '.join(left_out)}.")
    assert "--format csv" in note


def test_columns_go_in_the_drop_order_and_only_as_many_as_needed(data: Path) -> None:
    text, columns, _ = _wide(data)
    full = max(len(line) for line in _table(text))
    query = q(**MARCH, group_by="user,model", date_part="day")
    rows = run_report(data, query)
    dropped_before: list[str] = []
    for width in range(full, 40, -1):
        headers = [h.strip() for h in _headers(_table(format_rows(rows, "table", query.columns, width=width))[0])]
        dropped = [TABLE_HEADERS.get(c, c) for c in columns if TABLE_HEADERS.get(c, c) not in headers]
        expected_order = [TABLE_HEADERS[name] for name in WIDTH_DROP_ORDER][: len(dropped)]
        assert sorted(dropped) == sorted(expected_order), (width, dropped)
        assert set(dropped_before) <= set(dropped)  # narrower never brings a column back
        dropped_before = dropped
    assert format_rows(rows, "table", query.columns, width=full) == text  # a table that fits is untouched
    one = _headers(_table(format_rows(rows, "table", query.columns, width=full - 1))[0])
    assert "market cost" not in [h.strip() for h in one] and len(one) == len(columns) - 1


def test_a_width_too_narrow_for_the_kept_columns_still_cuts_nothing() -> None:
    user = "a-very-long-customer-identifier-that-is-wider-than-any-terminal-" + "x" * 40
    row = {"user": user, "total_cost": Decimal("123456789.5"), "request_count": 123_456_789,
           "unpriced_request_count": 0}
    text = format_table([row], width=30)
    assert user in text and "$123,456,789.50" in text and "123,456,789" in text
    assert "Left out" not in text  # none of these columns is ever left out


def test_json_and_csv_keep_every_column_whatever_the_width(data: Path) -> None:
    query = q(**MARCH, group_by="user,model", date_part="day")
    rows = run_report(data, query)
    (first, *_) = json.loads(format_rows(rows, "json", query.columns, width=40))["results"]
    assert list(first) == list(query.columns)
    header = next(csv.reader(io.StringIO(format_rows(rows, "csv", query.columns, width=40))))
    assert header == list(query.columns)
