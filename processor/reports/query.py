"""The report's question: ``ReportQuery``, its bounds, and how Vercel-style parameters become one.

The query speaks Vercel AI Gateway's Custom Reporting parameters (``start_date``, ``end_date``, ``group_by``,
``date_part``, ``user_id``, ``model``, ``provider``, ``credential_type``, ``tags``, ``tags_match``), so a client
written for ``GET /v1/report`` gets the same rows from TokenTrail. Every surface parses through
``ReportQuery.from_params``; validation lives in the query itself, so a query built in code is held to the same
rules. The reading rules (inclusive UTC days, exact costs, tag rows, bounds) are in ``reports.report``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Final

from tokentrail.processor.reports.errors import ReportParameterError
from tokentrail.processor.reports.params import Params, date_param, list_param, refuse_unknown, single_param
from tokentrail.processor.schema import TOKEN_FIELDS

__all__ = [
    "COST_METRICS",
    "CREDENTIAL_TYPES",
    "DATE_PARTS",
    "EXTENSION_FILTERS",
    "FILTER_COLUMNS",
    "GROUPS",
    "GROUP_COLUMNS",
    "MAX_FILTER_TAGS",
    "MAX_RANGE_DAYS",
    "MAX_ROWS",
    "METRICS",
    "NO_GROUPING",
    "ORDER_DIRECTIONS",
    "QUERY_PARAMETERS",
    "TAGS_MATCH",
    "ReportQuery",
]

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
    "conversation",
    "trace",
)
DATE_PARTS: Final = ("hour", "day", "week", "month")
CREDENTIAL_TYPES: Final = ("byok", "system")
TAGS_MATCH: Final = ("any", "all")
MAX_FILTER_TAGS: Final = 100  # each is one SQL parameter; a request carries at most 10
NO_GROUPING: Final = "none"  # group_by=none: one total row (an extension; Vercel always groups)
MAX_RANGE_DAYS: Final = 366  # a leap year; a longer question is several requests (or a direct DuckDB query)
MAX_ROWS: Final = 10_000  # rows in one result; more are cut and the result says it is truncated
ORDER_DIRECTIONS: Final = ("asc", "desc")
COST_METRICS: Final = ("total_cost", "market_cost")
METRICS: Final = (*COST_METRICS, *TOKEN_FIELDS, "request_count", "unpriced_request_count")

# Filters, each on one stored column by its name: Vercel's four, then ours (each dimension a report can group by
# can pick the calls of one row: a dashboard's drill-down and ``/v1/requests`` rely on it).
FILTER_COLUMNS: Final = (
    "user_id",
    "model",
    "provider",
    "credential_type",
    "service",
    "environment",
    "api",
    "operation",
    "conversation_id",
    "trace_id",
)

# Every parameter ``ReportQuery.from_params`` reads, and so accepts (any other name is refused, with the closest of
# these suggested): the OpenAPI document lists exactly these (a test checks it).
QUERY_PARAMETERS: Final = (
    "start_date",
    "end_date",
    "group_by",
    "date_part",
    *FILTER_COLUMNS,
    "tags",
    "tags_match",
    "order_by",
    "limit",
)

# Group name → stored column. ``tag`` is absent: it is an exploded list, not a column.
GROUP_COLUMNS: Final[dict[str, str]] = {
    "user": "user_id",
    "model": "model",
    "provider": "provider",
    "credential_type": "credential_type",
    "service": "service",
    "api": "api",
    "environment": "environment",
    "operation": "operation",
    "conversation": "conversation_id",  # a call without one is in the row whose key is null
    "trace": "trace_id",  # one agent run, request or job: every call of one trace
}

# The filters beyond Vercel's four, read as given (``from_params`` reads Vercel's four one by one).
EXTENSION_FILTERS: Final = FILTER_COLUMNS[4:]
# A trace id as OTLP/JSON and every tracing UI writes it: the stored form (lower-case hex).
_TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")

# Names people plausibly type for a group we have under another name: the error says which to use.
_GROUP_HINTS: Final[dict[str, str]] = {
    "user_id": "use group_by=user",
    "users": "use group_by=user",
    "tags": "use group_by=tag",
    "models": "use group_by=model",
    "providers": "use group_by=provider",
    "date": "use group_by=day",
    "hour": "use date_part=hour",
    "week": "use date_part=week",
    "month": "use date_part=month",
    "conversation_id": "use group_by=conversation",
    "conversations": "use group_by=conversation",
    "session": "use group_by=conversation",
    "thread": "use group_by=conversation",
    "trace_id": "use group_by=trace",
    "traces": "use group_by=trace",
}


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
    service: str | None = None
    environment: str | None = None
    api: str | None = None
    operation: str | None = None
    conversation_id: str | None = None
    trace_id: str | None = None
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
        for name in FILTER_COLUMNS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ReportParameterError(f"{name} must be a string, got {value!r}")
        if self.trace_id is not None:
            trace_id = self.trace_id.strip().lower()
            if not _TRACE_ID.fullmatch(trace_id):
                raise ReportParameterError(
                    f"trace_id must be 32 hexadecimal characters (as tracing backends show it), got {self.trace_id!r}"
                )
            object.__setattr__(self, "trace_id", trace_id)
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
        A name outside ``QUERY_PARAMETERS`` is refused, naming the closest known one: ignored, ``user=cust_1``
        (for ``user_id``) would answer with everyone's cost.
        """
        refuse_unknown(params, QUERY_PARAMETERS)
        start_date = date_param(params, "start_date")
        end_date = date_param(params, "end_date")
        groups = [g.lower() for g in list_param(params, "group_by")]
        if groups == [NO_GROUPING]:
            group_by: tuple[str, ...] = ()
        elif NO_GROUPING in groups:
            raise ReportParameterError("group_by=none (one total row) cannot be combined with other groups")
        else:
            group_by = tuple(groups) or ("day",)
        date_part = single_param(params, "date_part")
        credential_type = single_param(params, "credential_type")
        limit = single_param(params, "limit")
        return cls(
            start_date=start_date,
            end_date=end_date,
            group_by=group_by,
            date_part=date_part.lower() if date_part else None,
            user_id=single_param(params, "user_id"),
            model=single_param(params, "model"),
            provider=single_param(params, "provider"),
            credential_type=credential_type.lower() if credential_type else None,
            **{name: single_param(params, name) for name in EXTENSION_FILTERS},
            tags=tuple(list_param(params, "tags")),
            tags_match=(single_param(params, "tags_match") or "any").lower(),
            order_by=single_param(params, "order_by"),
            limit=_limit(limit) if limit is not None else None,
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
        for name in FILTER_COLUMNS:
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


def _limit(value: str) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", value):
        raise ReportParameterError(f"limit must be a whole number from 1 to {MAX_ROWS}, got {value!r}")
    return int(value)
