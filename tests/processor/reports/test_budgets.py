"""Budgets: the file, the status (spend, remaining, percent, projection), and alerts that fire once per period and
threshold as records land — logged, POSTed to a real webhook on loopback with retries, and remembered across
restarts."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tokentrail.processor.cli import main as cli
from tokentrail.processor.ingest.receiver import Receiver
from tokentrail.processor.reports.budgets import (
    DEFAULT_THRESHOLDS,
    BudgetConfigError,
    BudgetMonitor,
    WebhookNotifier,
    attach,
    budget_status,
    budgets_from_dict,
    load_budgets,
)
from tokentrail.processor.schema import UNPRICED, UsageRecord

from tests.helpers.otlp import T0_NS, export, genai_attributes, make_request, make_span
from tests.helpers.reports import rec, write

MARCH_16 = datetime(2025, 3, 16, tzinfo=UTC)  # as_of: the end of 2025-03-15


def config(**budget: Any) -> Any:
    return budgets_from_dict({"budgets": [{"name": "b", "amount": 100, "period": "monthly", **budget}]})


def status(data_dir: Path, as_of: datetime = MARCH_16, **budget: Any) -> list[dict[str, Any]]:
    rows, _ = budget_status(data_dir, config(**budget), as_of=as_of)
    return rows


def daily_dollar(data_dir: Path, first: date, days: int, **fields: Any) -> None:
    """$1 a day at noon for ``days`` days from ``first``."""
    write(data_dir, [rec(f"{first + timedelta(days=i)}T12:00:00", total_cost=Decimal(1), **fields)
                     for i in range(days)], part=f"part-{fields.get('user_id', 'x')}-{first}")


# --- the file -----------------------------------------------------------------------------------------------


def test_a_budgets_file_parses_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(
        'webhook = "http://127.0.0.1:9/hook"\n'
        "[webhook_headers]\nAuthorization = \"Bearer x\"\n"
        "[[budgets]]\nname = \"company\"\nscope = \"total\"\namount = 5000\n"
        "[[budgets]]\nscope = \"user\"\nvalue = \"each\"\namount = 20.5\nperiod = \"weekly\"\nthresholds = [80, 100]\n"
        "count_byok = true\nwebhook = \"https://example.com/other\"\n"
    )
    first, second = load_budgets(path).budgets
    assert (first.name, first.scope, first.value, first.amount, first.period) == (
        "company", "total", None, Decimal(5000), "monthly")
    assert first.thresholds == DEFAULT_THRESHOLDS and first.count_byok is False
    assert first.webhook == "http://127.0.0.1:9/hook" and first.webhook_headers == {"Authorization": "Bearer x"}
    assert (second.name, second.each, second.amount, second.thresholds) == (
        "user:each:weekly", True, Decimal("20.5"), (Decimal(80), Decimal(100)))
    assert second.count_byok and second.webhook == "https://example.com/other"


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ({"scope": "team"}, "unknown scope 'team'; use one of total, user, tag, model, provider, credential_type"),
        ({"scope": "user"}, "scope user needs a value: one user, or \"each\""),
        ({"scope": "total", "value": "x"}, "scope total takes no value"),
        ({"amount": 0}, "amount must be more than 0"),
        ({"amount": "lots"}, "amount must be a number"),
        ({"period": "yearly"}, "unknown period 'yearly'"),
        ({"thresholds": []}, "thresholds must be a non-empty list"),
        ({"thresholds": [0, 50]}, "thresholds are percents of amount and must be more than 0"),
        ({"count_byok": "yes"}, "count_byok must be true or false"),
        ({"start": "2025-01-01"}, "start applies only to period \"none\""),
        ({"period": "none", "start": "soon"}, "start must be a date"),
        ({"webhook": "ftp://x"}, "webhook must be an http:// or https:// URL"),
        ({"colour": "red"}, "unknown key 'colour'"),
    ],
)
def test_a_wrong_budget_is_refused_with_a_message_naming_it(budget: dict[str, Any], message: str) -> None:
    with pytest.raises(BudgetConfigError, match="budget 1 \\('b'\\): " + message.replace("(", r"\(").replace(
            "[", r"\[")):
        config(**budget)


def test_budget_names_must_be_unique() -> None:
    with pytest.raises(BudgetConfigError, match="two budgets are named 'x'"):
        budgets_from_dict({"budgets": [{"name": "x", "amount": 1}, {"name": "x", "amount": 2}]})


def test_a_missing_or_broken_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(BudgetConfigError, match="cannot read the budgets file"):
        load_budgets(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[[budgets]\n")
    with pytest.raises(BudgetConfigError, match="bad.toml:1: not valid TOML"):
        load_budgets(tmp_path / "bad.toml")


# --- status --------------------------------------------------------------------------------------------------


def test_status_gives_spend_remaining_percent_and_projection(tmp_path: Path) -> None:
    daily_dollar(tmp_path, date(2025, 3, 1), 20)  # $1 a day; as of the end of the 15th, $15 spent
    (row,) = status(tmp_path)
    assert row["spend"] == Decimal(15) and row["remaining"] == Decimal(85) and row["percent"] == Decimal("15.00")
    assert (row["period_start"], row["period_end"]) == ("2025-03-01", "2025-03-31")
    # The last 7 days ran at $1/day; 16 days remain: 15 + 16 = 31.
    assert row["projected_spend"] == Decimal(31)
    assert row["projected_percent"] == Decimal("31.00")
    assert row["crossed"] == [] and row["thresholds"] == [50, 75, 100]


def test_a_new_period_projects_from_the_previous_week(tmp_path: Path) -> None:
    daily_dollar(tmp_path, date(2025, 2, 22), 7)  # $1/day up to Feb 28, nothing in March yet
    (row,) = status(tmp_path, as_of=datetime(2025, 3, 1, tzinfo=UTC))
    assert row["period_start"] == "2025-02-01"  # as_of is exclusive: the end of Feb 28 is still February
    (row,) = status(tmp_path, as_of=datetime(2025, 3, 1, 0, 0, 1, tzinfo=UTC))
    assert row["spend"] == Decimal(0)
    assert Decimal("30.9") < row["projected_spend"] < Decimal(31)  # 31 days at $1/day, less one second


def test_byok_spend_does_not_count_unless_asked_and_then_at_list_price(tmp_path: Path) -> None:
    write(tmp_path, [
        rec("2025-03-02T00:00:00", total_cost=Decimal(10), market_cost=Decimal(10)),
        rec("2025-03-02T00:00:00", credential_type="byok", total_cost=Decimal(0), market_cost=Decimal(40)),
        rec("2025-03-02T00:00:00", price_status=UNPRICED, total_cost=None, market_cost=None),
    ])
    assert status(tmp_path)[0]["spend"] == Decimal(10)
    assert status(tmp_path, count_byok=True)[0]["spend"] == Decimal(50)


def test_a_budget_on_each_user_lists_users_with_spend_most_spent_first(tmp_path: Path) -> None:
    write(tmp_path, [
        rec("2025-03-02T00:00:00", user_id="small", total_cost=Decimal(5)),
        rec("2025-03-02T00:00:00", user_id="big", total_cost=Decimal(80)),
        rec("2025-02-27T00:00:00", user_id="last-month-only", total_cost=Decimal(50)),
    ])
    rows = status(tmp_path, scope="user", value="each")
    assert [(r["value"], r["percent"], r["crossed"]) for r in rows] == [
        ("big", Decimal("80.00"), [50, 75]), ("small", Decimal("5.00"), [])]
    rows, truncated = budget_status(tmp_path, config(scope="user", value="each"), as_of=MARCH_16, limit=1)
    assert [r["value"] for r in rows] == ["big"] and truncated


def test_a_budget_on_one_value_shows_it_even_without_spend(tmp_path: Path) -> None:
    write(tmp_path, [rec("2025-03-02T00:00:00", user_id="other", total_cost=Decimal(5))])
    (row,) = status(tmp_path, scope="user", value="quiet")
    assert (row["value"], row["spend"], row["remaining"]) == ("quiet", Decimal(0), Decimal(100))


@pytest.mark.parametrize(("scope", "value", "expected"), [
    ("tag", "plan:free", Decimal(3)), ("model", "claude-haiku-4-5", Decimal(2)),
    ("provider", "openai", Decimal(4)), ("credential_type", "system", Decimal(6)),
])
def test_every_scope_filters_its_own_spend(tmp_path: Path, scope: str, value: str, expected: Decimal) -> None:
    write(tmp_path, [
        rec("2025-03-02T00:00:00", tags=["plan:free", "plan:free"], total_cost=Decimal(3)),
        rec("2025-03-02T00:00:00", model="claude-haiku-4-5", provider="anthropic", total_cost=Decimal(2)),
        rec("2025-03-02T00:00:00", tags=["plan:pro"], total_cost=Decimal(1)),
    ])
    assert status(tmp_path, scope=scope, value=value)[0]["spend"] == expected


def test_each_tag_counts_a_request_once_per_distinct_tag(tmp_path: Path) -> None:
    write(tmp_path, [rec("2025-03-02T00:00:00", tags=["a", "a", "b"], total_cost=Decimal(3))])
    rows = status(tmp_path, scope="tag", value="each")
    assert {r["value"]: r["spend"] for r in rows} == {"a": Decimal(3), "b": Decimal(3)}


def test_weekly_periods_start_on_monday_and_daily_on_midnight(tmp_path: Path) -> None:
    daily_dollar(tmp_path, date(2025, 3, 1), 20)
    (week,) = status(tmp_path, period="weekly")  # Saturday the 15th: the week of Monday the 10th
    assert (week["period_start"], week["period_end"], week["spend"]) == ("2025-03-10", "2025-03-16", Decimal(6))
    assert week["projected_spend"] == Decimal(7)
    (day,) = status(tmp_path, period="daily")
    assert (day["period_start"], day["spend"], day["projected_spend"]) == ("2025-03-15", Decimal(1), Decimal(1))


def test_a_budget_without_period_counts_everything_from_its_start(tmp_path: Path) -> None:
    daily_dollar(tmp_path, date(2025, 1, 1), 74)  # to 2025-03-15
    (row,) = status(tmp_path, period="none")
    assert (row["spend"], row["period_end"], row["projected_spend"]) == (Decimal(74), None, None)
    (row,) = status(tmp_path, period="none", start="2025-03-01")
    assert row["spend"] == Decimal(15)


def test_as_of_leaves_out_later_records(tmp_path: Path) -> None:
    daily_dollar(tmp_path, date(2025, 3, 1), 20)
    (row,) = status(tmp_path, as_of=datetime(2025, 3, 10, 12, 0, 0, 1, tzinfo=UTC))
    assert row["spend"] == Decimal(10)


# --- alerts as records land ----------------------------------------------------------------------------------


class Collecting:
    """A notifier that records alerts instead of sending them (the webhook tests below send for real)."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    def submit(self, alert: dict[str, Any], done: Any) -> None:
        self.alerts.append(alert)
        done(alert, True)

    def close(self, timeout: float = 5.0) -> None:
        pass


