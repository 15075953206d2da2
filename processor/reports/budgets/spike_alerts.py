"""Spikes that alert, not only listed: ``SpikeMonitor`` asks the ``[spikes]`` questions of the budgets file (the
same detection as ``GET /v1/spikes``) every ``interval_seconds`` on a thread of its own, and sends each new spike
once: a log line and a POST to each webhook (JSON, or a Slack message), through the budget alerts' delivery
(``webhook``: retries, redaction) and state (``state``).

It reads the stored data (Parquet), never the ingest path: a slow check delays the next check, never a span. A
spike is one value of one dimension in one window (e.g. model ``gpt-4o`` on 2025-03-15); the same value spiking
in the next window is a new spike. Which spikes fired, and alerts not yet delivered, live in
``DATA_DIR/budgets/spikes.json``, so a restart neither re-fires nor loses one. Records that arrive late can make a
window a spike after it was checked: it fires then, once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from tokentrail.processor.reports.budgets.alerts import STATE_DIR, Notifier
from tokentrail.processor.reports.budgets.config import BudgetsConfig, SpikeAlerts
from tokentrail.processor.reports.budgets.state import AlertState, decode_alert, encode_alert
from tokentrail.processor.reports.budgets.webhook import (
    DashboardURL,
    WebhookNotifier,
    addressed,
    readdressed,
    same_delivery,
)
from tokentrail.processor.reports.formatting import decimal_text, usd
from tokentrail.processor.reports.query import COST_METRICS
from tokentrail.processor.reports.spikes import SpikeQuery, SpikesResult, find_spikes
from tokentrail.processor.schema import CURRENCY

__all__ = ["SPIKE_STATE_FILE", "SpikeMonitor", "start_spike_alerts"]

log = logging.getLogger(__name__)

SPIKE_STATE_FILE: Final = "spikes.json"
ALERT_TYPE: Final = "spike.detected"
# A window is checked only while it is the latest (at most a day and a window ago): older entries cannot fire again.
_FORGET_AFTER: Final = timedelta(days=8)
_DECIMAL_FIELDS: Final = ("observed", "expected", "mad", "score", "ratio", "threshold")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SpikeMonitor:
    """Checks the configured spike questions every ``config.interval`` seconds once ``start()``-ed (``check()``
    runs one round by hand) and sends each new spike once. ``close()`` stops it; undelivered alerts stay pending
    for the next start."""

    def __init__(
        self,
        config: SpikeAlerts,
        data_dir: str | os.PathLike[str],
        *,
        notifier: Notifier | None = None,
        dashboard_url: DashboardURL = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self._clock = clock
        self._state = AlertState(self.data_dir / STATE_DIR / SPIKE_STATE_FILE)
        self._notifier: Notifier = notifier or WebhookNotifier(
            dashboard_url=dashboard_url, name="tokentrail-spike-webhook"
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one round at a time (the thread's, or one asked for by hand)
        for stored in self._state.read()["pending"]:  # alerts a previous run fired but did not deliver
            self._notifier.submit(readdressed(decode_alert(stored, _DECIMAL_FIELDS), config.webhooks), self._settled)

    def start(self) -> None:
        """Check now, then every ``interval`` seconds, on a daemon thread, until ``close()``."""
        if self._thread is not None:
            raise RuntimeError("SpikeMonitor already started")
        self._thread = threading.Thread(target=self._run, name="tokentrail-spike-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # noqa: BLE001 - a failed round is logged; the next one may succeed (a file swapped, say)
                log.exception("checking for spikes failed; trying again in %gs", self.config.interval)
            if self._stop.wait(self.config.interval):
                return

    def check(self) -> list[dict[str, Any]]:
        """One round: every question, as of now; returns the spikes that fired (each once, whatever its webhooks).
        A question that fails is logged and the others still run."""
        with self._lock:
            now = self._clock()
            fired: list[dict[str, Any]] = []
            for query in self.config.queries:
                if self._stop.is_set():
                    break
                try:
                    result = find_spikes(self.data_dir, dataclasses.replace(query, as_of=now))
                except Exception:  # noqa: BLE001 - one bad question must not silence the others
                    log.exception("checking for spikes by %s failed", query.dimension)
                    continue
                fired.extend(self._fire(result, now))
            return fired

    def _fire(self, result: SpikesResult, now: datetime) -> list[dict[str, Any]]:
        spikes = [row for row in result.rows if row["spike"]]
        if not spikes:
            return []

        def claim(data: dict[str, Any]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
            claimed = []
            for row in spikes:
                alert = _alert(result, row, now)
                key = json.dumps(_identity(result, row))
                if key in data["fired"]:
                    continue
                data["fired"][key] = {"window_start": alert["window_start"]}
                copies = addressed(alert, self.config.webhooks)
                data["pending"].extend(encode_alert(copy) for copy in copies)
                claimed.append((alert, copies))
            _prune(data, now)
            return claimed

        claimed = self._state.update(claim)
        for alert, copies in claimed:
            _log(alert)
            for copy in copies:
                self._notifier.submit(copy, self._settled)
        return [alert for alert, _ in claimed]

    def _settled(self, alert: dict[str, Any], delivered: bool) -> None:
        def remove(data: dict[str, Any]) -> None:
            data["pending"] = [a for a in data["pending"] if not same_delivery(a, alert)]

        self._state.update(remove)

    def close(self, timeout: float = 5.0) -> None:
        """Stop checking (a round in progress finishes its current question) and delivering."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._notifier.close(timeout)


