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

Checked in full when loaded: a bad file stops ``tokentrail serve`` at start and answers ``tokentrail margins`` with
the line that is wrong.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from tokentrail.processor.reports.errors import ReportError

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


class RevenueConfigError(ReportError, ValueError):
    """The revenue file is missing, not TOML, or prices something wrongly; the message says where."""


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
    if isinstance(source, RevenueConfig):
        return source
    path = Path(source)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RevenueConfigError(f"cannot read the revenue file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RevenueConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        return revenue_from_dict(data)
    except RevenueConfigError as exc:
        raise RevenueConfigError(f"{path}: {exc}") from None


def revenue_from_dict(data: Mapping[str, Any]) -> RevenueConfig:
    unknown = set(data) - {"currency", "plan_tag_prefix", "feature_tag_prefix", "plans", "customers"}
    if unknown:
        raise RevenueConfigError(
            f"unknown top-level keys {sorted(unknown)}; expected plan_tag_prefix, feature_tag_prefix, [plans.*], "
            "[customers.*]"
        )
    for name in ("plan_tag_prefix", "feature_tag_prefix"):
        if name in data and (not isinstance(data[name], str) or not data[name]):
            raise RevenueConfigError(f"{name} must be a non-empty string")
    plans = {name: _pricing(entry, f"plans.{name}", plan=True) for name, entry in _tables(data, "plans").items()}
    customers = {
        name: _pricing(entry, f"customers.{name}", plan=False) for name, entry in _tables(data, "customers").items()
    }
    return RevenueConfig(
        plans=plans,
        customers=customers,
        plan_tag_prefix=data.get("plan_tag_prefix", "plan:"),
        feature_tag_prefix=data.get("feature_tag_prefix", "feature:"),
    )


def _tables(data: Mapping[str, Any], name: str) -> Mapping[str, Mapping[str, Any]]:
    tables = data.get(name, {})
    if not isinstance(tables, Mapping) or not all(isinstance(v, Mapping) for v in tables.values()):
        raise RevenueConfigError(f"{name} must be tables, e.g. [{name}.example]")
    return tables


def _pricing(entry: Mapping[str, Any], where: str, *, plan: bool) -> Pricing:
    allowed = {"monthly", "per_request", "per_1k_tokens", *(("allowance", "upgrade_at_percent") if plan else ())}
    unknown = set(entry) - allowed
    if unknown:
        raise RevenueConfigError(f"{where}: unknown keys {sorted(unknown)}; expected {sorted(allowed)}")
    values = {name: _decimal(entry[name], f"{where}.{name}") for name in allowed if name in entry}
    for name, value in values.items():
        if value < 0:
            raise RevenueConfigError(f"{where}.{name} must not be negative")
    return Pricing(**values)


def _decimal(value: object, where: str) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RevenueConfigError(f"{where} must be a number, got {value!r}")
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        raise RevenueConfigError(f"{where} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise RevenueConfigError(f"{where} must be a finite number")
    return number
