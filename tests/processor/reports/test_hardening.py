"""Secrets and edges of the reports: a budget webhook's URL (a Slack-style hook's key is its path) never reaches
the log in full, not even inside an error's text, and an unusable URL settles its alert instead of killing the
delivery thread; ``as_of`` outside the dates a report can count from is a parameter error, not an overflow."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tokentrail.processor.reports.budgets.webhook import WebhookNotifier, redact_url
from tokentrail.processor.reports.errors import ReportParameterError
from tokentrail.processor.reports.params import AS_OF_FIRST, AS_OF_LAST, parse_as_of

SECRET = "T0AAA/B0BBB/xoxSeCrEtPaTh"


class Hook:
    """A webhook on loopback answering 500 once, then 200."""

    def __init__(self) -> None:
        self.statuses = [500]
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(hook.statuses.pop(0) if hook.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.server.shutdown()
    h.server.server_close()


def deliver(url: str, attempts: int = 3) -> bool:
    """One alert through a real ``WebhookNotifier``; whether it was delivered."""
    settled: list[bool] = []
    done = threading.Event()

    def record(alert: dict[str, Any], delivered: bool) -> None:
        settled.append(delivered)
        done.set()

    notifier = WebhookNotifier(attempts=attempts, backoff=0.01)
    notifier.submit({"id": "a1", "budget": "b", "webhook": url}, record)
    assert done.wait(30), "the alert was never settled"
    notifier.close()
    return settled[0]


def test_the_log_names_the_webhook_by_host_only(
    hook: Hook, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    assert deliver(f"{hook.base}/services/{SECRET}?token=qSeCrEt") is True
    logged = caplog.text + capfd.readouterr().err
    assert f"{hook.base}/…" in logged  # which hook: a retry warning, then the delivery
    assert "SeCrEt" not in logged


def test_an_unusable_url_settles_the_alert_and_its_error_quotes_no_secret(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    assert deliver(f"http://127.0.0.1:9/services/{SECRET} with a space", attempts=1) is False
    logged = caplog.text + capfd.readouterr().err
    assert "not delivered to http://127.0.0.1:9/…" in logged
    assert "SeCrEt" not in logged


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/abc", "https://hooks.slack.com/…"),
        ("https://user:pw@example.com:8443/x?y=1", "https://example.com:8443/…"),
        ("http://[::1]:9000/hook", "http://[::1]:9000/…"),
        ("not a url", "<webhook URL>"),
        ("https://example.com:port/x", "<webhook URL>"),
    ],
)
def test_redact_url_keeps_scheme_host_and_port(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("text", ["9999-12-31", "0001-01-01", "0001-01-01T00:00:00+01:00", "1969-12-31T23:59:59Z"])
def test_as_of_outside_the_range_is_a_parameter_error(text: str) -> None:
    with pytest.raises(ReportParameterError, match="as_of must be from 1970-01-02 to 9000-01-01"):
        parse_as_of(text)


def test_as_of_at_the_ends_of_the_range_is_read() -> None:
    assert parse_as_of("1970-01-01") == AS_OF_FIRST
    assert parse_as_of("8999-12-31") == AS_OF_LAST
