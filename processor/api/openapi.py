"""The OpenAPI 3.1 document of the HTTP API, served at ``/openapi.json``.

Built from the same constants the code validates with (groups, date parts, metrics, bounds, parameter names), so it
cannot drift from what the server accepts; a test checks that each endpoint lists exactly the parameters its code
reads.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Final

from tokentrail.processor.reports.budgets import BUDGET_COLUMNS, BUDGET_PARAMETERS, PERIODS, SCOPES
from tokentrail.processor.reports.margins import MARGIN_COLUMNS, MARGIN_PARAMETERS, MARGIN_VIEWS
from tokentrail.processor.reports.query import (
    COST_METRICS,
    CREDENTIAL_TYPES,
    DATE_PARTS,
    GROUPS,
    MAX_FILTER_TAGS,
    MAX_RANGE_DAYS,
    MAX_ROWS,
    METRICS,
    NO_GROUPING,
    ORDER_DIRECTIONS,
    QUERY_PARAMETERS,
    TAGS_MATCH,
)
from tokentrail.processor.reports.requests import (
    DEFAULT_LIMIT,
    FILTER_PARAMETERS,
    MAX_LIMIT,
    REQUEST_COLUMNS,
    REQUESTS_PARAMETERS,
    TOKEN_COLUMNS,
)
from tokentrail.processor.reports.spikes import (
    DEFAULT_BASELINE,
    DEFAULT_THRESHOLD,
    DIMENSIONS,
    MAX_BASELINE,
    MIN_BASELINE,
    SEASONALITIES,
    SPIKE_COLUMNS,
    SPIKE_METRICS,
    SPIKE_PARAMETERS,
    WINDOWS,
)
from tokentrail.processor.schema import NO_USAGE, PRICED, UNPRICED

__all__ = ["ENDPOINT_PARAMETERS", "openapi_document"]

_DATE: Final = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
_MONEY: Final = {
    "type": "number",
    "description": "USD, an exact decimal (up to 12 places) written as a JSON number without float rounding",
}
_DECIMAL: Final = {"type": "number"}
_MONEY_OR_NULL: Final = {**_MONEY, "type": ["number", "null"]}
_STRING_OR_NULL: Final = {"type": ["string", "null"]}
_INT: Final = {"type": "integer", "minimum": 0}
_UNKNOWN_COST: Final = (
    "null when no request of the row has a known price (all unpriced, or their responses stated no usage): "
    "the cost is unknown, never reported as 0. A row with some priced requests sums those; "
    "unpriced_request_count says how many requests the sum leaves out."
)
_UNPRICED_COUNT: Final = {
    **_INT,
    "description": "Requests with no known price (unpriced or no_usage): they add nothing to the costs.",
}

_KEY_DESCRIPTIONS: Final = {
    "day": "YYYY-MM-DD (UTC)",
    "hour": "YYYY-MM-DDTHH (UTC)",
    "week": "YYYY-MM-DD, the Monday starting the ISO week",
    "month": "YYYY-MM",
    "tag": "one tag; a request counts in each of its tags, so tag rows do not add up to the total",
    "conversation": "the conversation id (gen_ai.conversation.id or a session/thread id); null for calls without one",
    "trace": "the trace id (32 hex digits): every call of one agent run or request",
}

# The query parameters each endpoint's code reads (``format`` is read by the server for every /v1 endpoint).
ENDPOINT_PARAMETERS: Final = {
    "/v1/report": (*QUERY_PARAMETERS, "format"),
    "/v1/budgets": (*BUDGET_PARAMETERS, "format"),
    "/v1/margins": (*MARGIN_PARAMETERS, "format"),
    "/v1/spikes": (*SPIKE_PARAMETERS, "format"),
    "/v1/requests": (*REQUESTS_PARAMETERS, "format"),
}


def _param(name: str, schema: dict[str, Any], description: str, *, required: bool = False, **extra: Any) -> dict:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema, **extra}


def _comma_list(name: str, items: dict[str, Any], description: str, **schema_extra: Any) -> dict:
    # style=form + explode=false is OpenAPI's "a,b,c"; repeating the parameter (name=a&name=b) is accepted too.
    return _param(
        name, {"type": "array", "items": items, **schema_extra}, description, style="form", explode=False
    )


_FORMAT: Final = _param(
    "format",
    {"type": "string", "enum": ["json", "csv"], "default": "json"},
    "Response format. Without it, `Accept: text/csv` also selects CSV.",
)
_AS_OF: Final = _param(
    "as_of",
    {"type": "string", "examples": ["2026-11-30", "2026-11-12T15:00:00Z"]},
    "Evaluate as of this moment (UTC if no offset); a date means the end of that day. Default: now.",
)


def _limit(default: int, what: str) -> dict:
    return _param(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_ROWS, "default": default},
        f"At most this many {what}. More matching rows mark the result truncated.",
    )


def _report_parameters() -> list[dict]:
    return [
        _param("start_date", _DATE, "First day, inclusive (UTC).", required=True),
        _param(
            "end_date",
            _DATE,
            f"Last day, inclusive (UTC); at most {MAX_RANGE_DAYS} days after start_date counting both.",
            required=True,
        ),
        _comma_list(
            "group_by",
            {"type": "string", "enum": [*GROUPS, NO_GROUPING]},
            "Groups, comma-separated (default day). `none` alone gives one total row. Rows are keyed by the "
            "group names (user, model, tag, ...).",
            default=["day"],
        ),
        _param(
            "date_part",
            {"type": "string", "enum": list(DATE_PARTS)},
            "Time bucket added to every row (key: hour, day, week or month). With group_by=day and "
            "date_part=hour, rows are hourly.",
        ),
        _param("user_id", {"type": "string"}, "Only this user's requests."),
        _param("model", {"type": "string"}, "Only this model's requests."),
        _param("provider", {"type": "string"}, "Only this provider's requests."),
        _param("credential_type", {"type": "string", "enum": list(CREDENTIAL_TYPES)}, "Only BYOK or system keys."),
        _param("service", {"type": "string"}, "Only this service's requests (the resource's service.name)."),
        _param("environment", {"type": "string"}, "Only this environment's requests (deployment.environment)."),
        _param("api", {"type": "string"}, "Only requests to this API (e.g. openai.chat_completions)."),
        _param("operation", {"type": "string"}, "Only this operation's requests (gen_ai.operation.name)."),
        _param(
            "conversation_id",
            {"type": "string"},
            "Only this conversation's requests (gen_ai.conversation.id, or a session/thread id).",
        ),
        _param(
            "trace_id",
            {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
            "Only this trace's requests (32 hex digits): one agent run or request.",
        ),
        _comma_list(
            "tags",
            {"type": "string"},
            f"Only requests with these tags (comma-separated, at most {MAX_FILTER_TAGS}); see tags_match.",
            maxItems=MAX_FILTER_TAGS,
        ),
        _param("tags_match", {"type": "string", "enum": list(TAGS_MATCH), "default": "any"},
               "any: a request with at least one of tags; all: with every one."),
        _param(
            "order_by",
            {"type": "string", "pattern": r"^[a-z_]+(:(asc|desc))?$", "examples": ["total_cost", "user:asc"]},
            "Sort rows by a metric (" + ", ".join(METRICS) + ") or a key of the rows, optionally "
            + " or ".join(f":{d}" for d in ORDER_DIRECTIONS)
            + " (metrics default to desc, keys to asc). Default: time bucket, then total_cost desc.",
        ),
        _limit(MAX_ROWS, "rows (e.g. order_by=total_cost&limit=100 for the top 100)"),
        _FORMAT,
    ]


def _report_row() -> dict:
    properties: dict[str, Any] = {}
    for key in ("day", "hour", "week", "month", *[g for g in GROUPS if g != "day"]):
        properties[key] = {**_STRING_OR_NULL, "description": _KEY_DESCRIPTIONS.get(key, f"the {key} of the group")}
    for metric in METRICS:
        properties[metric] = dict(_MONEY_OR_NULL) if metric in COST_METRICS else dict(_INT)
    properties["total_cost"]["description"] = (
        f"What you pay: priced requests only, BYOK calls count 0. {_MONEY['description']}; {_UNKNOWN_COST}"
    )
    properties["market_cost"]["description"] = (
        f"List price of the priced requests. {_MONEY['description']}; {_UNKNOWN_COST}"
    )
    properties["input_tokens"]["description"] = "Includes cached input tokens."
    properties["output_tokens"]["description"] = "Includes reasoning tokens."
    properties["unpriced_request_count"] = dict(_UNPRICED_COUNT)
    return {"type": "object", "required": list(METRICS), "properties": properties}


def _requests_parameters() -> list[dict]:
    report = {p["name"]: p for p in _report_parameters()}  # the same dates and filters, described once
    return [
        *(report[name] for name in FILTER_PARAMETERS),
        _param(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            "Calls per page.",
        ),
        _param(
            "cursor",
            {"type": "string"},
            "The previous page's next_cursor, unchanged (opaque), with the same dates and filters; leave it out for "
            "the first page.",
        ),
        _FORMAT,
    ]


def _request_row() -> dict:
    text = {"type": "string"}
    props: dict[str, Any] = {
        "timestamp": {"type": "string", "format": "date-time", "description": "start of the call, UTC, to the µs"},
        "trace_id": text,
        "span_id": text,
        "response_id": {**_STRING_OR_NULL, "description": "the provider's id of the response"},
        "service": _STRING_OR_NULL,
        "environment": _STRING_OR_NULL,
        "api": _STRING_OR_NULL,
        "operation": _STRING_OR_NULL,
        "provider": text,
        "model": text,
        "user": {**_STRING_OR_NULL, "description": "the user id (the report's user key; filter with user_id)"},
        "tags": {"type": "array", "items": text},
        "conversation_id": {
            **_STRING_OR_NULL,
            "description": "the conversation (session, thread) of the call; group_by=conversation reports by it",
        },
        "credential_type": {"type": "string", "enum": list(CREDENTIAL_TYPES)},
        **{name: dict(_INT) for name in TOKEN_COLUMNS},
        "total_cost": {
            **_MONEY_OR_NULL,
            "description": f"What you pay for the call (0 for BYOK by default). {_MONEY['description']}; null when "
            "the call has no known price (price_status), never 0.",
        },
        "market_cost": {**_MONEY_OR_NULL, "description": "List price of the call; null when it has none."},
        "price_status": {"type": "string", "enum": [PRICED, UNPRICED, NO_USAGE]},
        "duration_ms": {"type": ["number", "null"]},
        "streamed": {"type": "boolean"},
        "status": text,
        "error_type": _STRING_OR_NULL,
    }
    props["input_tokens"]["description"] = "Includes cached input tokens."
    props["output_tokens"]["description"] = "Includes reasoning tokens."
    assert tuple(props) == REQUEST_COLUMNS
    return {"type": "object", "required": list(REQUEST_COLUMNS), "properties": props}


def _requests_ok() -> dict:
    ok = _ok(
        {
            "type": "object",
            "required": ["results", "next_cursor"],
            "properties": {
                "results": {"type": "array", "items": _request_row()},
                "next_cursor": {
                    **_STRING_OR_NULL,
                    "description": "pass it as cursor for the next page; null on the last page",
                },
            },
        },
        "One page of calls, newest first.",
    )
    ok["headers"]["X-Result-Truncated"]["description"] = "true when there is a next page (CSV has no next_cursor)"
    return ok


def _budget_parameters() -> list[dict]:
    return [
        _param("budget", {"type": "string"}, "Only the budget with this name."),
        _AS_OF,
        _limit(100, "rows per budget that applies to each value (the highest percent first)"),
        _FORMAT,
    ]


def _budget_row() -> dict:
    props: dict[str, Any] = {
        "budget": {"type": "string"},
        "scope": {"type": "string", "enum": list(SCOPES)},
        "value": {**_STRING_OR_NULL, "description": "the user, tag, model, ... the row is about; null for total"},
        "period": {"type": "string", "enum": list(PERIODS)},
        "period_start": {"type": "string", "format": "date"},
        "period_end": {"type": ["string", "null"], "format": "date", "description": "last day; null for none"},
        "amount": _MONEY,
        "spend": {**_MONEY_OR_NULL, "description": f"Spend of the priced requests this period; {_UNKNOWN_COST}"},
        "remaining": {
            **_MONEY_OR_NULL, "description": "amount - spend (negative when over budget); null when spend is",
        },
        "percent": {"type": ["number", "null"], "description": "spend / amount, in percent, to 0.01; null when spend is"},
        "projected_spend": {
            **_MONEY_OR_NULL,
            "description": "spend plus the trailing min(period, 7 days) spend rate over the rest of the period; "
            "null for period none or when spend is null",
        },
        "projected_percent": {"type": ["number", "null"]},
        "thresholds": {"type": "array", "items": _DECIMAL},
        "crossed": {"type": "array", "items": _DECIMAL},
        "count_byok": {"type": "boolean"},
        "unpriced_request_count": _UNPRICED_COUNT,
    }
    assert tuple(props) == BUDGET_COLUMNS
    return {"type": "object", "required": list(BUDGET_COLUMNS), "properties": props}


def _margin_parameters() -> list[dict]:
    return [
        _param("start_date", _DATE, "First day, inclusive (UTC). Default: the first of end_date's month."),
        _param("end_date", _DATE, f"Last day, inclusive (UTC). Default: today. At most {MAX_RANGE_DAYS} days."),
        _param("by", {"type": "string", "enum": list(MARGIN_VIEWS), "default": "customer"},
               "customer, plan or feature margins; upgrade: customers near their plan's upgrade point."),
        _param("tag", {"type": "string", "examples": ["plan:free"]},
               "by=upgrade: the tag whose users to check (default: the first plan with an allowance)."),
        _param("allowance", {"type": "number", "minimum": 0},
               "by=upgrade: USD of cost per month the plan carries (default: the plan's allowance)."),
        _param("threshold", {"type": "number", "minimum": 0},
               "by=upgrade: list users whose cost in the period reached this many USD."),
        _param("percent", {"type": "number", "minimum": 0},
               "by=upgrade: list users whose cost reached this percent of the allowance (default 80)."),
        _limit(MAX_ROWS, "rows"),
        _FORMAT,
    ]


def _margin_row(by: str) -> dict:
    known: dict[str, Any] = {
        "user": _STRING_OR_NULL,
        "plan": _STRING_OR_NULL,
        "feature": _STRING_OR_NULL,
        "tag": {"type": "string"},
        "customers": _INT,
        "revenue": {**_MONEY_OR_NULL, "description": "null when no plan or contract prices the customer"},
        "cost": {**_MONEY_OR_NULL, "description": f"What you pay for the row's requests; {_UNKNOWN_COST}"},
        "margin": {**_MONEY_OR_NULL, "description": "revenue - cost; null when either is unknown"},
        "margin_percent": {"type": ["number", "null"]},
        "allowance": _MONEY_OR_NULL,
        "percent_of_allowance": {"type": ["number", "null"]},
        "request_count": _INT,
        "tokens": {**_INT, "description": "input + output tokens"},
        "cost_per_request": _MONEY_OR_NULL,
        "cost_per_1k_tokens": _MONEY_OR_NULL,
        "cost_per_customer": _MONEY_OR_NULL,
        "unpriced_request_count": _UNPRICED_COUNT,
    }
    columns = MARGIN_COLUMNS[by]
    return {"type": "object", "required": list(columns), "properties": {c: known[c] for c in columns}}


def _spike_parameters() -> list[dict]:
    defaults = ", ".join(f"{w}/{s}: {n}" for (w, s), n in DEFAULT_BASELINE.items())
    return [
        _param("dimension", {"type": "string", "enum": list(DIMENSIONS), "default": "model"},
               "What to compare value by value (total: everything together)."),
        _param("window", {"type": "string", "enum": list(WINDOWS), "default": "day"},
               "Compare the latest complete hour or day (see partial)."),
        _param("seasonality", {"type": "string", "enum": list(SEASONALITIES)},
               "Baseline windows: weekly = same weekday (default for day), daily = same hour of day (default "
               "for hour), none = the windows just before."),
        _param("baseline", {"type": "integer", "minimum": MIN_BASELINE, "maximum": MAX_BASELINE},
               f"Number of baseline windows (defaults: {defaults})."),
        _param("metric", {"type": "string", "enum": list(SPIKE_METRICS), "default": "total_cost"},
               "What to compare."),
        _param("threshold", {"type": "number", "exclusiveMinimum": 0, "default": float(DEFAULT_THRESHOLD)},
               "Robust score (observed - median) / (1.4826 * MAD) from which a value is a spike."),
        _param("min_increase", {"type": "number", "minimum": 0},
               "Smallest increase over the median that can be a spike (default: 0.01 USD, 1 request, "
               "1000 tokens)."),
        _AS_OF,
        _param("partial", {"type": "boolean", "default": False},
               "Compare the window in progress (so far) with the same part of the baseline windows."),
        _param("include_all", {"type": "boolean", "default": False},
               "List every value with its score, not only the spikes."),
        _limit(MAX_ROWS, "rows, highest score first"),
        _FORMAT,
    ]


def _spike_row() -> dict:
    props: dict[str, Any] = {
        "dimension": {"type": "string", "enum": list(DIMENSIONS)},
        "value": _STRING_OR_NULL,
        "observed": {
            "type": ["number", "null"],
            "description": "the latest window's value; for a cost metric, null when none of the value's requests in "
            "it has a known price (unknown, never 0: then score and ratio are null and it is no spike)",
        },
        "expected": {**_DECIMAL, "description": "median of the baseline windows"},
        "mad": {**_DECIMAL, "description": "median absolute deviation of the baseline"},
        "score": {"type": ["number", "null"], "description": "null when observed is"},
        "ratio": {"type": ["number", "null"], "description": "observed / expected"},
        "spike": {"type": "boolean"},
    }
    assert tuple(props) == SPIKE_COLUMNS
    return {"type": "object", "required": list(SPIKE_COLUMNS), "properties": props}


def _error_response(description: str) -> dict:
    schema = {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ok(schema: dict, description: str) -> dict:
    return {
        "description": description,
        "headers": {
            "X-Result-Truncated": {
                "description": "true when more rows matched than were returned",
                "schema": {"type": "string", "enum": ["true"]},
            }
        },
        "content": {
            "application/json": {"schema": schema},
            "text/csv": {"schema": {"type": "string"}, "description": "a header line, then one line per row"},
        },
    }


def _results(row: dict, **extra: Any) -> dict:
    return {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {"type": "array", "items": row},
            "truncated": {"type": "boolean", "description": "present (true) only when rows were cut"},
            **extra,
        },
    }


def _operation(
    op_id: str, summary: str, description: str, params: list[dict], ok: dict, *, configured: str = ""
) -> dict:
    responses = {
        "200": ok,
        "400": _error_response(
            "A bad parameter, or one this endpoint does not take (a misspelt filter is never ignored): the message "
            "names it and says what is accepted, e.g. \"unknown parameter 'user'; did you mean 'user_id'?\" "
            "(invalid_request_error)."
        ),
        "401": _error_response("Missing or wrong bearer token (authentication_error)."),
        "500": _error_response("The query failed (api_error)."),
        "503": {
            **_error_response(
                "Too many queries at once (every query thread busy and the queue full): nothing was run; retry after "
                "the Retry-After delay (overloaded_error)."
            ),
            "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
        },
    }
    if configured:
        responses["404"] = _error_response(configured)
    return {
        "get": {
            "operationId": op_id,
            "summary": summary,
            "description": description,
            "parameters": params,
            "responses": responses,
        }
    }


def _version() -> str:
    try:
        return metadata.version("tokentrail")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def openapi_document() -> dict[str, Any]:
    margin_rows = {"oneOf": [_margin_row(by) for by in MARGIN_VIEWS]}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "TokenTrail API",
            "version": _version(),
            "description": (
                "Cost and usage of LLM API calls, from TokenTrail's Parquet dataset. /v1/report is compatible with "
                "Vercel AI Gateway's Custom Reporting API. Costs are exact decimals written as JSON numbers "
                "(parse them as decimals, not floats, to keep every digit). Bounds: a date range of at most "
                f"{MAX_RANGE_DAYS} days and at most {MAX_ROWS} rows per result; a result cut at the bound says "
                '"truncated": true.'
            ),
        },
        "security": [{"bearerAuth": []}],
        "paths": {
            "/v1/report": _operation(
                "getReport",
                "Cost and usage grouped by day, user, model, tag, provider, credential type, ...",
                "Vercel AI Gateway Custom Reporting parameters plus extensions (more groups, week and month, "
                "order_by, limit). Rows are sorted by order_by, then time bucket, then total_cost desc.",
                _report_parameters(),
                _ok(_results(_report_row()), "One row per group."),
            ),
            "/v1/budgets": _operation(
                "getBudgets",
                "Budget status: spend, remaining, percent and projected end-of-period spend",
                "One row per budget and value (budgets for each value list those with spend this period).",
                _budget_parameters(),
                _ok(_results(_budget_row()), "Budget status."),
                configured="The server was started without a budgets file.",
            ),
            "/v1/margins": _operation(
                "getMargins",
                "Revenue, cost and margin per customer, plan or feature; customers near the upgrade point",
                "Revenue from the server's revenue file (plans by tag, customer contracts), monthly amounts "
                "prorated by day; cost per request and per 1k tokens.",
                _margin_parameters(),
                _ok(
                    _results(
                        margin_rows,
                        start_date={"type": "string", "format": "date"},
                        end_date={"type": "string", "format": "date"},
                        by={"type": "string", "enum": list(MARGIN_VIEWS)},
                        totals={"type": "object"},
                    ),
                    "Margins.",
                ),
                configured="The server was started without a revenue file.",
            ),
            "/v1/spikes": _operation(
                "getSpikes",
                "Values whose latest hour or day is far above their usual (median and MAD of a seasonal baseline)",
                "Rows are the spikes (or every value with include_all), highest robust score first.",
                _spike_parameters(),
                _ok(
                    _results(
                        _spike_row(),
                        window_start={"type": "string", "format": "date-time"},
                        window_end={"type": "string", "format": "date-time"},
                        baseline_windows={"type": "integer"},
                        note={"type": "string", "description": "why there is no judgement, when there is none"},
                    ),
                    "Spikes.",
                ),
            ),
            "/v1/requests": _operation(
                "getRequests",
                "The calls behind a number: one row per stored call, newest first, a page at a time",
                "The same dates and filters as /v1/report select the same calls: over all pages their total_cost "
                "adds up to the report's and their number is its request_count. Ties on the timestamp are broken "
                "by trace_id, span_id and response_id (descending); pages are keyset pages (next_cursor), so no "
                "call is repeated or skipped across them.",
                _requests_parameters(),
                _requests_ok(),
            ),
            "/healthz": {
                "get": {
                    "operationId": "getHealth",
                    "summary": "Liveness probe",
                    "security": [],
                    "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"status": {"const": "ok"}}}}}}},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenAPI",
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {
                        "schema": {"type": "object"}}}}},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required when the server has a token (TOKENTRAIL_API_TOKEN).",
                }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {
                                    "type": "string",
                                    "enum": [
                                        "invalid_request_error",
                                        "authentication_error",
                                        "not_found_error",
                                        "api_error",
                                    ],
                                },
                            },
                        }
                    },
                }
            },
        },
    }
    return doc
