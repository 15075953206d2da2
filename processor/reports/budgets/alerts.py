"""Budget alerts as records land: ``BudgetMonitor`` keeps each budget's spend for the current (and previous) period,
adds every batch the receiver makes durable, and fires a threshold once per budget, period, scope value and
threshold: a log line and a POST to each of its webhooks (``webhook``: JSON, or a Slack message whose projection of
the period's spend is computed at delivery, off the receiver's path). Fired thresholds and undelivered alerts live in
``DATA_DIR/budgets/state.json`` (``state``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Protocol

from tokentrail.processor.reports.budgets.config import Budget, BudgetsConfig, Period, load_budgets
from tokentrail.processor.reports.budgets.spend import percent_of, spend_by_value
from tokentrail.processor.reports.budgets.state import AlertState, decode_alert, encode_alert
from tokentrail.processor.reports.budgets.status import budget_status
from tokentrail.processor.reports.budgets.webhook import (
    DashboardURL,
    WebhookNotifier,
    addressed,
    readdressed,
    same_delivery,
)
from tokentrail.processor.reports.errors import ReportParameterError
from tokentrail.processor.reports.formatting import decimal_text, usd
from tokentrail.processor.schema import CURRENCY, UsageRecord

__all__ = ["STATE_DIR", "STATE_FILE", "BudgetMonitor", "Notifier", "attach"]

log = logging.getLogger(__name__)

STATE_DIR: Final = "budgets"
STATE_FILE: Final = "state.json"


class Notifier(Protocol):
    """Where fired alerts go: ``WebhookNotifier`` delivers them; ``done(alert, delivered)`` settles each one."""

    def submit(self, alert: dict[str, Any], done: Callable[[dict[str, Any], bool], None]) -> None: ...

    def close(self, timeout: float = 5.0) -> None: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


class BudgetMonitor:
    """Keeps each budget's spend for the current (and previous) period in memory, adds every durable batch the
    receiver hands it, and fires a threshold the first time a scope value's spend reaches it in a period.

    A period's spend is loaded from Parquet the first time a record of that period arrives (so a restart resumes
    from the stored data, and records that land afterwards are added as they come). One receiver process per data
    dir sees every record; with several, each adds its own records to what Parquet held when it loaded the period.
    """

    def __init__(
        self,
        config: BudgetsConfig,
        data_dir: str | os.PathLike[str],
        *,
        notifier: Notifier | None = None,
        dashboard_url: DashboardURL = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        """``dashboard_url``: the base of the dashboard links in Slack messages (the default notifier's; a notifier
        given here has its own)."""
        self.config = config
        self.data_dir = Path(data_dir)
        self._clock = clock
        self._lock = threading.Lock()
        self._spend: dict[tuple[str, str], dict[str | None, Decimal]] = {}
        self._state = AlertState(self.data_dir / STATE_DIR / STATE_FILE)
        self._claimed: set[tuple[str, str, str | None, Decimal]] = set()
        self._notifier: Notifier = notifier or WebhookNotifier(dashboard_url=dashboard_url, details=self.details)
        for stored in self._state.read()["pending"]:  # alerts a previous run fired but did not deliver
            alert = _decode_alert(stored)
            try:  # to where the budget's webhook is now: a restart is how an operator fixes a wrong URL
                readdressed(alert, config.get(str(alert.get("budget"))).webhooks)
            except ReportParameterError:
                pass  # the budget is gone from the file: deliver where it was addressed
            self._notifier.submit(alert, self._settled)

    def observe(self, records: Sequence[UsageRecord]) -> None:
        """The receiver listener: add ``records`` to the spends and fire what they cross. Never raises for one bad
        budget: the others still run."""
        now = self._clock()
        with self._lock:
            for budget in self.config.budgets:
                try:
                    self._observe(budget, records, now)
                except Exception:
                    log.exception("evaluating budget %r failed", budget.name)

    def _observe(self, budget: Budget, records: Sequence[UsageRecord], now: datetime) -> None:
        touched: dict[tuple[str, str | None], Period] = {}
        current = budget.period_at(now)
        for record in records:
            amount = budget.spend_of(record)
            if not amount:
                continue  # unpriced (cost unknown), free, or BYOK not counted
            values = budget.values_of(record)
            if not values:
                continue
            period = budget.period_at(record.timestamp)
            if period.end is None:
                if record.timestamp < period.start:
                    continue
            elif period.start > current.start or period.end < current.start:
                continue  # only the current period and the one before it (late records) can still fire
            sums = self._period_spend(budget, period, now)
            for value in values:
                sums[value] = sums.get(value, Decimal(0)) + amount
                touched[(period.key, value)] = period
        by_period: dict[str, list[str | None]] = {}
        for key, value in touched:
            by_period.setdefault(key, []).append(value)
        for key, values in by_period.items():
            period = touched[(key, values[0])]
            sums = self._spend[(budget.name, key)]
            self._check(budget, period, [(value, sums[value]) for value in values], now)

    def _period_spend(self, budget: Budget, period: Period, now: datetime) -> dict[str | None, Decimal]:
        key = (budget.name, period.key)
        sums = self._spend.get(key)
        if sums is None:
            # Loaded before this batch is added: the batch is in the WAL, not yet in Parquet.
            until = period.end if period.end is not None else datetime(9999, 1, 1, tzinfo=UTC)
            stored = spend_by_value(self.data_dir, budget, period, until, None)
            sums = {value: spent.spend for value, spent in stored.items()}
            self._spend[key] = sums
            previous = _previous_key(budget, period)
            for old in [k for k in self._spend if k[0] == budget.name and k[1] < previous]:
                del self._spend[old]  # periods before the previous one take no more records
            self._check(budget, period, list(sums.items()), now)  # crossed while no monitor was running
        return sums

    def _check(
        self, budget: Budget, period: Period, spends: Sequence[tuple[str | None, Decimal]], now: datetime
    ) -> None:
        """Claim, in one state update, every threshold these values reached that has not fired yet; then log and
        send one alert per value (for the highest threshold newly reached)."""
        candidates: list[tuple[str | None, Decimal, Decimal, list[Decimal]]] = []
        for value, spend in spends:
            percent = percent_of(spend, budget.amount)
            reached = [t for t in budget.thresholds if t <= percent]
            # Most batches cross nothing new: skip the state file for what this process already claimed.
            if reached and (budget.name, period.key, value, reached[-1]) not in self._claimed:
                candidates.append((value, spend, percent, reached))
        if not candidates:
            return

        def claim(data: dict[str, Any]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
            alerts = []
            for value, spend, percent, reached in candidates:
                state_key = json.dumps([budget.name, period.key, value])
                fired = data["fired"].setdefault(state_key, {"thresholds": [], "period_end": _iso(period.end)})
                new = [t for t in reached if _threshold_text(t) not in fired["thresholds"]]
                if not new:
                    continue
                fired["thresholds"] = sorted({*fired["thresholds"], *map(_threshold_text, new)}, key=Decimal)
                alert = _alert(budget, period, value, spend, percent, max(new), now)
                copies = addressed(alert, budget.webhooks)
                data["pending"].extend(encode_alert(copy) for copy in copies)
                alerts.append((alert, copies))
            _prune(data, now)
            return alerts

        alerts = self._state.update(claim)
        self._claimed.update((budget.name, period.key, value, reached[-1]) for value, _, _, reached in candidates)
        for alert, copies in alerts:
            log.warning(
                "budget %r: %s%% reached%s: spend %s of %s in the %s period from %s",
                budget.name,
                alert["threshold"],
                f" for {budget.scope} {alert['value']!r}" if budget.scope != "total" else "",
                usd(alert["spend"]),  # for people; the alert itself carries the exact amount
                usd(budget.amount),
                budget.period if budget.period != "none" else "all-time",
                alert["period_start"],
            )
            for copy in copies:
                self._notifier.submit(copy, self._settled)

    def _settled(self, alert: dict[str, Any], delivered: bool) -> None:
        def remove(data: dict[str, Any]) -> None:
            data["pending"] = [a for a in data["pending"] if not same_delivery(a, alert)]

        self._state.update(remove)

    def details(self, alert: Mapping[str, Any]) -> dict[str, Any]:
        """The projected end-of-period spend for a Slack message, as ``GET /v1/budgets`` projects it (the trailing
        rate carried to the period's end), from the alert's spend: the batch that fired may not be in Parquet yet.
        Empty when there is none to give (a budget that never resets, a period that is over, unknown spend)."""
        try:
            budget = self.config.get(str(alert.get("budget")))
        except ReportParameterError:
            return {}
        spend = alert.get("spend")
        if budget.period == "none" or not isinstance(spend, Decimal):
            return {}
        one = dataclasses.replace(budget, value=alert.get("value")) if budget.each else budget
        rows, _ = budget_status(self.data_dir, BudgetsConfig((one,)), as_of=self._clock())
        for row in rows:
            if (row["period_start"], row["value"]) != (alert.get("period_start"), alert.get("value")):
                continue
            if row["spend"] is None or row["projected_spend"] is None:
                return {}
            projected = max(spend, row["spend"]) + row["projected_spend"] - row["spend"]
            return {"projected_spend": projected, "projected_percent": percent_of(projected, budget.amount)}
        return {}

    def close(self, timeout: float = 5.0) -> None:
        self._notifier.close(timeout)


def _threshold_text(threshold: Decimal) -> str:
    return decimal_text(threshold)


def _previous_key(budget: Budget, period: Period) -> str:
    if period.end is None:
        return period.key
    return budget.period_at(period.start - timedelta(microseconds=1)).key


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _alert(
    budget: Budget, period: Period, value: str | None, spend: Decimal, percent: Decimal, threshold: Decimal,
    now: datetime,
) -> dict[str, Any]:
    ident = hashlib.sha256(json.dumps([budget.name, period.key, value, str(threshold)]).encode()).hexdigest()[:32]
    return {
        "type": "budget.threshold_crossed",
        "id": ident,
        "budget": budget.name,
        "scope": budget.scope,
        "value": value,
        "period": budget.period,
        "period_start": period.start.date().isoformat(),
        "period_end": period.last_day.isoformat() if period.last_day else None,
        "threshold": int(threshold) if threshold == threshold.to_integral_value() else threshold,
        "percent": percent,
        "spend": spend,
        "amount": budget.amount,
        "currency": CURRENCY,
        "count_byok": budget.count_byok,
        "at": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


_DECIMAL_FIELDS: Final = ("percent", "spend", "amount", "threshold")


def _decode_alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    out = decode_alert(alert, _DECIMAL_FIELDS)
    threshold = out.get("threshold")
    if isinstance(threshold, Decimal) and threshold == threshold.to_integral_value():
        out["threshold"] = int(threshold)
    return out


def _prune(data: dict[str, Any], now: datetime) -> None:
    """Forget fired thresholds of periods that ended over 62 days ago: they can never fire again."""
    horizon = (now - timedelta(days=62)).isoformat()
    data["fired"] = {
        key: entry for key, entry in data["fired"].items() if entry.get("period_end") is None
        or entry["period_end"] >= horizon
    }


def attach(
    receiver: Any,
    config: BudgetsConfig | str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    **options: Any,
) -> BudgetMonitor:
    """Evaluate budgets as ``receiver`` makes records durable; returns the monitor (``close()`` it on shutdown)."""
    monitor = BudgetMonitor(load_budgets(config), data_dir, **options)
    receiver.add_listener(monitor.observe)
    return monitor
