"""Budgets: how much of an amount a scope has spent this period, where it is heading, and an alert when it crosses
a threshold.

A budgets file (TOML) lists budgets::

    webhook = "https://hooks.example.com/tokentrail"   # optional: where alerts are POSTed (each budget may override)

    [webhook_headers]                                  # optional: e.g. a shared secret for the hook
    Authorization = "Bearer ..."

    [[budgets]]
    name = "company"            # unique; names the budget in status and alerts (default: scope:value:period)
    scope = "total"             # total, user, tag, model, provider or credential_type
    amount = 5000               # USD per period
    period = "monthly"          # daily, weekly (ISO, from Monday), monthly or none (never resets)

    [[budgets]]
    name = "per customer"
    scope = "user"
    value = "each"              # every user has this budget; or one value, e.g. "cust_42" (tags: "plan:free")
    amount = 20
    period = "monthly"
    thresholds = [80, 100]      # percent of amount; default [50, 75, 100]
    count_byok = false          # default: BYOK calls do not count (the customer's key pays), as Vercel does
    start = "2026-01-01"        # period "none" only: count from this day (default: all data)

Periods are UTC calendar periods. Spend is ``total_cost``; with ``count_byok = true`` a BYOK call counts at its
list price (``market_cost``). Unpriced calls add nothing (their cost is unknown, never a silent $0).

**Status** (``GET /v1/budgets``, ``tokentrail budgets``): per budget and scope value, spend so far, remaining,
percent, and projected end-of-period spend: spend so far plus the spend rate of the trailing
``min(period, 7 days)`` carried over the rest of the period (so a new month projects from last week's rate).

**Alerts**: ``BudgetMonitor`` watches records as the receiver makes them durable (``attach(receiver, ...)``) and,
when a scope's spend crosses a threshold, fires once per budget, period, value and threshold: a log line and, if
a webhook is set, a JSON POST retried with backoff. Which thresholds fired, and alerts not yet delivered, live in
``DATA_DIR/budgets/state.json`` (written atomically under a file lock), so a restart neither re-fires nor loses
an alert; delivery is at least once, and each alert carries an ``id`` (also sent as ``Idempotency-Key``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import queue
import threading
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from tokentrail.processor import environment
from tokentrail.processor.reports.formatting import decimal_text, exact_json
from tokentrail.processor.reports.report import (
    MAX_ROWS,
    USAGE_SOURCE,
    Params,
    ReportError,
    ReportParameterError,
    exact_cost,
    int_param,
    scan_dataset,
    single_param,
)
from tokentrail.processor.schema import CURRENCY, PARTITION_COLUMN, UsageRecord

__all__ = [
    "BUDGET_COLUMNS",
    "BUDGET_PARAMETERS",
    "DEFAULT_THRESHOLDS",
    "PERIODS",
    "SCOPES",
    "Budget",
    "BudgetConfigError",
    "BudgetMonitor",
    "BudgetsConfig",
    "Period",
    "WebhookNotifier",
    "attach",
    "budget_status",
    "budgets_body",
    "budgets_from_params",
    "load_budgets",
    "parse_as_of",
]

log = logging.getLogger(__name__)

SCOPES: Final = ("total", "user", "tag", "model", "provider", "credential_type")
PERIODS: Final = ("daily", "weekly", "monthly", "none")
EACH: Final = "each"
DEFAULT_THRESHOLDS: Final = (Decimal(50), Decimal(75), Decimal(100))
DEFAULT_STATUS_LIMIT: Final = 100  # rows per "each" budget in a status answer
RATE_WINDOW_MAX: Final = timedelta(days=7)
STATE_DIR: Final = "budgets"
STATE_FILE: Final = "state.json"
BUDGETS_ENV: Final = environment.BUDGETS

# Every parameter GET /v1/budgets reads (besides ``format``): the OpenAPI document lists exactly these.
BUDGET_PARAMETERS: Final = ("budget", "as_of", "limit")
# The keys of a status row, in order (the CSV header).
BUDGET_COLUMNS: Final = (
    "budget",
    "scope",
    "value",
    "period",
    "period_start",
    "period_end",
    "amount",
    "spend",
    "remaining",
    "percent",
    "projected_spend",
    "projected_percent",
    "thresholds",
    "crossed",
    "count_byok",
)

_SCOPE_COLUMNS: Final[Mapping[str, str]] = {
    "user": "user_id",
    "model": "model",
    "provider": "provider",
    "credential_type": "credential_type",
}
_PERCENT: Final = Decimal("0.01")
_HUNDRED: Final = Decimal(100)


class BudgetConfigError(ReportError, ValueError):
    """The budgets file is missing, not TOML, or describes a budget wrongly; the message says where."""


# ---------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True, slots=True)
class Period:
    """One budget period: ``[start, end)`` in UTC; ``end`` is None for a budget that never resets."""

    start: datetime
    end: datetime | None

    @property
    def key(self) -> str:
        return self.start.date().isoformat() if self.end is not None else "all"

    @property
    def last_day(self) -> date | None:
        return (self.end - timedelta(microseconds=1)).date() if self.end is not None else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    name: str
    scope: str
    value: str | None  # None for scope total; EACH for every value; else one value
    amount: Decimal
    period: str
    thresholds: tuple[Decimal, ...] = DEFAULT_THRESHOLDS
    count_byok: bool = False
    webhook: str | None = None
    webhook_headers: Mapping[str, str] = field(default_factory=dict)
    start: date | None = None

    @property
    def each(self) -> bool:
        return self.value == EACH

    def period_at(self, moment: datetime) -> Period:
        """The period containing ``moment`` (UTC)."""
        day = moment.astimezone(UTC).date()
        if self.period == "daily":
            first, after = day, day + timedelta(days=1)
        elif self.period == "weekly":
            first = day - timedelta(days=day.weekday())
            after = first + timedelta(days=7)
        elif self.period == "monthly":
            first = day.replace(day=1)
            after = (first + timedelta(days=32)).replace(day=1)
        else:
            return Period(_midnight(self.start or date(1970, 1, 1)), None)
        return Period(_midnight(first), _midnight(after))

    def values_of(self, record: UsageRecord) -> list[str | None]:
        """The scope values ``record`` spends against (none if it is outside this budget)."""
        if self.scope == "total":
            return [None]
        if self.scope == "tag":
            tags = list(dict.fromkeys(record.tags))
            if self.each:
                return list(tags)
            return [self.value] if self.value in tags else []
        got = getattr(record, _SCOPE_COLUMNS[self.scope])
        if self.each:
            return [got] if got is not None else []
        return [got] if got == self.value else []

    def spend_of(self, record: UsageRecord) -> Decimal | None:
        if record.credential_type == "byok":
            return record.market_cost if self.count_byok else None
        return record.total_cost


@dataclass(frozen=True, slots=True)
class BudgetsConfig:
    budgets: tuple[Budget, ...]

    def get(self, name: str) -> Budget:
        for budget in self.budgets:
            if budget.name == name:
                return budget
        raise ReportParameterError(
            f"no budget named {name!r}; the budgets are: {', '.join(b.name for b in self.budgets) or 'none'}"
        )


def load_budgets(source: str | os.PathLike[str] | BudgetsConfig) -> BudgetsConfig:
    """Read a budgets TOML file (or pass a config through)."""
    if isinstance(source, BudgetsConfig):
        return source
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BudgetConfigError(f"cannot read the budgets file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BudgetConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        return budgets_from_dict(data)
    except BudgetConfigError as exc:
        raise BudgetConfigError(f"{path}: {exc}") from None


def budgets_from_dict(data: Mapping[str, Any]) -> BudgetsConfig:
    unknown = set(data) - {"webhook", "webhook_headers", "budgets"}
    if unknown:
        raise BudgetConfigError(f"unknown top-level keys {sorted(unknown)}; expected webhook, webhook_headers, "
                                "[[budgets]]")
    webhook = _url(data.get("webhook"), "webhook")
    headers = _headers(data.get("webhook_headers", {}), "webhook_headers")
    entries = data.get("budgets", [])
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise BudgetConfigError("budgets must be an array of tables ([[budgets]])")
    budgets = [_budget(entry, i, webhook, headers) for i, entry in enumerate(entries, start=1)]
    seen: set[str] = set()
    for budget in budgets:
        if budget.name in seen:
            raise BudgetConfigError(f"two budgets are named {budget.name!r}; names must be unique")
        seen.add(budget.name)
    return BudgetsConfig(tuple(budgets))


_BUDGET_KEYS: Final = {
    "name", "scope", "value", "amount", "period", "thresholds", "count_byok", "webhook", "webhook_headers", "start",
}


def _budget(entry: Mapping[str, Any], index: int, webhook: str | None, headers: Mapping[str, str]) -> Budget:
    where = f"budget {index}" + (f" ({entry['name']!r})" if isinstance(entry.get("name"), str) else "")
    unknown = set(entry) - _BUDGET_KEYS
    if unknown:
        raise BudgetConfigError(f"{where}: unknown keys {sorted(unknown)}; expected {sorted(_BUDGET_KEYS)}")
    scope = entry.get("scope", "total")
    if scope not in SCOPES:
        raise BudgetConfigError(f"{where}: unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
    value = entry.get("value")
    if scope == "total":
        if value is not None:
            raise BudgetConfigError(f"{where}: scope total takes no value")
    elif not isinstance(value, str) or not value:
        raise BudgetConfigError(f"{where}: scope {scope} needs a value: one {scope}, or \"each\" for every one")
    period = entry.get("period", "monthly")
    if period not in PERIODS:
        raise BudgetConfigError(f"{where}: unknown period {period!r}; use one of {', '.join(PERIODS)}")
    amount = _decimal(entry.get("amount"), f"{where}: amount")
    if amount <= 0:
        raise BudgetConfigError(f"{where}: amount must be more than 0 (USD per period)")
    raw_thresholds = entry.get("thresholds", DEFAULT_THRESHOLDS)
    if not isinstance(raw_thresholds, (list, tuple)) or not raw_thresholds:
        raise BudgetConfigError(f"{where}: thresholds must be a non-empty list of percents, e.g. [50, 75, 100]")
    thresholds = tuple(sorted({_decimal(t, f"{where}: thresholds") for t in raw_thresholds}))
    if thresholds[0] <= 0:
        raise BudgetConfigError(f"{where}: thresholds are percents of amount and must be more than 0")
    count_byok = entry.get("count_byok", False)
    if not isinstance(count_byok, bool):
        raise BudgetConfigError(f"{where}: count_byok must be true or false")
    start = entry.get("start")
    if start is not None:
        if period != "none":
            raise BudgetConfigError(f"{where}: start applies only to period \"none\"")
        if isinstance(start, str):
            try:
                start = date.fromisoformat(start)
            except ValueError:
                raise BudgetConfigError(f"{where}: start must be a date, YYYY-MM-DD") from None
        if not isinstance(start, date) or isinstance(start, datetime):
            raise BudgetConfigError(f"{where}: start must be a date, YYYY-MM-DD")
    name = entry.get("name") or ":".join(p for p in (scope, value, period) if p)
    if not isinstance(name, str):
        raise BudgetConfigError(f"{where}: name must be a string")
    return Budget(
        name=name,
        scope=scope,
        value=value,
        amount=amount,
        period=period,
        thresholds=thresholds,
        count_byok=count_byok,
        webhook=_url(entry.get("webhook"), f"{where}: webhook") or webhook,
        webhook_headers={**headers, **_headers(entry.get("webhook_headers", {}), f"{where}: webhook_headers")},
        start=start,
    )


def _decimal(value: object, where: str) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BudgetConfigError(f"{where} must be a number, got {value!r}")
    try:
        # A TOML float's repr is its shortest exact spelling: 0.1 stays 0.1, never 0.1000000000000000055.
        number = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        raise BudgetConfigError(f"{where} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise BudgetConfigError(f"{where} must be a finite number, got {value!r}")
    return number


def _url(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise BudgetConfigError(f"{where} must be an http:// or https:// URL, got {value!r}")
    return value


def _headers(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BudgetConfigError(f"{where} must be a table of header names to strings")
    return dict(value)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def parse_as_of(text: str | None, name: str = "as_of") -> datetime:
    """``YYYY-MM-DD`` (the end of that UTC day) or an ISO datetime (UTC if no offset); now when absent."""
    if text is None:
        return _utcnow()
    try:
        if len(text) == 10:
            return _midnight(date.fromisoformat(text) + timedelta(days=1))
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReportParameterError(f"{name} must be a date (YYYY-MM-DD) or an ISO date-time, got {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# ---------------------------------------------------------------------------------------------------------------
# Spend, from the Parquet dataset


def _spend_sql(budget: Budget, *, with_rate: bool) -> tuple[str, dict[str, object]]:
    """Spend per scope value in ``[$period_start, $as_of)`` (and, with the rate, in ``[$rate_start, $as_of)``)."""
    params: dict[str, object] = {}
    where = [f'"{PARTITION_COLUMN}" BETWEEN $first_day AND $last_day', '"timestamp" < $as_of']
    if budget.count_byok:
        spend = "CASE WHEN credential_type = 'byok' THEN market_cost ELSE total_cost END"
    else:
        spend = "total_cost"
        where.append("credential_type <> 'byok'")
    if budget.scope == "total":
        key = "CAST(NULL AS VARCHAR)"
    elif budget.scope == "tag":
        if budget.each:
            key = "UNNEST(list_distinct(tags))"
        else:
            key = "$value"
            params["value"] = budget.value
            where.append("list_contains(tags, $value)")
    else:
        column = f'"{_SCOPE_COLUMNS[budget.scope]}"'
        key = column
        if budget.each:
            where.append(f"{column} IS NOT NULL")  # requests without a user are nobody's to budget
        else:
            params["value"] = budget.value
            where.append(f"{column} = $value")
    recent = ", SUM(spend) FILTER (WHERE \"timestamp\" >= $rate_start) AS recent" if with_rate else ""
    sql = (
        f"SELECT scope_value, SUM(spend) FILTER (WHERE \"timestamp\" >= $period_start) AS spend{recent}\n"
        f"FROM (SELECT {key} AS scope_value, {spend} AS spend, \"timestamp\" FROM {USAGE_SOURCE}\n"
        f"      WHERE {' AND '.join(where)}) AS records\n"
        "GROUP BY scope_value"
    )
    return sql, params


def _spend(
    data_dir: str | os.PathLike[str], budget: Budget, period: Period, as_of: datetime, rate_start: datetime | None
) -> dict[str | None, tuple[Decimal, Decimal]]:
    """``{scope value: (spend in period, spend since rate_start)}`` up to ``as_of``."""
    sql, params = _spend_sql(budget, with_rate=rate_start is not None)
    since = min(period.start, rate_start) if rate_start is not None else period.start
    last = (as_of - timedelta(microseconds=1)).date()
    if last < since.date():
        return {}
    params.update(
        first_day=since.date(), last_day=last, as_of=as_of, period_start=period.start,
        **({"rate_start": rate_start} if rate_start is not None else {}),
    )
    _, rows = scan_dataset(data_dir, since.date(), last, sql, params)
    out: dict[str | None, tuple[Decimal, Decimal]] = {}
    for row in rows:
        value = row[0]
        out[value if value is None else str(value)] = (
            exact_cost(row[1]),
            exact_cost(row[2]) if rate_start is not None else Decimal(0),
        )
    return out


def _percent(spend: Decimal, amount: Decimal) -> Decimal:
    return (spend * _HUNDRED / amount).quantize(_PERCENT)


def budget_status(
    data_dir: str | os.PathLike[str],
    config: BudgetsConfig,
    *,
    as_of: datetime | None = None,
    budget: str | None = None,
    limit: int = DEFAULT_STATUS_LIMIT,
) -> tuple[list[dict[str, object]], bool]:
    """``(rows, truncated)``: one row per budget and scope value, in file order; an "each" budget lists the values
    with spend this period, most spent (by percent) first, at most ``limit`` of them (``truncated`` if cut)."""
    moment = as_of or _utcnow()
    chosen = [config.get(budget)] if budget is not None else list(config.budgets)
    rows: list[dict[str, object]] = []
    truncated = False
    for b in chosen:
        period = b.period_at(moment - timedelta(microseconds=1))  # as_of is exclusive
        rate_start = None
        if period.end is not None:
            rate_start = moment - min(period.end - period.start, RATE_WINDOW_MAX)
        spends = _spend(data_dir, b, period, moment, rate_start)
        if not b.each:
            spends.setdefault(None if b.scope == "total" else b.value, (Decimal(0), Decimal(0)))
        entries = []
        for value, (spend, recent) in spends.items():
            if b.each and spend == 0:
                continue  # a value with only earlier (rate-window) spend has not spent this period
            projected = None
            if period.end is not None and rate_start is not None:
                rate_window = (moment - rate_start).total_seconds()
                remaining_s = max((period.end - moment).total_seconds(), 0.0)
                projected = exact_cost(spend + recent * Decimal(remaining_s) / Decimal(rate_window))
            percent = _percent(spend, b.amount)
            entries.append(
                {
                    "budget": b.name,
                    "scope": b.scope,
                    "value": value,
                    "period": b.period,
                    "period_start": period.start.date().isoformat(),
                    "period_end": period.last_day.isoformat() if period.last_day else None,
                    "amount": b.amount,
                    "spend": spend,
                    "remaining": b.amount - spend,
                    "percent": percent,
                    "projected_spend": projected,
                    "projected_percent": _percent(projected, b.amount) if projected is not None else None,
                    "thresholds": [int(t) if t == t.to_integral_value() else t for t in b.thresholds],
                    "crossed": [int(t) if t == t.to_integral_value() else t for t in b.thresholds if t <= percent],
                    "count_byok": b.count_byok,
                }
            )
        entries.sort(key=lambda e: (-e["percent"], str(e["value"])))  # type: ignore[operator]
        if len(entries) > limit:
            entries, truncated = entries[:limit], True
        rows.extend(entries)
    return rows, truncated


def budgets_body(rows: list[dict[str, object]], truncated: bool) -> dict[str, object]:
    """The ``GET /v1/budgets`` body: ``{"results": rows}``, plus ``"truncated": true`` when rows were cut."""
    return {"results": rows, "truncated": True} if truncated else {"results": rows}


def budgets_from_params(
    data_dir: str | os.PathLike[str], config: BudgetsConfig, params: Params
) -> tuple[list[dict[str, object]], bool]:
    """``GET /v1/budgets``: ``budget`` (one by name), ``as_of`` (default now), ``limit`` (per "each" budget)."""
    return budget_status(
        data_dir,
        config,
        as_of=parse_as_of(single_param(params, "as_of")),
        budget=single_param(params, "budget"),
        limit=int_param(params, "limit", DEFAULT_STATUS_LIMIT, 1, MAX_ROWS),
    )


# ---------------------------------------------------------------------------------------------------------------
# Alerts as records land


class _State:
    """Fired thresholds and undelivered alerts, in one JSON file changed only under an exclusive file lock (so two
    processes sharing a data dir never both fire one threshold) and replaced atomically (so a crash never leaves
    half a file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": 1, "fired": {}, "pending": []}
        except (OSError, ValueError):
            log.exception("budget state %s is unreadable; starting afresh (thresholds may fire again)", self.path)
            return {"version": 1, "fired": {}, "pending": []}
        data.setdefault("fired", {})
        data.setdefault("pending", [])
        return data

    def _write(self, data: Mapping[str, Any]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def update(self, change: Callable[[dict[str, Any]], Any]) -> Any:
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                data = self._read()
                result = change(data)
                self._write(data)
                return result
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def read(self) -> dict[str, Any]:
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_SH)
            try:
                return self._read()
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


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
        body = exact_json(_public(alert)).encode("utf-8")
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


def _public(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The alert as POSTed: without the delivery settings."""
    return {k: v for k, v in alert.items() if k not in ("webhook", "webhook_headers")}


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
        notifier: WebhookNotifier | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self._clock = clock
        self._lock = threading.Lock()
        self._spend: dict[tuple[str, str], dict[str | None, Decimal]] = {}
        self._state = _State(self.data_dir / STATE_DIR / STATE_FILE)
        self._claimed: set[tuple[str, str, str | None, Decimal]] = set()
        self._notifier = notifier or WebhookNotifier()
        for stored in self._state.read()["pending"]:  # alerts a previous run fired but did not deliver
            alert = _decode_alert(stored)
            try:  # to where the budget's webhook is now: a restart is how an operator fixes a wrong URL
                budget = config.get(str(alert.get("budget")))
                alert["webhook"], alert["webhook_headers"] = budget.webhook, dict(budget.webhook_headers)
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
            stored = _spend(self.data_dir, budget, period, until, None)
            sums = {value: spend for value, (spend, _) in stored.items()}
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
            percent = _percent(spend, budget.amount)
            reached = [t for t in budget.thresholds if t <= percent]
            # Most batches cross nothing new: skip the state file for what this process already claimed.
            if reached and (budget.name, period.key, value, reached[-1]) not in self._claimed:
                candidates.append((value, spend, percent, reached))
        if not candidates:
            return

        def claim(data: dict[str, Any]) -> list[dict[str, Any]]:
            alerts = []
            for value, spend, percent, reached in candidates:
                state_key = json.dumps([budget.name, period.key, value])
                fired = data["fired"].setdefault(state_key, {"thresholds": [], "period_end": _iso(period.end)})
                new = [t for t in reached if _threshold_text(t) not in fired["thresholds"]]
                if not new:
                    continue
                fired["thresholds"] = sorted({*fired["thresholds"], *map(_threshold_text, new)}, key=Decimal)
                alert = _alert(budget, period, value, spend, percent, max(new), now)
                data["pending"].append(_encode_alert(alert))
                alerts.append(alert)
            _prune(data, now)
            return alerts

        alerts = self._state.update(claim)
        self._claimed.update((budget.name, period.key, value, reached[-1]) for value, _, _, reached in candidates)
        for alert in alerts:
            log.warning(
                "budget %r: %s%% reached%s: spend $%s of $%s in the %s period from %s",
                budget.name,
                alert["threshold"],
                f" for {budget.scope} {alert['value']!r}" if budget.scope != "total" else "",
                alert["spend"],
                budget.amount,
                budget.period if budget.period != "none" else "all-time",
                alert["period_start"],
            )
            self._notifier.submit(alert, self._settled)

    def _settled(self, alert: dict[str, Any], delivered: bool) -> None:
        def remove(data: dict[str, Any]) -> None:
            data["pending"] = [a for a in data["pending"] if a.get("id") != alert["id"]]

        self._state.update(remove)

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
        "webhook": budget.webhook,
        "webhook_headers": dict(budget.webhook_headers),
    }


def _encode_alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    """For the state file: ``Decimal`` as text so nothing is rounded on the way through JSON, and without the
    webhook headers (they may hold secrets; a restart takes them from the budgets file again)."""
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in alert.items() if k != "webhook_headers"}


_DECIMAL_FIELDS: Final = ("percent", "spend", "amount", "threshold")


def _decode_alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(alert)
    for name in _DECIMAL_FIELDS:
        if isinstance(out.get(name), str):
            number = Decimal(out[name])
            out[name] = int(number) if name == "threshold" and number == number.to_integral_value() else number
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