NOW = datetime(2025, 3, 15, 12, tzinfo=UTC)


def spend(dollars: str, ts: datetime = NOW, **fields: Any) -> UsageRecord:
    return rec(ts.strftime("%Y-%m-%dT%H:%M:%S"), total_cost=Decimal(dollars), **fields)


def monitor(data_dir: Path, notifier: Any, now: datetime = NOW, **budget: Any) -> BudgetMonitor:
    return BudgetMonitor(config(**budget), data_dir, notifier=notifier, clock=lambda: now)


def test_thresholds_fire_once_each_as_spend_crosses_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = Collecting()
    m = monitor(tmp_path, sink)
    caplog.set_level(logging.WARNING, logger="tokentrail.processor.reports.budgets")
    m.observe([spend("30")])
    assert sink.alerts == []
    m.observe([spend("25")])  # 55 %
    m.observe([spend("1")])  # 56 %: nothing new
    m.observe([spend("20"), spend("30")])  # 106 %: 75 and 100 crossed in one batch, one alert for the highest
    m.observe([spend("50")])
    assert [(a["threshold"], a["spend"], a["percent"]) for a in sink.alerts] == [
        (50, Decimal(55), Decimal("55.00")), (100, Decimal(106), Decimal("106.00"))]
    assert [r.getMessage() for r in caplog.records] == [
        "budget 'b': 50% reached: spend $55.00 of $100.00 in the monthly period from 2025-03-01",
        "budget 'b': 100% reached: spend $106.00 of $100.00 in the monthly period from 2025-03-01",
    ]
    alert = sink.alerts[0]
    assert alert["type"] == "budget.threshold_crossed" and alert["period_end"] == "2025-03-31"
    assert alert["currency"] == "USD" and len(alert["id"]) == 32


