"""The budgets file: what each budget counts (scope, value, period, amount, thresholds), where its alerts go (webhooks,
each in a format: JSON or Slack), and which spikes alert (``[spikes]``), checked when loaded so a bad file stops the
start, not an alert months later: every problem at once, each with its line (``BudgetConfigError``).
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
from tokentrail.processor.reports.spikes import DIMENSIONS as SPIKE_DIMENSIONS
from tokentrail.processor.reports.spikes import SpikeQuery
from tokentrail.processor.schema import UsageRecord

__all__ = [
    "DEFAULT_SPIKE_INTERVAL",
    "DEFAULT_THRESHOLDS",
    "EACH",
    "MIN_SPIKE_INTERVAL",
    "PERIODS",
    "SCOPE_COLUMNS",
    "SCOPES",
    "WEBHOOK_FORMATS",
    "Budget",
    "BudgetConfigError",
    "BudgetsConfig",
    "Period",
    "SpikeAlerts",
    "Webhook",
    "budgets_from_dict",
    "load_budgets",
]

SCOPES: Final = ("total", "user", "tag", "model", "provider", "credential_type")
PERIODS: Final = ("daily", "weekly", "monthly", "none")
EACH: Final = "each"
DEFAULT_THRESHOLDS: Final = (Decimal(50), Decimal(75), Decimal(100))
WEBHOOK_FORMATS: Final = ("json", "slack")
DEFAULT_SPIKE_INTERVAL: Final = 300.0  # seconds between two spike checks
MIN_SPIKE_INTERVAL: Final = 1.0  # a check is a DuckDB scan of the baseline windows: not in a tight loop
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


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where alerts go and in which shape: ``json`` (the alert as it is, for machines) or ``slack`` (a Slack
    incoming-webhook message, for people). The URL and headers are secrets (a chat hook's key is its path): kept
    out of ``repr``, so a logged config never shows them."""

    url: str = field(repr=False)
    format: str = "json"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    name: str
    scope: str
    value: str | None  # None for scope total; EACH for every value; else one value
    amount: Decimal
    period: str
    thresholds: tuple[Decimal, ...] = DEFAULT_THRESHOLDS
    count_byok: bool = False
    webhooks: tuple[Webhook, ...] = ()
    start: date | None = None

    @property
    def each(self) -> bool:
        return self.value == EACH

    @property
    def webhook(self) -> str | None:
        """The first webhook's URL (a budget usually has one)."""
        return self.webhooks[0].url if self.webhooks else None

    @property
    def webhook_headers(self) -> Mapping[str, str]:
        return self.webhooks[0].headers if self.webhooks else {}

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


@dataclass(frozen=True, slots=True, kw_only=True)
class SpikeAlerts:
    """The ``[spikes]`` table: which spike questions ``tokentrail serve`` asks every ``interval`` seconds (one
    ``SpikeQuery`` per dimension, ``as_of`` left to the clock), and where a new spike is sent."""

    enabled: bool = True
    interval: float = DEFAULT_SPIKE_INTERVAL
    queries: tuple[SpikeQuery, ...] = (SpikeQuery(),)
    webhooks: tuple[Webhook, ...] = ()


@dataclass(frozen=True, slots=True)
class BudgetsConfig:
    budgets: tuple[Budget, ...]
    spikes: SpikeAlerts | None = None

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


_TOP_KEYS: Final = ("webhook", "webhook_headers", "budgets", "spikes")
_BUDGET_KEYS: Final = (
    "name", "scope", "value", "amount", "period", "thresholds", "count_byok", "webhook", "webhook_headers", "start",
)
_CREDENTIAL_TYPES: Final = ("byok", "system")
_BUDGETS: Final = ("budgets",)
_SPIKES: Final = ("spikes",)
_WEBHOOK_KEYS: Final = ("url", "format", "headers")
# The /v1/spikes parameters a [spikes] table takes (as_of is the clock's; include_all and limit do not apply).
_SPIKE_QUERY_KEYS: Final = ("dimension", "window", "seasonality", "baseline", "metric", "threshold", "min_increase",
                            "partial")
_SPIKES_KEYS: Final = ("enabled", "interval_seconds", *_SPIKE_QUERY_KEYS, "webhook", "webhook_headers")


def _parse(data: Mapping[str, Any], problems: Problems) -> BudgetsConfig:
    for key in data:
        if key not in _TOP_KEYS:
            problems.at((), None, key, unknown_key("top-level key", key, _TOP_KEYS) + "; a budget is a [[budgets]] table")
    webhook = _webhooks(data.get("webhook"), problems, (), None, "webhook")
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
    spikes = _spikes(data["spikes"], webhook, headers, problems) if "spikes" in data else None
    problems.raise_if_any(BudgetConfigError)
    return BudgetsConfig(tuple(budgets), spikes)


