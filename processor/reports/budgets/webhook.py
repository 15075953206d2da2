"""Delivering alerts (budget thresholds, spikes) to webhooks: a POST per alert and webhook on a thread of its own,
retried with backoff, at least once (each alert carries an ``id``, also sent as ``Idempotency-Key``). The body is the
alert as JSON, or, for a webhook with ``format = "slack"``, a Slack message for people (``slack``), rendered at
delivery: its dashboard link is the one the server has then, and figures that cost a query (a budget's projection)
are computed here, off the path that fired the alert.

A webhook URL is a secret (Slack's and most chat hooks carry their key in the path), so logs name it only by
``redact_url``: scheme and host, path and query replaced by ``…``; error texts that could quote it are redacted too.
"""

from __future__ import annotations

import http.client
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from tokentrail.processor.reports.budgets.config import Webhook
from tokentrail.processor.reports.budgets.slack import slack_message
from tokentrail.processor.reports.formatting import exact_json

__all__ = [
    "DashboardURL",
    "Details",
    "WebhookNotifier",
    "addressed",
    "public_alert",
    "readdressed",
    "redact_url",
    "same_delivery",
]

DashboardURL: TypeAlias = "str | Callable[[], str | None] | None"
"""The dashboard's base URL for alert links: fixed, or asked at each delivery (a server's port is known once it
listens), or None (messages then carry no link)."""
Details: TypeAlias = "Callable[[Mapping[str, Any]], Mapping[str, Any]]"
"""Figures for a chat message that cost a query (a budget's projected spend): added at delivery, never stored."""
# What an alert carries for its delivery only: never POSTed, never in a JSON body.
_DELIVERY_KEYS = ("webhook", "webhook_headers", "webhook_format", "webhook_index")

log = logging.getLogger(__name__)


def redact_url(url: str) -> str:
    """``https://hooks.slack.com/services/T0/B0/secret?x=1`` -> ``https://hooks.slack.com/…``: enough to tell which
    hook, nothing to call it with (user info, path and query dropped)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # a port that is not a number: say nothing of it
        return "<webhook URL>"
    if not parts.scheme or not host:
        return "<webhook URL>"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}/…"


def _scrubbed(text: str, url: str) -> str:
    """An error's text with the URL (or its path) replaced: urllib's messages may quote either."""
    redacted = redact_url(url)
    text = text.replace(url, redacted)
    try:
        path = urlsplit(url).path
    except ValueError:
        return text
    if len(path) > 1:
        text = text.replace(path, "/…")
    return text


class WebhookNotifier:
    """Delivers alerts on its own thread: a POST per alert, retried with exponential backoff on connection errors,
    5xx and 429 (``attempts`` tries, ``backoff`` seconds doubling). ``done(alert, delivered)`` is called once per
    alert when it is settled. An alert says where it goes (``webhook``, ``webhook_headers``) and in which shape
    (``webhook_format``: ``json``, the default, or ``slack``)."""

    def __init__(
        self,
        *,
        attempts: int = 5,
        backoff: float = 1.0,
        timeout: float = 10.0,
        dashboard_url: DashboardURL = None,
        details: Details | None = None,
        name: str = "tokentrail-budget-webhook",
    ) -> None:
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.dashboard_url = dashboard_url
        self.details = details
        self._queue: queue.Queue[tuple[dict[str, Any], Callable[[dict[str, Any], bool], None]] | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, alert: dict[str, Any], done: Callable[[dict[str, Any], bool], None]) -> None:
        self._queue.put((alert, done))

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the alert in hand; undelivered alerts stay in the state file for the next start."""
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._queue.get()
            if item is None:
                return
            alert, done = item
            try:
                delivered = self._deliver(alert)
            except Exception:  # noqa: BLE001 - a bug rendering one alert must not stop the delivery of the others
                log.exception("%s %s could not be prepared for delivery", _kind(alert), alert.get("id"))
                delivered = False
            if delivered is None:  # stopping: leave it pending
                return
            try:
                done(alert, delivered)
            except Exception:
                log.exception("recording the delivery of %s %s failed", _kind(alert), alert.get("id"))

    def body(self, alert: Mapping[str, Any]) -> bytes:
        """What is POSTed for ``alert``: the alert as JSON, or a Slack message."""
        if alert.get("webhook_format", "json") != "slack":
            return exact_json(public_alert(alert)).encode("utf-8")
        extra: Mapping[str, Any] = {}
        if self.details is not None:
            try:
                extra = self.details(alert)
            except Exception:  # noqa: BLE001 - the message goes out without the extra figure, saying nothing of it
                log.exception("computing the details of %s %s failed; sending it without them", _kind(alert),
                              alert.get("id"))
        base = self.dashboard_url() if callable(self.dashboard_url) else self.dashboard_url
        return exact_json(slack_message({**public_alert(alert), **extra}, base)).encode("utf-8")

    def _deliver(self, alert: dict[str, Any]) -> bool | None:
        url = alert.get("webhook")
        if not url:
            return True
        body = self.body(alert)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tokentrail-budgets",
            "Idempotency-Key": str(alert["id"]),
            **alert.get("webhook_headers", {}),
        }
        kind = _kind(alert)
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            retry = True
            try:
                request = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                log.info("%s %s delivered to %s", kind, alert["id"], redact_url(url))
                return True
            except urllib.error.HTTPError as exc:
                retry = exc.code >= 500 or exc.code == 429
                problem = f"HTTP {exc.code}"
            except (ValueError, http.client.InvalidURL) as exc:  # a URL urllib cannot use: retrying will not help
                retry = False
                problem = _scrubbed(str(exc), url)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # HTTPException: not HTTP
                problem = _scrubbed(str(getattr(exc, "reason", exc)), url)
            if not retry or attempt == self.attempts:
                log.error("%s %s not delivered to %s after %d attempt(s): %s", kind, alert["id"], redact_url(url),
                          attempt, problem)
                return False
            log.warning("%s %s: %s from %s; retrying in %.1fs", kind, alert["id"], problem, redact_url(url), delay)
            if self._stop.wait(delay):
                return None
            delay *= 2
        return False


