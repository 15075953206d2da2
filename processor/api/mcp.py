"""``tokentrail mcp``: the report, budgets, margins, spikes and the calls behind them as MCP tools, so an agent can
ask live questions ("which customers cost the most this week?", "which calls were they?") over stdio.

Each tool takes typed parameters, turns them into the HTTP API's query parameters and answers through the same
function the HTTP endpoint uses: an agent gets the rows ``GET /v1/...`` would return, as the same exact JSON text
(costs with every digit) plus the parsed object as structured content. A bad parameter is a tool error whose
message says what to fix, as the HTTP API's 400 does; so is an argument the tool does not take (the SDK would drop it
silently, and ``user`` for ``user_id`` would answer for everyone), with the closest name it does take.

Needs the ``mcp`` extra (``pip install 'tokentrail[mcp]'``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import Field
from tokentrail.processor.reports.budgets import BudgetsConfig, budgets_body, budgets_from_params, load_budgets
from tokentrail.processor.reports.errors import ReportError
from tokentrail.processor.reports.formatting import exact_json, report_json
from tokentrail.processor.reports.margins import margins_from_params
from tokentrail.processor.reports.params import refuse_unknown
from tokentrail.processor.reports.query import ReportQuery
from tokentrail.processor.reports.report import Report
from tokentrail.processor.reports.requests import DEFAULT_LIMIT, MAX_LIMIT, requests_from_params, requests_json
from tokentrail.processor.reports.revenue import RevenueConfig, load_revenue
from tokentrail.processor.reports.spikes import spikes_from_params

__all__ = ["DEFAULT_TOOL_LIMIT", "build_server", "run_stdio"]

DEFAULT_TOOL_LIMIT = 100  # rows per answer unless the agent asks for more: a context window is not a spreadsheet

Group = Literal[
    "day", "user", "model", "tag", "provider", "credential_type", "service", "api", "environment", "operation",
    "conversation", "trace", "none",
]
Service = Annotated[str | None, Field(description="only this service (service.name)")]
Environment = Annotated[str | None, Field(description="only this deployment environment")]
Api = Annotated[str | None, Field(description="only this API, e.g. openai.chat_completions")]
Operation = Annotated[str | None, Field(description="only this operation: chat, embeddings, ...")]
ConversationId = Annotated[
    str | None, Field(description="only this conversation (gen_ai.conversation.id or a session/thread id)")
]
TraceId = Annotated[str | None, Field(description="only this trace (32 hex digits): one agent run or request")]
Dimension = Literal["model", "provider", "user", "tag", "credential_type", "service", "environment", "total"]
Metric = Literal[
    "total_cost", "market_cost", "input_tokens", "output_tokens", "cached_input_tokens",
    "cache_creation_input_tokens", "reasoning_tokens", "request_count",
]
Date = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD, UTC")]
Limit = Annotated[
    int, Field(ge=1, le=10_000, description='at most this many rows; with more, the answer has "truncated": true')
]

_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)

INSTRUCTIONS = (
    "TokenTrail knows what every LLM API call cost and who and what it was for. Use `report` for cost and usage "
    "grouped by day, user (customer), model, tag (plan:..., feature:...), provider, credential type (byok = "
    "the customer's own key), conversation or trace (one agent run); `budgets` for budget status; `margins` for revenue against cost per customer, "
    "plan or feature; `spikes` for what spends far more than usual; `requests` for the calls behind a number "
    "(one row per call, newest first, with the same filters as `report`). Costs are USD; total_cost is what we pay, "
    "market_cost the list price. Dates are UTC days, inclusive."
)


def _params(**values: object) -> dict[str, str]:
    """Tool arguments as HTTP query parameters: the HTTP API's parser then validates them the same way."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = str(value)
    return out


def _result(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=json.loads(text))


async def _answer(compute: Callable[[], str]) -> CallToolResult:
    try:
        text = await anyio.to_thread.run_sync(compute)  # DuckDB work off the event loop
    except ReportError as exc:
        raise ToolError(str(exc)) from None
    return _result(text)


