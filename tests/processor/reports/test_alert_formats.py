"""Budget alerts where people are: a webhook with ``format = "slack"`` gets a Slack Block Kit message with the exact
numbers and a link to the dashboard's range and filters, next to the JSON webhook whose body stays as it was; a
format the file does not know is refused with its line; a webhook URL never reaches the log. Every delivery goes
to a real HTTP server on loopback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tokentrail.processor.reports.budgets import (
    BudgetConfigError,
    BudgetMonitor,
    WebhookNotifier,
    budgets_from_dict,
    load_budgets,
)
from tokentrail.processor.reports.budgets.slack import exact_usd

from tests.helpers.reports import rec, write
from tests.processor.reports.webhooks import Hook, dashboard_links, slack_text, validate_slack

NOW = datetime(2025, 3, 15, 12, tzinfo=UTC)
SECRET = "T0AAA/B0BBB/xoxSeCrEtPaTh"
# The keys of a JSON budget alert, as before Slack messages existed: nothing about its delivery leaks in.
JSON_ALERT_KEYS = {"type", "id", "budget", "scope", "value", "period", "period_start", "period_end", "threshold",
                   "percent", "spend", "amount", "currency", "count_byok", "at"}


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def customer_budget(hook: Hook, **extra: Any) -> Any:
    return budgets_from_dict({
        "webhook": [f"{hook.base}/json", {"url": f"{hook.base}/slack", "format": "slack"}],
        "webhook_headers": {"X-Shared-Secret": "for-the-json-hook"},
        "budgets": [{"name": "acme & co <gold>", "scope": "user", "value": "each", "amount": 100,
                     "period": "monthly", **extra}],
    })


def fourteen_dollars(data_dir: Path) -> None:
    """$1 a day at noon for cust_42, March 1 to 14 (flushed to Parquet before the monitor starts)."""
    write(data_dir, [rec(f"{date(2025, 3, 1) + timedelta(days=i)}T12:00:00", user_id="cust_42",
                         total_cost=Decimal(1)) for i in range(14)])


def test_a_slack_budget_alert_has_the_exact_numbers_and_a_link_to_the_dashboard_range(
    tmp_path: Path, hook: Hook
) -> None:
    fourteen_dollars(tmp_path)
    monitor = BudgetMonitor(customer_budget(hook), tmp_path, dashboard_url="https://tt.example/costs",
                            clock=lambda: NOW)
    monitor.observe([rec("2025-03-15T11:00:00", user_id="cust_42", total_cost=Decimal("41.123456789012"))])
    hook.wait_for(2)
    monitor.close()
    (slack,) = hook.by_path("/slack")
    (alert,) = hook.by_path("/json")
    validate_slack(slack)
    said = slack_text(slack)
    # The exact spend (14 stored + 41.123456789012 just landed), never rounded; amount, percent, threshold, period.
    assert "$55.123456789012 of $100.00 USD" in said
    assert "*Percent*\n55.12%" in said and "*Threshold*\n50%" in said
    assert "*Period*\nmonthly, 2025-03-01 to 2025-03-31" in said
    assert "*Scope*\nuser `cust_42`" in said
    assert "acme &amp; co &lt;gold&gt;" in said  # mrkdwn's control characters escaped; the header is plain text
    assert slack["blocks"][0]["text"]["text"] == "Budget acme & co <gold>: 50% reached"
    # Projected: the alert's spend plus the trailing week's rate ($1/day) over the 16.5 days left in March.
    assert "*Projected by period end*\n$71.623456789012 (71.62%)" in said
    ((base, text, query),) = dashboard_links(slack)
    assert base == "https://tt.example/costs/" and text == "Open the dashboard"
    assert query == {"start_date": ["2025-03-01"], "end_date": ["2025-03-31"], "user_id": ["cust_42"],
                     "credential_type": ["system"]}  # this budget leaves BYOK calls out: so does the link
    assert "for 2025-03-01 to 2025-03-31, user_id cust_42, credential_type system" in said
    # The JSON webhook's body is the alert as it always was, exact money and all; one id for both.
    assert set(alert) == JSON_ALERT_KEYS
    assert (alert["spend"], alert["percent"], alert["threshold"]) == (Decimal("55.123456789012"), Decimal("55.12"),
                                                                      50)
    assert alert["id"] in said
    headers = {path: h for path, h, _ in hook.requests}
    assert headers["/json"]["Idempotency-Key"] == headers["/slack"]["Idempotency-Key"] == alert["id"]
    assert headers["/json"]["X-Shared-Secret"] == "for-the-json-hook"
    assert "X-Shared-Secret" not in headers["/slack"]  # a table webhook sends its own headers only
    state = (tmp_path / "budgets" / "state.json").read_text()
    assert '"pending": []' in state


def test_a_budget_that_counts_byok_and_never_resets_links_without_claims_it_cannot_back(
    tmp_path: Path, hook: Hook
) -> None:
    config = budgets_from_dict({"webhook": {"url": f"{hook.base}/slack", "format": "slack"}, "budgets": [
        {"name": "launch", "scope": "tag", "value": "feature:launch", "amount": "0.5", "period": "none",
         "start": "2025-03-10", "count_byok": True}]})
    monitor = BudgetMonitor(config, tmp_path, dashboard_url="http://127.0.0.1:8080", clock=lambda: NOW)
    monitor.observe([rec("2025-03-15T11:00:00", tags=["feature:launch"], credential_type="byok",
                         total_cost=Decimal(0), market_cost=Decimal("0.000000000123"))])  # list price counts
    monitor.observe([rec("2025-03-15T11:00:00", tags=["feature:launch"], total_cost=Decimal("0.3"))])
    (slack,) = [body for _, _, body in hook.wait_for(1)]
    monitor.close()
    validate_slack(slack)
    said = slack_text(slack)
    assert "$0.300000000123 of $0.50 USD" in said  # a pico-dollar still shows: every digit
    assert "since 2025-03-10 (never resets)" in said
    assert "Projected" not in said  # a budget that never resets has no period end to project to
    ((base, _, query),) = dashboard_links(slack)
    assert base == "http://127.0.0.1:8080/"
    assert query == {"start_date": ["2025-03-10"], "end_date": ["2025-03-15"], "tags": ["feature:launch"]}


def test_without_a_dashboard_url_the_message_has_no_link_and_says_nothing_of_one(tmp_path: Path, hook: Hook) -> None:
    monitor = BudgetMonitor(customer_budget(hook), tmp_path, clock=lambda: NOW)
    monitor.observe([rec("2025-03-15T11:00:00", user_id="cust_42", total_cost=Decimal(80))])
    hook.wait_for(2)
    monitor.close()
    (slack,) = hook.by_path("/slack")
    validate_slack(slack)
    said = slack_text(slack)
    assert "$80.00 of $100.00 USD" in said
    assert dashboard_links(slack) == [] and "dashboard" not in said.lower() and "http" not in said


@pytest.mark.parametrize(
    ("value", "shown"),
    [(Decimal("1234.5"), "$1,234.50"), (Decimal("0.000000000001"), "$0.000000000001"), (Decimal(7), "$7.00"),
     (Decimal("-3"), "-$3.00"), (Decimal("100.000000000000"), "$100.00"), (Decimal("0.10"), "$0.10"),
     (Decimal("2E+3"), "$2,000.00"), (5, "$5.00")],
)
def test_exact_usd_keeps_every_digit_and_at_least_cents(value: Decimal, shown: str) -> None:
    assert exact_usd(value) == shown


# --- the file ------------------------------------------------------------------------------------------------------

BAD_FORMATS = """\
webhook = { url = "https://hooks.example.com/a", format = "teams" }

