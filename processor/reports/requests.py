"""The calls behind a number: the stored usage records of a period and the report's filters, newest first, a page at
a time (``GET /v1/requests``, ``tokentrail requests``, the MCP ``requests`` tool).

A report row says a customer cost $412 last week; this lists the calls that make it up. The question is the
report's own: ``start_date``, ``end_date`` and the filters are read by ``ReportQuery.from_params`` and filtered by the
conditions ``sql.filter_sql`` writes for the report, so the calls listed for a filter are exactly the ones ``/v1/report`` counts
(their ``total_cost`` adds up to the report's, their number is its ``request_count``).

Reading rules:

* Order: newest first, ties broken by trace id, span id and response id (all descending), the same order on every
  run. Two records equal on all four are copies of one call (compaction's exact dedupe keeps one; until then, a
  page ending between the two lists one of them).
* Pages: keyset, never OFFSET. ``next_cursor`` encodes the last row's sort key; the next page is the rows strictly
  after it, so rows sharing a timestamp are neither repeated nor skipped across pages, and rows written meanwhile
  into the newest day do not shift the pages already read. ``next_cursor`` is null on the last page (one row more
  than the page is read to know). A cursor carries a fingerprint of its question: one brought to other dates or
  filters is refused rather than answering something nobody asked.
* Speed: a record's partition is its timestamp's UTC day, so a newer day's records all come before an older day's.
  The days that exist are walked newest first, one DuckDB query per batch of days, and the walk stops once the page
  is full: the first batch is the newest day, each next one as many days as the rate found so far says the page
  still needs (at least twice the days read), or all the rest when nothing was found. The first page of a busy
  range reads one day; a filter rarer than a page reads the range in two queries, as its report reads it once; a
  later page starts at its cursor's day. Within a batch, the page's oldest timestamp is found first from the
  timestamp and filter columns alone, and only rows from it on are read whole (files are sorted by timestamp, so
  that bound also prunes row groups). Measured by ``benchmarks/requests_pages.py``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final, NamedTuple

from tokentrail.processor.reports.dataset import USAGE_DIR, USAGE_SOURCE, scan_dataset
from tokentrail.processor.reports.errors import ReportParameterError
from tokentrail.processor.reports.formatting import exact_json
from tokentrail.processor.reports.params import Params, int_param, refuse_unknown, single_param
from tokentrail.processor.reports.query import GROUP_COLUMNS, NO_GROUPING, QUERY_PARAMETERS, ReportQuery
from tokentrail.processor.reports.report import known_cost
from tokentrail.processor.reports.sql import filter_sql
from tokentrail.processor.schema import ADDED_COLUMNS, ARROW_SCHEMA, COST_FIELDS, micros_to_datetime
from tokentrail.processor.storage.dataset import dataset_days

__all__ = [
    "DEFAULT_LIMIT",
    "FILTER_PARAMETERS",
    "MAX_LIMIT",
    "REQUESTS_PARAMETERS",
    "REQUEST_COLUMNS",
    "TOKEN_COLUMNS",
    "RequestKey",
    "RequestsPage",
    "RequestsQuery",
    "requests_from_params",
    "requests_json",
    "run_requests",
]

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 1000  # a page is read into memory and written as one body: a bigger one is several pages

# The report's parameters that are not a question of which records (how to group, sort and cut the rows): every
# other one (dates and filters) means here what it means there.
_REPORT_SHAPE: Final = ("group_by", "date_part", "order_by", "limit")
FILTER_PARAMETERS: Final = tuple(name for name in QUERY_PARAMETERS if name not in _REPORT_SHAPE)
REQUESTS_PARAMETERS: Final = (*FILTER_PARAMETERS, "limit", "cursor")

# Every token count of the record, from the schema: a count added there is listed here.
TOKEN_COLUMNS: Final = tuple(f.name for f in ARROW_SCHEMA if f.name.endswith("_tokens"))

_RECORD_FIELDS: Final = (
    "timestamp",
    "trace_id",
    "span_id",
    "response_id",
    "service",
    "environment",
    "api",
    "operation",
    "provider",
    "model",
    "user_id",
    "tags",
    "conversation_id",
    "credential_type",
    *TOKEN_COLUMNS,
    "total_cost",
    "market_cost",
    "price_status",
    "duration_ms",
    "streamed",
    "status",
    "error_type",
)
assert set(_RECORD_FIELDS) <= set(ARROW_SCHEMA.names), "a request field that is not a record field"
# The user is named as the report's rows name it (``user``, Vercel's key); the ids keep their column names
# (``trace_id``, ``conversation_id``: what a tracing backend and the spans call them).
_OUTPUT_NAMES: Final = {GROUP_COLUMNS["user"]: "user"}
REQUEST_COLUMNS: Final = tuple(_OUTPUT_NAMES.get(name, name) for name in _RECORD_FIELDS)
assert len(set(REQUEST_COLUMNS)) == len(REQUEST_COLUMNS), "two request fields under one name"

_CURSOR_VERSION: Final = 1
_MAX_CURSOR_CHARS: Final = 4096  # a cursor holds four ids of at most 256 characters: anything longer is not ours
_TIMESTAMP_US: Final = "__timestamp_us"
_ALL_DAYS: Final = 10**6  # a batch of every day left
# Newest first; a missing response id sorts as the empty one, the smallest.
_ORDER: Final = '"timestamp" DESC, trace_id DESC, span_id DESC, COALESCE(response_id, \'\') DESC'
# Strictly after the cursor in that order. The plain bound on the timestamp comes first so DuckDB can prune row
# groups by it.
_AFTER: Final = (
    '"timestamp" <= $after_timestamp AND ("timestamp" < $after_timestamp OR '
    "(trace_id, span_id, COALESCE(response_id, '')) < ($after_trace_id, $after_span_id, $after_response_id))"
)


class RequestKey(NamedTuple):
    """A row's place in the order: what a cursor holds."""

    timestamp_us: int
    trace_id: str
    span_id: str
    response_id: str  # "" when the record has none

    @property
    def day(self) -> date:
        return micros_to_datetime(self.timestamp_us).date()


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestsQuery:
    """Which calls (``filters``: the report's dates and filters, one total row's worth), how many, and after which.

    Build it from request parameters with ``from_params``, or in code with a ``ReportQuery`` of the filters."""

    filters: ReportQuery
    limit: int = DEFAULT_LIMIT
    after: RequestKey | None = None

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_LIMIT:
            raise ReportParameterError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {self.limit!r}")

    @classmethod
    def from_params(cls, params: Params) -> RequestsQuery:
        """Parse query parameters as ``/v1/report`` does (a name outside ``REQUESTS_PARAMETERS`` is refused, with
        the closest known one); ``cursor`` is a ``next_cursor`` given back unchanged."""
        refuse_unknown(params, REQUESTS_PARAMETERS)
        filters = ReportQuery.from_params(
            {**{name: params[name] for name in FILTER_PARAMETERS if name in params}, "group_by": NO_GROUPING}
        )
        limit = int_param(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        cursor = single_param(params, "cursor")
        return cls(filters=filters, limit=limit, after=None if cursor is None else _decode_cursor(cursor, filters))

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.filters)


