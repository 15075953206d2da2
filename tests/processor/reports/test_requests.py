"""The calls behind a number (``reports.requests``), over real Parquet days read by DuckDB: every stored call once,
newest first, across keyset pages; the calls a filter lists are the ones ``/v1/report`` counts; bad pages and
cursors are refused naming the parameter; the first page reads the newest days only."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from tokentrail.processor.reports.errors import ReportParameterError
from tokentrail.processor.reports.params import Params
from tokentrail.processor.reports.query import ReportQuery
from tokentrail.processor.reports.report import run_report
from tokentrail.processor.reports.requests import (
    MAX_LIMIT,
    REQUEST_COLUMNS,
    TOKEN_COLUMNS,
    RequestsQuery,
    requests_from_params,
    requests_json,
    run_requests,
)
from tokentrail.processor.schema import (
    ADDED_COLUMNS,
    ARROW_SCHEMA,
    NO_USAGE,
    PRICED,
    TOKEN_FIELDS,
    UNPRICED,
    UsageRecord,
    records_to_table,
)

from tests.helpers.reports import write

PERIOD = {"start_date": "2025-03-01", "end_date": "2025-03-31"}
USERS = ("alice", "bob", "carol", None)
MODELS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5"), ("google", "gemini-2.5-flash"))
TAGS = ("plan:pro", "plan:free", "feature:chat", "feature:search")


def calls(n: int = 120, seed: int = 7) -> list[UsageRecord]:
    """``n`` calls over five March days (and two outside the period), many sharing a timestamp to the microsecond
    (a burst of parallel calls), some with the same trace, some with response ids, unpriced, no-usage and BYOK."""
    rng = random.Random(seed)
    moments = [datetime(2025, 3, day, hour, 0, tzinfo=UTC) for day in (2, 3, 5, 9, 30) for hour in (0, 12, 23)]
    out = []
    for i in range(n):
        provider, model = rng.choice(MODELS)
        status = rng.choice((PRICED, PRICED, PRICED, UNPRICED, NO_USAGE))
        byok = rng.random() < 0.25
        cost = Decimal(rng.randint(1, 10**9)).scaleb(-12) * rng.randint(1, 1000)
        out.append(UsageRecord(
            timestamp=rng.choice(moments),  # 15 moments for 120 calls: ties everywhere, across page ends too
            trace_id=f"{rng.randint(0, 9):032x}",  # 10 traces: ties on the trace id too
            span_id=f"{i:016x}",
            response_id=rng.choice((None, f"resp_{i}")),
            service=rng.choice(("web", "worker")),
            provider=provider,
            model=model,
            user_id=rng.choice(USERS),
            tags=rng.sample(TAGS, rng.randint(0, 3)),
            credential_type="byok" if byok else "system",
            input_tokens=rng.randint(1, 5000),
            output_tokens=rng.randint(1, 900),
            cached_input_tokens=rng.randint(0, 10),
            reasoning_tokens=rng.randint(0, 5),
            input_audio_tokens=rng.randint(0, 3),
            total_cost=None if status != PRICED else Decimal(0) if byok else cost,
            market_cost=None if status != PRICED else cost,
            price_status=status,
            duration_ms=rng.choice((None, 812.5)),
            streamed=rng.random() < 0.5,
            environment=rng.choice(("prod", "staging", None)),
            api=rng.choice(("openai.chat_completions", "anthropic.messages")),
            operation=rng.choice(("chat", "embeddings")),
            conversation_id=rng.choice(("conv_a", "conv_b", None)),
        ))
    for day in ("2025-02-28T23:59:59", "2025-04-01T00:00:00"):  # out of the period: never listed
        out.append(UsageRecord(timestamp=datetime.fromisoformat(day).replace(tzinfo=UTC), trace_id="f" * 32,
                               span_id=day[:10].replace("-", "") + "00000000", provider="openai", model="gpt-4o",
                               price_status=PRICED, total_cost=Decimal(1), market_cost=Decimal(1)))
    return out


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, list[UsageRecord]]:
    records = calls()
    # Two files per day, as two receivers (or two flushes) leave them.
    write(tmp_path, records[::2], part="part-r1-000001")
    write(tmp_path, records[1::2], part="part-r2-000001")
    return tmp_path, records


def newest_first(records: list[UsageRecord]) -> list[tuple[str, str]]:
    """The order the endpoint promises, computed here independently of its SQL."""
    in_period = [r for r in records if "2025-03-01" <= r.day <= "2025-03-31"]
    ordered = sorted(in_period, key=lambda r: (r.timestamp, r.trace_id, r.span_id, r.response_id or ""), reverse=True)
    return [(r.trace_id, r.span_id) for r in ordered]


def every_page(data: Path, params: Params, limit: int) -> list[list[dict[str, Any]]]:
    pages = []
    cursor = None
    for _ in range(10_000):
        page = requests_from_params(data, {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})})
        pages.append(page.rows)
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert len(page.rows) == limit  # only the last page may be short
    raise AssertionError("paging never ended")


# --- every call once, newest first ----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 7, 50, 121, MAX_LIMIT])
def test_paging_lists_every_stored_call_exactly_once_newest_first(
    stored: tuple[Path, list[UsageRecord]], limit: int
) -> None:
    data, records = stored
    pages = every_page(data, PERIOD, limit)
    listed = [(row["trace_id"], row["span_id"]) for page in pages for row in page]
    assert listed == newest_first(records)
    assert len(listed) == 120
    assert all(page for page in pages)  # no empty last page: next_cursor is null when nothing follows


def test_a_client_may_change_the_page_size_between_pages(stored: tuple[Path, list[UsageRecord]]) -> None:
    data, records = stored
    listed: list[tuple[str, str]] = []
    cursor = None
    for limit in (3, 1, 17, 5, 1000):
        page = requests_from_params(data, {**PERIOD, "limit": str(limit), **({"cursor": cursor} if cursor else {})})
        listed += [(row["trace_id"], row["span_id"]) for row in page.rows]
        cursor = page.next_cursor
    assert cursor is None
    assert listed == newest_first(records)


def test_calls_written_after_a_page_was_read_do_not_shift_the_next_pages(
    stored: tuple[Path, list[UsageRecord]],
) -> None:
    """A newer call arriving between two pages is before the cursor: the pages go on where they were."""
    data, records = stored
    first = requests_from_params(data, {**PERIOD, "limit": "10"})
    late = UsageRecord(timestamp=datetime(2025, 3, 30, 23, 59, tzinfo=UTC), trace_id="e" * 32, span_id="e" * 16,
                       provider="openai", model="gpt-4o", price_status=PRICED)
    write(data, [late], part="part-r3-000001")
    rest = every_page(data, {**PERIOD, "cursor": str(first.next_cursor)}, 10)
    listed = [(row["trace_id"], row["span_id"]) for page in [first.rows, *rest] for row in page]
    assert listed == newest_first(records)
    assert requests_from_params(data, {**PERIOD, "limit": "1"}).rows[0]["trace_id"] == "e" * 32  # a new first page


# --- the same calls the report counts ---------------------------------------------------------------------------


FILTERS: list[dict[str, str]] = [
    {},
    {"user_id": "alice"},
    {"model": "claude-haiku-4-5"},
    {"provider": "google"},
    {"credential_type": "byok"},
    {"credential_type": "system", "user_id": "bob"},
    {"tags": "plan:pro"},
    {"tags": "plan:free,feature:search"},
    {"tags": "plan:free,feature:search", "tags_match": "all"},
    {"tags": "feature:chat", "model": "gpt-4o-mini", "user_id": "carol"},
    {"start_date": "2025-03-03", "end_date": "2025-03-09"},
    {"user_id": "nobody"},
    {"service": "worker"},
    {"environment": "staging"},
    {"api": "anthropic.messages", "operation": "chat"},
    {"conversation_id": "conv_a"},
    {"conversation_id": "conv_b", "user_id": "alice"},
    {"trace_id": f"{3:032x}"},
    {"trace_id": f"{3:032X}", "service": "web"},  # as some tracing UIs write it
]


COLUMN_FILTERS = ("service", "environment", "api", "operation", "conversation_id", "trace_id")


@pytest.mark.parametrize(
    "filters", [f for f in FILTERS if set(f) & set(COLUMN_FILTERS)], ids=lambda f: "&".join(f"{k}={v}" for k, v in f.items())
)
def test_a_column_filter_picks_exactly_the_calls_with_that_value(
    stored: tuple[Path, list[UsageRecord]], filters: dict[str, str]
) -> None:
    """Counted here from the records, independently of the SQL: the calls of one service, environment, API,
    operation, conversation or trace (what a dashboard row's drill-down asks for)."""
    data, records = stored
    wanted = {
        (r.trace_id, r.span_id)
        for r in records
        if "2025-03-01" <= r.day <= "2025-03-31"
        and all(
            getattr(r, name) == (value.lower() if name == "trace_id" else value)
            for name, value in filters.items()
        )
    }
    assert wanted  # the fixture has calls for every filter tried
    rows = [row for page in every_page(data, {**PERIOD, **filters}, 13) for row in page]
    assert {(row["trace_id"], row["span_id"]) for row in rows} == wanted
    assert len(rows) == len(wanted)


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: "&".join(f"{k}={v}" for k, v in f.items()) or "none")
def test_a_filter_lists_the_calls_the_report_counts(
    stored: tuple[Path, list[UsageRecord]], filters: dict[str, str]
) -> None:
    data, _ = stored
    params = {**PERIOD, **filters}
    rows = [row for page in every_page(data, params, 9) for row in page]
    (total,) = run_report(data, ReportQuery.from_params({**params, "group_by": "none"})) or [None]
    if total is None:  # the report has no row for a period without calls
        assert rows == []
        return
    assert len(rows) == total["request_count"]
    costs = [row["total_cost"] for row in rows if row["total_cost"] is not None]
    assert (sum(costs, Decimal(0)) if costs else None) == total["total_cost"]
    markets = [row["market_cost"] for row in rows if row["market_cost"] is not None]
    assert (sum(markets, Decimal(0)) if markets else None) == total["market_cost"]
    for name in TOKEN_FIELDS:
        assert sum(row[name] for row in rows) == total[name], name
    assert sum(row["price_status"] != PRICED for row in rows) == total["unpriced_request_count"]


