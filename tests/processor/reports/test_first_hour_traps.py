"""A newcomer's first hour with the reports in Python (issue 12): a misspelt parameter is refused, an unknown cost
is None (JSON null, CSV empty) in the report, margins and budgets, and money reads to the cent in tables and log
lines, with the digits a sub-cent cost needs, and a totals line under a report table."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from tokentrail.processor.reports.budgets import budget_status, budgets_from_dict, budgets_from_params
from tokentrail.processor.reports.errors import ReportParameterError
from tokentrail.processor.reports.formatting import format_csv, format_rows, format_table, report_json
from tokentrail.processor.reports.margins import margins, margins_from_params
from tokentrail.processor.reports.query import ReportQuery
from tokentrail.processor.reports.report import Report, run_report
from tokentrail.processor.reports.revenue import revenue_from_dict
from tokentrail.processor.reports.spikes import spikes_from_params
from tokentrail.processor.schema import NO_USAGE, UNPRICED

from tests.helpers.reports import q, rec, write

MARCH = {"start_date": "2025-03-01", "end_date": "2025-03-31"}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    write(tmp_path, [
        rec("2025-03-05T08:00:00", user_id="cust_1", tags=["plan:pro"], total_cost=Decimal("0.25"),
            market_cost=Decimal("0.5")),
        rec("2025-03-05T09:00:00", user_id="cust_2", tags=["plan:pro"], total_cost=Decimal("4"),
            market_cost=Decimal("8")),
        rec("2025-03-05T09:30:00", user_id="cust_2", model="acme-llm", tags=["plan:pro"], total_cost=None,
            market_cost=None, price_status=UNPRICED),
        rec("2025-03-05T10:00:00", user_id="cust_3", model="acme-llm", tags=["plan:pro"], total_cost=None,
            market_cost=None, price_status=UNPRICED),
        rec("2025-03-05T11:00:00", user_id="cust_3", tags=["plan:pro"], total_cost=None, market_cost=None,
            price_status=NO_USAGE),
    ])
    return tmp_path


# --- 1. a misspelt parameter is refused, with the name meant ----------------------------------------------------


def test_from_params_refuses_user_and_suggests_user_id(data: Path) -> None:
    with pytest.raises(ReportParameterError, match=r"^unknown parameter 'user'; did you mean 'user_id'\?$"):
        ReportQuery.from_params({**MARCH, "user": "cust_1"})  # was: the query for every user
    with pytest.raises(ReportParameterError, match="did you mean 'user_id'"):
        Report(data).from_params({**MARCH, "user": "cust_1"})


def test_a_name_with_no_close_match_lists_the_known_ones() -> None:
    with pytest.raises(ReportParameterError) as caught:
        ReportQuery.from_params({**MARCH, "colour": "red"})
    assert caught.value.message == (
        "unknown parameter 'colour'; known parameters: start_date, end_date, group_by, date_part, user_id, model, "
        "provider, credential_type, service, environment, api, operation, conversation_id, trace_id, tags, tags_match, "
        "order_by, limit"
    )


def test_every_report_kind_refuses_names_it_does_not_read(data: Path) -> None:
    budgets = budgets_from_dict({"budgets": [{"name": "all", "amount": 10}]})
    revenue = revenue_from_dict({"plans": {"pro": {"monthly": 30}}})
    with pytest.raises(ReportParameterError, match=r"^unknown parameter 'name'; known parameters: budget, as_of, limit$"):
        budgets_from_params(data, budgets, {"name": "all"})
    with pytest.raises(ReportParameterError, match=r"unknown parameter 'view'; known parameters: start_date"):
        margins_from_params(data, revenue, {"view": "plan"})
    with pytest.raises(ReportParameterError, match=r"unknown parameter 'metrics'; did you mean 'metric'\?"):
        spikes_from_params(data, {"metrics": "request_count"})


# --- 2. an unknown cost is unknown everywhere, not $0 -----------------------------------------------------------


def test_a_user_whose_calls_are_all_unpriced_has_none_costs_in_python_json_and_csv(data: Path) -> None:
    query = q(**MARCH, group_by="user")
    rows = run_report(data, query)
    by_user = {row["user"]: row for row in rows}
    assert by_user["cust_3"]["total_cost"] is None and by_user["cust_3"]["market_cost"] is None  # was Decimal(0)
    assert by_user["cust_3"]["unpriced_request_count"] == by_user["cust_3"]["request_count"] == 2
    # Partly priced: the priced sum, and how many requests it leaves out.
    assert (by_user["cust_2"]["total_cost"], by_user["cust_2"]["unpriced_request_count"]) == (Decimal(4), 1)
    assert '"user": "cust_3", "total_cost": null, "market_cost": null' in report_json(rows)
    (line,) = [line for line in format_csv(rows, query.columns).splitlines() if line.startswith("cust_3,")]
    assert line.startswith("cust_3,,,")


def test_unknown_costs_sort_after_known_ones(data: Path) -> None:
    rows = run_report(data, q(**MARCH, group_by="user"))
    assert [row["user"] for row in rows] == ["cust_2", "cust_1", "cust_3"]


def test_a_margin_of_a_customer_whose_costs_are_unknown_is_unknown_not_100_percent(data: Path) -> None:
    config = revenue_from_dict({"plans": {"pro": {"monthly": 31}}})
    result = margins(data, config, start_date=date(2025, 3, 1), end_date=date(2025, 3, 31))
    rows = {row["user"]: row for row in result.rows}
    assert rows["cust_3"]["revenue"] == Decimal(31)
    assert rows["cust_3"]["cost"] is None  # was 0
    assert rows["cust_3"]["margin"] is None and rows["cust_3"]["margin_percent"] is None  # was 31 and 100.00 %
    assert rows["cust_3"]["cost_per_request"] is None and rows["cust_3"]["cost_per_1k_tokens"] is None
    assert rows["cust_2"]["cost"] == Decimal(4) and rows["cust_2"]["unpriced_request_count"] == 1
    assert result.totals["unpriced_request_count"] == 3  # the totals say what their cost leaves out
    assert result.totals["cost"] == Decimal("4.25")
    plan = margins(data, config, start_date=date(2025, 3, 1), end_date=date(2025, 3, 31), by="plan").rows
    assert plan[0]["cost"] == Decimal("4.25") and plan[0]["unpriced_request_count"] == 3


def test_a_budget_on_a_user_whose_calls_are_all_unpriced_has_unknown_spend(data: Path) -> None:
    config = budgets_from_dict({"budgets": [
        {"name": "per user", "scope": "user", "value": "each", "amount": 10, "period": "monthly"},
        {"name": "company", "amount": 100, "period": "monthly"},
    ]})
    rows, _ = budget_status(data, config, as_of=datetime(2025, 3, 6, tzinfo=UTC))
    per_user = {row["value"]: row for row in rows if row["budget"] == "per user"}
    # cust_3 spent an unknown amount: listed (was left out as "no spend"), with nothing computed from a $0.
    assert per_user["cust_3"]["spend"] is None and per_user["cust_3"]["remaining"] is None
    assert per_user["cust_3"]["percent"] is None and per_user["cust_3"]["crossed"] == []
    assert per_user["cust_3"]["unpriced_request_count"] == 2
    assert per_user["cust_2"]["spend"] == Decimal(4) and per_user["cust_2"]["unpriced_request_count"] == 1
    (company,) = [row for row in rows if row["budget"] == "company"]
    assert (company["spend"], company["unpriced_request_count"]) == (Decimal("4.25"), 3)


# --- 3. money for people ----------------------------------------------------------------------------------------


def test_table_money_is_to_the_cent(data: Path) -> None:
    table = format_table([{"model": "gpt-4o", "total_cost": Decimal("1234.5"), "request_count": 3}])
    assert table.splitlines()[2] == "gpt-4o  $1,234.50         3"  # was $1,234.500000


def test_a_column_of_sub_cent_costs_shows_two_significant_digits_not_zero() -> None:
    rows = [
        {"model": "a", "total_cost": Decimal("0.0012"), "request_count": 1},
        {"model": "b", "total_cost": Decimal("0.00034"), "request_count": 1},
        {"model": "c", "total_cost": Decimal("0"), "request_count": 1},
    ]
    cells = [line.split()[1] for line in format_table(rows).splitlines()[2:]]
    assert cells == ["$0.00120", "$0.00034", "$0.00000"]  # one precision per column, so the points align


def test_a_pico_dollar_cost_shows_its_digit() -> None:
    (line,) = format_table([{"model": "a", "total_cost": Decimal("0.000000000002")}]).splitlines()[2:]
    assert line.split()[1] == "$0.000000000002"  # was <$0.000001


def test_a_report_table_ends_with_totals_marked_partial_when_a_row_is(data: Path) -> None:
    query = q(**MARCH, group_by="user")
    lines = format_rows(run_report(data, query), "table", query.columns).split("\n\n")[0].splitlines()
    header, rule, *body, rule_again, total = lines
    assert rule_again == rule
    assert [line.split()[0] for line in body] == ["cust_2", "cust_1", "cust_3"]
    assert body[2].split()[1:3] == ["unpriced*", "unpriced*"]
    cells = total.split()
    assert cells[:3] == ["total", "$4.25*", "$8.50*"]  # the priced sum, marked: it leaves requests out
    assert cells[-2:] == ["5", "3"]  # requests, unpriced
    assert cells[3:5] == ["50", "25"]  # input and output tokens


def test_tag_rows_and_single_rows_get_no_totals_line(data: Path) -> None:
    for group_by in ("tag", "none"):
        query = q(**MARCH, group_by=group_by)
        text = format_rows(run_report(data, query), "table", query.columns)
        assert "total " not in text and not any(line.startswith("total") for line in text.splitlines())


def test_totals_of_only_unknown_costs_read_unpriced() -> None:
    rows = [
        {"model": m, "total_cost": None, "request_count": 1, "unpriced_request_count": 1} for m in ("a", "b")
    ]
    *_, total = format_rows(rows, "table").split("\n\n")[0].splitlines()
    assert total.split() == ["total", "unpriced*", "2", "2"]


def test_a_spike_check_of_a_day_whose_costs_are_unknown_says_unknown_not_zero(tmp_path: Path) -> None:
    # A model priced for a week whose price went missing on the last day: its cost that day is unknown, not $0.
    write(tmp_path, [rec(f"2025-03-{day:02d}T12:00:00", model="m", total_cost=Decimal(1)) for day in range(1, 15)]
          + [rec("2025-03-15T12:00:00", model="m", total_cost=None, market_cost=None, price_status=UNPRICED)])
    result = spikes_from_params(tmp_path, {"as_of": "2025-03-15", "include_all": "true", "seasonality": "none"})
    (row,) = result.rows
    assert row["observed"] is None and row["score"] is None and row["ratio"] is None  # was 0, a score, 0.00
    assert row["spike"] is False and row["expected"] == Decimal(1)
