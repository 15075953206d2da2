"""Delivering budget alerts to a webhook: a JSON POST per alert on a thread of its own, retried with backoff, at
least once (each alert carries an ``id``, also sent as ``Idempotency-Key``).

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
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from tokentrail.processor.reports.formatting import exact_json

__all__ = ["WebhookNotifier", "public_alert", "redact_url"]

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
    """Delivers alerts on its own thread: a JSON POST per alert, retried with exponential backoff on connection
    errors, 5xx and 429 (``attempts`` tries, ``backoff`` seconds doubling). ``done(alert, delivered)`` is called
    once per alert when it is settled."""

    def __init__(self, *, attempts: int = 5, backoff: float = 1.0, timeout: float = 10.0) -> None:
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self._queue: queue.Queue[tuple[dict[str, Any], Callable[[dict[str, Any], bool], None]] | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tokentrail-budget-webhook", daemon=True)
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
            delivered = self._deliver(alert)
            if delivered is None:  # stopping: leave it pending
                return
            try:
                done(alert, delivered)
            except Exception:
                log.exception("recording the delivery of budget alert %s failed", alert.get("id"))

    def _deliver(self, alert: dict[str, Any]) -> bool | None:
        url = alert.get("webhook")
        if not url:
            return True
        body = exact_json(public_alert(alert)).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tokentrail-budgets",
            "Idempotency-Key": str(alert["id"]),
            **alert.get("webhook_headers", {}),
        }
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            retry = True
            try:
                request = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                log.info("budget alert %s delivered to %s", alert["id"], redact_url(url))
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
                log.error("budget alert %s not delivered to %s after %d attempt(s): %s", alert["id"], redact_url(url),
                          attempt, problem)
                return False
            log.warning("budget alert %s: %s from %s; retrying in %.1fs", alert["id"], problem, redact_url(url), delay)
            if self._stop.wait(delay):
                return None
            delay *= 2
        return False


def public_alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The alert as POSTed: without the delivery settings."""
    return {k: v for k, v in alert.items() if k not in ("webhook", "webhook_headers")}
