"""The three files a user writes (pricing overrides, budgets, revenue): the shipped examples in docs/examples/ load
with the real loaders and say what they claim, and a budgets or revenue file with several mistakes is refused with
ONE error naming every mistake with its line, as the pricing file is, on every surface that reads it (the loader,
``tokentrail budgets``, ``tokentrail margins``, ``tokentrail serve``)."""

from __future__ import annotations

import socket
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from tokentrail.processor.cli import main as cli
from tokentrail.processor.pricing.overrides import BYOK_ZERO, load_overrides
from tokentrail.processor.reports.budgets import BudgetConfigError, budgets_from_dict, load_budgets
from tokentrail.processor.reports.errors import ReportError
from tokentrail.processor.reports.revenue import RevenueConfigError, load_revenue, revenue_from_dict

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def lines_named(errors: list[str], path: Path) -> list[int]:
    """The line numbers ``FILE:LINE: problem`` entries name, in order."""
    assert all(e.startswith(f"{path}:") for e in errors), errors
    return [int(e[len(f"{path}:"):].split(":", 1)[0]) for e in errors]


# --- the shipped examples ------------------------------------------------------------------------------------------


def test_the_pricing_example_passes_prices_check_and_says_what_it_claims(capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "pricing.toml"
    code, out, err = run(capsys, "prices", "check", str(path))
    assert code == 0, err
    assert "ok (4 rule(s), 1 custom model(s), 2 alias(es), BYOK total cost: zero" in out
    overrides = load_overrides(path)
    assert overrides.byok == BYOK_ZERO
    assert overrides.alias_for("azure", "prod-chat") == ("azure", "gpt-4o-2024-08-06")
    first = overrides.rules[0]
    assert (first.provider, first.model, first.start, first.end) == (
        "anthropic", "claude-sonnet-4-5", date(2026, 1, 1), date(2026, 12, 31))
    assert first.rates is not None and first.rates.input == Decimal("2.70") and first.rates.output == Decimal("13.50")
    assert [r.discount_percent for r in overrides.rules[1:]] == [Decimal(10), Decimal("12.5"), Decimal("12.5")]
    (model,) = overrides.models
    assert (model.provider, model.model) == ("acme", "acme-llm-9*")


def test_the_budgets_example_loads_with_a_monthly_and_a_per_customer_budget() -> None:
    config = load_budgets(EXAMPLES / "budgets.toml")
    by_name = {b.name: b for b in config.budgets}
    assert list(by_name) == ["company monthly", "per customer", "acme corp", "free plan daily",
                             "claude sonnet weekly", "launch"]
    company = by_name["company monthly"]
    assert (company.scope, company.value, company.period, company.amount) == ("total", None, "monthly",
                                                                              Decimal("2500.00"))
    assert company.thresholds == (Decimal(50), Decimal(75), Decimal(100))
    assert company.webhook == "https://hooks.example.com/tokentrail"
    assert company.webhook_headers == {"Authorization": "Bearer change-me"}
    customer = by_name["per customer"]
    assert (customer.scope, customer.each, customer.amount, customer.count_byok) == ("user", True, Decimal(20), True)
    assert customer.thresholds == (Decimal(80), Decimal(100))
    free = by_name["free plan daily"]
    assert (free.scope, free.value, free.period, free.amount) == ("tag", "plan:free", "daily", Decimal("15.50"))
    assert free.webhook == "https://hooks.example.com/tokentrail-oncall"
    assert by_name["launch"].start == date(2026, 3, 1) and by_name["launch"].period == "none"
    assert by_name["acme corp"].thresholds[-1] == Decimal(120) and not by_name["acme corp"].count_byok


def test_the_revenue_example_loads_with_plans_and_customers() -> None:
    config = load_revenue(EXAMPLES / "revenue.toml")
    assert (config.plan_tag_prefix, config.feature_tag_prefix) == ("plan:", "feature:")
    assert sorted(config.plans) == ["api", "free", "pro", "team"]
    free, api = config.plans["free"], config.plans["api"]
    assert (free.monthly, free.allowance, free.upgrade_at_percent) == (Decimal(0), Decimal("2.50"), Decimal(80))
    assert config.plans["pro"].monthly == Decimal(49) and config.plans["pro"].allowance is None
    assert (api.monthly, api.per_request, api.per_1k_tokens) == (Decimal(10), Decimal("0.002"), Decimal("0.015"))
    assert config.customers["cust_acme"].monthly == Decimal(1200)
    assert config.customers["cust_globex"].per_1k_tokens == Decimal("0.0125")


# --- every mistake, each with its line -----------------------------------------------------------------------------

BAD_BUDGETS = """\
webhook = "ftp://hooks.example.com"

[[budgets]]
name = "company"
scope = "totall"
amount = 2500
period = "monthy"

[[budgets]]
name = "company"
scope = "user"
value = "each"
amount = -5
thresholds = [80, "lots"]
colour = "red"

[[budgets]]
name = "byok"
scope = "credential_type"
value = "BYOK"
amount = 1
period = "none"
start = "next monday"

[[budget]]
amount = 3
"""


def test_a_budgets_file_with_many_mistakes_names_every_line_in_one_error(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(BAD_BUDGETS)
    with pytest.raises(BudgetConfigError) as caught:
        load_budgets(path)
    errors = caught.value.errors
    assert lines_named(errors, path) == [1, 5, 7, 10, 13, 14, 15, 20, 23, 25]
    message = str(caught.value)
    assert message.startswith("10 problems in the budgets file:\n")
    assert all(error in message for error in errors)
    assert "unknown scope 'totall'; did you mean 'total'?" in errors[1]
    assert "unknown period 'monthy'; did you mean 'monthly'?" in errors[2]
    assert "two budgets are named 'company' (also at line 4)" in errors[3]
    assert "unknown key 'colour'" in errors[6]
    assert "credential_type is \"byok\" or \"system\"" in errors[7]
    assert "unknown top-level key 'budget' (did you mean 'budgets'?" in errors[9]
    assert isinstance(caught.value, ReportError) and isinstance(caught.value, ValueError)  # what callers catch


def test_tokentrail_budgets_prints_every_problem_in_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(BAD_BUDGETS)
    code, out, err = run(capsys, "budgets", "--budgets", str(path), "--data-dir", str(tmp_path / "data"))
    assert code == 1 and out == ""
    assert "Traceback" not in err and err.startswith("tokentrail budgets: 10 problems in the budgets file:")
    for line in (1, 5, 7, 10, 13, 14, 15, 20, 23, 25):
        assert f"{path}:{line}: " in err


BAD_REVENUE = """\
currency = "EUR"
plan_tag_prefix = "plan:"

[plans.free]
monthly = 0
allowance = 2.5
upgrade_at = 80

[plans."plan:pro"]
monthly = 49
per_request = -0.01

[customers.cust_42]
monthly = "lots"
allowance = 5

[custmers.cust_7]
monthly = 10
"""


def test_a_revenue_file_with_many_mistakes_names_every_line_in_one_error(tmp_path: Path) -> None:
    path = tmp_path / "revenue.toml"
    path.write_text(BAD_REVENUE)
    with pytest.raises(RevenueConfigError) as caught:
        load_revenue(path)
    errors = caught.value.errors
    assert lines_named(errors, path) == [1, 7, 9, 11, 14, 15, 17]
    assert str(caught.value).startswith("7 problems in the revenue file:\n")
    assert "currency must be 'USD'" in errors[0]
    assert "unknown key 'upgrade_at' (did you mean 'upgrade_at_percent'?" in errors[1]
    assert "name the plan by the tag's value, [plans.pro]" in errors[2]
    assert "plans.plan:pro.per_request must not be negative" in errors[3]
    assert "customers.cust_42.monthly must be a number, got 'lots'" in errors[4]
    assert "allowance and upgrade_at_percent belong to a plan" in errors[5]
    assert "unknown top-level key 'custmers' (did you mean 'customers'?" in errors[6]


def test_tokentrail_margins_prints_every_problem_in_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "revenue.toml"
    path.write_text(BAD_REVENUE)
    code, out, err = run(capsys, "margins", "--revenue", str(path), "--data-dir", str(tmp_path / "data"))
    assert code == 1 and out == ""
    assert "Traceback" not in err and err.startswith("tokentrail margins: 7 problems in the revenue file:")
    for line in (1, 7, 9, 11, 14, 15, 17):
        assert f"{path}:{line}: " in err


def test_serve_refuses_a_bad_revenue_file_with_every_line_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "revenue.toml"
    path.write_text(BAD_REVENUE)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = cli.main(["serve", "--data-dir", str(tmp_path / "d"), "--grpc-port", str(port), "--api-port", "0",
                     "--no-http", "--revenue", str(path)])
    _, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err
    for line in (1, 7, 9, 11, 14, 15, 17):
        assert f"{path}:{line}: " in err
    with socket.socket() as sock:  # nothing was left listening
        sock.bind(("127.0.0.1", port))


def test_a_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "revenue.toml"
    path.write_text("[plans.pro]\nmonthly = 49\n[plans.free\n")
    with pytest.raises(RevenueConfigError, match=f"^{path}:3: not valid TOML: "):
        load_revenue(path)


def test_values_not_from_a_file_still_get_every_problem_named_by_where_they_are() -> None:
    with pytest.raises(BudgetConfigError) as caught:
        budgets_from_dict({"budgets": [{"name": "a", "amount": 0}, {"name": "b", "amount": 1, "period": "yearly"}]})
    assert caught.value.errors == [
        "budget 1 ('a'): amount must be more than 0 (USD per period)",
        "budget 2 ('b'): unknown period 'yearly'; use one of daily, weekly, monthly, none",
    ]


# --- money is exact ------------------------------------------------------------------------------------------------


def test_money_is_read_digit_for_digit_as_written(tmp_path: Path) -> None:
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budgets]]\nname = "a"\namount = 100.10\n[[budgets]]\nname = "b"\n'
                       'amount = 0.12345678901234567891   # more digits than a double holds\n'
                       '[[budgets]]\nname = "c"\namount = "7.000000000000000000001"\n')
    a, b, c = load_budgets(budgets).budgets
    assert str(a.amount) == "100.10"
    assert b.amount == Decimal("0.12345678901234567891")  # from the text, not the float (0.12345678901234568)
    assert c.amount == Decimal("7.000000000000000000001")
    revenue = tmp_path / "revenue.toml"
    revenue.write_text("[plans.api]\nper_request = 0.00012345678901234567\n")
    assert load_revenue(revenue).plans["api"].per_request == Decimal("0.00012345678901234567")