def test_a_restart_does_not_fire_again(tmp_path: Path) -> None:
    first = Collecting()
    m = monitor(tmp_path, first)
    m.observe([spend("60")])
    write(tmp_path, [spend("60")])  # what the receiver flushed to Parquet
    second = Collecting()
    restarted = monitor(tmp_path, second)
    restarted.observe([spend("1")])  # 61 %: loads 60 from Parquet, then adds 1
    assert [a["threshold"] for a in first.alerts] == [50] and second.alerts == []
    restarted.observe([spend("20")])  # 81 %
    assert [a["threshold"] for a in second.alerts] == [75]


def test_spend_stored_before_the_monitor_started_counts(tmp_path: Path) -> None:
    write(tmp_path, [spend("40", NOW - timedelta(days=3))])
    sink = Collecting()
    monitor(tmp_path, sink).observe([spend("15")])
    assert [(a["threshold"], a["spend"]) for a in sink.alerts] == [(50, Decimal(55))]


def test_each_value_has_its_own_thresholds(tmp_path: Path) -> None:
    sink = Collecting()
    m = monitor(tmp_path, sink, scope="user", value="each", amount=10)
    m.observe([spend("6", user_id="a"), spend("4", user_id="b")])
    m.observe([spend("2", user_id="b")])
    assert [(a["value"], a["threshold"]) for a in sink.alerts] == [("a", 50), ("b", 50)]


