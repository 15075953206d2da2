"""A newcomer's first hour with the HTTP API and MCP (issue 12): a misspelt parameter is refused, not ignored; an
unknown cost is null, not $0; a port in use is one line naming it. Each test is the newcomer's step."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from mcp.server.mcpserver.exceptions import ToolError
from tokentrail.processor.api.http import APIListenError, ReportServer
from tokentrail.processor.api.mcp import build_server
from tokentrail.processor.reports.budgets import budgets_from_dict
from tokentrail.processor.reports.revenue import revenue_from_dict
from tokentrail.processor.schema import NO_USAGE, UNPRICED

from tests.helpers.reports import rec_n as rec
from tests.helpers.reports import write_day

BUDGETS = budgets_from_dict({"budgets": [{"name": "all", "scope": "total", "amount": 10, "period": "monthly"}]})
REVENUE = revenue_from_dict({"plans": {"pro": {"monthly": 30}}})
PERIOD = "start_date=2025-03-01&end_date=2025-03-31"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_day(tmp_path, "2025-03-05", [
        rec(1, "2025-03-05T08:00:00", user_id="cust_1", total_cost=Decimal("0.25"), market_cost=Decimal("0.5")),
        rec(2, "2025-03-05T09:00:00", user_id="cust_2", total_cost=Decimal("4"), market_cost=Decimal("8")),
        # cust_3's model has no known price, and one call stated no usage: nothing of theirs has a known cost.
        rec(3, "2025-03-05T10:00:00", user_id="cust_3", model="acme-llm", tags=["plan:pro"], total_cost=None,
            market_cost=None, price_status=UNPRICED),
        rec(4, "2025-03-05T11:00:00", user_id="cust_3", model="acme-llm", tags=["plan:pro"], total_cost=None,
            market_cost=None, price_status=NO_USAGE),
    ])
    return tmp_path


@pytest.fixture
def server(data_dir: Path) -> Iterator[ReportServer]:
    with ReportServer(data_dir, port=0, budgets=BUDGETS, revenue=REVENUE) as srv:
        yield srv


def get(server: ReportServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --- a misspelt parameter is a 400 naming it, never the unfiltered answer ----------------------------------------


def test_user_instead_of_user_id_is_a_400_suggesting_user_id(server: ReportServer) -> None:
    status, body = get(server, f"/v1/report?{PERIOD}&group_by=none&user=cust_1")
    assert status == 400, body  # was 200 with everyone's $4.25
    assert json.loads(body) == {"error": {
        "message": "unknown parameter 'user'; did you mean 'user_id'?", "type": "invalid_request_error"}}


@pytest.mark.parametrize(("path", "message"), [
    (f"/v1/report?{PERIOD}&group-by=user", "unknown parameter 'group-by'; did you mean 'group_by'?"),
    (f"/v1/report?{PERIOD}&Model=gpt-4o-mini", "unknown parameter 'Model'; did you mean 'model'?"),
    (f"/v1/report?{PERIOD}&fromat=csv", "unknown parameter 'fromat'; did you mean 'format'?"),
    ("/v1/budgets?budgets=all", "unknown parameter 'budgets'; did you mean 'budget'?"),
    ("/v1/margins?start=2025-03-01", "unknown parameter 'start'; did you mean 'start_date'?"),
    ("/v1/spikes?dimensions=user", "unknown parameter 'dimensions'; did you mean 'dimension'?"),
    ("/v1/spikes?colour=red", "unknown parameter 'colour'; known parameters: dimension, window, seasonality"),
])
def test_every_endpoint_refuses_a_name_it_does_not_read(server: ReportServer, path: str, message: str) -> None:
    status, body = get(server, path)
    assert status == 400, body
    assert json.loads(body)["error"]["message"].startswith(message)


def test_format_is_still_a_parameter_of_every_endpoint(server: ReportServer) -> None:
    for path in (f"/v1/report?{PERIOD}", "/v1/budgets?", "/v1/margins?", "/v1/spikes?"):
        status, body = get(server, path + "&format=csv")
        assert status == 200, (path, body)


def test_the_openapi_400_says_unknown_names_are_refused(server: ReportServer) -> None:
    _, body = get(server, "/openapi.json")
    described = json.loads(body)["paths"]["/v1/report"]["get"]["responses"]["400"]["description"]
    assert "did you mean 'user_id'?" in described


async def test_an_mcp_tool_refuses_an_argument_it_does_not_take(data_dir: Path) -> None:
    server = build_server(data_dir, budgets=BUDGETS)
    with pytest.raises(ToolError, match=r"^unknown argument 'user'; did you mean 'user_id'\?$"):
        await server.call_tool("report", {"start_date": "2025-03-01", "end_date": "2025-03-31", "user": "cust_1"})
    with pytest.raises(ToolError, match=r"unknown argument 'as_off'; did you mean 'as_of'\?"):
        await server.call_tool("budgets", {"as_off": "2025-03-31"})
    good: Any = await server.call_tool("report", {"start_date": "2025-03-01", "end_date": "2025-03-31",
                                                  "group_by": ["none"], "user_id": "cust_1"})
    assert good.structured_content["results"][0]["total_cost"] == 0.25


# --- an unknown cost is null, never $0 --------------------------------------------------------------------------


def test_http_gives_null_costs_for_a_user_whose_calls_are_all_unpriced(server: ReportServer) -> None:
    status, body = get(server, f"/v1/report?{PERIOD}&group_by=user")
    assert status == 200
    rows = {row["user"]: row for row in json.loads(body, parse_float=Decimal)["results"]}
    assert rows["cust_3"]["total_cost"] is None and rows["cust_3"]["market_cost"] is None  # was 0 and 0
    assert rows["cust_3"]["unpriced_request_count"] == rows["cust_3"]["request_count"] == 2
    assert rows["cust_1"]["total_cost"] == Decimal("0.25")
    _, csv_body = get(server, f"/v1/report?{PERIOD}&group_by=user&format=csv")
    (line,) = [line for line in csv_body.splitlines() if line.startswith("cust_3,")]
    assert line.split(",")[1:3] == ["", ""]


def test_a_partly_priced_total_keeps_the_sum_of_the_priced_and_counts_the_rest(server: ReportServer) -> None:
    _, body = get(server, f"/v1/report?{PERIOD}&group_by=none")
    (row,) = json.loads(body, parse_float=Decimal)["results"]
    assert (row["total_cost"], row["market_cost"]) == (Decimal("4.25"), Decimal("8.5"))
    assert (row["request_count"], row["unpriced_request_count"]) == (4, 2)


def test_http_margins_of_a_customer_with_unknown_cost_are_unknown_not_100_percent(server: ReportServer) -> None:
    _, body = get(server, "/v1/margins?start_date=2025-03-01&end_date=2025-03-31")
    rows = {row["user"]: row for row in json.loads(body, parse_float=Decimal)["results"]}
    cust_3 = rows["cust_3"]
    assert cust_3["revenue"] == Decimal(30)
    assert cust_3["cost"] is None and cust_3["margin"] is None and cust_3["margin_percent"] is None  # was 100.00
    assert cust_3["cost_per_request"] is None and cust_3["unpriced_request_count"] == 2


async def test_mcp_gives_null_costs_too(data_dir: Path) -> None:
    server = build_server(data_dir)
    result: Any = await server.call_tool("report", {"start_date": "2025-03-01", "end_date": "2025-03-31",
                                                   "group_by": ["user"]})
    rows = {row["user"]: row for row in result.structured_content["results"]}
    assert rows["cust_3"]["total_cost"] is None and rows["cust_3"]["market_cost"] is None


def test_openapi_says_why_a_cost_may_be_null(server: ReportServer) -> None:
    _, body = get(server, "/openapi.json")
    spec = json.loads(body)
    row = spec["paths"]["/v1/report"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    cost = row["properties"]["results"]["items"]["properties"]["total_cost"]
    assert cost["type"] == ["number", "null"]
    assert "null when no request of the row has a known price" in cost["description"]


# --- a port in use ----------------------------------------------------------------------------------------------


def test_a_port_in_use_is_one_line_naming_it_and_the_option(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ReportServer(data_dir, port=port)
        with pytest.raises(APIListenError) as caught:
            server.start()
    message = str(caught.value)
    assert message == (
        f"cannot listen for the report API on 127.0.0.1:{port}: port {port} is already in use (another tokentrail "
        "serve?); stop what holds it or choose another port with --api-port"
    )
    assert isinstance(caught.value, OSError)  # what `tokentrail serve` already prints as one line
    server.stop()  # never started: nothing to stop, and no error