def _kind(alert: Mapping[str, Any]) -> str:
    return "spike alert" if str(alert.get("type", "")).startswith("spike.") else "budget alert"


def public_alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The alert as POSTed: without the delivery settings."""
    return {k: v for k, v in alert.items() if k not in _DELIVERY_KEYS}


def addressed(alert: Mapping[str, Any], webhooks: Sequence[Webhook]) -> list[dict[str, Any]]:
    """One copy of ``alert`` per webhook, each saying where and how it goes (one with no webhook when there is
    none: it is logged and settled at once). Each is settled on its own: a Slack hook that is down does not send
    the JSON alert again."""
    if not webhooks:
        return [{**alert, "webhook": None, "webhook_headers": {}, "webhook_format": "json", "webhook_index": 0}]
    return [
        {**alert, "webhook": hook.url, "webhook_headers": dict(hook.headers), "webhook_format": hook.format,
         "webhook_index": index}
        for index, hook in enumerate(webhooks)
    ]


def readdressed(alert: dict[str, Any], webhooks: Sequence[Webhook]) -> dict[str, Any]:
    """An undelivered alert from a previous run, sent where its webhook is now (a restart is how an operator fixes
    a wrong URL): the one at its index; none if the file now names none; where it was addressed (without headers:
    they are never stored) if the file now names fewer."""
    index = int(alert.get("webhook_index") or 0)
    if index < len(webhooks):
        hook = webhooks[index]
        alert.update(webhook=hook.url, webhook_headers=dict(hook.headers), webhook_format=hook.format)
    elif not webhooks:
        alert.update(webhook=None, webhook_headers={})
    return alert


def same_delivery(one: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """Whether two alert copies are one delivery (same alert, same webhook)."""
    return bool(one.get("id") == other.get("id") and (one.get("webhook_index") or 0) == (other.get("webhook_index") or 0))
