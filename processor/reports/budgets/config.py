"""The budgets file: what each budget counts (scope, value, period, amount, thresholds), checked when loaded so a bad
file stops the start, not an alert months later. The format is in the package docstring."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from tokentrail.processor.reports.errors import ReportError, ReportParameterError
from tokentrail.processor.schema import UsageRecord

__all__ = [
    "DEFAULT_THRESHOLDS",
    "EACH",
    "PERIODS",
    "SCOPE_COLUMNS",
    "SCOPES",
    "Budget",
    "BudgetConfigError",
    "BudgetsConfig",
    "Period",
    "budgets_from_dict",
    "load_budgets",
]

SCOPES: Final = ("total", "user", "tag", "model", "provider", "credential_type")
PERIODS: Final = ("daily", "weekly", "monthly", "none")
EACH: Final = "each"
DEFAULT_THRESHOLDS: Final = (Decimal(50), Decimal(75), Decimal(100))
# Scope -> stored column. ``total`` and ``tag`` are absent: no column, and an exploded list.
SCOPE_COLUMNS: Final[dict[str, str]] = {
    "user": "user_id",
    "model": "model",
    "provider": "provider",
    "credential_type": "credential_type",
}


class BudgetConfigError(ReportError, ValueError):
    """The budgets file is missing, not TOML, or describes a budget wrongly; the message says where."""


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
        got = getattr(record, SCOPE_COLUMNS[self.scope])
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