# --- one row ----------------------------------------------------------------------------------------------------


def test_a_row_holds_the_call_as_stored(tmp_path: Path) -> None:
    record = UsageRecord(
        timestamp=datetime(2025, 3, 5, 8, 0, 0, 1, tzinfo=UTC), trace_id="a" * 32, span_id="b" * 16,
        response_id="chatcmpl-1", service="web", environment="prod", api="chat.completions", operation="chat",
        provider="openai", model="gpt-4o-mini", user_id="alice", tags=["plan:pro", "feature:chat"],
        conversation_id="conv_7", credential_type="byok", input_tokens=1200, output_tokens=300, cached_input_tokens=1000,
        cache_creation_input_tokens=7, reasoning_tokens=100, cache_creation_1h_input_tokens=3, input_audio_tokens=2,
        output_audio_tokens=1, total_cost=Decimal("0"), market_cost=Decimal("123.456789012345"),
        price_status=PRICED, duration_ms=1234.5, streamed=True, status="error", error_type="timeout",
    )
    unpriced = UsageRecord(timestamp=datetime(2025, 3, 5, 7, tzinfo=UTC), trace_id="c" * 32, span_id="d" * 16,
                           provider="acme", model="mystery-1", price_status=UNPRICED)
    write(tmp_path, [record, unpriced])
    page = run_requests(tmp_path, RequestsQuery.from_params(PERIOD))
    assert page.next_cursor is None
    first, second = page.rows
    assert list(first) == list(REQUEST_COLUMNS)
    assert first == {
        "timestamp": "2025-03-05T08:00:00.000001+00:00", "trace_id": "a" * 32, "span_id": "b" * 16,
        "response_id": "chatcmpl-1", "service": "web", "environment": "prod", "api": "chat.completions",
        "operation": "chat", "provider": "openai", "model": "gpt-4o-mini", "user": "alice",
        "tags": ["plan:pro", "feature:chat"], "conversation_id": "conv_7", "credential_type": "byok", "input_tokens": 1200, "output_tokens": 300,
        "cached_input_tokens": 1000, "cache_creation_input_tokens": 7, "reasoning_tokens": 100,
        "cache_creation_1h_input_tokens": 3, "input_audio_tokens": 2, "output_audio_tokens": 1,
        "total_cost": Decimal(0), "market_cost": Decimal("123.456789012345"), "price_status": PRICED,
        "duration_ms": 1234.5, "streamed": True, "status": "error", "error_type": "timeout",
    }
    assert (second["total_cost"], second["market_cost"], second["user"], second["tags"]) == (None, None, None, [])
    body = json.loads(requests_json(page), parse_float=Decimal)
    assert body["next_cursor"] is None
    assert body["results"][0]["market_cost"] == Decimal("123.456789012345")  # every digit, no float on the way
    assert body["results"][1]["total_cost"] is None  # unknown, never 0