@dataclass(frozen=True, slots=True)
class RequestsPage:
    """One page: the rows (``REQUEST_COLUMNS`` each), and the cursor of the next page, None on the last."""

    rows: list[dict[str, Any]]
    next_cursor: str | None

    def body(self) -> dict[str, object]:
        return {"results": self.rows, "next_cursor": self.next_cursor}


def requests_json(page: RequestsPage) -> str:
    """The exact body of ``GET /v1/requests`` (without its trailing newline): costs with every digit."""
    return exact_json(page.body())


def requests_from_params(data_dir: str | os.PathLike[str], params: Params) -> RequestsPage:
    return run_requests(data_dir, RequestsQuery.from_params(params))


def run_requests(data_dir: str | os.PathLike[str], query: RequestsQuery) -> RequestsPage:
    """One page of the calls ``query`` asks for, newest first; a missing or empty dataset gives no rows."""
    filters = query.filters
    newest = filters.end_date if query.after is None else min(filters.end_date, query.after.day)
    days = [d for d in reversed(dataset_days(Path(data_dir) / USAGE_DIR)) if filters.start_date <= d <= newest]
    where, params = _report_filter(filters)
    if query.after is not None:
        where = f"{where} AND {_AFTER}"
        params.update(
            after_timestamp=micros_to_datetime(query.after.timestamp_us),
            after_trace_id=query.after.trace_id,
            after_span_id=query.after.span_id,
            after_response_id=query.after.response_id,
        )
    # Late materialization by hand: the page's oldest timestamp is found reading the timestamp (and the filters'
    # columns) alone, and only rows from it on are read whole. The rows of the page all have a timestamp from it on,
    # and any row before it comes after the page anyway, so the answer is the plain ORDER BY ... LIMIT's; on a day of
    # 333k records it takes a third to a half of the time (DuckDB does not defer the other columns itself here).
    sql = (
        "WITH page AS (\n"
        f'  SELECT "timestamp" FROM {USAGE_SOURCE}\n'
        f"  WHERE {where}\n"
        '  ORDER BY "timestamp" DESC LIMIT $page_rows\n'
        ")\n"
        f'SELECT *, epoch_us("timestamp") AS {_TIMESTAMP_US}\n'
        f"FROM {USAGE_SOURCE}\n"
        f'WHERE {where} AND "timestamp" >= (SELECT min("timestamp") FROM page)\n'
        f"ORDER BY {_ORDER}\n"
        "LIMIT $page_rows"
    )
    wanted = query.limit + 1  # one more than the page tells whether another page exists
    found: list[dict[str, Any]] = []
    read = 0  # days read so far (days[:read])
    while read < len(days) and len(found) < wanted:
        chunk = days[read:read + _batch_days(read, len(found), wanted)]
        read += len(chunk)
        params.update(start_date=chunk[-1], end_date=chunk[0], page_rows=wanted - len(found))
        names, rows = scan_dataset(data_dir, chunk[-1], chunk[0], sql, params)
        found.extend(dict(zip(names, row)) for row in rows)
    page = [_row(raw) for raw in found[:query.limit]]
    more = len(found) > query.limit
    cursor = _encode_cursor(query.fingerprint, _key(found[query.limit - 1])) if more else None
    return RequestsPage(page, cursor)