class _StrictServer(MCPServer[Any]):
    """Refuses tool arguments the tool does not take: the SDK validates the ones it knows and drops the rest."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        for tool in await self.list_tools():
            if tool.name == name:  # an unknown tool is the SDK's to answer
                _refuse_unknown_arguments(tuple(tool.input_schema.get("properties", {})), arguments)
        return await super().call_tool(name, arguments, context)


def _refuse_unknown_arguments(known: tuple[str, ...], arguments: Mapping[str, object]) -> None:
    try:
        refuse_unknown(arguments, known, "argument")
    except ReportError as exc:
        raise ToolError(str(exc)) from None


def _version() -> str:
    try:
        return metadata.version("tokentrail")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def build_server(
    data_dir: str | os.PathLike[str],
    *,
    budgets: BudgetsConfig | str | os.PathLike[str] | None = None,
    revenue: RevenueConfig | str | os.PathLike[str] | None = None,
) -> MCPServer[Any]:
    report = Report(data_dir)
    budgets_config = load_budgets(budgets) if budgets is not None else None
    revenue_config = load_revenue(revenue) if revenue is not None else None
    server: MCPServer[Any] = _StrictServer("tokentrail", instructions=INSTRUCTIONS, version=_version())

    @server.tool(
        name="report",
        description=(
            "Cost and usage between two UTC days (inclusive, at most 366 days), one row per group; the same rows "
            "as GET /v1/report (Vercel AI Gateway compatible). E.g. the top customers this week: "
            "group_by=['user'], order_by='total_cost', limit=10. Tag rows overlap (a request counts in each of "
            "its tags). group_by=['none'] gives one total row."
        ),
        annotations=_READ_ONLY,
    )
    async def report_tool(
        start_date: Date,
        end_date: Date,
        group_by: Annotated[list[Group], Field(description="groups; each row has a key per group")] = [  # noqa: B006
            "day"
        ],
        date_part: Annotated[
            Literal["hour", "day", "week", "month"] | None, Field(description="time bucket added to every row")
        ] = None,
        user_id: Annotated[str | None, Field(description="only this user (customer)")] = None,
        model: str | None = None,
        provider: str | None = None,
        credential_type: Literal["byok", "system"] | None = None,
        service: Service = None,
        environment: Environment = None,
        api: Api = None,
        operation: Operation = None,
        conversation_id: ConversationId = None,
        trace_id: TraceId = None,
        tags: Annotated[list[str] | None, Field(description="only requests with these tags")] = None,
        tags_match: Literal["any", "all"] = "any",
        order_by: Annotated[
            str | None, Field(description="a metric or row key, optionally ':asc' or ':desc', e.g. 'total_cost'")
        ] = None,
        limit: Limit = DEFAULT_TOOL_LIMIT,
    ) -> CallToolResult:
        params = _params(
            start_date=start_date, end_date=end_date, group_by=group_by, date_part=date_part, user_id=user_id,
            model=model, provider=provider, credential_type=credential_type, service=service, environment=environment,
            api=api, operation=operation, conversation_id=conversation_id, trace_id=trace_id, tags=tags,
            tags_match=tags_match, order_by=order_by, limit=limit,
        )
        return await _answer(lambda: report_json(report.run(ReportQuery.from_params(params))))

    @server.tool(
        name="budgets",
        description=(
            "Budget status: per budget (and per user, tag, ... for budgets on each value) the spend this "
            "period, remaining, percent of the amount and projected end-of-period spend. Needs the server "
            "started with --budgets FILE."
        ),
        annotations=_READ_ONLY,
    )
    async def budgets_tool(
        budget: Annotated[str | None, Field(description="only the budget with this name")] = None,
        as_of: Annotated[str | None, Field(description="YYYY-MM-DD or ISO date-time, UTC; default now")] = None,
        limit: Limit = DEFAULT_TOOL_LIMIT,
    ) -> CallToolResult:
        def compute() -> str:
            if budgets_config is None:
                raise ReportError("no budgets are configured: start `tokentrail mcp` with --budgets FILE")
            rows, truncated = budgets_from_params(
                report.data_dir, budgets_config, _params(budget=budget, as_of=as_of, limit=limit)
            )
            return exact_json(budgets_body(rows, truncated))

        return await _answer(compute)

    @server.tool(
        name="margins",
        description=(
            "Revenue, cost, margin and margin % per customer, plan or feature over a period (default: this "
            "month), with cost per request and per 1k tokens; by='upgrade' lists customers of a tag (e.g. "
            "plan:free) whose cost nears the plan's allowance. Needs the server started with --revenue FILE."
        ),
        annotations=_READ_ONLY,
    )
    async def margins_tool(
        start_date: Date | None = None,
        end_date: Date | None = None,
        by: Literal["customer", "plan", "feature", "upgrade"] = "customer",
        tag: Annotated[str | None, Field(description="by=upgrade: e.g. plan:free")] = None,
        allowance: Annotated[float | None, Field(ge=0, description="by=upgrade: USD per month")] = None,
        threshold: Annotated[float | None, Field(ge=0, description="by=upgrade: USD in the period")] = None,
        percent: Annotated[float | None, Field(ge=0, description="by=upgrade: percent of allowance")] = None,
        limit: Limit = DEFAULT_TOOL_LIMIT,
    ) -> CallToolResult:
        def compute() -> str:
            if revenue_config is None:
                raise ReportError("no revenue file is configured: start `tokentrail mcp` with --revenue FILE")
            result = margins_from_params(
                report.data_dir,
                revenue_config,
                _params(start_date=start_date, end_date=end_date, by=by, tag=tag, allowance=allowance,
                        threshold=threshold, percent=percent, limit=limit),
            )
            return exact_json(result.body())

        return await _answer(compute)

    @server.tool(
        name="spikes",
        description=(
            "What spends far more than usual: the latest complete hour or day of each model (or user, tag, "
            "...) against the median and MAD of the same weekday (days) or hour of day (hours) before. "
            "Returns spikes with observed, expected and a robust score."
        ),
        annotations=_READ_ONLY,
    )
    async def spikes_tool(
        dimension: Dimension = "model",
        window: Literal["hour", "day"] = "day",
        seasonality: Literal["weekly", "daily", "none"] | None = None,
        baseline: Annotated[int | None, Field(ge=3, le=60, description="number of baseline windows")] = None,
        metric: Metric = "total_cost",
        threshold: Annotated[float, Field(gt=0)] = 3.5,
        min_increase: Annotated[float | None, Field(ge=0)] = None,
        as_of: Annotated[str | None, Field(description="YYYY-MM-DD or ISO date-time, UTC; default now")] = None,
        partial: Annotated[bool, Field(description="compare the window in progress so far")] = False,
        include_all: Annotated[bool, Field(description="list every value, not only spikes")] = False,
        limit: Limit = DEFAULT_TOOL_LIMIT,
    ) -> CallToolResult:
        params = _params(
            dimension=dimension, window=window, seasonality=seasonality, baseline=baseline, metric=metric,
            threshold=threshold, min_increase=min_increase, as_of=as_of, partial=partial, include_all=include_all,
            limit=limit,
        )
        return await _answer(lambda: exact_json(spikes_from_params(report.data_dir, params).body()))

    @server.tool(
        name="requests",
        description=(
            "The calls behind a number: one row per stored LLM call between two UTC days (inclusive), newest "
            "first, with its trace_id, model, user, tags, tokens, cost and status; the same rows as "
            "GET /v1/requests. The filters are the report's, so the calls of a report row are the ones counted in "
            "it. A page holds `limit` calls; pass its next_cursor as `cursor` (with the same dates and filters) for "
            "the next, until next_cursor is null."
        ),
        annotations=_READ_ONLY,
    )
    async def requests_tool(
        start_date: Date,
        end_date: Date,
        user_id: Annotated[str | None, Field(description="only this user (customer)")] = None,
        model: str | None = None,
        provider: str | None = None,
        credential_type: Literal["byok", "system"] | None = None,
        service: Service = None,
        environment: Environment = None,
        api: Api = None,
        operation: Operation = None,
        conversation_id: ConversationId = None,
        trace_id: TraceId = None,
        tags: Annotated[list[str] | None, Field(description="only calls with these tags")] = None,
        tags_match: Literal["any", "all"] = "any",
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="calls per page")] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, Field(description="the previous page's next_cursor, unchanged")] = None,
    ) -> CallToolResult:
        params = _params(
            start_date=start_date, end_date=end_date, user_id=user_id, model=model, provider=provider,
            credential_type=credential_type, service=service, environment=environment, api=api, operation=operation,
            conversation_id=conversation_id, trace_id=trace_id, tags=tags, tags_match=tags_match, limit=limit,
            cursor=cursor,
        )
        return await _answer(lambda: requests_json(requests_from_params(report.data_dir, params)))

    return server


def run_stdio(
    data_dir: str | os.PathLike[str],
    *,
    budgets: str | os.PathLike[str] | None = None,
    revenue: str | os.PathLike[str] | None = None,
) -> None:
    """Serve over stdin/stdout until the client closes stdin."""
    build_server(Path(data_dir), budgets=budgets, revenue=revenue).run("stdio")