def test_every_token_count_of_the_record_is_a_field() -> None:
    int_columns = {f.name for f in ARROW_SCHEMA if str(f.type) == "int64"}
    assert set(TOKEN_COLUMNS) == int_columns
    assert set(TOKEN_FIELDS) < set(TOKEN_COLUMNS) <= set(REQUEST_COLUMNS)


def test_a_file_written_before_a_column_existed_reads_as_that_column_s_value(tmp_path: Path) -> None:
    old = records_to_table([UsageRecord(timestamp=datetime(2025, 3, 5, tzinfo=UTC), trace_id="a" * 32,
                                        span_id="b" * 16, provider="openai", model="gpt-4o", price_status=PRICED)])
    old = old.drop_columns(list(ADDED_COLUMNS))
    folder = tmp_path / "usage" / "date=2025-03-05"
    folder.mkdir(parents=True)
    pq.write_table(old, folder / "part-old-000001.parquet")
    (row,) = run_requests(tmp_path, RequestsQuery.from_params(PERIOD)).rows
    for name, value in ADDED_COLUMNS.items():
        if name in row:
            assert row[name] == value, name


def test_no_dataset_or_no_calls_is_an_empty_last_page(tmp_path: Path) -> None:
    for data in (tmp_path / "missing", tmp_path):
        page = requests_from_params(data, PERIOD)
        assert (page.rows, page.next_cursor) == ([], None)


