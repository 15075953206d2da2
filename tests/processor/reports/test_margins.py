"""Margins: revenue from plans and contracts against cost, per customer, plan and feature; unit costs; and the
free-tier customers near the upgrade point."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tokentrail.processor.cli import main as cli
from tokentrail.processor.reports.errors import ReportParameterError
from tokentrail.processor.reports.margins import margins, margins_from_params, months_fraction
from tokentrail.processor.reports.revenue import RevenueConfigError, load_revenue, revenue_from_dict
from tokentrail.processor.schema import UNPRICED

from tests.helpers.reports import rec, write

REVENUE = revenue_from_dict({
    "plans": {
        "free": {"monthly": 0, "allowance": 2, "upgrade_at_percent": 80},
        "pro": {"monthly": 30},
        "api": {"per_request": "0.5", "per_1k_tokens": 10},
    },
    "customers": {"acme": {"monthly": 1000}, "newco": {"monthly": 100}},
})
MARCH: dict[str, Any] = {"start_date": date(2025, 3, 1), "end_date": date(2025, 3, 31)}


def at(day: int, hour: int = 12) -> str:
    return f"2025-03-{day:02d}T{hour:02d}:00:00"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    # Every request: 10 input + 5 output tokens (rec's default).
    write(tmp_path, [
        rec(at(2), user_id="alice", tags=["plan:pro", "feature:chat"], total_cost=Decimal(4)),
        rec(at(3), user_id="alice", tags=["plan:pro", "feature:chat"], total_cost=Decimal(4)),
        rec(at(4), user_id="alice", tags=["plan:pro", "feature:search"], total_cost=Decimal(4)),
        rec(at(2), user_id="bob", tags=["plan:free", "feature:chat"], total_cost=Decimal("1.5")),
        rec(at(5), user_id="bob", tags=["plan:free", "feature:chat"], total_cost=Decimal("1.5")),
        rec(at(2), user_id="carol", tags=["plan:free"], total_cost=Decimal("0.5")),
        rec(at(2), user_id="dave", tags=["plan:free"], total_cost=Decimal(2)),
        rec(at(20), user_id="dave", tags=["plan:pro", "feature:chat"], total_cost=Decimal(3)),  # upgraded
        rec(at(6), user_id="erin", tags=["feature:chat"], total_cost=Decimal(2)),  # no plan, no contract
        rec(at(7), user_id="acme", tags=["plan:pro", "feature:search"], total_cost=Decimal(10)),
        rec(at(8), user_id="zed", tags=["plan:api", "feature:chat", "feature:search"], total_cost=Decimal(1)),
        rec(at(9), user_id="zed", tags=["plan:api"], total_cost=Decimal(1)),
        rec(at(9), user_id="zed", tags=["plan:api"], price_status=UNPRICED, total_cost=None, market_cost=None),
        rec("2025-04-01T00:00:00", user_id="alice", tags=["plan:pro"], total_cost=Decimal(100)),  # April
    ])
    return tmp_path


def by_key(result: Any, key: str) -> dict[Any, dict[str, Any]]:
    return {row[key]: row for row in result.rows}


# --- the file -----------------------------------------------------------------------------------------------


def test_a_revenue_file_parses(tmp_path: Path) -> None:
    path = tmp_path / "revenue.toml"
    path.write_text('plan_tag_prefix = "tier:"\n[plans.free]\nmonthly = 0\nallowance = 1.5\n'
                    "[plans.api]\nper_request = 0.002\nper_1k_tokens = 0.01\n[customers.cust_42]\nmonthly = 1200\n")
    config = load_revenue(path)
    assert config.plan_tag_prefix == "tier:" and config.feature_tag_prefix == "feature:"
    assert config.plans["free"].allowance == Decimal("1.5")
    assert config.plans["api"].per_request == Decimal("0.002")  # exact, from the TOML float's shortest spelling
    assert config.customers["cust_42"].monthly == Decimal(1200)


@pytest.mark.parametrize(("data", "message"), [
    ({"plans": {"pro": {"monthly": -1}}}, "plans.pro.monthly must not be negative"),
    ({"plans": {"pro": {"yearly": 1}}}, "plans.pro: unknown key 'yearly'"),
    ({"customers": {"c": {"allowance": 1}}}, "customers.c: unknown key 'allowance'"),
    ({"plans": {"pro": {"monthly": "lots"}}}, "plans.pro.monthly must be a number"),
    ({"plans": []}, "plans must be tables"),
    ({"currencies": "EUR"}, "unknown top-level key 'currencies' (did you mean 'currency'?"),
])
def test_a_wrong_revenue_file_is_refused_saying_where(data: dict[str, Any], message: str) -> None:
    with pytest.raises(RevenueConfigError, match=re.escape(message)):
        revenue_from_dict(data)


def test_months_are_prorated_by_the_days_of_each_month() -> None:
    assert months_fraction(date(2025, 3, 1), date(2025, 3, 31)) == 1
    assert months_fraction(date(2025, 3, 1), date(2025, 3, 15)) == Decimal(15) / Decimal(31)
    assert months_fraction(date(2025, 2, 15), date(2025, 3, 31)) == Decimal(14) / Decimal(28) + 1


# --- per customer --------------------------------------------------------------------------------------------


def test_customer_margins_from_plans_contracts_and_usage_pricing(data: Path) -> None:
    rows = by_key(margins(data, REVENUE, **MARCH), "user")
    alice = rows["alice"]
    assert (alice["plan"], alice["revenue"], alice["cost"], alice["margin"], alice["margin_percent"]) == (
        "pro", Decimal(30), Decimal(12), Decimal(18), Decimal("60.00"))
    assert (alice["request_count"], alice["tokens"], alice["cost_per_request"], alice["cost_per_1k_tokens"]) == (
        3, 45, Decimal(4), (Decimal(12) * 1000 / 45).quantize(Decimal("1E-12")))
    assert rows["acme"]["revenue"] == Decimal(1000)  # the contract replaces the pro plan's price
    assert rows["dave"]["plan"] == "pro"  # the last plan tag in the period
    # api plan: 3 requests x 0.5 + 45 tokens x 10/1k = 1.95; the unpriced request costs nothing known.
    assert (rows["zed"]["revenue"], rows["zed"]["cost"], rows["zed"]["margin"]) == (
        Decimal("1.95"), Decimal(2), Decimal("-0.05"))
    assert rows["zed"]["unpriced_request_count"] == 1
    assert (rows["erin"]["revenue"], rows["erin"]["margin"], rows["erin"]["margin_percent"]) == (None, None, None)
    assert (rows["bob"]["revenue"], rows["bob"]["margin"], rows["bob"]["margin_percent"]) == (
        Decimal(0), Decimal(-3), None)


def test_a_contract_without_requests_still_earns(data: Path) -> None:
    newco = by_key(margins(data, REVENUE, **MARCH), "user")["newco"]
    assert (newco["revenue"], newco["cost"], newco["request_count"], newco["cost_per_request"]) == (
        Decimal(100), Decimal(0), 0, None)


def test_customers_are_listed_worst_margin_first_and_unknown_revenue_last(data: Path) -> None:
    users = [row["user"] for row in margins(data, REVENUE, **MARCH).rows]
    assert users[0] == "bob" and users[-1] == "erin"


def test_monthly_revenue_is_prorated_to_the_period(data: Path) -> None:
    rows = by_key(margins(data, REVENUE, start_date=date(2025, 3, 1), end_date=date(2025, 3, 10)), "user")
    assert rows["alice"]["revenue"] == (Decimal(30) * 10 / 31).quantize(Decimal("1E-12"))


def test_totals_add_up_over_customers_with_known_revenue(data: Path) -> None:
    totals = margins(data, REVENUE, **MARCH).totals
    assert totals["customers"] == 8 and totals["customers_without_revenue"] == 1
    assert totals["revenue"] == Decimal(30 + 0 + 0 + 30 + 1000 + 100) + Decimal("1.95")
    assert totals["cost"] == Decimal("34.5")  # erin's $2 included in cost...
    assert totals["margin"] == totals["revenue"] - Decimal("32.5")  # ...not in the margin: her revenue is unknown


# --- per plan and feature ------------------------------------------------------------------------------------


def test_plan_margins_sum_their_customers(data: Path) -> None:
    plans = by_key(margins(data, REVENUE, by="plan", **MARCH), "plan")
    pro = plans["pro"]  # alice, dave, acme
    assert (pro["customers"], pro["revenue"], pro["cost"], pro["margin"]) == (
        3, Decimal(1060), Decimal(27), Decimal(1033))
    assert pro["cost_per_customer"] == Decimal(9)
    assert plans["free"]["customers"] == 2 and plans["free"]["cost"] == Decimal("3.5")
    assert plans[None]["revenue"] == Decimal(100)  # newco (contract, no plan) and erin (unknown)


def test_feature_margins_split_monthly_revenue_by_request_share(data: Path) -> None:
    features = by_key(margins(data, REVENUE, by="feature", **MARCH), "feature")
    # chat: alice 2/3 of her 30, dave 1/2 of his 30 (one of his two requests), bob's free plan 0, erin unknown;
    # zed's chat+search request earns its usage price in both feature rows (feature rows overlap, like tag rows).
    assert features["chat"]["request_count"] == 7
    assert features["chat"]["cost"] == Decimal("17")
    zed_one_request = Decimal("0.5") + Decimal(15) * 10 / 1000
    assert features["chat"]["revenue"] == (Decimal(20) + Decimal(15) + zed_one_request).quantize(Decimal("1E-12"))
    assert features["search"]["revenue"] == (Decimal(10) + Decimal(1000) + zed_one_request).quantize(
        Decimal("1E-12"))
    assert features[None]["request_count"] == 4  # carol, dave's first, zed's two untagged


# --- near the upgrade point ----------------------------------------------------------------------------------


def test_free_customers_near_their_allowance_are_listed(data: Path) -> None:
    result = margins(data, REVENUE, by="upgrade", **MARCH)
    # free allowance $2/month, 80 % = $1.60: bob ($3) yes, carol ($0.50) no, dave upgraded to pro: no.
    assert [(r["user"], r["cost"], r["percent_of_allowance"]) for r in result.rows] == [
        ("bob", Decimal(3), Decimal("150.00"))]
    assert result.rows[0]["tag"] == "plan:free" and result.rows[0]["allowance"] == Decimal(2)


def test_upgrade_point_by_threshold_percent_or_other_tag(data: Path) -> None:
    assert [r["user"] for r in margins(data, REVENUE, by="upgrade", percent=Decimal(20), **MARCH).rows] == [
        "bob", "carol"]
    assert [r["user"] for r in margins(data, REVENUE, by="upgrade", tag="plan:free", threshold=Decimal("0.4"),
                                       allowance=Decimal(100), **MARCH).rows] == ["bob", "carol"]
    # Any other tag: users who used it at all.
    assert [r["user"] for r in margins(data, REVENUE, by="upgrade", tag="feature:search", threshold=Decimal(5),
                                       **MARCH).rows] == ["alice", "acme"]


def test_margins_from_params_default_to_this_month_and_validate(data: Path) -> None:
    result = margins_from_params(data, REVENUE, {"end_date": "2025-03-31"})
    assert (result.start_date, result.end_date) == (date(2025, 3, 1), date(2025, 3, 31))
    with pytest.raises(ReportParameterError, match="the date range spans more than 366 days"):
        margins_from_params(data, REVENUE, {"start_date": "2023-01-01", "end_date": "2025-03-31"})
    with pytest.raises(ReportParameterError, match="threshold must be a number of 0 or more"):
        margins_from_params(data, REVENUE, {"by": "upgrade", "threshold": "lots"})


def test_limit_cuts_rows_and_says_so(data: Path) -> None:
    result = margins_from_params(data, REVENUE, {"start_date": "2025-03-01", "end_date": "2025-03-31", "limit": "2"})
    assert len(result.rows) == 2 and result.truncated and result.body()["truncated"] is True


def test_cli_margins_prints_a_table(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "revenue.toml"
    path.write_text("[plans.pro]\nmonthly = 30\n[plans.free]\nmonthly = 0\nallowance = 2\n")
    assert cli.main(["margins", "--data-dir", str(data), "--revenue", str(path), "--start-date", "2025-03-01",
                     "--end-date", "2025-03-31", "--by", "plan"]) == 0
    out = capsys.readouterr().out
    header, _, *lines = out.split("\n\n")[0].splitlines()
    assert header.split()[:4] == ["plan", "customers", "revenue", "cost"]
    (pro,) = [line for line in lines if line.startswith("pro ")]
    assert "$90.00" in pro and "$63.00" in pro and "70.00%" in pro  # 3 x 30 revenue, 27 cost, margin 63
    assert "2025-03-01 to 2025-03-31" in out
    assert cli.main(["margins", "--data-dir", str(data), "--revenue", str(path), "--by", "upgrade",
                     "--start-date", "2025-03-01", "--end-date", "2025-03-31", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("bob,plan:free,3,2,150,")
    assert cli.main(["margins", "--data-dir", str(data), "--revenue", str(path), "--by", "colour"]) == 2
    assert "unknown by 'colour'" in capsys.readouterr().err