def _batch_days(read: int, found: int, wanted: int) -> int:
    """How many days the next query reads: one first (a busy day fills a page), then as many as the calls found so
    far say the rest of the page needs, at least twice the days read; all the rest when none was found (a rare
    filter reads the range once, in two queries, as a report would)."""
    if read == 0:
        return 1
    if found == 0:
        return _ALL_DAYS
    return max(2 * read, math.ceil((wanted - found) * read / found))


def _report_filter(filters: ReportQuery) -> tuple[str, dict[str, object]]:
    """The conditions ``/v1/report`` applies for these dates and filters (``sql.filter_sql``), so the calls listed
    are the ones the report counts, by construction."""
    where, params = filter_sql(filters)
    return f"({' AND '.join(where)})", params


def _row(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A record as the page lists it. A column a file predates reads as its ``ADDED_COLUMNS`` value, as everywhere."""
    row: dict[str, Any] = {}
    for name, shown in zip(_RECORD_FIELDS, REQUEST_COLUMNS):
        value: Any = raw.get(name)
        if value is None:
            value = ADDED_COLUMNS.get(name)
        if name == "timestamp":
            value = micros_to_datetime(raw[_TIMESTAMP_US]).isoformat(timespec="microseconds")
        elif name in COST_FIELDS:
            value = known_cost(value)
        elif name == "tags":
            value = list(value or ())
        row[shown] = value
    return row


def _key(raw: Mapping[str, Any]) -> RequestKey:
    return RequestKey(raw[_TIMESTAMP_US], raw["trace_id"], raw["span_id"], raw["response_id"] or "")


def _fingerprint(filters: ReportQuery) -> str:
    """Which question a cursor belongs to: the dates and filters, not the page size (a client may change that)."""
    text = json.dumps(filters.to_params(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_cursor(fingerprint: str, key: RequestKey) -> str:
    text = json.dumps([_CURSOR_VERSION, fingerprint, *key], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


_NOT_OURS: Final = (
    "cursor is not one this API gave: pass a page's next_cursor unchanged, or leave it out for the first page"
)


def _decode_cursor(cursor: str, filters: ReportQuery) -> RequestKey:
    if len(cursor) > _MAX_CURSOR_CHARS or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
        raise ReportParameterError(_NOT_OURS)
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):  # not base64, not UTF-8, not JSON
        raise ReportParameterError(_NOT_OURS) from None
    if not _is_cursor(value):
        raise ReportParameterError(_NOT_OURS)
    if value[1] != _fingerprint(filters):
        raise ReportParameterError(
            "cursor belongs to another question (other dates or filters): ask with the dates and filters of the page "
            "that gave it, or leave it out to start again"
        )
    return RequestKey(*value[2:])


def _is_cursor(value: object) -> bool:
    if not isinstance(value, list) or len(value) != 6 or value[0] != _CURSOR_VERSION:
        return False
    _, fingerprint, timestamp_us, *ids = value
    return (
        isinstance(fingerprint, str)
        and isinstance(timestamp_us, int)
        and not isinstance(timestamp_us, bool)
        and 0 <= timestamp_us < 253_402_300_800_000_000  # before year 10000: a datetime can hold it
        and all(isinstance(i, str) for i in ids)
    )