def test_a_new_period_fires_again(tmp_path: Path) -> None:
    sink = Collecting()
    monitor(tmp_path, sink).observe([spend("60")])
    april = datetime(2025, 4, 1, 9, tzinfo=UTC)
    monitor(tmp_path, sink, now=april).observe([spend("60", april)])
    assert [(a["period_start"], a["threshold"]) for a in sink.alerts] == [("2025-03-01", 50), ("2025-04-01", 50)]


def test_records_outside_the_budget_or_its_periods_are_ignored(tmp_path: Path) -> None:
    sink = Collecting()
    m = monitor(tmp_path, sink, scope="model", value="gpt-4o")
    m.observe([
        spend("90", model="gpt-4o-mini"),  # another model
        spend("90", model="gpt-4o", credential_type="byok"),  # BYOK does not count
        rec("2025-03-15T12:00:00", model="gpt-4o", price_status=UNPRICED, total_cost=None, market_cost=None),
        spend("90", NOW - timedelta(days=60), model="gpt-4o"),  # January: too old to alert on
    ])
    assert sink.alerts == []
    m.observe([spend("50", model="gpt-4o")])
    assert [a["threshold"] for a in sink.alerts] == [50]


def test_a_late_record_of_last_period_can_still_fire_for_it(tmp_path: Path) -> None:
    sink = Collecting()
    monitor(tmp_path, sink).observe([spend("80", NOW - timedelta(days=20))])  # Feb 23, arriving in March
    assert [(a["period_start"], a["threshold"]) for a in sink.alerts] == [("2025-02-01", 75)]


