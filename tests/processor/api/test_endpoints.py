"""The HTTP API beyond the basic report: CSV, auth on every endpoint, errors, bounds, the OpenAPI document, and a
Vercel Custom Reporting client that must keep working unchanged."""

from __future__ import annotations

import csv
import io
import json
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
from tokentrail.processor.api.http import ReportServer, response_format
from tokentrail.processor.api.openapi import ENDPOINT_PARAMETERS, openapi_document
from tokentrail.processor.cli import main as cli
from tokentrail.processor.reports.budgets import budgets_from_dict, budgets_from_params
from tokentrail.processor.reports.margins import margins_from_params
from tokentrail.processor.reports.query import (
    DATE_PARTS,
    GROUPS,
    MAX_RANGE_DAYS,
    MAX_ROWS,
    METRICS,
    QUERY_PARAMETERS,
    ReportQuery,
)
from tokentrail.processor.reports.revenue import revenue_from_dict
from tokentrail.processor.reports.spikes import spikes_from_params

from tests.helpers.reports import rec_n as rec
from tests.helpers.reports import write_day

BUDGETS = budgets_from_dict({"budgets": [{"name": "all", "scope": "total", "amount": 10, "period": "monthly"}]})
REVENUE = revenue_from_dict({"plans": {"pro": {"monthly": 30}}})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_day(
        tmp_path,
        "2025-03-05",
        [
            rec(1, "2025-03-05T08:00:00", user_id="alice", tags=["plan:pro"], total_cost=Decimal("0.25"),
                cached_input_tokens=40),
            rec(2, "2025-03-05T09:00:00", user_id="bob", model="claude-haiku-4-5", provider="anthropic",
                total_cost=Decimal("123456.789012345678")),
        ],
    )
    return tmp_path


@pytest.fixture
def server(data_dir: Path) -> Iterator[ReportServer]:
    with ReportServer(data_dir, port=0, budgets=BUDGETS, revenue=REVENUE) as srv:
        yield srv


def fetch(server: ReportServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, Message, str]:
    """Status, headers (looked up by any case: HTTP/1.1 names are case-insensitive, and the server sends them in
    lower case) and body."""
    request = urllib.request.Request(server.url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


PERIOD = {"start_date": "2025-03-01", "end_date": "2025-03-31"}


# --- a Vercel Custom Reporting client, unchanged -------------------------------------------------------------


def test_a_vercel_reporting_client_reads_day_model_cost_and_tokens(data_dir: Path) -> None:
    """What codeburn's Vercel AI Gateway provider does: date_part=day&group_by=model with a bearer key, then read
    day, model, total_cost and the token fields of each row, parsing numbers as a JSON client does."""
    with ReportServer(data_dir, port=0, token="gateway-key") as srv:
        query = urlencode({"start_date": "2025-03-01", "end_date": "2025-03-07", "date_part": "day",
                           "group_by": "model"})
        request = urllib.request.Request(f"{srv.url}/v1/report?{query}",
                                         headers={"Authorization": "Bearer gateway-key", "Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/json")
            body = json.load(response)
    rows = {row["model"]: row for row in body["results"]}
    assert set(rows) == {"gpt-4o-mini", "claude-haiku-4-5"}
    for row in rows.values():
        assert row["day"] == "2025-03-05"
        assert isinstance(row["total_cost"], (int, float))
        for field in ("input_tokens", "output_tokens", "cached_input_tokens", "cache_creation_input_tokens",
                      "reasoning_tokens", "request_count"):
            assert isinstance(row[field], int), field
    assert rows["gpt-4o-mini"]["total_cost"] == 0.25
    assert rows["gpt-4o-mini"]["cached_input_tokens"] == 40
    assert rows["gpt-4o-mini"]["input_tokens"] == 100


def test_costs_are_exact_for_a_client_that_parses_decimals(server: ReportServer) -> None:
    _, _, raw = fetch(server, "/v1/report?" + urlencode({**PERIOD, "group_by": "model"}))
    rows = {r["model"]: r for r in json.loads(raw, parse_float=Decimal)["results"]}
    assert rows["claude-haiku-4-5"]["total_cost"] == Decimal("123456.789012345678")


# --- formats -------------------------------------------------------------------------------------------------


def test_format_csv_gives_a_header_and_one_line_per_row(server: ReportServer) -> None:
    status, headers, body = fetch(server, "/v1/report?" + urlencode({**PERIOD, "group_by": "model", "format": "csv"}))
    assert status == 200
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(body)))
    assert list(rows[0]) == ["model", *METRICS]
    assert rows[0]["model"] == "claude-haiku-4-5" and rows[0]["total_cost"] == "123456.789012345678"


def test_accept_text_csv_gives_csv_without_the_format_parameter(server: ReportServer) -> None:
    _, headers, body = fetch(server, "/v1/report?" + urlencode({**PERIOD, "group_by": "model"}),
                             {"Accept": "text/csv"})
    assert headers["Content-Type"].startswith("text/csv")
    assert body.startswith("model,total_cost,")


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "json"),
        ("*/*", "json"),
        ("application/json", "json"),
        ("text/csv", "csv"),
        ("text/csv, */*;q=0.1", "csv"),
        ("application/json, text/csv", "json"),
        ("application/json;q=0.5, text/csv", "csv"),
        ("text/csv;q=0", "json"),
    ],
)
def test_accept_negotiation(accept: str | None, expected: str) -> None:
    assert response_format({}, accept) == expected