# --- the first page reads the newest days only --------------------------------------------------------------------


def test_the_first_page_never_opens_an_older_day_than_it_needs(stored: tuple[Path, list[UsageRecord]]) -> None:
    """A file DuckDB cannot read in the oldest day: a page that stays in the newer days never opens it, and the walk
    down to it does (so it really is read when reached)."""
    data, records = stored
    (data / "usage" / "date=2025-03-02" / "part-r9-000001.parquet").write_bytes(b"not parquet")
    newest = [r for r in records if r.day == "2025-03-30"]
    page = requests_from_params(data, {**PERIOD, "limit": str(len(newest))})
    assert [(row["trace_id"], row["span_id"]) for row in page.rows] == newest_first(records)[: len(newest)]
    with pytest.raises(duckdb.Error):
        every_page(data, PERIOD, 50)


def test_a_later_page_starts_at_its_cursor_s_day(stored: tuple[Path, list[UsageRecord]]) -> None:
    data, records = stored
    newest = [r for r in records if r.day == "2025-03-30"]
    first = requests_from_params(data, {**PERIOD, "limit": str(len(newest) + 1)})  # ends on 2025-03-09
    # Newer days broken after the first page: the second page starts at its cursor's day, never opens them.
    (data / "usage" / "date=2025-03-30" / "part-r9-000001.parquet").write_bytes(b"not parquet")
    second = requests_from_params(data, {**PERIOD, "limit": "2", "cursor": str(first.next_cursor)})
    expected = newest_first(records)[len(newest) + 1: len(newest) + 3]
    assert [(row["trace_id"], row["span_id"]) for row in second.rows] == expected