def test_a_failing_budget_does_not_stop_the_others(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = budgets_from_dict({"budgets": [{"name": "one", "amount": 10}, {"name": "two", "amount": 10}]})
    sink = Collecting()
    m = BudgetMonitor(cfg, tmp_path, notifier=sink, clock=lambda: NOW)
    broken = cfg.budgets[0]
    object.__setattr__(broken, "scope", "nonsense")
    m.observe([spend("6")])
    assert [a["budget"] for a in sink.alerts] == ["two"]
    assert "evaluating budget 'one' failed" in caplog.text


def test_attach_listens_to_the_receiver(tmp_path: Path) -> None:
    class FakeReceiver:
        def __init__(self) -> None:
            self.listeners: list[Any] = []

        def add_listener(self, listener: Any) -> None:
            self.listeners.append(listener)

    receiver, sink = FakeReceiver(), Collecting()
    m = attach(receiver, config(), tmp_path, notifier=sink, clock=lambda: NOW)
    (listener,) = receiver.listeners
    listener([spend("75")])
    assert [a["threshold"] for a in sink.alerts] == [75]
    m.close()


# --- the webhook, for real ----------------------------------------------------------------------------------


class Hook:
    """An HTTP server on loopback that answers POSTs with the given statuses in turn (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.delivered = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.requests.append((dict(self.headers), json.loads(body, parse_float=Decimal)))
                code = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if code == 200:
                    hook.delivered.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook([500, 503])
    yield h
    h.close()


def test_the_webhook_gets_a_json_post_retried_until_it_succeeds(tmp_path: Path, hook: Hook) -> None:
    notifier = WebhookNotifier(backoff=0.01)
    m = monitor(tmp_path, notifier, webhook=hook.url, webhook_headers={"X-Secret": "s"})
    m.observe([spend("123.456789012345")])
    assert hook.delivered.wait(10)
    m.close()
    assert len(hook.requests) == 3  # 500, 503, then 200
    headers, body = hook.requests[-1]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Secret"] == "s"
    assert headers["Idempotency-Key"] == body["id"]
    assert body["spend"] == Decimal("123.456789012345")  # exact, not a float
    assert (body["budget"], body["threshold"], body["period"]) == ("b", 100, "monthly")
    assert "webhook" not in body and "webhook_headers" not in body
    state = json.loads((tmp_path / "budgets" / "state.json").read_text())
    assert state["pending"] == []


def test_an_alert_not_delivered_before_shutdown_is_sent_after_the_restart(tmp_path: Path, hook: Hook) -> None:
    down = "http://127.0.0.1:9/hook"  # nothing listens on the discard port
    m = monitor(tmp_path, WebhookNotifier(attempts=100, backoff=30), webhook=down,
                webhook_headers={"Authorization": "Bearer secret"})
    m.observe([spend("60")])
    m.close(timeout=10)  # stops mid-backoff; the alert stays pending
    state_path = tmp_path / "budgets" / "state.json"
    (pending,) = json.loads(state_path.read_text())["pending"]
    assert pending["webhook"] == down
    assert "secret" not in state_path.read_text()  # header values stay in the budgets file, not the state

    # The operator fixes the hook URL in the budgets file and restarts: the pending alert goes to the new URL.
    hook.statuses.clear()
    restarted = monitor(tmp_path, WebhookNotifier(backoff=0.01), webhook=hook.url,
                        webhook_headers={"Authorization": "Bearer secret"})
    assert hook.delivered.wait(10)
    restarted.close()
    ((headers, body),) = hook.requests
    assert (body["id"], body["threshold"], body["spend"]) == (pending["id"], 50, Decimal(60))
    assert headers["Authorization"] == "Bearer secret"
    assert json.loads(state_path.read_text())["pending"] == []


def test_a_webhook_that_keeps_failing_is_given_up_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hook = Hook([500, 500, 500])
    try:
        m = monitor(tmp_path, WebhookNotifier(attempts=2, backoff=0.01), webhook=hook.url)
        m.observe([spend("60")])
        for _ in range(200):
            if "not delivered" in caplog.text:
                break
            threading.Event().wait(0.05)
        m.close()
    finally:
        hook.close()
    assert len(hook.requests) == 2
    assert "not delivered to" in caplog.text and "after 2 attempt(s): HTTP 500" in caplog.text


# --- the CLI -------------------------------------------------------------------------------------------------


def test_cli_budgets_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    daily_dollar(tmp_path, date(2025, 3, 1), 20, user_id="alice")
    path = tmp_path / "budgets.toml"
    path.write_text('[[budgets]]\nname = "company"\namount = 20\n'
                    '[[budgets]]\nname = "per user"\nscope = "user"\nvalue = "each"\namount = 10\n')
    monkeypatch.setenv("TOKENTRAIL_BUDGETS", str(path))
    assert cli.main(["budgets", "--data-dir", str(tmp_path), "--as-of", "2025-03-15"]) == 0
    header, _, company, alice = capsys.readouterr().out.splitlines()[:4]
    assert header.split()[:4] == ["budget", "value", "period_start", "amount"]
    assert company.startswith("company") and "(all)" in company and "75.00%" in company and "$15.00 " in company  # to the cent, for people
    assert alice.startswith("per user") and "150.00%" in alice and "50, 75, 100" in alice


def test_cli_budgets_needs_the_file_and_names_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENTRAIL_BUDGETS", raising=False)
    assert cli.main(["budgets", "--data-dir", str(tmp_path)]) == 2
    assert "--budgets FILE" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('[[budgets]]\nscope = "team"\namount = 1\n')
    assert cli.main(["budgets", "--data-dir", str(tmp_path), "--budgets", str(bad)]) == 1
    assert "unknown scope 'team'" in capsys.readouterr().err
    good = tmp_path / "good.toml"
    good.write_text('[[budgets]]\nname = "x"\namount = 1\n')
    assert cli.main(["budgets", "--data-dir", str(tmp_path), "--budgets", str(good), "--as-of", "soon"]) == 2
    assert "as_of must be a date" in capsys.readouterr().err


def test_requests_without_a_user_are_in_no_each_user_budget(tmp_path: Path) -> None:
    write(tmp_path, [rec("2025-03-02T00:00:00", user_id=None, total_cost=Decimal(80))])
    assert status(tmp_path, scope="user", value="each") == []
    sink = Collecting()
    monitor(tmp_path, sink, scope="user", value="each").observe([spend("90", user_id=None)])
    assert sink.alerts == []


def test_the_real_receiver_fires_a_budget_alert_to_a_webhook_as_spans_land(tmp_path: Path, hook: Hook) -> None:
    """OTLP/gRPC in, through the receiver's durable-batch listener, out as a webhook POST: the path serve wires."""


    hook.statuses.clear()
    span_time = datetime.fromtimestamp(T0_NS / 1e9, tz=UTC)
    cfg = budgets_from_dict({"webhook": hook.url, "budgets": [
        {"name": "per customer", "scope": "user", "value": "each", "amount": "0.000001", "period": "daily"}]})
    with Receiver(tmp_path, grpc_port=0, receiver_id="budget-test", flush_interval=3600) as receiver:
        m = attach(receiver, cfg, tmp_path, notifier=WebhookNotifier(backoff=0.01), clock=lambda: span_time)
        export(receiver.grpc_port, make_request([make_span(genai_attributes())]))
        assert hook.delivered.wait(10)
        m.close()
    ((_, body),) = hook.requests
    assert (body["budget"], body["value"], body["threshold"], body["period_start"]) == (
        "per customer", "cust_42", 100, span_time.date().isoformat())
    assert body["spend"] > 0