def test_the_format_parameter_wins_over_accept(server: ReportServer) -> None:
    _, headers, _ = fetch(server, "/v1/report?" + urlencode({**PERIOD, "format": "json"}), {"Accept": "text/csv"})
    assert headers["Content-Type"].startswith("application/json")


def test_every_endpoint_answers_csv(server: ReportServer) -> None:
    for path, first_column in (("/v1/budgets", "budget"), ("/v1/margins?by=plan&" + urlencode(PERIOD), "plan"),
                               ("/v1/spikes?as_of=2025-03-05&include_all=true", "dimension")):
        sep = "&" if "?" in path else "?"
        status, headers, body = fetch(server, f"{path}{sep}format=csv")
        assert status == 200, body
        assert headers["Content-Type"].startswith("text/csv")
        assert body.split(",")[0] == first_column


def test_a_truncated_result_says_so_in_a_header_too(server: ReportServer) -> None:
    _, headers, body = fetch(server, "/v1/report?" + urlencode({**PERIOD, "group_by": "user", "limit": "1"}))
    assert headers["X-Result-Truncated"] == "true"
    assert json.loads(body)["truncated"] is True
    _, headers, _ = fetch(server, "/v1/report?" + urlencode({**PERIOD, "group_by": "user", "limit": "1",
                                                             "format": "csv"}))
    assert headers["X-Result-Truncated"] == "true"


# --- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/report?start_date=2025-03-01&end_date=2025-03-31&format=xml",
         "unknown format 'xml'; use one of json, csv"),
        ("/v1/report?start_date=2024-01-01&end_date=2025-12-31", f"ask for at most {MAX_RANGE_DAYS} days"),
        ("/v1/report?start_date=2025-03-01&end_date=2025-03-31&limit=0", "limit must be a whole number"),
        ("/v1/report?start_date=2025-03-01&end_date=2025-03-31&order_by=colour", "unknown order_by 'colour'"),
        ("/v1/report?start_date=2025-02-30&end_date=2025-03-31", "start_date is not a valid date"),
        ("/v1/budgets?budget=nope", "no budget named 'nope'"),
        ("/v1/budgets?as_of=yesterday", "as_of must be a date"),
        ("/v1/budgets?limit=many", "limit must be a whole number"),
        ("/v1/margins?by=colour", "unknown by 'colour'"),
        ("/v1/margins?start_date=2025-03-31&end_date=2025-03-01", "is before start_date"),
        ("/v1/margins?by=upgrade&tag=plan:pro", "needs an allowance"),
        ("/v1/margins?by=upgrade&tag=plan:free&allowance=-1", "allowance must be a number of 0 or more"),
        ("/v1/spikes?dimension=colour", "unknown dimension 'colour'"),
        ("/v1/spikes?window=week", "unknown window 'week'"),
        ("/v1/spikes?window=day&seasonality=daily", "for window=day use weekly or none"),
        ("/v1/spikes?baseline=2", "baseline must be a whole number"),
        ("/v1/spikes?metric=vibes", "unknown metric 'vibes'"),
        ("/v1/spikes?threshold=0", "threshold must be a number above 0"),
        ("/v1/spikes?partial=maybe", "partial must be true or false"),
    ],
)
def test_every_bad_parameter_is_a_400_naming_it(server: ReportServer, path: str, message: str) -> None:
    status, headers, body = fetch(server, path)
    assert status == 400, body
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]


@pytest.mark.parametrize(("path", "flag"), [("/v1/budgets", "--budgets FILE"), ("/v1/margins", "--revenue FILE")])
def test_budgets_and_margins_without_their_file_are_404_saying_what_to_pass(
    data_dir: Path, path: str, flag: str
) -> None:
    with ReportServer(data_dir, port=0) as srv:
        status, _, body = fetch(srv, path)
    assert status == 404
    assert flag in json.loads(body)["error"]["message"]


# --- auth ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/report?start_date=2025-03-01&end_date=2025-03-02", "/v1/budgets",
                                  "/v1/margins", "/v1/spikes"])
def test_every_v1_endpoint_needs_the_token(data_dir: Path, path: str) -> None:
    with ReportServer(data_dir, port=0, token="s3cret", budgets=BUDGETS, revenue=REVENUE) as srv:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            status, response_headers, body = fetch(srv, path, headers)
            assert status == 401
            assert json.loads(body) == {
                "error": {"message": "missing or wrong bearer token", "type": "authentication_error"}
            }
            assert response_headers["WWW-Authenticate"].startswith("Bearer")
        assert fetch(srv, path, {"Authorization": "Bearer s3cret"})[0] == 200
        assert fetch(srv, "/openapi.json")[0] == 200
        assert fetch(srv, "/healthz")[0] == 200