def test_a_float_that_cannot_be_read_exactly_is_refused_with_advice_to_quote_it(tmp_path: Path) -> None:
    path = tmp_path / "revenue.toml"
    # In an inline table the number's text is not on a line of its own: only the float is known, and it has already
    # lost digits. Refused, never rounded silently.
    path.write_text("[plans]\npro = { monthly = 49.123456789012345678 }\nteam = { monthly = 199.99 }\n")
    with pytest.raises(RevenueConfigError) as caught:
        load_revenue(path)
    (error,) = caught.value.errors
    assert error.startswith(f"{path}:2: plans.pro.monthly has more digits than a TOML float keeps exactly")
    assert "quote it" in error
    assert revenue_from_dict({"plans": {"team": {"monthly": 199.99}}}).plans["team"].monthly == Decimal("199.99")


def test_the_budgets_and_revenue_examples_pass_their_check_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from tokentrail.processor.cli.main import main

    examples = Path(__file__).resolve().parents[3] / "docs" / "examples"
    assert main(["budgets", "--budgets", str(examples / "budgets.toml"), "--check"]) == 0
    budgets_out = capsys.readouterr().out
    assert ": ok (" in budgets_out and "alerts at" in budgets_out
    # Where alerts go, in which format, and the spike questions serve will ask; never a webhook's secret path.
    assert "alerts to: json to https://hooks.example.com/…, slack to https://hooks.slack.com/…" in budgets_out
    assert "spikes: checked every 300 s" in budgets_out and "total_cost by model, day windows" in budgets_out
    assert "change-me" not in budgets_out and "T0000000" not in budgets_out
    assert main(["margins", "--revenue", str(examples / "revenue.toml"), "--check"]) == 0
    assert "plan(s): " in capsys.readouterr().out


def test_check_says_a_budget_without_a_webhook_alerts_nowhere_and_spikes_are_never_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tokentrail.processor.cli.main import main

    path = tmp_path / "budgets.toml"
    path.write_text('[[budgets]]\nname = "a"\nscope = "total"\namount = 5\nperiod = "daily"\n')
    assert main(["budgets", "--budgets", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "alerts to: nowhere (no webhook" in out
    assert "spikes: no [spikes] table (spikes are listed by /v1/spikes, never sent)" in out


def test_a_bad_budgets_file_fails_its_check_with_every_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tokentrail.processor.cli.main import main

    bad = tmp_path / "budgets.toml"
    bad.write_text('[[budgets]]\nname = "a"\nscope = "totl"\namount = "x"\n')
    assert main(["budgets", "--budgets", str(bad), "--check"]) == 1
    err = capsys.readouterr().err
    assert ":3:" in err and ":4:" in err
