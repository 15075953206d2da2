"""``GET /v1/report`` on a real server on loopback, as a Vercel Custom Reporting client calls it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from tokentrail.processor.api.http import ReportServer
from tokentrail.processor.reports.formatting import report_json
from tokentrail.processor.reports.query import ReportQuery
from tokentrail.processor.reports.report import run_report

from tests.helpers.reports import rec_n as rec
from tests.helpers.reports import write_day


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_day(
        tmp_path,
        "2025-03-05",
        [
            rec(1, "2025-03-05T08:00:00", user_id="alice", tags=["plan:pro", "feature:chat"]),
            rec(2, "2025-03-05T09:00:00", user_id="alice", tags=["plan:pro"]),
            rec(3, "2025-03-05T09:30:00", user_id="bob", model="claude-haiku-4-5", provider="anthropic",
                credential_type="byok", tags=["plan:free"]),
        ],
    )
    write_day(
        tmp_path,
        "2025-03-06",
        [rec(4, "2025-03-06T10:00:00", user_id="bob", total_cost=Decimal("123456.789012345678"))],
    )
    return tmp_path


@pytest.fixture
def server(data_dir: Path) -> Iterator[ReportServer]:
    with ReportServer(data_dir, port=0) as srv:
        yield srv


def get(server: ReportServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    request = urllib.request.Request(server.url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read().decode()
            content_type = response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        status, raw, content_type = exc.code, exc.read().decode(), exc.headers["Content-Type"]
    assert content_type == "application/json; charset=utf-8"
    return status, raw, json.loads(raw, parse_float=Decimal)


def report(server: ReportServer, **params: str) -> tuple[int, str, Any]:
    return get(server, "/v1/report?" + urlencode(params))


def test_report_returns_results_grouped_by_day_by_default(server: ReportServer) -> None:
    status, _, body = report(server, start_date="2025-03-01", end_date="2025-03-31")
    assert status == 200
    assert [(r["day"], r["request_count"]) for r in body["results"]] == [("2025-03-05", 3), ("2025-03-06", 1)]


def test_report_body_is_the_report_json_of_the_same_query(server: ReportServer, data_dir: Path) -> None:
    params = {"start_date": "2025-03-01", "end_date": "2025-03-31", "date_part": "day", "group_by": "model"}
    _, raw, _ = report(server, **params)
    assert raw == report_json(run_report(data_dir, ReportQuery.from_params(params))) + "\n"


def test_date_part_day_with_group_by_model_rows_carry_day_and_model(server: ReportServer) -> None:
    _, _, body = report(server, start_date="2025-03-05", end_date="2025-03-05", date_part="day", group_by="model")
    assert [(r["day"], r["model"], r["request_count"]) for r in body["results"]] == [
        ("2025-03-05", "gpt-4o-mini", 2),
        ("2025-03-05", "claude-haiku-4-5", 1),
    ]


def test_filters_and_comma_separated_tags_apply(server: ReportServer) -> None:
    _, _, body = report(
        server, start_date="2025-03-01", end_date="2025-03-31", group_by="user", tags="feature:chat,plan:free"
    )
    assert sorted((r["user"], r["request_count"]) for r in body["results"]) == [("alice", 1), ("bob", 1)]
    _, _, body = report(server, start_date="2025-03-01", end_date="2025-03-31", group_by="user",
                        credential_type="byok")
    assert [(r["user"], r["request_count"]) for r in body["results"]] == [("bob", 1)]


def test_repeated_tags_parameters_mean_the_same_as_a_comma_list(server: ReportServer) -> None:
    _, _, repeated = get(server, "/v1/report?start_date=2025-03-01&end_date=2025-03-31&tags=plan:pro&tags=plan:free"
                                 "&tags_match=any&group_by=none")
    _, _, listed = report(server, start_date="2025-03-01", end_date="2025-03-31", tags="plan:pro,plan:free",
                          group_by="none")
    assert repeated == listed
    assert listed["results"][0]["request_count"] == 3


def test_costs_are_json_numbers_with_every_digit(server: ReportServer) -> None:
    _, raw, body = report(server, start_date="2025-03-01", end_date="2025-03-31", group_by="day")
    assert '"total_cost": 0.000000000003' in raw
    assert '"total_cost": 123456.789012345678' in raw  # a float would print 123456.78901234568
    assert body["results"][1]["total_cost"] == Decimal("123456.789012345678")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("end_date=2025-03-31", "start_date is required"),
        ("start_date=2025-03-01", "end_date is required"),
        ("start_date=03/01/2025&end_date=2025-03-31", "start_date must be a date as YYYY-MM-DD"),
        ("start_date=2025-03-31&end_date=2025-03-01", "is before start_date"),
        ("start_date=2025-03-01&end_date=2025-03-31&group_by=colour", "unknown group_by 'colour'"),
        ("start_date=2025-03-01&end_date=2025-03-31&date_part=year", "unknown date_part 'year'"),
        ("start_date=2025-03-01&end_date=2025-03-31&credential_type=mine", "unknown credential_type 'mine'"),
        ("start_date=2025-03-01&end_date=2025-03-31&tags_match=most", "unknown tags_match 'most'"),
    ],
)
def test_a_bad_parameter_is_a_400_invalid_request_error(server: ReportServer, query: str, message: str) -> None:
    status, _, body = get(server, "/v1/report?" + query)
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert message in body["error"]["message"]


def test_an_unknown_path_is_a_404(server: ReportServer) -> None:
    status, _, body = get(server, "/v1/nope")
    assert status == 404
    assert body["error"]["type"] == "not_found_error"


def test_healthz_answers_ok(server: ReportServer) -> None:
    assert get(server, "/healthz")[::2] == (200, {"status": "ok"})


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
@pytest.mark.parametrize("path", ["/v1/report", "/healthz", "/nope"])
def test_methods_other_than_get_are_refused(server: ReportServer, method: str, path: str) -> None:
    request = urllib.request.Request(server.url + path, data=b"{}" if method != "HEAD" else None, method=method)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 405
    assert info.value.headers["Allow"] == "GET"
    body = info.value.read()
    if method != "HEAD":  # a HEAD answer has no body
        assert json.loads(body) == {"error": {"message": "only GET is supported", "type": "invalid_request_error"}}


@pytest.mark.parametrize("path", ["/v1/report/", "/v1/report//"])
def test_a_trailing_slash_is_the_same_endpoint(server: ReportServer, path: str) -> None:
    status, raw, _ = get(server, f"{path}?start_date=2025-03-01&end_date=2025-03-31")
    assert (status, raw) == report(server, start_date="2025-03-01", end_date="2025-03-31")[:2]
    assert get(server, "/healthz/")[::2] == (200, {"status": "ok"})


def test_an_empty_dataset_gives_empty_results(tmp_path: Path) -> None:
    with ReportServer(tmp_path, port=0) as srv:
        status, _, body = report(srv, start_date="2025-03-01", end_date="2025-03-31")
    assert (status, body) == (200, {"results": []})


def test_a_configured_token_is_required_for_the_report_but_not_for_health(data_dir: Path) -> None:
    with ReportServer(data_dir, port=0, token="s3cret") as srv:
        path = "/v1/report?start_date=2025-03-01&end_date=2025-03-31"
        status, _, body = get(srv, path)
        assert (status, body["error"]["type"]) == (401, "authentication_error")
        assert get(srv, path, {"Authorization": "Bearer wrong"})[0] == 401
        assert get(srv, path, {"Authorization": "Bearer s3cret"})[0] == 200
        assert get(srv, "/healthz")[0] == 200


def test_stop_releases_the_port(data_dir: Path) -> None:
    first = ReportServer(data_dir, port=0)
    first.start()
    port = first.port
    first.stop()
    second = ReportServer(data_dir, port=port)
    second.start()
    try:
        assert get(second, "/healthz")[0] == 200
    finally:
        second.stop()
