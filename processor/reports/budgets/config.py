"""The budgets file: what each budget counts (scope, value, period, amount, thresholds), checked when loaded so a bad
file stops the start, not an alert months later: every problem at once, each with its line (``BudgetConfigError``).
The format is in the package docstring; ``docs/examples/budgets.toml`` is a file to copy."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final

from tokentrail.processor.reports.config_file import Problems, exact_decimal, read_toml, unknown_key
from tokentrail.processor.reports.errors import ConfigFileError, ReportParameterError
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


class BudgetConfigError(ConfigFileError):
    """The budgets file is missing, not TOML, or describes budgets wrongly: ``errors`` lists every problem, each
    with its line."""

    kind = "budgets"


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
    """Read a budgets TOML file (or pass a config through); raises ``BudgetConfigError`` naming every bad line."""
    if isinstance(source, BudgetsConfig):
        return source
    data, problems = read_toml(source, BudgetConfigError)
    return _parse(data, problems)


def budgets_from_dict(data: Mapping[str, Any]) -> BudgetsConfig:
    """Budgets from values already parsed (no lines to name: each problem names its budget)."""
    return _parse(data, Problems())


_TOP_KEYS: Final = ("webhook", "webhook_headers", "budgets")
_BUDGET_KEYS: Final = (
    "name", "scope", "value", "amount", "period", "thresholds", "count_byok", "webhook", "webhook_headers", "start",
)
_CREDENTIAL_TYPES: Final = ("byok", "system")
_BUDGETS: Final = ("budgets",)


def _parse(data: Mapping[str, Any], problems: Problems) -> BudgetsConfig:
    for key in data:
        if key not in _TOP_KEYS:
            problems.at((), None, key, unknown_key("top-level key", key, _TOP_KEYS) + "; a budget is a [[budgets]] table")
    webhook = _url(data.get("webhook"), problems, (), None, "webhook")
    headers = _headers(data.get("webhook_headers", {}), problems, (), None, "webhook_headers")
    entries = data.get("budgets", [])
    if not isinstance(entries, list):
        problems.at((), None, "budgets", "budgets must be an array of tables: write each budget as [[budgets]]")
        entries = []
    budgets: list[Budget] = []
    named: dict[str, int | None] = {}  # name -> line of its first budget
    for index, entry in enumerate(entries):
        budget = _budget(entry, index, webhook, headers, problems)
        if budget is not None:
            budgets.append(budget)
        name = _name_of(entry)
        if name is None:
            continue
        line = problems.line(_BUDGETS, index, "name" if "name" in entry else None)
        if name in named:
            also = f" (also at line {named[name]})" if named[name] is not None else ""
            problems.add(line, f"budget {index + 1}: two budgets are named {name!r}{also}; names must be unique")
        named.setdefault(name, line)
    problems.raise_if_any(BudgetConfigError)
    return BudgetsConfig(tuple(budgets))


def _budget(
    entry: object, index: int, webhook: str | None, headers: Mapping[str, str], problems: Problems
) -> Budget | None:
    """One [[budgets]] table; None when it has problems (every one added)."""
    if not isinstance(entry, Mapping):
        problems.at(_BUDGETS, index, None, f"budget {index + 1}: each budget must be a table ([[budgets]])")
        return None
    before = len(problems.found)
    named = entry.get("name")
    where = f"budget {index + 1}" + (f" ({named!r})" if isinstance(named, str) else "")

    def problem(key: str | None, message: str) -> None:
        problems.at(_BUDGETS, index, key if key in entry else None, f"{where}: {message}")

    for key in entry:
        if key not in _BUDGET_KEYS:
            problem(key, unknown_key("key", key, _BUDGET_KEYS))
    scope = entry.get("scope", "total")
    if scope not in SCOPES:
        problem("scope", f"unknown scope {scope!r}; {_did_you_mean(scope, SCOPES)}use one of {', '.join(SCOPES)}")
    value = entry.get("value")
    if scope == "total":
        if value is not None:
            problem("value", "scope total takes no value")
    elif scope in SCOPES and (not isinstance(value, str) or not value):
        problem("value" if "value" in entry else "scope",
                f"scope {scope} needs a value: one {scope}, or \"{EACH}\" for every one")
    elif scope == "credential_type" and value not in (*_CREDENTIAL_TYPES, EACH):
        problem("value", f"credential_type is \"byok\" or \"system\" (or \"{EACH}\"), got {value!r}: this budget "
                "would never count a call")
    period = entry.get("period", "monthly")
    if period not in PERIODS:
        problem("period", f"unknown period {period!r}; {_did_you_mean(period, PERIODS)}use one of {', '.join(PERIODS)}")
    amount = problems.number(entry.get("amount"), _BUDGETS, index, "amount", f"{where}: amount") \
        if "amount" in entry else None
    if "amount" not in entry:
        problem(None, "amount is missing (USD per period)")
    elif amount is not None and amount <= 0:
        problem("amount", "amount must be more than 0 (USD per period)")
    thresholds = _thresholds(entry.get("thresholds", DEFAULT_THRESHOLDS), problem)
    count_byok = entry.get("count_byok", False)
    if not isinstance(count_byok, bool):
        problem("count_byok", "count_byok must be true or false")
    start = _start(entry.get("start"), period, problem)
    name = _name_of(entry)
    if name is None:
        problem("name", "name must be a non-empty string")
    budget_webhook = _url(entry.get("webhook"), problems, _BUDGETS, index, f"{where}: webhook", "webhook")
    budget_headers = _headers(
        entry.get("webhook_headers", {}), problems, _BUDGETS, index, f"{where}: webhook_headers", "webhook_headers")
    if len(problems.found) > before or amount is None or thresholds is None or name is None:
        return None
    return Budget(
        name=name,
        scope=str(scope),
        value=value,
        amount=amount,
        period=str(period),
        thresholds=thresholds,
        count_byok=bool(count_byok),
        webhook=budget_webhook or webhook,
        webhook_headers={**headers, **budget_headers},
        start=start,
    )


def _name_of(entry: object) -> str | None:
    """A budget's name: its own, or scope:value:period; None if it has no usable one."""
    if not isinstance(entry, Mapping):
        return None
    if "name" in entry:
        name = entry["name"]
        return name if isinstance(name, str) and name.strip() else None
    return ":".join(str(part) for part in (entry.get("scope", "total"), entry.get("value"), entry.get("period",
                                                                                                      "monthly")) if part)


