"""``GET /v1/requests`` on a real server on loopback, and the same pages from ``tokentrail requests`` and the MCP
``requests`` tool: the calls behind a report's number, page by page, refused like every endpoint when asked wrong."""

from __future__ import annotations

import csv
import io
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jsonschema
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from tokentrail.processor.api.http import ReportServer, response_format
from tokentrail.processor.api.openapi import ENDPOINT_PARAMETERS, openapi_document
from tokentrail.processor.cli import main as cli
from tokentrail.processor.reports.query import QUERY_PARAMETERS
from tokentrail.processor.reports.requests import (
    DEFAULT_LIMIT,
    FILTER_PARAMETERS,
    MAX_LIMIT,
    REQUEST_COLUMNS,
    RequestsQuery,
)
from tokentrail.processor.schema import PRICED, UNPRICED, UsageRecord

from tests.helpers.reports import write

PATH = "/v1/requests"
PERIOD = {"start_date": "2025-03-01", "end_date": "2025-03-31"}


def calls() -> list[UsageRecord]:
    """Twelve calls over three days; four share one timestamp; one unpriced, two BYOK, tags on some."""
    out = []
    for i in range(12):
        day = (3, 5, 9)[i % 3]
        out.append(UsageRecord(
            timestamp=datetime(2025, 3, day, 10 if i < 4 else i, tzinfo=UTC),
            trace_id=f"{i % 5:032x}", span_id=f"{i:016x}", response_id=f"resp_{i}" if i % 2 else None,
            provider="anthropic" if i % 4 == 0 else "openai", model="claude-haiku-4-5" if i % 4 == 0 else "gpt-4o",
            user_id=("alice", "bob", None)[i % 3], tags=[["plan:pro"], ["plan:free", "feature:chat"], []][i % 3],
            credential_type="byok" if i in (2, 7) else "system", input_tokens=100 + i, output_tokens=10 + i,
            total_cost=None if i == 6 else Decimal(0) if i in (2, 7) else Decimal(i) / 3,
            market_cost=None if i == 6 else Decimal(i) / 3, price_status=UNPRICED if i == 6 else PRICED,
        ))
    return out


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write(tmp_path / "data", calls())
    return tmp_path / "data"


@pytest.fixture
def server(data_dir: Path) -> Iterator[ReportServer]:
    with ReportServer(data_dir, port=0) as srv:
        yield srv


def fetch(server: ReportServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, Message, str]:
    request = urllib.request.Request(server.url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


def pages(server: ReportServer, params: dict[str, str]) -> list[dict[str, Any]]:
    """Every page's body, following next_cursor."""
    bodies = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        status, headers, text = fetch(server, f"{PATH}?{urlencode(query)}")
        assert status == 200, text
        assert headers["Content-Type"].startswith("application/json")
        body = json.loads(text, parse_float=Decimal)
        bodies.append(body)
        cursor = body["next_cursor"]
        assert (headers["X-Result-Truncated"] == "true") == (cursor is not None)
        if cursor is None:
            return bodies


def newest_first(records: list[UsageRecord]) -> list[str]:
    ordered = sorted(records, key=lambda r: (r.timestamp, r.trace_id, r.span_id, r.response_id or ""), reverse=True)
    return [r.span_id for r in ordered]


def test_paging_over_http_lists_every_stored_call_once_newest_first(server: ReportServer) -> None:
    bodies = pages(server, {**PERIOD, "limit": "5"})
    assert [len(b["results"]) for b in bodies] == [5, 5, 2]
    assert [row["span_id"] for b in bodies for row in b["results"]] == newest_first(calls())
    assert list(bodies[0]["results"][0]) == list(REQUEST_COLUMNS)


@pytest.mark.parametrize("filters", [{}, {"user_id": "alice"}, {"model": "gpt-4o"}, {"provider": "anthropic"},
                                     {"credential_type": "byok"}, {"tags": "plan:free,plan:pro"},
                                     {"tags": "plan:free,feature:chat", "tags_match": "all"}])
def test_the_calls_of_a_filter_add_up_to_the_report_s_numbers(server: ReportServer, filters: dict[str, str]) -> None:
    rows = [row for b in pages(server, {**PERIOD, **filters, "limit": "2"}) for row in b["results"]]
    _, _, text = fetch(server, "/v1/report?" + urlencode({**PERIOD, **filters, "group_by": "none"}))
    (total,) = json.loads(text, parse_float=Decimal)["results"]
    assert len(rows) == total["request_count"]
    assert sum(row["total_cost"] or 0 for row in rows) == total["total_cost"]
    assert sum(row["input_tokens"] for row in rows) == total["input_tokens"]
    assert sum(row["total_cost"] is None for row in rows) == total["unpriced_request_count"]


def test_csv_holds_every_field_and_says_when_there_is_more(server: ReportServer) -> None:
    status, headers, text = fetch(server, f"{PATH}?" + urlencode({**PERIOD, "limit": "4", "format": "csv"}))
    assert status == 200
    assert headers["Content-Type"].startswith("text/csv")
    assert headers["X-Result-Truncated"] == "true"
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == list(REQUEST_COLUMNS)
    assert [line[REQUEST_COLUMNS.index("span_id")] for line in table[1:]] == newest_first(calls())[:4]
    _, headers, _ = fetch(server, f"{PATH}?" + urlencode({**PERIOD, "limit": "12"}), {"Accept": "text/csv"})
    assert headers["Content-Type"].startswith("text/csv") and "X-Result-Truncated" not in headers


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, f"limit must be a whole number from 1 to {MAX_LIMIT}, got '0'"),
        ({"limit": str(MAX_LIMIT + 1)}, f"limit must be a whole number from 1 to {MAX_LIMIT}"),
        ({"limit": "all"}, "limit must be a whole number"),
        ({"cursor": "bogus!"}, "cursor is not one this API gave"),
        ({"cursor": "WzEsMl0"}, "cursor is not one this API gave"),  # base64 of [1,2]
        ({"user": "alice"}, "unknown parameter 'user'; did you mean 'user_id'?"),
        ({"group_by": "model"}, "unknown parameter 'group_by'"),
        ({"fromat": "csv"}, "unknown parameter 'fromat'; did you mean 'format'?"),
        ({"format": "xml"}, "unknown format 'xml'"),
        ({"end_date": "2025-02-01"}, "is before start_date"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(server: ReportServer, params: dict[str, str], message: str) -> None:
    status, headers, text = fetch(server, f"{PATH}?" + urlencode({**PERIOD, **params}))
    assert status == 400, text
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(text)["error"]
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]


