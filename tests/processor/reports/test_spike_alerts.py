"""Spikes alert, not only listed: the ``[spikes]`` table of the budgets file, and ``SpikeMonitor`` finding a spike in
real Parquet data and sending it once to a JSON and a Slack webhook (a real HTTP server on loopback), and never
again, not even after a restart; ``tokentrail serve`` runs it on its own thread with the dashboard link."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tokentrail.processor.cli import main as cli
from tokentrail.processor.reports.budgets import (
    BudgetConfigError,
    SpikeMonitor,
    WebhookNotifier,
    budgets_from_dict,
    load_budgets,
)
from tokentrail.processor.reports.spikes import SpikeQuery

from tests.helpers.reports import rec, write
from tests.processor.reports.webhooks import Hook, dashboard_links, slack_text, validate_slack

SATURDAY = date(2025, 3, 15)
AFTER = datetime(2025, 3, 16, 0, 5, tzinfo=UTC)  # the latest complete day is that Saturday
SURGE = Decimal("10.123456789012")


def eight_weeks(data_dir: Path, last: date, surge: Decimal = SURGE) -> None:
    """$1 a day for ``steady`` and ``surge`` for eight weeks up to ``last``, where ``surge`` spends ``surge``."""
    records = []
    for back in range(56):
        day = last - timedelta(days=back)
        records.append(rec(f"{day}T12:00:00", model="steady", total_cost=Decimal(1)))
        records.append(rec(f"{day}T12:00:00", model="surge", total_cost=surge if back == 0 else Decimal(1)))
    write(data_dir, records)


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def spikes_config(hook_base: str, **spikes: Any) -> Any:
    return budgets_from_dict({"spikes": {
        "webhook": [f"{hook_base}/json", {"url": f"{hook_base}/slack", "format": "slack"}], **spikes}})


def monitor(data_dir: Path, config: Any, **options: Any) -> SpikeMonitor:
    return SpikeMonitor(config.spikes, data_dir, clock=lambda: AFTER, **options)


def test_a_spike_fires_once_to_json_and_slack_and_not_again_after_a_restart(tmp_path: Path, hook: Hook) -> None:
    eight_weeks(tmp_path, SATURDAY)
    config = spikes_config(hook.base, dimension="model")
    first = monitor(tmp_path, config, dashboard_url="https://tt.example")
    (fired,) = first.check()
    assert (fired["dimension"], fired["value"], fired["observed"], fired["expected"]) == ("model", "surge", SURGE,
                                                                                          Decimal(1))
    hook.wait_for(2)
    assert first.check() == []  # the same spike, checked again: nothing new
    first.close()

    restarted = monitor(tmp_path, config, dashboard_url="https://tt.example")
    assert restarted.check() == []  # remembered on disk
    restarted.close()
    assert len(hook.requests) == 2  # one JSON POST and one Slack POST, ever

    (alert,) = hook.by_path("/json")
    assert alert["type"] == "spike.detected" and alert["id"] == fired["id"]
    assert (alert["dimension"], alert["value"], alert["metric"], alert["window"]) == ("model", "surge",
                                                                                      "total_cost", "day")
    assert (alert["observed"], alert["expected"]) == (SURGE, Decimal(1))  # exact, through JSON
    assert (alert["window_start"], alert["window_end"]) == ("2025-03-15T00:00:00Z", "2025-03-16T00:00:00Z")
    assert alert["score"] == Decimal("9.12") and alert["threshold"] == Decimal("3.5")
    assert alert["ratio"] == Decimal("10.12") and alert["baseline_windows"] == 6
    assert alert["currency"] == "USD" and "webhook" not in alert and "webhook_format" not in alert

    (slack,) = hook.by_path("/slack")
    validate_slack(slack)
    said = slack_text(slack)
    assert "*Observed*\n$10.123456789012" in said and "*Expected*\n$1.00" in said
    assert "*Ratio*\n10.12x" in said and "*Score*\n9.12 (threshold 3.5)" in said
    assert "*Value*\n`surge`" in said
    ((base, _, query),) = dashboard_links(slack)
    assert base == "https://tt.example/"
    assert query == {"start_date": ["2025-03-15"], "end_date": ["2025-03-15"], "model": ["surge"]}
    state = json.loads((tmp_path / "budgets" / "spikes.json").read_text())
    assert state["pending"] == [] and len(state["fired"]) == 1


def test_the_next_window_spiking_is_a_new_spike(tmp_path: Path) -> None:
    eight_weeks(tmp_path, SATURDAY)
    config = budgets_from_dict({"spikes": {}})  # no webhook: logged only
    assert [a["window_start"] for a in monitor(tmp_path, config).check()] == ["2025-03-15T00:00:00Z"]
    write(tmp_path, [rec("2025-03-16T12:00:00", model="surge", total_cost=Decimal(12))], part="part-r1-000002")
    assert config.spikes is not None
    sunday = SpikeMonitor(config.spikes, tmp_path, clock=lambda: AFTER + timedelta(days=1))
    assert [a["window_start"] for a in sunday.check()] == ["2025-03-16T00:00:00Z"]


def test_an_alert_not_delivered_before_shutdown_is_sent_after_the_restart(
    tmp_path: Path, hook: Hook, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    eight_weeks(tmp_path, SATURDAY)
    down = budgets_from_dict({"spikes": {"webhook": {"url": "http://127.0.0.1:9/T0/xoxSeCrEt", "format": "slack"}}})
    first = monitor(tmp_path, down, notifier=WebhookNotifier(attempts=100, backoff=30))
    assert len(first.check()) == 1
    for _ in range(200):  # the first attempt fails (nothing listens on the discard port), then it backs off
        if "retrying" in caplog.text:
            break
        threading.Event().wait(0.05)
    first.close(timeout=10)  # stops mid-backoff: the alert stays pending
    logged = caplog.text + capfd.readouterr().err
    assert "spike alert" in logged and "from http://127.0.0.1:9/…; retrying" in logged
    assert "SeCrEt" not in logged
    (pending,) = json.loads((tmp_path / "budgets" / "spikes.json").read_text())["pending"]
    assert pending["observed"] == str(SURGE)  # as text: exact

    fixed = budgets_from_dict({"spikes": {"webhook": {"url": f"{hook.base}/slack", "format": "slack"}}})
    restarted = monitor(tmp_path, fixed)  # the operator fixed the URL in the budgets file
    ((path, _, slack),) = hook.wait_for(1)
    assert restarted.check() == []
    restarted.close()
    assert path == "/slack" and "$10.123456789012" in slack_text(slack)


def test_a_failing_question_is_logged_and_the_others_still_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    eight_weeks(tmp_path, SATURDAY)
    config = budgets_from_dict({"spikes": {"dimension": ["provider", "model"]}})
    m = monitor(tmp_path, config)
    broken = m.config.queries[0]
    object.__setattr__(broken, "dimension", "nonsense")
    caplog.set_level(logging.WARNING)
    assert [a["value"] for a in m.check()] == ["surge"]
    assert "checking for spikes by nonsense failed" in caplog.text
    assert "spike: model 'surge' total_cost $10.12 in the day from 2025-03-15T00:00:00Z (expected $1.00, 10.12x" \
        in caplog.text


# --- the file ------------------------------------------------------------------------------------------------------


def test_the_spikes_table_takes_the_v1_spikes_parameters() -> None:
    config = budgets_from_dict({"webhook": "https://hooks.example.com/all", "spikes": {
        "interval_seconds": 60, "dimension": ["model", "user", "model"], "window": "hour", "metric": "request_count",
        "threshold": "5", "min_increase": 10, "baseline": 7, "partial": True}})
    spikes = config.spikes
    assert spikes is not None and spikes.enabled and spikes.interval == 60
    assert spikes.queries == (
        SpikeQuery(dimension="model", window="hour", metric="request_count", threshold=Decimal(5),
                   min_increase=Decimal(10), baseline=7, partial=True),
        SpikeQuery(dimension="user", window="hour", metric="request_count", threshold=Decimal(5),
                   min_increase=Decimal(10), baseline=7, partial=True),
    )
    assert [h.url for h in spikes.webhooks] == ["https://hooks.example.com/all"]  # the top-level webhook
    assert budgets_from_dict({"budgets": []}).spikes is None
    assert budgets_from_dict({"spikes": {"enabled": False}}).spikes.enabled is False  # type: ignore[union-attr]


BAD_SPIKES = """\
[[budgets]]
name = "company"
amount = 10

