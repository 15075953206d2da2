"""The report: one query model and one SQL builder behind the HTTP API, the CLI and the Python API.

The query speaks Vercel AI Gateway's Custom Reporting parameters (``start_date``, ``end_date``, ``group_by``,
``date_part``, ``user_id``, ``model``, ``provider``, ``credential_type``, ``tags``, ``tags_match``), so a client
written for ``GET /v1/report`` gets the same rows from TokenTrail. Every surface parses through
``ReportQuery.from_params`` and executes through ``run_report``: the same question gets the same answer everywhere.

Reading rules:

* Dates are inclusive UTC days and select ``date=YYYY-MM-DD`` partition directories before DuckDB opens a file,
  so a one-day report over a year of data touches one day of files.
* Costs are exact: DuckDB sums ``decimal128(18, 12)`` into ``DECIMAL(38, 12)`` and rows carry ``Decimal``.
  A record without a price (``price_status`` not ``priced``, cost NULL) adds nothing to the cost sums but counts in
  ``request_count`` and ``unpriced_request_count``: an unknown price is never a silent $0.
* ``group_by=tag`` puts a request in the row of each of its (distinct) tags and in no row if it has none, so tag
  rows do not add up to the total. Group by anything else for totals.
* Extensions to Vercel's parameters: ``group_by`` also takes ``service``, ``api``, ``environment``,
  ``operation`` and ``none`` (one total row); ``date_part`` also takes ``week`` (ISO, Monday) and ``month``;
  ``order_by=<metric or key>[:asc|:desc]`` and ``limit`` (e.g. the top 100 users by ``total_cost``).
  Unknown parameters are ignored, as Vercel clients may send their own; empty values count as absent.
* Bounds, so one request cannot ask the server for everything: a date range spans at most ``MAX_RANGE_DAYS``
  (366) days and a result at most ``MAX_ROWS`` (10,000) rows. When more rows exist than were returned, the
  result is marked ``truncated`` (``{"results": [...], "truncated": true}``); ask with ``order_by`` and
  ``limit`` for the rows that matter, or narrow the query.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Context, Decimal
from pathlib import Path
from typing import Final, TypeAlias

import duckdb
from tokentrail.processor.reports.formatting import decimal_text, report_json
from tokentrail.processor.schema import COST_QUANTUM, PARTITION_COLUMN, PRICED, TOKEN_FIELDS
from tokentrail.processor.storage.parquet import list_day

__all__ = [
    "COST_METRICS",
    "CREDENTIAL_TYPES",
    "DATE_PARTS",
    "GROUPS",
    "MAX_FILTER_TAGS",
    "MAX_RANGE_DAYS",
    "MAX_ROWS",
    "METRICS",
    "ORDER_DIRECTIONS",
    "QUERY_PARAMETERS",
    "TAGS_MATCH",
    "USAGE_DIR",
    "Report",
    "ReportError",
    "ReportParameterError",
    "ReportQuery",
    "ReportRow",
    "ReportRows",
    "build_sql",
    "date_param",
    "int_param",
    "single_param",
    "USAGE_SOURCE",
    "dataset_files",
    "exact_cost",
    "scan_dataset",
    "decimal_text",
    "report_json",
    "run_report",
]

USAGE_DIR: Final = "usage"  # DATA_DIR/usage/date=YYYY-MM-DD/part-*.parquet, written by the receiver

GROUPS: Final = (
    "day",
    "user",
    "model",
    "tag",
    "provider",
    "credential_type",
    "service",
    "api",
    "environment",
    "operation",
)
DATE_PARTS: Final = ("hour", "day", "week", "month")
CREDENTIAL_TYPES: Final = ("byok", "system")
TAGS_MATCH: Final = ("any", "all")
MAX_FILTER_TAGS: Final = 100  # each is one SQL parameter; a request carries at most 10
NO_GROUPING: Final = "none"  # group_by=none: one total row (an extension; Vercel always groups)
MAX_RANGE_DAYS: Final = 366  # a leap year; a longer question is several requests (or a direct DuckDB query)
MAX_ROWS: Final = 10_000  # rows in one result; more are cut and the result says it is truncated
ORDER_DIRECTIONS: Final = ("asc", "desc")
# The records, as every query reads them: the partition date from the path, typed, files listed by the caller.
USAGE_SOURCE: Final = (
    f"read_parquet($files, hive_partitioning = true, hive_types = {{'{PARTITION_COLUMN}': DATE}}, union_by_name = true)"
)

COST_METRICS: Final = ("total_cost", "market_cost")
METRICS: Final = (*COST_METRICS, *TOKEN_FIELDS, "request_count", "unpriced_request_count")

ReportRow: TypeAlias = dict[str, str | int | Decimal | None]
Params: TypeAlias = Mapping[str, str | Sequence[str] | None]

# Every parameter ``ReportQuery.from_params`` reads: the OpenAPI document lists exactly these (a test checks it).
QUERY_PARAMETERS: Final = (
    "start_date",
    "end_date",
    "group_by",
    "date_part",
    "user_id",
    "model",
    "provider",
    "credential_type",
    "tags",
    "tags_match",
    "order_by",
    "limit",
)

# Group name → stored column. ``tag`` is absent: it is an exploded list, not a column.
_GROUP_COLUMNS: Final[Mapping[str, str]] = {
    "user": "user_id",
    "model": "model",
    "provider": "provider",
    "credential_type": "credential_type",
    "service": "service",
    "api": "api",
    "environment": "environment",
    "operation": "operation",
}
_FILTER_COLUMNS: Final = ("user_id", "model", "provider", "credential_type")

# Names people plausibly type for a group we have under another name: the error says which to use.
_GROUP_HINTS: Final[Mapping[str, str]] = {
    "user_id": "use group_by=user",
    "users": "use group_by=user",
    "tags": "use group_by=tag",
    "models": "use group_by=model",
    "providers": "use group_by=provider",
    "date": "use group_by=day",
    "hour": "use date_part=hour",
    "week": "use date_part=week",
    "month": "use date_part=month",
}

_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_PARTITION_RE: Final = re.compile(rf"{PARTITION_COLUMN}=(\d{{4}}-\d{{2}}-\d{{2}})")
_US_PER_HOUR: Final = 3_600_000_000
_SUM_CONTEXT: Final = Context(prec=60)  # wider than DECIMAL(38, 12): quantizing a sum never rounds it


class ReportError(Exception):
    """Base class of every error the report raises on purpose."""


class ReportParameterError(ReportError, ValueError):
    """A query parameter is missing or wrong; the message says which and what is accepted (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportQuery:
    """A validated report question. Build it from request parameters with ``from_params`` or directly in code.

    ``group_by=()`` asks for a single total row. ``date_part`` sets the time bucket and adds its key to every
    row; without it, ``day`` in ``group_by`` buckets by day. ``group_by=day`` with ``date_part=hour`` is hourly.
    """

    start_date: date
    end_date: date
    group_by: tuple[str, ...] = ("day",)
    date_part: str | None = None
    user_id: str | None = None
    model: str | None = None
    provider: str | None = None
    credential_type: str | None = None
    tags: tuple[str, ...] = field(default=())
    tags_match: str = "any"
    order_by: str | None = None  # a metric or a key of this query's rows, optionally ":asc" or ":desc"
    limit: int | None = None  # at most this many rows (1..MAX_ROWS); None means MAX_ROWS

    def __post_init__(self) -> None:
        # Validation lives here, not in from_params, so a query built in code is held to the same rules.
        for name in ("start_date", "end_date"):
            value = getattr(self, name)
            if not isinstance(value, date) or isinstance(value, datetime):
                raise ReportParameterError(f"{name} must be a date (YYYY-MM-DD, UTC), got {value!r}")
        if self.end_date < self.start_date:
            raise ReportParameterError(
                f"end_date {self.end_date.isoformat()} is before start_date {self.start_date.isoformat()}"
            )
        days = (self.end_date - self.start_date).days + 1
        if days > MAX_RANGE_DAYS:
            raise ReportParameterError(
                f"the date range spans {days} days; ask for at most {MAX_RANGE_DAYS} days per request"
            )
        group_by = (self.group_by,) if isinstance(self.group_by, str) else tuple(self.group_by)
        for group in group_by:
            if group not in GROUPS:
                hint = _GROUP_HINTS.get(group) if isinstance(group, str) else None
                raise ReportParameterError(
                    f"unknown group_by {group!r}" + (f" ({hint})" if hint else "")
                    + f"; use one or more of {', '.join(GROUPS)} (comma-separated)"
                )
        object.__setattr__(self, "group_by", tuple(dict.fromkeys(group_by)))  # dedupe, keep order
        if self.date_part is not None and self.date_part not in DATE_PARTS:
            raise ReportParameterError(f"unknown date_part {self.date_part!r}; use one of {', '.join(DATE_PARTS)}")
        if self.credential_type is not None and self.credential_type not in CREDENTIAL_TYPES:
            raise ReportParameterError(
                f"unknown credential_type {self.credential_type!r}; use one of {', '.join(CREDENTIAL_TYPES)}"
            )
        if self.tags_match not in TAGS_MATCH:
            raise ReportParameterError(f"unknown tags_match {self.tags_match!r}; use one of {', '.join(TAGS_MATCH)}")
        for name in _FILTER_COLUMNS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ReportParameterError(f"{name} must be a string, got {value!r}")
        tags = (self.tags,) if isinstance(self.tags, str) else tuple(self.tags)
        if not all(isinstance(tag, str) for tag in tags):
            raise ReportParameterError(f"tags must be strings, got {tags!r}")
        tags = tuple(dict.fromkeys(tags))
        if len(tags) > MAX_FILTER_TAGS:
            raise ReportParameterError(f"tags lists {len(tags)} tags; filter on at most {MAX_FILTER_TAGS}")
        object.__setattr__(self, "tags", tags)
        if self.limit is not None and (
            isinstance(self.limit, bool) or not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_ROWS
        ):
            raise ReportParameterError(f"limit must be a whole number from 1 to {MAX_ROWS}, got {self.limit!r}")
        if self.order_by is not None:
            self.order_key  # validates  # noqa: B018

    @property
    def order_key(self) -> tuple[str, str] | None:
        """``(name, direction)`` of ``order_by``; a metric sorts descending and a key ascending unless told."""
        if self.order_by is None:
            return None
        if not isinstance(self.order_by, str):
            raise ReportParameterError(f"order_by must be a string, got {self.order_by!r}")
        name, _, direction = self.order_by.strip().partition(":")
        name, direction = name.strip().lower(), direction.strip().lower()
        keys = self.columns[: len(self.columns) - len(METRICS)]
        if name not in METRICS and name not in keys:
            allowed = ", ".join([*METRICS, *keys])
            raise ReportParameterError(
                f"unknown order_by {name!r}; use a metric or a key of this query's rows ({allowed}),"
                " optionally followed by :asc or :desc"
            )
        if direction and direction not in ORDER_DIRECTIONS:
            raise ReportParameterError(f"unknown order_by direction {direction!r}; use asc or desc")
        return name, direction or ("desc" if name in METRICS else "asc")

    @classmethod
    def from_params(cls, params: Params) -> ReportQuery:
        """Parse Vercel-style query parameters (one string each, or a list as ``parse_qs`` gives).

        Empty values count as absent, so clients that always send every parameter still get the defaults.
        Unknown parameters are ignored, as HTTP APIs do, so clients may send their own (e.g. a team id).
        """
        start_date = _date_param(params, "start_date")
        end_date = _date_param(params, "end_date")
        groups = [g.lower() for g in _list_param(params, "group_by")]
        if groups == [NO_GROUPING]:
            group_by: tuple[str, ...] = ()
        elif NO_GROUPING in groups:
            raise ReportParameterError("group_by=none (one total row) cannot be combined with other groups")
        else:
            group_by = tuple(groups) or ("day",)
        date_part = _single_param(params, "date_part")
        credential_type = _single_param(params, "credential_type")
        limit = _single_param(params, "limit")
        return cls(
            start_date=start_date,
            end_date=end_date,
            group_by=group_by,
            date_part=date_part.lower() if date_part else None,
            user_id=_single_param(params, "user_id"),
            model=_single_param(params, "model"),
            provider=_single_param(params, "provider"),
            credential_type=credential_type.lower() if credential_type else None,
            tags=tuple(_list_param(params, "tags")),
            tags_match=(_single_param(params, "tags_match") or "any").lower(),
            order_by=_single_param(params, "order_by"),
            limit=_int_param(limit, "limit") if limit is not None else None,
        )

    @property
    def date_key(self) -> str | None:
        """The time bucket every row carries, named as its output key, or None for no time bucket."""
        if self.date_part is not None:
            return self.date_part
        return "day" if "day" in self.group_by else None

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The non-time groups, in the order asked."""
        return tuple(g for g in self.group_by if g != "day")

    @property
    def columns(self) -> tuple[str, ...]:
        """Every key of a result row, in order: time bucket, groups, metrics."""
        date_key = self.date_key
        return (*((date_key,) if date_key else ()), *self.dimensions, *METRICS)

    def to_params(self) -> dict[str, str]:
        """The query as HTTP parameters; ``from_params(q.to_params()) == q``."""
        params = {
            "start_date": self.start_date.isoformat(),
            "end_date": self.end_date.isoformat(),
            "group_by": ",".join(self.group_by) if self.group_by else NO_GROUPING,
        }
        if self.date_part:
            params["date_part"] = self.date_part
        for name in _FILTER_COLUMNS:
            value = getattr(self, name)
            if value is not None:
                params[name] = value
        if self.tags:
            params["tags"] = ",".join(self.tags)
            params["tags_match"] = self.tags_match
        if self.order_by is not None:
            params["order_by"] = self.order_by
        if self.limit is not None:
            params["limit"] = str(self.limit)
        return params

    @property
    def row_cap(self) -> int:
        """The most rows this query returns: ``limit``, or the server-wide bound."""
        return self.limit if self.limit is not None else MAX_ROWS


def _values(params: Params, name: str) -> list[str]:
    raw = params.get(name)
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, Sequence) and all(isinstance(v, str) for v in raw):
        return list(raw)
    raise ReportParameterError(f"{name} must be a string, got {raw!r}")


def _single_param(params: Params, name: str) -> str | None:
    values = [v.strip() for v in _values(params, name)]
    values = [v for v in values if v]
    if len(values) > 1:
        raise ReportParameterError(f"{name} was given {len(values)} times; give it once")
    return values[0] if values else None


def _list_param(params: Params, name: str) -> list[str]:
    """Comma-separated and/or repeated: ``tags=a,b`` and ``tags=a&tags=b`` mean the same."""
    out: list[str] = []
    for value in _values(params, name):
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def single_param(params: Params, name: str) -> str | None:
    """One value of ``name`` (stripped; empty counts as absent); 400 if given more than once."""
    return _single_param(params, name)


def date_param(params: Params, name: str, default: date | None = None) -> date:
    """A ``YYYY-MM-DD`` parameter; ``default`` when absent, else required."""
    if default is not None and _single_param(params, name) is None:
        return default
    return _date_param(params, name)


def int_param(params: Params, name: str, default: int, low: int, high: int) -> int:
    """A whole-number parameter within ``low..high``."""
    value = _single_param(params, name)
    if value is None:
        return default
    if not re.fullmatch(r"-?[0-9]{1,9}", value) or not low <= int(value) <= high:
        raise ReportParameterError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(value)


def _int_param(value: str, name: str) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", value):
        raise ReportParameterError(f"{name} must be a whole number from 1 to {MAX_ROWS}, got {value!r}")
    return int(value)


def _date_param(params: Params, name: str) -> date:
    value = _single_param(params, name)
    if value is None:
        raise ReportParameterError(f"{name} is required (YYYY-MM-DD, inclusive, UTC)")
    if not _DATE_RE.fullmatch(value):
        raise ReportParameterError(f"{name} must be a date as YYYY-MM-DD (UTC), got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ReportParameterError(f"{name} is not a valid date: {value!r}") from None


# ---------------------------------------------------------------------------------------------------------------
# Dataset and SQL


def dataset_files(data_dir: str | os.PathLike[str], start_date: date, end_date: date) -> list[str]:
    """Parquet files of the days in range, found by directory name: pruning before DuckDB opens anything.

    Each day is one consistent listing (``storage.list_day``), never part of a version a rewrite is deleting.
    """
    root = Path(data_dir) / USAGE_DIR
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return []
    files: list[str] = []
    for entry in entries:
        match = _PARTITION_RE.fullmatch(entry.name)
        if not match or not entry.is_dir():
            continue
        try:
            day = date.fromisoformat(match.group(1))
        except ValueError:
            continue
        if not start_date <= day <= end_date:
            continue
        files.extend(os.path.join(entry.path, name) for name in list_day(entry.path))
    files.sort()
    return files


def _date_expressions(date_part: str) -> tuple[str, str]:
    """(raw bucket to group on, text key from the bucket). Grouping on the raw value and formatting only the
    grouped rows keeps string work out of the per-record path. Day, week and month come from the stored
    partition date; only the hour needs the timestamp, taken as integer microseconds so the session time zone
    cannot shift it."""
    if date_part == "hour":
        return (
            f'epoch_us("timestamp") // {_US_PER_HOUR}',
            f"strftime(make_timestamp(__bucket * {_US_PER_HOUR}), '%Y-%m-%dT%H')",
        )
    if date_part == "day":
        return (f'"{PARTITION_COLUMN}"', "strftime(__bucket, '%Y-%m-%d')")
    if date_part == "week":  # DuckDB weeks are ISO weeks: they start on Monday
        return (f"date_trunc('week', \"{PARTITION_COLUMN}\")", "strftime(__bucket, '%Y-%m-%d')")
    if date_part == "month":
        return (f"date_trunc('month', \"{PARTITION_COLUMN}\")", "strftime(__bucket, '%Y-%m')")
    raise AssertionError(date_part)  # ReportQuery validated it


def build_sql(query: ReportQuery) -> tuple[str, dict[str, object]]:
    """The one SQL text for a query, with every user value as a named parameter (``$files`` is filled by the
    caller with the dataset's files). Identifiers and expressions come only from fixed tables in this module.

    Two aggregation steps: records → partial groups (keyed also by the whole tag list when grouping by tag),
    then partial groups → rows. Exploding and de-duplicating tags per partial group instead of per record
    makes ``group_by=tag`` exact (a tag repeated on one request counts once) at about the cost of a plain
    UNNEST; ``list_distinct`` per record was 3-4x slower on 10M records. Without tags the second step
    re-sums already-grouped rows, which costs nothing measurable.
    """
    params: dict[str, object] = {
        "start_date": query.start_date,
        "end_date": query.end_date,
        "priced": PRICED,
    }
    by_tag = "tag" in query.dimensions
    partial_keys: list[str] = []  # step 1: per-record key expressions, aliased
    partial_group: list[str] = []
    carry: list[str] = []  # step 2: what passes from the partial groups to the final grouping
    keys: list[str] = []  # output key expressions, in output order
    group: list[str] = []  # final raw grouping columns
    order: list[str] = []

    date_key = query.date_key
    if date_key is not None:
        raw, text = _date_expressions(date_key)
        partial_keys.append(f"{raw} AS __bucket")
        partial_group.append("__bucket")
        carry.append("__bucket")
        keys.append(f'{text} AS "{date_key}"')
        group.append("__bucket")
        order.append("__bucket")
    order.append("total_cost DESC")
    key_columns: dict[str, str] = {date_key: "__bucket"} if date_key is not None else {}
    for dimension in query.dimensions:
        alias = f"__g_{dimension}"
        if dimension == "tag":
            partial_keys.append("tags AS __tags")
            partial_group.append("__tags")
            # One row per distinct tag of the list; an empty list gives none, so untagged requests drop out.
            carry.append(f"UNNEST(list_distinct(__tags)) AS {alias}")
        else:
            partial_keys.append(f'"{_GROUP_COLUMNS[dimension]}" AS {alias}')
            partial_group.append(alias)
            carry.append(alias)
        keys.append(f'{alias} AS "{dimension}"')
        group.append(alias)
        order.append(f"{alias} ASC NULLS LAST")
        key_columns[dimension] = alias
    order_key = query.order_key
    if order_key is not None:  # first, then the usual order breaks ties so the answer is the same on every run
        name, direction = order_key
        column = key_columns.get(name, name)  # metrics sort by their output column
        order.insert(0, f"{column} {direction.upper()} NULLS LAST")
    params["row_limit"] = query.row_cap + 1  # one more than returned tells whether rows were cut

    where = [f'"{PARTITION_COLUMN}" BETWEEN $start_date AND $end_date']
    for name in _FILTER_COLUMNS:
        value = getattr(query, name)
        if value is not None:
            params[name] = value
            where.append(f'"{name}" = ${name}')
    if query.tags:
        # One list_contains per tag: 4-5x faster in DuckDB than list_has_any/list_has_all with a list parameter.
        tests = []
        for i, tag in enumerate(query.tags):
            params[f"tag_{i}"] = tag
            tests.append(f"list_contains(tags, $tag_{i})")
        joiner = " AND " if query.tags_match == "all" else " OR "
        where.append(f"({joiner.join(tests)})")
    if by_tag:
        where.append("len(tags) > 0")  # no tag row can hold them: skip them before grouping

    partial_metrics = [
        # SUM skips NULL (unpriced) costs and is NULL only when every cost in the group is.
        "SUM(total_cost) AS total_cost",
        "SUM(market_cost) AS market_cost",
        *(f"SUM({name}) AS {name}" for name in TOKEN_FIELDS),
        "COUNT(*) AS request_count",
        "COUNT(*) FILTER (WHERE price_status <> $priced OR total_cost IS NULL) AS unpriced_request_count",
    ]
    metric_names = [*COST_METRICS, *TOKEN_FIELDS, "request_count", "unpriced_request_count"]
    metrics = [
        # An all-unpriced group costs 0, not null; unpriced_request_count says what that 0 leaves out.
        *(f"COALESCE(SUM({name}), 0) AS {name}" for name in COST_METRICS),
        *(f"CAST(COALESCE(SUM({name}), 0) AS BIGINT) AS {name}" for name in metric_names[len(COST_METRICS):]),
    ]
    sql = (
        f"SELECT {', '.join([*keys, *metrics])}\n"
        "FROM (\n"
        f"  SELECT {', '.join([*carry, *metric_names])}\n"
        "  FROM (\n"
        f"    SELECT {', '.join([*partial_keys, *partial_metrics])}\n"
        f"    FROM {USAGE_SOURCE}\n"
        f"    WHERE {' AND '.join(where)}\n"
        + (f"    GROUP BY {', '.join(partial_group)}\n" if partial_group else "")
        + "  ) AS partial_groups\n"
        ") AS usage\n"
        + (f"GROUP BY {', '.join(group)}\n" if group else "")
        # Without GROUP BY an aggregate returns one row even over nothing: an empty period must be no rows.
        + "HAVING SUM(request_count) > 0\n"
        f"ORDER BY {', '.join(order)}\n"
        "LIMIT $row_limit"
    )
    return sql, params


def _exact_cost(value: object) -> Decimal:
    """DuckDB may hand back ``3E-12``; the stored scale (pico-dollars) reads better and compares the same."""
    if value is None:
        return Decimal(0).quantize(COST_QUANTUM)
    if not isinstance(value, Decimal):
        raise ReportError(f"cost came back as {type(value).__name__}, not Decimal")  # never via float
    return value.quantize(COST_QUANTUM, context=_SUM_CONTEXT)


class ReportRows(list[ReportRow]):
    """The rows of a report: a ``list`` of row dicts, plus ``truncated``, true when more rows exist than were
    returned (the query's ``limit``, or ``MAX_ROWS``). Compares equal to a plain list of the same rows."""

    truncated: bool

    def __init__(self, rows: Iterable[ReportRow] = (), *, truncated: bool = False) -> None:
        super().__init__(rows)
        self.truncated = truncated


def scan_dataset(
    data_dir: str | os.PathLike[str],
    start_date: date,
    end_date: date,
    sql: str,
    params: Mapping[str, object],
    *,
    days: Iterable[date] | None = None,
) -> tuple[list[str], list[tuple[object, ...]]]:
    """Run ``sql`` over the dataset's files of ``start_date..end_date`` (or only of ``days``), as
    ``(column names, rows)``; ``([], [])`` when no file is in range. ``sql`` reads the records with
    ``FROM {USAGE_SOURCE}`` (``$files`` is filled here) and passes every user value as a named parameter.

    The budgets, margins and spikes queries go through here, as the report does: the same files, the same
    partition pruning, the same retry when compaction swaps a file between listing and reading."""
    wanted = set(days) if days is not None else None
    attempts = 3
    for attempt in range(attempts):
        files = dataset_files(data_dir, start_date, end_date)
        if wanted is not None:
            files = [f for f in files if _file_day(f) in wanted]
        if not files:
            return [], []
        try:
            # One connection per query: DuckDB connections are not shared across threads; opening one is ~1 ms.
            with duckdb.connect(":memory:") as con:
                # A server's stderr is for its log: DuckDB draws a progress bar on long queries unless told not to.
                con.execute("SET enable_progress_bar = false")
                cursor = con.execute(sql, {**params, "files": files})
                names = [d[0] for d in cursor.description]
                return names, cursor.fetchall()
        except duckdb.IOException:
            # Compaction replaces small files with a merged one; a file listed a moment ago may be gone.
            # List again, but only for that reason: any other I/O error is real.
            if attempt == attempts - 1 or all(os.path.exists(f) for f in files):
                raise
    raise AssertionError("unreachable")


def _file_day(path: str) -> date | None:
    match = _PARTITION_RE.fullmatch(os.path.basename(os.path.dirname(path)))
    return date.fromisoformat(match.group(1)) if match else None


def exact_cost(value: object) -> Decimal:
    """A summed cost as an exact ``Decimal`` at the stored scale; NULL (nothing priced) is 0."""
    return _exact_cost(value)


def _rows(query: ReportQuery, names: list[str], raw_rows: list[tuple[object, ...]]) -> ReportRows:
    cap = query.row_cap
    rows = ReportRows(truncated=len(raw_rows) > cap)
    for raw in raw_rows[:cap]:
        row: ReportRow = dict(zip(names, raw))
        for name in COST_METRICS:
            row[name] = _exact_cost(row[name])
        rows.append(row)
    return rows


def run_report(data_dir: str | os.PathLike[str], query: ReportQuery) -> ReportRows:
    """Rows for ``query`` over the dataset in ``data_dir``; a missing or empty dataset gives ``[]``.

    Rows are sorted by ``order_by`` if given, then by time bucket, then by ``total_cost`` descending, then by
    group keys, so the order is the same on every run. At most ``query.row_cap`` rows come back; the result's
    ``truncated`` says whether there were more.
    """
    sql, params = build_sql(query)
    names, raw_rows = scan_dataset(data_dir, query.start_date, query.end_date, sql, params)
    return _rows(query, names, raw_rows)


class Report:
    """The Python API: the same rows the HTTP API and the CLI give, as ``Decimal`` costs and ``int`` counts.

    >>> Report("tokentrail-data").query(start_date="2025-01-01", end_date="2025-01-31", group_by="model")
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self._data_dir = Path(data_dir)

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    def run(self, query: ReportQuery) -> ReportRows:
        return run_report(self._data_dir, query)

    def from_params(self, params: Params) -> ReportRows:
        """Rows for HTTP-style parameters; raises ``ReportParameterError`` as the HTTP API answers 400."""
        return self.run(ReportQuery.from_params(params))

    def query(
        self,
        *,
        start_date: date | str,
        end_date: date | str,
        group_by: str | Iterable[str] = ("day",),
        date_part: str | None = None,
        user_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        credential_type: str | None = None,
        tags: str | Iterable[str] = (),
        tags_match: str = "any",
        order_by: str | None = None,
        limit: int | None = None,
    ) -> ReportRows:
        """Keyword form for code and notebooks. Dates may be ``date`` or ``"YYYY-MM-DD"``; ``group_by`` and
        ``tags`` a comma-separated string or a sequence; ``group_by=()`` or ``"none"`` gives one total row."""
        groups = [g.strip().lower() for g in (group_by.split(",") if isinstance(group_by, str) else group_by)]
        if groups == [NO_GROUPING]:
            groups = []  # one total row, as group_by=none over HTTP
        tag_list = [t.strip() for t in (tags.split(",") if isinstance(tags, str) else tags)]
        return self.run(
            ReportQuery(
                start_date=_as_date(start_date, "start_date"),
                end_date=_as_date(end_date, "end_date"),
                group_by=tuple(g for g in groups if g),
                date_part=date_part,
                user_id=user_id,
                model=model,
                provider=provider,
                credential_type=credential_type,
                tags=tuple(t for t in tag_list if t),
                tags_match=tags_match,
                order_by=order_by,
                limit=limit,
            )
        )

    def json(self, query: ReportQuery) -> str:
        """The exact body ``GET /v1/report`` returns for ``query``."""
        return report_json(self.run(query))


def _as_date(value: date | str, name: str) -> date:
    if isinstance(value, str):
        return _date_param({name: value}, name)
    return value
