"""The revenue file: what plans and customers pay, for margins.

A revenue file (TOML) prices plans and customers::

    plan_tag_prefix = "plan:"         # default: a customer's plan is the value of their "plan:<name>" tag
    feature_tag_prefix = "feature:"   # default: a request's feature is the value of its "feature:<name>" tag

    [plans.free]
    monthly = 0                 # USD per customer per month
    allowance = 2               # USD of LLM cost per customer per month the plan is meant to carry
    upgrade_at_percent = 80     # "near the upgrade point" from this share of the allowance (default 80)

    [plans.pro]
    monthly = 49

    [plans.api]
    per_request = 0.002         # usage pricing; may be combined with monthly
    per_1k_tokens = 0.01        # per 1,000 tokens (input + output)

    [customers.cust_42]         # a customer's own contract replaces their plan's pricing
    monthly = 1200

Amounts are USD (``currency``, if given, must be ``"USD"``), exact: a TOML float is read digit for digit as written,
or refused with the advice to quote it; a quoted number (``monthly = "49.00"``) is read as written too.

Checked in full when loaded: a bad file stops ``tokentrail serve`` at start and answers ``tokentrail margins`` with
every problem at once, each with its line (``RevenueConfigError``). ``docs/examples/revenue.toml`` is a file to
copy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from tokentrail.processor.reports.config_file import Problems, read_toml, unknown_key
from tokentrail.processor.reports.errors import ConfigFileError
from tokentrail.processor.schema import CURRENCY

__all__ = [
    "DEFAULT_UPGRADE_PERCENT",
    "Pricing",
    "RevenueConfig",
    "RevenueConfigError",
    "load_revenue",
    "revenue_from_dict",
]

DEFAULT_UPGRADE_PERCENT: Final = Decimal(80)
_THOUSAND: Final = Decimal(1000)


class RevenueConfigError(ConfigFileError):
    """The revenue file is missing, not TOML, or prices something wrongly: ``errors`` lists every problem, each with
    its line."""

    kind = "revenue"


@dataclass(frozen=True, slots=True)
class Pricing:
    monthly: Decimal = Decimal(0)
    per_request: Decimal = Decimal(0)
    per_1k_tokens: Decimal = Decimal(0)
    allowance: Decimal | None = None  # plans only: LLM cost per customer per month the plan is meant to carry
    upgrade_at_percent: Decimal = DEFAULT_UPGRADE_PERCENT

    def usage_revenue(self, requests: int, tokens: int) -> Decimal:
        return self.per_request * requests + self.per_1k_tokens * Decimal(tokens) / _THOUSAND


@dataclass(frozen=True, slots=True)
class RevenueConfig:
    plans: Mapping[str, Pricing] = field(default_factory=dict)
    customers: Mapping[str, Pricing] = field(default_factory=dict)
    plan_tag_prefix: str = "plan:"
    feature_tag_prefix: str = "feature:"


def load_revenue(source: str | os.PathLike[str] | RevenueConfig) -> RevenueConfig:
    """Read a revenue TOML file (or pass a config through); raises ``RevenueConfigError`` naming every bad line."""
    if isinstance(source, RevenueConfig):
        return source
    data, problems = read_toml(source, RevenueConfigError)
    return _parse(data, problems)


def revenue_from_dict(data: Mapping[str, Any]) -> RevenueConfig:
    """A revenue config from values already parsed (no lines to name: each problem names its table and key)."""
    return _parse(data, Problems())


_TOP_KEYS: Final = ("currency", "plan_tag_prefix", "feature_tag_prefix", "plans", "customers")
_PRICES: Final = ("monthly", "per_request", "per_1k_tokens")
_PLAN_KEYS: Final = (*_PRICES, "allowance", "upgrade_at_percent")
_DEFAULT_PREFIXES: Final = {"plan_tag_prefix": "plan:", "feature_tag_prefix": "feature:"}


def _parse(data: Mapping[str, Any], problems: Problems) -> RevenueConfig:
    for key in data:
        if key not in _TOP_KEYS:
            problems.at((), None, key, unknown_key("top-level key", key, _TOP_KEYS))
    currency = data.get("currency", CURRENCY)
    if currency != CURRENCY:
        problems.at((), None, "currency", f"currency must be {CURRENCY!r}: costs are in {CURRENCY}, and revenue in "
                    f"another currency would make every margin wrong (got {currency!r})")
    prefixes: dict[str, str] = {}
    for name in ("plan_tag_prefix", "feature_tag_prefix"):
        value = data.get(name, _DEFAULT_PREFIXES[name])
        if not isinstance(value, str) or not value:
            problems.at((), None, name, f"{name} must be a non-empty string, e.g. {_DEFAULT_PREFIXES[name]!r}")
            value = _DEFAULT_PREFIXES[name]
        prefixes[name] = value
    plans = _priced(data, "plans", problems, prefixes["plan_tag_prefix"])
    customers = _priced(data, "customers", problems, None)
    problems.raise_if_any(RevenueConfigError)
    return RevenueConfig(plans=plans, customers=customers, plan_tag_prefix=prefixes["plan_tag_prefix"],
                         feature_tag_prefix=prefixes["feature_tag_prefix"])


def _priced(data: Mapping[str, Any], kind: str, problems: Problems, plan_prefix: str | None) -> dict[str, Pricing]:
    """The [plans.*] or [customers.*] tables (``plan_prefix`` is given for plans)."""
    tables = data.get(kind, {})
    if not isinstance(tables, Mapping):
        problems.at((), None, kind, f"{kind} must be tables, e.g. [{kind}.example]")
        return {}
    out: dict[str, Pricing] = {}
    for name, entry in tables.items():
        where = f"{kind}.{name}"
        if not isinstance(entry, Mapping):
            problems.at((kind,), None, name, f"{where} must be a table, e.g. [{where}] monthly = 49")
            continue
        if plan_prefix is not None and name.startswith(plan_prefix) and len(name) > len(plan_prefix):
            problems.at((kind,), None, name, f"plan {name!r} starts with the plan tag prefix {plan_prefix!r}: name "
                        f"the plan by the tag's value, [plans.{name[len(plan_prefix):]}] for tag {name!r}")
        pricing = _pricing(entry, (kind, name), problems, plan=plan_prefix is not None)
        if pricing is not None:
            out[name] = pricing
    return out


def _pricing(entry: Mapping[str, Any], path: tuple[str, str], problems: Problems, *, plan: bool) -> Pricing | None:
    where = ".".join(path)
    allowed = _PLAN_KEYS if plan else _PRICES
    ok = True
    for key in entry:
        if key not in allowed:
            extra = "; allowance and upgrade_at_percent belong to a plan" if key in _PLAN_KEYS else ""
            problems.at(path, None, key, f"{where}: {unknown_key('key', key, allowed)}{extra}")
            ok = False
    values: dict[str, Decimal] = {}
    for key in allowed:
        if key not in entry:
            continue
        number = problems.number(entry[key], path, None, key, f"{where}.{key}")
        if number is None:
            ok = False
        elif number < 0:
            problems.at(path, None, key, f"{where}.{key} must not be negative, got {number}")
            ok = False
        else:
            values[key] = number
    return Pricing(**values) if ok else None