[spikes]
enabled = "yes"
interval_seconds = 0.5
dimension = ["model", "team"]
window = "minute"
seasonality = "daily"
threshold = "high"
limit = 5
"""


def test_a_wrong_spikes_table_names_every_line(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(BAD_SPIKES)
    with pytest.raises(BudgetConfigError) as caught:
        load_budgets(path)
    errors = caught.value.errors
    assert [int(e.split(":")[1]) for e in errors] == [6, 7, 8, 9, 11, 12]
    assert "spikes: enabled must be true or false" in errors[0]
    assert "spikes: interval_seconds must be at least 1" in errors[1]
    assert "spikes: unknown dimension 'team'" in errors[2]
    assert "spikes: unknown window 'minute'" in errors[3]
    assert "spikes: threshold must be a number" in errors[4]
    assert "spikes: unknown key 'limit'" in errors[5]


def test_seasonality_that_does_not_fit_the_window_is_refused_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text('[spikes]\nwindow = "day"\nseasonality = "daily"\n')
    with pytest.raises(BudgetConfigError, match=r"budgets.toml:3: spikes: seasonality=daily compares hours"):
        load_budgets(path)


# --- tokentrail serve ----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_sends_a_spike_with_a_link_to_its_own_dashboard(
    tmp_path: Path, hook: Hook, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real command: the monitor runs on its thread while the receiver and report API serve; with no
    --dashboard-url the link is the report API's own URL."""
    monkeypatch.delenv("TOKENTRAIL_DASHBOARD_URL", raising=False)
    data = tmp_path / "data"
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    eight_weeks(data, yesterday)
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(f'[spikes]\ninterval_seconds = 1\nwebhook = {{ url = "{hook.base}/slack", format = "slack" }}\n')
    api_port = _free_port()
    failures: list[BaseException] = []

    def operator() -> None:
        try:
            hook.wait_for(1, timeout=60)
            with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=5) as response:
                assert response.status == 200  # the API answers while spikes are checked
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=operator)
    thread.start()
    code = cli.main(["serve", "--data-dir", str(data), "--grpc-port", str(_free_port()), "--api-port",
                     str(api_port), "--no-http", "--receiver-id", "spike-test", "--budgets", str(budgets)])
    thread.join(10)
    capsys.readouterr()
    assert code == 0 and not failures, failures
    ((_, _, slack),) = hook.requests
    validate_slack(slack)
    ((base, _, query),) = dashboard_links(slack)
    assert base == f"http://127.0.0.1:{api_port}/"
    assert query == {"start_date": [str(yesterday)], "end_date": [str(yesterday)], "model": ["surge"]}


def test_serve_refuses_a_dashboard_url_that_is_not_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    code = cli.main(["serve", "--data-dir", str(tmp_path), "--grpc-port", str(port), "--api-port", "0", "--no-http",
                     "--dashboard-url", "tt.example/dashboard"])
    assert code == 2
    assert "--dashboard-url (env TOKENTRAIL_DASHBOARD_URL) must be an http:// or https:// URL" in \
        capsys.readouterr().err
    with socket.socket() as sock:  # nothing was left listening
        sock.bind(("127.0.0.1", port))