def test_serve_reads_the_token_from_tokentrail_api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTRAIL_API_TOKEN", "from-env")
    args = cli._parser().parse_args(["serve"])
    assert args.api_token == "from-env"


# --- OpenAPI ---------------------------------------------------------------------------------------------------


@pytest.fixture
def spec(server: ReportServer) -> dict[str, Any]:
    status, headers, body = fetch(server, "/openapi.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    return json.loads(body)


def test_openapi_document_is_3_1_and_describes_every_endpoint(spec: dict[str, Any]) -> None:
    assert spec["openapi"] == "3.1.0"
    assert set(spec["paths"]) == {"/v1/report", "/v1/requests", "/v1/budgets", "/v1/margins", "/v1/spikes", "/healthz",
                                  "/openapi.json"}
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["bearerAuth"][
            "description"]}
    for path, item in spec["paths"].items():
        operation = item["get"]
        assert operation["operationId"] and operation["responses"]["200"], path
        if path.startswith("/v1/"):
            assert {"400", "401"} <= set(operation["responses"]), path
            assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}


def test_openapi_lists_exactly_the_parameters_each_endpoint_reads(spec: dict[str, Any]) -> None:
    """Each endpoint's parameter list is the set of names its code actually looks up."""

    class Recording(dict[str, Any]):
        def __init__(self, values: dict[str, str]) -> None:
            super().__init__(values)
            self.read: set[str] = set()

        def get(self, key: str, default: Any = None) -> Any:
            self.read.add(key)
            return super().get(key, default)

    def read_by(call: Any, values: dict[str, str]) -> set[str]:
        params = Recording(values)
        call(params)
        response_format(params, None)  # the server reads format for every endpoint
        return params.read

    tmp = Path("/nonexistent-tokentrail-data")
    read = {
        "/v1/report": read_by(ReportQuery.from_params, dict(PERIOD)),
        "/v1/budgets": read_by(lambda p: budgets_from_params(tmp, BUDGETS, p), {}),
        "/v1/margins": read_by(lambda p: margins_from_params(tmp, REVENUE, p), {}),
        "/v1/spikes": read_by(lambda p: spikes_from_params(tmp, p), {"baseline": "5"}),
    }
    for path, names in read.items():
        documented = [p["name"] for p in spec["paths"][path]["get"]["parameters"]]
        assert len(documented) == len(set(documented)), path
        assert set(documented) == names == set(ENDPOINT_PARAMETERS[path]), path
    assert set(QUERY_PARAMETERS) | {"format"} == set(ENDPOINT_PARAMETERS["/v1/report"])


def test_openapi_parameter_schemas_are_valid_json_schema_and_match_the_code(spec: dict[str, Any]) -> None:
    for path, item in spec["paths"].items():
        for param in item["get"].get("parameters", []):
            jsonschema.Draft202012Validator.check_schema(param["schema"])
            assert param["in"] == "query" and param["description"], (path, param["name"])
    report = {p["name"]: p for p in spec["paths"]["/v1/report"]["get"]["parameters"]}
    assert {"start_date", "end_date"} == {name for name, p in report.items() if p["required"]}
    assert set(report["group_by"]["schema"]["items"]["enum"]) == {*GROUPS, "none"}
    assert report["group_by"]["style"] == "form" and report["group_by"]["explode"] is False
    assert report["date_part"]["schema"]["enum"] == list(DATE_PARTS)
    assert report["limit"]["schema"]["maximum"] == MAX_ROWS
    assert str(MAX_RANGE_DAYS) in report["end_date"]["description"]
    assert str(MAX_ROWS) in spec["info"]["description"] and str(MAX_RANGE_DAYS) in spec["info"]["description"]


def test_openapi_response_schema_validates_a_real_report_body(spec: dict[str, Any], server: ReportServer) -> None:
    schema = spec["paths"]["/v1/report"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    for params in ({**PERIOD, "date_part": "day", "group_by": "model"}, {**PERIOD, "group_by": "user,tag"}):
        _, _, body = fetch(server, "/v1/report?" + urlencode(params))
        jsonschema.validate(json.loads(body), schema)
    budget_schema = spec["paths"]["/v1/budgets"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    _, _, body = fetch(server, "/v1/budgets?as_of=2025-03-05")
    jsonschema.validate(json.loads(body), budget_schema)
    spike_schema = spec["paths"]["/v1/spikes"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    _, _, body = fetch(server, "/v1/spikes?as_of=2025-03-05&include_all=true")
    jsonschema.validate(json.loads(body), spike_schema)


def test_openapi_document_is_the_same_object_the_module_builds(spec: dict[str, Any]) -> None:
    assert spec == json.loads(json.dumps(openapi_document()))


def test_the_document_needs_no_token(data_dir: Path) -> None:
    with ReportServer(data_dir, port=0, token="s3cret") as srv:
        status, _, body = fetch(srv, "/openapi.json")
    assert status == 200 and json.loads(body)["openapi"] == "3.1.0"


def test_timestamps_in_fixture_are_utc() -> None:
    assert rec(9, "2025-03-05T08:00:00").timestamp.tzinfo == UTC
    assert datetime(2025, 3, 5, tzinfo=UTC).isoformat().endswith("+00:00")
