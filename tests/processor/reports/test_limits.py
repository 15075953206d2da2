"""The report's ordering, row limit and bounds: top-N questions, and what one request may ask for."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from tokentrail.processor.cli import main as cli
from tokentrail.processor.reports import query as query_module
from tokentrail.processor.reports.errors import ReportParameterError
from tokentrail.processor.reports.formatting import report_json
from tokentrail.processor.reports.query import MAX_RANGE_DAYS, MAX_ROWS, ReportQuery
from tokentrail.processor.reports.report import Report, run_report

from tests.helpers.reports import keys, q, rec, write


@pytest.fixture
def users(tmp_path: Path) -> Path:
    """Five users spending 1..5 dollars, with 5..1 requests (so cost and count orders differ)."""
    records = []
    for n in range(1, 6):
        for i in range(6 - n):
            records.append(rec(f"2025-03-0{1 + i}T10:00:00", user_id=f"u{n}", total_cost=Decimal(n) / (6 - n)))
    write(tmp_path, records)
    return tmp_path


def test_top_n_users_by_total_cost(users: Path) -> None:
    rows = run_report(users, q(group_by="user", order_by="total_cost", limit="3"))
    assert keys(rows, "user", "total_cost") == [("u5", Decimal(5)), ("u4", Decimal(4)), ("u3", Decimal(3))]


def test_order_by_a_metric_is_descending_unless_asked_ascending(users: Path) -> None:
    rows = run_report(users, q(group_by="user", order_by="request_count:asc"))
    assert [row["user"] for row in rows] == ["u5", "u4", "u3", "u2", "u1"]
    rows = run_report(users, q(group_by="user", order_by="request_count"))
    assert [row["user"] for row in rows] == ["u1", "u2", "u3", "u4", "u5"]


def test_order_by_a_key_is_ascending_unless_asked_descending(users: Path) -> None:
    assert [r["user"] for r in run_report(users, q(group_by="user", order_by="user"))] == ["u1", "u2", "u3", "u4", "u5"]
    assert [r["user"] for r in run_report(users, q(group_by="user", order_by="user:desc"))][0] == "u5"


def test_order_by_leads_the_time_bucket(users: Path) -> None:
    """With a date part, order_by sorts across buckets (the most expensive user-day first)."""
    rows = run_report(users, q(date_part="day", group_by="user", order_by="total_cost", limit="2"))
    assert keys(rows, "day", "user") == [("2025-03-01", "u5"), ("2025-03-01", "u4")]


def test_without_order_by_limit_keeps_the_usual_order(users: Path) -> None:
    rows = run_report(users, q(group_by="day", limit="2"))
    assert [row["day"] for row in rows] == ["2025-03-01", "2025-03-02"]


def test_a_result_cut_by_limit_says_it_is_truncated(users: Path) -> None:
    cut = run_report(users, q(group_by="user", limit="4"))
    whole = run_report(users, q(group_by="user", limit="5"))
    assert (len(cut), cut.truncated) == (4, True)
    assert (len(whole), whole.truncated) == (5, False)
    assert json.loads(report_json(cut))["truncated"] is True
    assert "truncated" not in json.loads(report_json(whole))


def test_results_are_bounded_at_max_rows_even_without_a_limit(users: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query_module, "MAX_ROWS", 2)
    rows = run_report(users, q(group_by="user"))
    assert (len(rows), rows.truncated) == (2, True)


def test_rows_compare_equal_to_a_plain_list(users: Path) -> None:
    rows = run_report(users, q(group_by="none"))
    assert rows == [dict(rows[0])]
    assert isinstance(rows, list)


def test_a_date_range_of_max_days_is_allowed_and_one_more_is_not() -> None:
    start = date(2024, 1, 1)
    end = date.fromordinal(start.toordinal() + MAX_RANGE_DAYS - 1)
    assert ReportQuery.from_params({"start_date": start.isoformat(), "end_date": end.isoformat()}).end_date == end
    too_far = date.fromordinal(end.toordinal() + 1).isoformat()
    message = f"spans {MAX_RANGE_DAYS + 1} days; ask for at most {MAX_RANGE_DAYS}"
    with pytest.raises(ReportParameterError, match=message):
        ReportQuery.from_params({"start_date": start.isoformat(), "end_date": too_far})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"order_by": "colour"}, "unknown order_by 'colour'; use a metric or a key of this query's rows"),
        ({"order_by": "user", "group_by": "model"}, "unknown order_by 'user'"),
        ({"order_by": "total_cost:sideways"}, "unknown order_by direction 'sideways'; use asc or desc"),
        ({"order_by": "hour", "date_part": "day"}, "unknown order_by 'hour'"),
        ({"limit": "0"}, f"limit must be a whole number from 1 to {MAX_ROWS}, got 0"),
        ({"limit": str(MAX_ROWS + 1)}, f"limit must be a whole number from 1 to {MAX_ROWS}"),
        ({"limit": "ten"}, "limit must be a whole number from 1 to"),
        ({"limit": "-5"}, "limit must be a whole number from 1 to"),
        ({"limit": ["1", "2"]}, "limit was given 2 times"),
    ],
)
def test_a_bad_order_or_limit_is_a_parameter_error(params: dict[str, object], message: str) -> None:
    with pytest.raises(ReportParameterError, match=message.replace("(", r"\(")):
        ReportQuery.from_params({"start_date": "2025-03-01", "end_date": "2025-03-31", **params})  # type: ignore[dict-item]  # wrong types on purpose


def test_order_by_and_limit_round_trip_through_parameters() -> None:
    query = q(group_by="user", order_by="total_cost:asc", limit="7")
    assert ReportQuery.from_params(query.to_params()) == query
    assert query.order_key == ("total_cost", "asc")


def test_python_api_takes_order_by_and_limit(users: Path) -> None:
    rows = Report(users).query(start_date="2025-03-01", end_date="2025-03-31", group_by="user",
                               order_by="total_cost", limit=1)
    assert keys(rows, "user") == [("u5",)]
    assert rows.truncated


# --- the CLI -------------------------------------------------------------------------------------------------


def test_cli_takes_order_by_and_limit_and_notes_truncation(users: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["report", "--data-dir", str(users), "--start-date", "2025-03-01", "--end-date", "2025-03-31",
            "--group-by", "user", "--order-by", "total_cost", "--limit", "2"]
    assert cli.main([*base, "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [r["user"] for r in body["results"]] == ["u5", "u4"] and body["truncated"] is True
    assert cli.main([*base, "--format", "table"]) == 0
    assert "More rows matched than were returned" in capsys.readouterr().out
    assert cli.main([*base, "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1].startswith("u5,") and "More rows matched" in err
    assert cli.main([*base[:-1], "0"]) == 2
    assert "limit must be a whole number from 1 to 10000" in capsys.readouterr().err