def _did_you_mean(given: object, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(given), allowed, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _thresholds(raw: object, problem: Callable[[str | None, str], None]) -> tuple[Decimal, ...] | None:
    if not isinstance(raw, (list, tuple)) or not raw:
        problem("thresholds", "thresholds must be a non-empty list of percents, e.g. [50, 75, 100]")
        return None
    numbers: set[Decimal] = set()
    for item in raw:
        try:
            numbers.add(exact_decimal(item))
        except ValueError as exc:
            problem("thresholds", f"thresholds: each {exc}")
            return None
    thresholds = tuple(sorted(numbers))
    if thresholds[0] <= 0:
        problem("thresholds", "thresholds are percents of amount and must be more than 0")
        return None
    return thresholds


def _start(raw: object, period: object, problem: Callable[[str | None, str], None]) -> date | None:
    if raw is None:
        return None
    if period != "none":
        problem("start", "start applies only to period \"none\" (the other periods start on their calendar day)")
    if isinstance(raw, str):
        try:
            return date.fromisoformat(raw.strip())
        except ValueError:
            pass
    elif isinstance(raw, date) and not isinstance(raw, datetime):
        return raw
    problem("start", f"start must be a date, YYYY-MM-DD (a UTC day), got {raw!r}")
    return None


def _url(
    value: object, problems: Problems, path: tuple[str, ...], index: int | None, what: str, key: str = "webhook"
) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        problems.at(path, index, key, f"{what} must be an http:// or https:// URL, got {value!r}")
        return None
    return value


def _headers(
    value: object, problems: Problems, path: tuple[str, ...], index: int | None, what: str,
    key: str = "webhook_headers",
) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        problems.at(path, index, key, f"{what} must be a table of header names to strings")
        return {}
    return dict(value)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)