# --- refused ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "-1", str(MAX_LIMIT + 1), "ten", "1.5", "1e3"])
def test_a_bad_limit_is_refused_naming_the_range(stored: tuple[Path, list[UsageRecord]], limit: str) -> None:
    with pytest.raises(ReportParameterError, match=rf"limit must be a whole number from 1 to {MAX_LIMIT}, got"):
        requests_from_params(stored[0], {**PERIOD, "limit": limit})


def _cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        "x" * 5000,
        _cursor_of("[1, 2"),
        _cursor_of('{"v": 1}'),
        _cursor_of('[2, "0000000000000000", 1, "a", "b", ""]'),  # another version
        _cursor_of('[1, "0000000000000000", "1", "a", "b", ""]'),
        _cursor_of('[1, "0000000000000000", -1, "a", "b", ""]'),
        _cursor_of('[1, "0000000000000000", 1e300, "a", "b", ""]'),
        _cursor_of('[1, "0000000000000000", 1, "a", "b"]'),
        "\u00e9t\u00e9",
    ],
)
def test_a_cursor_this_api_did_not_give_is_refused(stored: tuple[Path, list[UsageRecord]], cursor: str) -> None:
    with pytest.raises(ReportParameterError, match="cursor is not one this API gave"):
        requests_from_params(stored[0], {**PERIOD, "cursor": cursor})


def test_a_cursor_brought_to_other_dates_or_filters_is_refused(stored: tuple[Path, list[UsageRecord]]) -> None:
    data, _ = stored
    cursor = str(requests_from_params(data, {**PERIOD, "limit": "1"}).next_cursor)
    for other in ({"user_id": "alice"}, {"end_date": "2025-03-30"}, {"tags": "plan:pro"}):
        with pytest.raises(ReportParameterError, match="cursor belongs to another question"):
            requests_from_params(data, {**PERIOD, **other, "cursor": cursor})
    # The same question spelt otherwise is the same question.
    assert requests_from_params(data, {**PERIOD, "credential_type": "", "cursor": cursor}).rows


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"user": "alice"}, "unknown parameter 'user'; did you mean 'user_id'?"),
        ({"group_by": "model"}, "unknown parameter 'group_by'"),
        ({"order_by": "total_cost"}, "unknown parameter 'order_by'"),
        ({"start_date": "2025-03-31", "end_date": "2025-03-01"}, "is before start_date"),
        ({"start_date": "2024-01-01", "end_date": "2025-12-31"}, "ask for at most 366 days"),
        ({"credential_type": "mine"}, "unknown credential_type 'mine'"),
        ({"limit": ["1", "2"]}, "limit was given 2 times"),
    ],
)
def test_parameters_are_read_as_the_report_reads_them(
    stored: tuple[Path, list[UsageRecord]], params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ReportParameterError, match=message.replace("?", r"\?").replace("(", r"\(")):
        requests_from_params(stored[0], {**PERIOD, **params})


def test_start_and_end_date_are_required_as_in_the_report(tmp_path: Path) -> None:
    with pytest.raises(ReportParameterError, match="start_date is required"):
        requests_from_params(tmp_path, {"end_date": "2025-03-01"})

