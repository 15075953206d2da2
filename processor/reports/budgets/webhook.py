"""Delivering budget alerts to a webhook: a JSON POST per alert on a thread of its own, retried with backoff, at
least once (each alert carries an ``id``, also sent as ``Idempotency-Key``)."""

from __future__ import annotations

import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from tokentrail.processor.reports.formatting import exact_json

__all__ = ["WebhookNotifier", "public_alert"]

log = logging.getLogger(__name__)


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
                log.info("budget alert %s delivered to %s", alert["id"], url)
                return True
            except urllib.error.HTTPError as exc:
                retry = exc.code >= 500 or exc.code == 429
                problem = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                problem = str(getattr(exc, "reason", exc))
            if not retry or attempt == self.attempts:
                log.error("budget alert %s not delivered to %s after %d attempt(s): %s", alert["id"], url, attempt,
                          problem)
                return False
            log.warning("budget alert %s: %s from %s; retrying in %.1fs", alert["id"], problem, url, delay)
            if self._stop.wait(delay):
                return None
            delay *= 2
        return False


def public_alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The alert as POSTed: without the delivery settings."""
    return {k: v for k, v in alert.items() if k not in ("webhook", "webhook_headers")}
