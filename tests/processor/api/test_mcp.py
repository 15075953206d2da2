"""``tokentrail mcp``, spoken to by a real MCP client session over stdio, as an agent would."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.server.mcpserver.exceptions import ToolError
from tokentrail.processor.api.mcp import build_server
from tokentrail.processor.reports.formatting import exact_json, report_json
from tokentrail.processor.reports.margins import margins_from_params
from tokentrail.processor.reports.query import ReportQuery
from tokentrail.processor.reports.report import run_report
from tokentrail.processor.reports.revenue import load_revenue

from tests.helpers.reports import rec, write


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    now = datetime.now(UTC)
    today = now.strftime("%Y-%m-%dT00:00:00")
    write(tmp_path / "data", [
        rec(today, user_id="big-spender", tags=["plan:pro"], total_cost=Decimal("12.000000000001"),
            conversation_id="chat-1", trace_id="1" * 32),
        rec(today, user_id="big-spender", tags=["plan:pro"], total_cost=Decimal("3"), conversation_id="chat-1",
            trace_id="2" * 32),
        rec(today, user_id="modest", tags=["plan:free"], total_cost=Decimal("0.25")),
        rec(today, user_id="tiny", tags=["plan:free"], total_cost=Decimal("0.01")),
    ])
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budgets]]\nname = "company"\namount = 20\nperiod = "daily"\n')
    revenue = tmp_path / "revenue.toml"
    revenue.write_text("[plans.pro]\nmonthly = 50\n[plans.free]\nmonthly = 0\nallowance = 0.2\n")
    return {"data": tmp_path / "data", "budgets": budgets, "revenue": revenue}


def text(result: Any) -> str:
    (content,) = result.content
    return str(content.text)


async def test_an_agent_asks_which_customers_cost_the_most_this_week(setup: dict[str, Path]) -> None:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "tokentrail.processor.cli.main", "mcp", "--data-dir", str(setup["data"]),
              "--budgets", str(setup["budgets"]), "--revenue", str(setup["revenue"])],
    )
    today = datetime.now(UTC).date()
    week_ago = today.fromordinal(today.toordinal() - 6)
    async with stdio_client(server) as (read, write_stream), ClientSession(read, write_stream) as session:
        init = await session.initialize()
        assert init.server_info.name == "tokentrail"
        assert "TokenTrail" in (init.instructions or "")

        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == {"report", "requests", "budgets", "margins", "spikes"}
        report_schema = tools["report"].input_schema
        assert report_schema["required"] == ["start_date", "end_date"]
        assert "user" in json.dumps(report_schema["properties"]["group_by"])
        assert tools["spikes"].input_schema["properties"]["window"]["enum"] == ["hour", "day"]
        assert all(tool.annotations and tool.annotations.read_only_hint for tool in tools.values())

        # "Which customers cost the most this week?"
        args = {"start_date": week_ago.isoformat(), "end_date": today.isoformat(), "group_by": ["user"],
                "order_by": "total_cost", "limit": 2}
        result = await session.call_tool("report", args)
        assert not result.is_error
        expected = run_report(setup["data"], ReportQuery.from_params(
            {"start_date": week_ago.isoformat(), "end_date": today.isoformat(), "group_by": "user",
             "order_by": "total_cost", "limit": "2"}))
        assert text(result) == report_json(expected)  # the HTTP body, byte for byte
        rows = json.loads(text(result), parse_float=Decimal)["results"]
        assert [(r["user"], r["total_cost"]) for r in rows] == [("big-spender", Decimal("15.000000000001")),
                                                               ("modest", Decimal("0.25"))]
        assert result.structured_content["truncated"] is True
        assert [r["user"] for r in result.structured_content["results"]] == ["big-spender", "modest"]

        # "What did each conversation cost, and which calls were in the costliest agent run?"
        args = {"start_date": today.isoformat(), "end_date": today.isoformat(), "group_by": ["conversation"],
                "order_by": "total_cost"}
        rows = json.loads(text(await session.call_tool("report", args)), parse_float=Decimal)["results"]
        assert [(r["conversation"], r["request_count"]) for r in rows] == [("chat-1", 2), (None, 2)]
        calls = await session.call_tool("requests", {"start_date": today.isoformat(), "end_date": today.isoformat(),
                                                     "trace_id": "1" * 32})
        (call,) = json.loads(text(calls), parse_float=Decimal)["results"]
        assert (call["conversation_id"], call["total_cost"]) == ("chat-1", Decimal("12.000000000001"))

        budgets = await session.call_tool("budgets", {})
        (row,) = json.loads(text(budgets), parse_float=Decimal)["results"]
        assert (row["budget"], row["spend"], row["percent"]) == ("company", Decimal("15.260000000001"),
                                                                 Decimal("76.30"))
        assert row["crossed"] == [50, 75]

        margins = await session.call_tool("margins", {"by": "upgrade"})
        assert not margins.is_error, text(margins)
        assert text(margins) == exact_json(margins_from_params(
            setup["data"], load_revenue(setup["revenue"]), {"by": "upgrade", "limit": "100"}).body())

        spikes = await session.call_tool("spikes", {"dimension": "user", "partial": True})
        assert not spikes.is_error and "results" in spikes.structured_content

        bad = await session.call_tool("report", {"start_date": today.isoformat(), "end_date": week_ago.isoformat()})
        assert bad.is_error and "is before start_date" in text(bad)
        bad = await session.call_tool("spikes", {"window": "fortnight"})
        assert bad.is_error


async def test_budgets_and_margins_without_their_files_say_what_to_pass(tmp_path: Path) -> None:
    server = build_server(tmp_path)
    with pytest.raises(ToolError, match="no budgets are configured: start `tokentrail mcp` with --budgets FILE"):
        await server.call_tool("budgets", {})
    with pytest.raises(ToolError, match="no revenue file is configured: start `tokentrail mcp` with --revenue FILE"):
        await server.call_tool("margins", {})