def test_a_cursor_of_another_filter_is_a_400(server: ReportServer) -> None:
    (first, *_) = pages(server, {**PERIOD, "limit": "11"})
    status, _, text = fetch(server, f"{PATH}?" + urlencode({**PERIOD, "user_id": "bob",
                                                             "cursor": first["next_cursor"]}))
    assert status == 400
    assert "cursor belongs to another question" in json.loads(text)["error"]["message"]


def test_the_endpoint_needs_the_token_when_the_server_has_one(data_dir: Path) -> None:
    with ReportServer(data_dir, port=0, token="s3cret") as srv:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            status, response_headers, text = fetch(srv, f"{PATH}?" + urlencode(PERIOD), headers)
            assert status == 401
            assert json.loads(text)["error"]["type"] == "authentication_error"
            assert response_headers["WWW-Authenticate"].startswith("Bearer")
        status, _, text = fetch(srv, f"{PATH}?" + urlencode(PERIOD), {"Authorization": "Bearer s3cret"})
        assert status == 200 and len(json.loads(text)["results"]) == 12


# --- OpenAPI ---------------------------------------------------------------------------------------------------


def test_openapi_lists_exactly_the_parameters_the_endpoint_reads(server: ReportServer) -> None:
    class Recording(dict[str, Any]):
        def __init__(self, values: dict[str, str]) -> None:
            super().__init__(values)
            self.read: set[str] = set()

        def get(self, key: str, default: Any = None) -> Any:
            self.read.add(key)
            return super().get(key, default)

        def __contains__(self, key: object) -> bool:
            self.read.add(str(key))
            return super().__contains__(key)

    params = Recording(dict(PERIOD))
    RequestsQuery.from_params(params)
    response_format(params, None)
    _, _, text = fetch(server, "/openapi.json")
    operation = json.loads(text)["paths"][PATH]["get"]
    documented = [p["name"] for p in operation["parameters"]]
    assert len(documented) == len(set(documented))
    assert set(documented) == params.read == set(ENDPOINT_PARAMETERS[PATH])
    assert set(FILTER_PARAMETERS) == set(QUERY_PARAMETERS) - {"group_by", "date_part", "order_by", "limit"}
    report = {p["name"]: p for p in json.loads(text)["paths"]["/v1/report"]["get"]["parameters"]}
    for param in operation["parameters"]:
        jsonschema.Draft202012Validator.check_schema(param["schema"])
        if param["name"] in FILTER_PARAMETERS:
            assert param == report[param["name"]]  # described once: the report's dates and filters
    limit = next(p for p in operation["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["maximum"], limit["schema"]["default"]) == (MAX_LIMIT, DEFAULT_LIMIT)
    assert {"400", "401"} <= set(operation["responses"])


def test_openapi_response_schema_validates_real_pages(server: ReportServer) -> None:
    schema = openapi_document()["paths"][PATH]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    schema = json.loads(json.dumps(schema))  # as a client reads it
    bodies = pages(server, {**PERIOD, "limit": "7"})
    assert bodies[0]["next_cursor"] is not None and bodies[-1]["next_cursor"] is None
    for _, _, text in (fetch(server, f"{PATH}?" + urlencode({**PERIOD, "limit": "7"})),
                       fetch(server, f"{PATH}?" + urlencode({**PERIOD, "limit": "7",
                                                             "cursor": bodies[0]["next_cursor"]}))):
        jsonschema.validate(json.loads(text), schema)
    broken = json.loads(text)
    broken["results"][0]["total_cost"] = "1.5"  # the schema says something: a string cost is not one
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


# --- the CLI and MCP give the same pages ------------------------------------------------------------------------


def test_the_cli_prints_the_http_body_and_the_next_cursor(
    server: ReportServer, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["requests", "--data-dir", str(data_dir), "--start-date", PERIOD["start_date"], "--end-date",
            PERIOD["end_date"], "--limit", "5"]
    first, second, _ = pages(server, {**PERIOD, "limit": "5"})
    assert cli.main([*args, "--format", "json"]) == 0
    out, _ = capsys.readouterr()
    _, _, text = fetch(server, f"{PATH}?" + urlencode({**PERIOD, "limit": "5"}))
    assert out == text  # byte for byte, newline included
    assert cli.main([*args, "--cursor", first["next_cursor"]]) == 0
    out, err = capsys.readouterr()
    header, _, *lines = out.splitlines()
    assert header.split() == ["timestamp", "user", "service", "model", "input", "output", "cost", "market", "cost",
                              "price_status", "status", "trace_id"]
    assert [line.split()[:2] for line in lines] == [
        [row["timestamp"][:10], row["timestamp"][11:19]] for row in second["results"]]
    assert err == f"tokentrail requests: more calls: add --cursor {second['next_cursor']}\n"
    assert cli.main([*args, "--cursor", second["next_cursor"], "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == ",".join(REQUEST_COLUMNS) and len(out.splitlines()) == 3
    _, _, text = fetch(server, f"{PATH}?" + urlencode({**PERIOD, "limit": "5", "cursor": second["next_cursor"],
                                                       "format": "csv"}))
    assert out == text
    assert err == ""  # the last page: no cursor to follow


def test_the_cli_refuses_a_bad_page_size_as_bad_usage(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["requests", "--data-dir", str(data_dir), "--start-date", "2025-03-01", "--end-date", "2025-03-31",
                    "--limit", "0"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err == f"tokentrail requests: error: limit must be a whole number from 1 to {MAX_LIMIT}, got '0'\n"


def test_the_cli_says_a_wrong_data_dir_instead_of_no_calls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["requests", "--data-dir", str(tmp_path / "nowhere")])
    _, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("tokentrail requests: no TokenTrail dataset ")


async def test_the_mcp_tool_pages_through_the_same_calls(server: ReportServer, data_dir: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "tokentrail.processor.cli.main", "mcp", "--data-dir", str(data_dir)],
    )
    http_pages = pages(server, {**PERIOD, "limit": "5", "tags": "plan:pro,plan:free"})
    async with stdio_client(params) as (read, write_stream), ClientSession(read, write_stream) as session:
        await session.initialize()
        tool = next(t for t in (await session.list_tools()).tools if t.name == "requests")
        assert tool.annotations is not None and tool.annotations.read_only_hint
        assert tool.input_schema["required"] == ["start_date", "end_date"]
        cursor = None
        for expected in http_pages:
            args = {**PERIOD, "limit": 5, "tags": ["plan:pro", "plan:free"], **({"cursor": cursor} if cursor else {})}
            result = await session.call_tool("requests", args)
            assert not result.is_error, result.content
            (content,) = result.content
            assert json.loads(content.text, parse_float=Decimal) == expected  # type: ignore[union-attr]
            cursor = result.structured_content["next_cursor"] if result.structured_content else None
        assert cursor is None
        bad = await session.call_tool("requests", {**PERIOD, "cursor": "bogus!"})
        assert bad.is_error and "cursor is not one this API gave" in bad.content[0].text  # type: ignore[union-attr]