def _identity(result: SpikesResult, row: Mapping[str, Any]) -> list[Any]:
    q: SpikeQuery = result.query
    return [q.dimension, q.metric, q.window, q.seasonality, _iso(result.window_start), row["value"]]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _alert(result: SpikesResult, row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    q = result.query
    return {
        "type": ALERT_TYPE,
        "id": hashlib.sha256(json.dumps(_identity(result, row)).encode()).hexdigest()[:32],
        "dimension": q.dimension,
        "value": row["value"],
        "metric": q.metric,
        "window": q.window,
        "seasonality": q.seasonality,
        "window_start": _iso(result.window_start),
        "window_end": _iso(result.window_end),
        "observed": row["observed"],
        "expected": row["expected"],
        "mad": row["mad"],
        "score": row["score"],
        "ratio": row["ratio"],
        "threshold": q.threshold,
        "baseline_windows": len(result.baseline_windows),
        "currency": CURRENCY if q.metric in COST_METRICS else None,
        "at": _iso(now),
    }


def _shown(value: Any, metric: str) -> str:
    """For the log line (people): money to the cent as elsewhere; the alert carries the exact amount."""
    if value is None:
        return "unknown"
    if metric in COST_METRICS:
        return usd(value)
    return decimal_text(value) if not isinstance(value, int) else str(value)


def _log(alert: Mapping[str, Any]) -> None:
    metric = alert["metric"]
    log.warning(
        "spike: %s %r %s %s in the %s from %s (expected %s%s, score %s, threshold %s)",
        alert["dimension"],
        alert["value"],
        metric,
        _shown(alert["observed"], metric),
        alert["window"],
        alert["window_start"],
        _shown(alert["expected"], metric),
        f", {decimal_text(alert['ratio'])}x" if alert["ratio"] is not None else "",
        decimal_text(alert["score"]),
        decimal_text(alert["threshold"]),
    )


def _prune(data: dict[str, Any], now: datetime) -> None:
    horizon = _iso(now - _FORGET_AFTER)
    data["fired"] = {key: entry for key, entry in data["fired"].items() if entry.get("window_start", "") >= horizon}


def start_spike_alerts(
    config: BudgetsConfig, data_dir: str | os.PathLike[str], **options: Any
) -> SpikeMonitor | None:
    """The running monitor of ``config``'s ``[spikes]`` table (``close()`` it on shutdown); None when the file has
    no such table or it says ``enabled = false``."""
    if config.spikes is None or not config.spikes.enabled:
        return None
    monitor = SpikeMonitor(config.spikes, data_dir, **options)
    monitor.start()
    log.info("spike alerts: checking %s every %gs", ", ".join(
        f"{q.dimension} ({q.metric} per {q.window})" for q in config.spikes.queries), config.spikes.interval)
    return monitor