def _budget(
    entry: object, index: int, webhook: list[_Hook] | None, headers: Mapping[str, str], problems: Problems
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
    budget_webhook = _webhooks(entry.get("webhook"), problems, _BUDGETS, index, f"{where}: webhook")
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
        webhooks=_resolved(budget_webhook if budget_webhook is not None else webhook, {**headers, **budget_headers}),
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


_Hook = tuple[Webhook, bool]  # (webhook, given as a plain URL: takes the webhook_headers tables)


def _webhooks(
    value: object, problems: Problems, path: tuple[str, ...], index: int | None, what: str
) -> list[_Hook] | None:
    """A ``webhook`` value: a URL (JSON), a table ``{ url, format, headers }``, or a list of these (an empty list:
    none). None when absent (the enclosing default applies); every problem added, at the ``webhook`` line."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    hooks: list[_Hook] = []
    for item in items:
        hook = _webhook(item, problems, path, index, what)
        if hook is not None:
            hooks.append(hook)
    return hooks


def _webhook(item: object, problems: Problems, path: tuple[str, ...], index: int | None, what: str) -> _Hook | None:
    def problem(message: str) -> None:
        problems.at(path, index, "webhook", f"{what} {message}")

    if isinstance(item, str):
        url = _url(item, problem)
        return (Webhook(url), True) if url is not None else None
    if not isinstance(item, Mapping):
        problem(f"must be a URL, a table {{ url = \"https://...\", format = \"slack\" }} or a list of them, got {item!r}")
        return None
    before = len(problems.found)
    for key in item:
        if key not in _WEBHOOK_KEYS:
            problem(unknown_key("key", str(key), _WEBHOOK_KEYS))
    url = _url(item.get("url"), problem) if "url" in item else None
    if "url" not in item:
        problem("needs a url")
    form = item.get("format", "json")
    if form not in WEBHOOK_FORMATS:
        problem(f"has an unknown format {form!r}; {_did_you_mean(form, WEBHOOK_FORMATS)}use one of "
                f"{', '.join(WEBHOOK_FORMATS)}")
    headers = item.get("headers", {})
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        problem("headers must be a table of header names to strings")
    if len(problems.found) > before or url is None:
        return None
    return Webhook(url, str(form), dict(headers)), False


def _resolved(hooks: list[_Hook] | None, headers: Mapping[str, str]) -> tuple[Webhook, ...]:
    """The webhooks, those given as plain URLs with the ``webhook_headers`` that apply to them (a table webhook
    has its own ``headers``: a JSON hook's shared secret is not for Slack)."""
    return tuple(Webhook(hook.url, hook.format, dict(headers)) if plain else hook for hook, plain in hooks or ())


def _url(value: object, problem: Callable[[str], None]) -> str | None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        problem(f"must be an http:// or https:// URL, got {value!r}")
        return None
    return value


def _spikes(
    table: object, webhook: list[_Hook] | None, headers: Mapping[str, str], problems: Problems
) -> SpikeAlerts | None:
    """The ``[spikes]`` table; None when it has problems (every one added)."""
    if not isinstance(table, Mapping):
        problems.at((), None, "spikes", "spikes must be one table: write it as [spikes]")
        return None
    before = len(problems.found)

    def problem(key: str | None, message: str) -> None:
        problems.at(_SPIKES, None, key if key in table else None, f"spikes: {message}")

    for key in table:
        if key not in _SPIKES_KEYS:
            problem(key, unknown_key("key", key, _SPIKES_KEYS))
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        problem("enabled", "enabled must be true or false")
    interval = DEFAULT_SPIKE_INTERVAL
    if "interval_seconds" in table:
        seconds = problems.number(table["interval_seconds"], _SPIKES, None, "interval_seconds",
                                  "spikes: interval_seconds")
        if seconds is not None and seconds < Decimal(str(MIN_SPIKE_INTERVAL)):
            problem("interval_seconds", f"interval_seconds must be at least {MIN_SPIKE_INTERVAL:g} (a check scans the "
                    "baseline windows' data), e.g. 300 for every five minutes")
        elif seconds is not None:
            interval = float(seconds)
    raw_dimensions = table.get("dimension", "model")
    dimensions = raw_dimensions if isinstance(raw_dimensions, list) else [raw_dimensions]
    if not dimensions or not all(isinstance(d, str) for d in dimensions):
        problem("dimension", f"dimension must be one of {', '.join(SPIKE_DIMENSIONS)}, or a list of them")
        dimensions = []
    for dimension in dimensions:
        if dimension not in SPIKE_DIMENSIONS:
            problem("dimension", f"unknown dimension {dimension!r}; {_did_you_mean(dimension, SPIKE_DIMENSIONS)}use "
                    f"one of {', '.join(SPIKE_DIMENSIONS)}")
    options: dict[str, Any] = {}
    for key in ("window", "seasonality", "metric"):
        if key in table:
            options[key] = table[key]
    for key in ("threshold", "min_increase"):
        if key in table:
            options[key] = problems.number(table[key], _SPIKES, None, key, f"spikes: {key}")
    if "baseline" in table:
        options["baseline"] = table["baseline"]
    partial = table.get("partial", False)
    if not isinstance(partial, bool):
        problem("partial", "partial must be true or false")
    # Each option alone (with the window, which the others depend on), so a problem names its own line.
    window: dict[str, Any] = {}
    for key, value in options.items():
        if value is None or (key in ("seasonality", "baseline") and "window" in options and not window):
            continue  # already a problem (their own, or the window's, which they depend on)
        try:
            SpikeQuery(**{**(window if key != "window" else {}), key: value})
        except ReportParameterError as exc:
            problem(key, str(exc))
        else:
            if key == "window":
                window = {"window": value}
    webhooks = _webhooks(table.get("webhook"), problems, _SPIKES, None, "spikes: webhook")
    own_headers = _headers(table.get("webhook_headers", {}), problems, _SPIKES, None, "spikes: webhook_headers")
    if len(problems.found) > before:
        return None
    queries = []
    for dimension in dict.fromkeys(dimensions):
        try:
            queries.append(SpikeQuery(dimension=dimension, partial=partial, **options))
        except ReportParameterError as exc:  # a combination no single option shows
            problem(None, str(exc))
            return None
    return SpikeAlerts(
        enabled=enabled,
        interval=interval,
        queries=tuple(queries),
        webhooks=_resolved(webhooks if webhooks is not None else webhook, {**headers, **own_headers}),
    )


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