[[budgets]]
name = "company"
amount = 10
webhook = [
    "https://hooks.example.com/b",
    { url = "https://hooks.example.com/c", format = "slak" },
]

[spikes]
window = "hour"
webhook = { url = "ftp://hooks.example.com/d", format = "slack", colour = "red" }
"""


def test_an_unknown_webhook_format_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(BAD_FORMATS)
    with pytest.raises(BudgetConfigError) as caught:
        load_budgets(path)
    errors = caught.value.errors
    assert [e.split(":")[1] for e in errors] == ["1", "6", "13", "13"]
    assert errors[0].endswith("webhook has an unknown format 'teams'; use one of json, slack")
    assert "budget 1 ('company'): webhook has an unknown format 'slak'; did you mean 'slack'?" in errors[1]
    assert "spikes: webhook unknown key 'colour'" in errors[2]
    assert "spikes: webhook must be an http:// or https:// URL, got 'ftp://hooks.example.com/d'" in errors[3]


def test_a_webhook_is_a_url_a_table_or_a_list_and_json_stays_the_default() -> None:
    config = budgets_from_dict({
        "webhook": "https://hooks.example.com/all",
        "webhook_headers": {"Authorization": "Bearer x"},
        "budgets": [
            {"name": "inherits", "amount": 1},
            {"name": "own", "amount": 1, "webhook": {"url": "https://hooks.slack.com/x", "format": "slack",
                                                     "headers": {"X-A": "b"}}},
            {"name": "none", "amount": 1, "webhook": []},
        ],
    })
    inherits, own, none = config.budgets
    ((hook,),) = [inherits.webhooks]
    assert (hook.url, hook.format, dict(hook.headers)) == ("https://hooks.example.com/all", "json",
                                                          {"Authorization": "Bearer x"})
    assert [(h.format, dict(h.headers)) for h in own.webhooks] == [("slack", {"X-A": "b"})]
    assert none.webhooks == () and none.webhook is None
    shown = repr(config)  # a logged config never shows a hook's URL (its key) or headers
    assert "example.com" not in shown and "slack.com" not in shown and "Bearer" not in shown


# --- secrets -------------------------------------------------------------------------------------------------------


def test_a_webhook_url_never_appears_in_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = Hook([500, 503])  # one retry each, then delivered
    try:
        config = budgets_from_dict({"webhook": [
            f"{hook.base}/services/{SECRET}?token=qSeCrEt",
            {"url": f"{hook.base}/slack/{SECRET}", "format": "slack"}], "budgets": [{"name": "b", "amount": 10}]})
        monitor = BudgetMonitor(config, tmp_path, notifier=WebhookNotifier(backoff=0.01), clock=lambda: NOW)
        monitor.observe([rec("2025-03-15T11:00:00", total_cost=Decimal(6))])
        hook.wait_for(2)
        monitor.close()
    finally:
        hook.close()
    logged = caplog.text + capfd.readouterr().err
    assert logged.count(f"delivered to {hook.base}/…") == 2
    assert "retrying" in logged  # the retries were logged, by host only
    assert "SeCrEt" not in logged
