"""Margins and unit economics: what customers, plans and features bring in against what their LLM calls cost.

The revenue file (plans, customers, tag prefixes) is read by ``reports.revenue``.

**Revenue** of a customer over a period: their contract (or plan) applied to their requests, with monthly amounts
prorated by the days of each calendar month the period covers (a full month earns exactly ``monthly``).
A customer counts if they made a request in the period or have a ``[customers]`` entry. A customer with neither
a plan tag nor an entry has unknown revenue (``null``): their cost is shown, their margin is not.
Their plan is the last plan tag they used in the period.

**Cost** is ``total_cost`` (what you pay: BYOK calls cost you nothing). ``margin = revenue - cost`` and
``margin_percent = margin / revenue``. Unpriced requests add nothing to cost and are counted in
``unpriced_request_count``; a row none of whose requests has a price has unknown cost (``null``), and so unknown
margin and cost per request or token: never a $0 cost and a 100 % margin.

**Features**: cost per feature tag; a request with several feature tags counts in each (like tag rows of the
report, feature rows overlap), and requests with none are the ``null`` feature. Usage revenue goes to the feature
that earned it; monthly revenue is split across a customer's features by their share of its requests.

**Near the upgrade point** (``by=upgrade``): customers who used a tag (default the first plan with an
``allowance``, e.g. ``plan:free``) whose cost in the period reached ``threshold`` USD, or ``percent`` of the
plan's allowance (prorated to the period like revenue).
"""

from __future__ import annotations

import calendar
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from tokentrail.processor.reports.dataset import USAGE_SOURCE, exact_cost, scan_dataset
from tokentrail.processor.reports.errors import ReportParameterError
from tokentrail.processor.reports.params import Params, date_param, int_param, refuse_unknown, single_param
from tokentrail.processor.reports.query import MAX_RANGE_DAYS, MAX_ROWS
from tokentrail.processor.reports.revenue import DEFAULT_UPGRADE_PERCENT, RevenueConfig
from tokentrail.processor.schema import COST_QUANTUM, PARTITION_COLUMN

__all__ = [
    "MARGIN_COLUMNS",
    "MARGIN_PARAMETERS",
    "MARGIN_VIEWS",
    "MarginsResult",
    "margins",
    "margins_from_params",
]

MARGIN_VIEWS: Final = ("customer", "plan", "feature", "upgrade")
# Every parameter GET /v1/margins reads (besides ``format``), and so accepts: the OpenAPI document lists exactly these.
MARGIN_PARAMETERS: Final = ("start_date", "end_date", "by", "tag", "allowance", "threshold", "percent", "limit")
_UNIT_COLUMNS: Final = ("request_count", "tokens", "cost_per_request", "cost_per_1k_tokens", "unpriced_request_count")
_MONEY_COLUMNS: Final = ("revenue", "cost", "margin", "margin_percent")
# The keys of a row for each view, in order (the CSV header).
MARGIN_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "customer": ("user", "plan", *_MONEY_COLUMNS, *_UNIT_COLUMNS),
    "plan": ("plan", "customers", *_MONEY_COLUMNS, *_UNIT_COLUMNS, "cost_per_customer"),
    "feature": ("feature", *_MONEY_COLUMNS, *_UNIT_COLUMNS),
    "upgrade": ("user", "tag", "cost", "allowance", "percent_of_allowance", *_UNIT_COLUMNS),
}

_PERCENT: Final = Decimal("0.01")
_HUNDRED: Final = Decimal(100)
_THOUSAND: Final = Decimal(1000)


def months_fraction(start: date, end: date) -> Decimal:
    """How many months ``start..end`` (inclusive) covers: each calendar month counts its covered share of days."""
    total = Decimal(0)
    day = start
    while day <= end:
        days_in_month = calendar.monthrange(day.year, day.month)[1]
        month_end = day.replace(day=days_in_month)
        last = min(month_end, end)
        total += Decimal((last - day).days + 1) / Decimal(days_in_month)
        day = month_end + timedelta(days=1)
    return total


def _money(value: Decimal) -> Decimal:
    return value.quantize(COST_QUANTUM)


def _ratio_percent(part: Decimal, whole: Decimal) -> Decimal | None:
    return (part * _HUNDRED / whole).quantize(_PERCENT) if whole else None


def _unit_costs(cost: Decimal | None, requests: int, tokens: int) -> dict[str, Decimal | None]:
    return {
        "cost_per_request": _money(cost / requests) if requests and cost is not None else None,
        "cost_per_1k_tokens": _money(cost * _THOUSAND / tokens) if tokens and cost is not None else None,
    }


@dataclass(slots=True)
class _Usage:
    cost: Decimal = Decimal(0)
    requests: int = 0
    tokens: int = 0
    unpriced: int = 0

    @property
    def known_cost(self) -> Decimal | None:
        """The priced requests' cost; None when there were requests and none had a price (unknown, not $0)."""
        return None if self.requests and self.unpriced == self.requests else self.cost

    def add(self, other: _Usage) -> None:
        self.cost += other.cost
        self.requests += other.requests
        self.tokens += other.tokens
        self.unpriced += other.unpriced


# The plan tag of the user's last request that carried one.
_LAST_PLAN_SQL: Final = (
    'arg_max(list_filter(tags, lambda t: starts_with(t, $plan_prefix))[1], "timestamp") '
    "FILTER (WHERE len(list_filter(tags, lambda t: starts_with(t, $plan_prefix))) > 0)"
)
_METRICS_SQL: Final = (
    "SUM(total_cost) AS cost, COUNT(*) AS requests, CAST(SUM(input_tokens + output_tokens) AS BIGINT) AS tokens, "
    "COUNT(*) FILTER (WHERE price_status <> 'priced' OR total_cost IS NULL) AS unpriced"
)


def _per_customer(
    data_dir: str | os.PathLike[str], start: date, end: date, config: RevenueConfig
) -> dict[str | None, tuple[_Usage, str | None]]:
    """``{user: (usage, plan)}``; the plan is the last plan tag the user's requests carried in the period."""
    sql = (
        f"SELECT user_id, {_LAST_PLAN_SQL} AS plan_tag, {_METRICS_SQL}\n"
        f"FROM {USAGE_SOURCE}\n"
        f'WHERE "{PARTITION_COLUMN}" BETWEEN $start_date AND $end_date\n'
        "GROUP BY user_id"
    )
    params = {"start_date": start, "end_date": end, "plan_prefix": config.plan_tag_prefix}
    _, rows = scan_dataset(data_dir, start, end, sql, params)
    prefix_len = len(config.plan_tag_prefix)
    out: dict[str | None, tuple[_Usage, str | None]] = {}
    for user, plan_tag, cost, requests, tokens, unpriced in rows:
        plan = plan_tag[prefix_len:] if isinstance(plan_tag, str) else None
        out[user] = (_Usage(exact_cost(cost), int(requests), int(tokens or 0), int(unpriced)), plan)
    return out


def _per_customer_feature(
    data_dir: str | os.PathLike[str], start: date, end: date, config: RevenueConfig
) -> list[tuple[str | None, str | None, _Usage]]:
    sql = (
        f"SELECT user_id, feature, {_METRICS_SQL}\n"
        "FROM (\n"
        "  SELECT user_id, total_cost, input_tokens, output_tokens, price_status,\n"
        "    UNNEST(CASE WHEN len(f) = 0 THEN [NULL::VARCHAR] ELSE f END) AS feature\n"
        "  FROM (SELECT *, list_distinct(list_filter(tags, lambda t: starts_with(t, $feature_prefix))) AS f\n"
        f"        FROM {USAGE_SOURCE}\n"
        f'        WHERE "{PARTITION_COLUMN}" BETWEEN $start_date AND $end_date)\n'
        ")\n"
        "GROUP BY user_id, feature"
    )
    params = {"start_date": start, "end_date": end, "feature_prefix": config.feature_tag_prefix}
    _, rows = scan_dataset(data_dir, start, end, sql, params)
    prefix_len = len(config.feature_tag_prefix)
    return [
        (
            user,
            feature[prefix_len:] if isinstance(feature, str) else None,
            _Usage(exact_cost(cost), int(requests), int(tokens or 0), int(unpriced)),
        )
        for user, feature, cost, requests, tokens, unpriced in rows
    ]


@dataclass(frozen=True, slots=True)
class MarginsResult:
    by: str
    start_date: date
    end_date: date
    rows: list[dict[str, Any]]
    totals: dict[str, Any]
    truncated: bool = False

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {
            "start_date": self.start_date.isoformat(),
            "end_date": self.end_date.isoformat(),
            "by": self.by,
            "results": self.rows,
            "totals": self.totals,
        }
        if self.truncated:
            body["truncated"] = True
        return body


def _revenue_of(
    config: RevenueConfig, user: str | None, plan: str | None, usage: _Usage, months: Decimal
) -> tuple[Decimal | None, Decimal | None]:
    """(total revenue, of which monthly) for a customer over the period; None when nothing prices them."""
    pricing = config.customers.get(user) if user is not None else None
    if pricing is None and plan is not None:
        pricing = config.plans.get(plan)
    if pricing is None:
        return None, None
    monthly = pricing.monthly * months
    return _money(monthly + pricing.usage_revenue(usage.requests, usage.tokens)), monthly


def margins(
    data_dir: str | os.PathLike[str],
    config: RevenueConfig,
    *,
    start_date: date,
    end_date: date,
    by: str = "customer",
    tag: str | None = None,
    allowance: Decimal | None = None,
    threshold: Decimal | None = None,
    percent: Decimal | None = None,
    limit: int = MAX_ROWS,
) -> MarginsResult:
    if by not in MARGIN_VIEWS:
        raise ReportParameterError(f"unknown by {by!r}; use one of {', '.join(MARGIN_VIEWS)}")
    if end_date < start_date:
        raise ReportParameterError(f"end_date {end_date.isoformat()} is before start_date {start_date.isoformat()}")
    if (end_date - start_date).days + 1 > MAX_RANGE_DAYS:
        raise ReportParameterError(f"the date range spans more than {MAX_RANGE_DAYS} days; ask for fewer")
    months = months_fraction(start_date, end_date)
    if by == "upgrade":
        rows = _near_upgrade(data_dir, config, start_date, end_date, months, tag, allowance, threshold, percent)
        return _finish(by, start_date, end_date, rows, {"customers": len(rows)}, limit)

    customers = _per_customer(data_dir, start_date, end_date, config)
    for contracted in config.customers:  # a contract earns its revenue in a period without requests too
        customers.setdefault(contracted, (_Usage(), None))
    customer_rows: list[dict[str, Any]] = []
    known: list[tuple[str | None, Decimal | None, _Usage]] = []  # (plan, revenue, usage) of each customer row
    monthly_of: dict[str | None, Decimal] = {}
    for user, (usage, customer_plan) in customers.items():
        revenue, monthly = _revenue_of(config, user, customer_plan, usage, months)
        if monthly is not None:
            monthly_of[user] = monthly
        customer_rows.append(_row({"user": user, "plan": customer_plan}, revenue, usage))
        known.append((customer_plan, revenue, usage))
    totals = _totals(known)

    if by == "customer":
        rows = sorted(customer_rows, key=_margin_order)
        return _finish(by, start_date, end_date, rows, totals, limit)

    if by == "plan":
        plans: dict[str | None, tuple[Decimal | None, _Usage, int]] = {}
        for plan, row_revenue, row_usage in known:
            revenue, usage, count = plans.get(plan, (None, _Usage(), 0))
            usage.add(row_usage)
            if row_revenue is not None:
                revenue = (revenue or Decimal(0)) + row_revenue
            plans[plan] = (revenue, usage, count + 1)
        rows = []
        for plan, (revenue, usage, count) in plans.items():
            row = _row({"plan": plan, "customers": count}, revenue, usage)
            cost = usage.known_cost
            row["cost_per_customer"] = _money(cost / count) if count and cost is not None else None
            rows.append(row)
        rows.sort(key=_margin_order)
        return _finish(by, start_date, end_date, rows, totals, limit)

    # by == "feature": usage revenue where earned, monthly revenue by request share within the customer.
    per_feature = _per_customer_feature(data_dir, start_date, end_date, config)
    feature_requests: dict[str | None, int] = {}
    for user, _, usage in per_feature:
        feature_requests[user] = feature_requests.get(user, 0) + usage.requests
    features: dict[str | None, tuple[Decimal | None, _Usage]] = {}
    for user, feature, usage in per_feature:
        _, customer_plan = customers.get(user, (_Usage(), None))
        pricing = config.customers.get(user) if user is not None else None
        if pricing is None and customer_plan is not None:
            pricing = config.plans.get(customer_plan)
        revenue, total_usage = features.get(feature, (None, _Usage()))
        total_usage.add(usage)
        if pricing is not None:
            share = Decimal(usage.requests) / Decimal(feature_requests[user]) if feature_requests[user] else Decimal(0)
            earned = monthly_of.get(user, Decimal(0)) * share + pricing.usage_revenue(usage.requests, usage.tokens)
            revenue = (revenue or Decimal(0)) + earned
        features[feature] = (revenue, total_usage)
    rows = [
        _row({"feature": feature}, _money(revenue) if revenue is not None else None, usage)
        for feature, (revenue, usage) in features.items()
    ]
    rows.sort(key=_margin_order)
    return _finish(by, start_date, end_date, rows, totals, limit)


def _row(keys: dict[str, object], revenue: Decimal | None, usage: _Usage) -> dict[str, Any]:
    cost = usage.known_cost
    margin = _money(revenue - cost) if revenue is not None and cost is not None else None
    return {
        **keys,
        "revenue": revenue,
        "cost": cost,
        "margin": margin,
        "margin_percent": _ratio_percent(margin, revenue) if margin is not None and revenue else None,
        "request_count": usage.requests,
        "tokens": usage.tokens,
        **_unit_costs(cost, usage.requests, usage.tokens),
        "unpriced_request_count": usage.unpriced,
    }


def _margin_order(row: Mapping[str, object]) -> tuple[int, Decimal, Decimal]:
    """Worst margin first (the rows to act on); rows without a known margin after, by cost (unknown cost last)."""
    margin, cost = row["margin"], row["cost"]
    assert cost is None or isinstance(cost, Decimal)  # as _row makes them
    assert margin is None or isinstance(margin, Decimal)
    spent = cost if cost is not None else Decimal(0)
    if margin is None:
        return (1 if cost is not None else 2, -spent, Decimal(0))
    return (0, margin, -spent)


def _totals(customers: list[tuple[str | None, Decimal | None, _Usage]]) -> dict[str, Any]:
    """Over every customer row ``(plan, revenue, usage)``; the margin over those whose revenue is known. Costs sum
    the priced requests, as a report row does: unknown (None) only when no request had a price, and
    ``unpriced_request_count`` says how many the sums leave out."""
    usage = _Usage()
    with_revenue = _Usage()
    revenue = Decimal(0)
    unknown = 0
    for _, row_revenue, row_usage in customers:
        usage.add(row_usage)
        if row_revenue is None:
            unknown += 1
        else:
            revenue += row_revenue
            with_revenue.add(row_usage)
    cost_with_revenue = with_revenue.known_cost
    margin = _money(revenue - cost_with_revenue) if cost_with_revenue is not None else None
    return {
        "customers": len(customers),
        "customers_without_revenue": unknown,
        "revenue": _money(revenue),
        "cost": usage.known_cost,
        "margin": margin,  # over the customers whose revenue is known
        "margin_percent": _ratio_percent(margin, revenue) if margin is not None else None,
        "request_count": usage.requests,
        "tokens": usage.tokens,
        **_unit_costs(usage.known_cost, usage.requests, usage.tokens),
        "unpriced_request_count": usage.unpriced,
    }


def _finish(
    by: str, start: date, end: date, rows: list[dict[str, Any]], totals: dict[str, Any], limit: int
) -> MarginsResult:
    return MarginsResult(by, start, end, rows[:limit], totals, truncated=len(rows) > limit)


def _near_upgrade(
    data_dir: str | os.PathLike[str],
    config: RevenueConfig,
    start: date,
    end: date,
    months: Decimal,
    tag: str | None,
    allowance: Decimal | None,
    threshold: Decimal | None,
    percent: Decimal | None,
) -> list[dict[str, Any]]:
    plan_name: str | None = None
    if tag is None:
        plan_name = next((name for name, p in config.plans.items() if p.allowance is not None), None)
        if plan_name is None and threshold is None:
            raise ReportParameterError(
                "by=upgrade needs a tag (e.g. tag=plan:free) and an allowance or threshold, or a plan with an "
                "allowance in the revenue file"
            )
        tag = config.plan_tag_prefix + plan_name if plan_name is not None else None
    elif tag.startswith(config.plan_tag_prefix):
        plan_name = tag[len(config.plan_tag_prefix):]
    if tag is None:
        raise ReportParameterError("by=upgrade needs a tag, e.g. tag=plan:free")
    plan = config.plans.get(plan_name) if plan_name is not None else None
    monthly_allowance = allowance if allowance is not None else (plan.allowance if plan is not None else None)
    if percent is None:
        percent = plan.upgrade_at_percent if plan is not None else DEFAULT_UPGRADE_PERCENT
    if monthly_allowance is None and threshold is None:
        raise ReportParameterError(
            f"by=upgrade for tag {tag!r} needs an allowance (USD per month) or a threshold (USD in the period); "
            "give one, or set allowance on the plan in the revenue file"
        )
    period_allowance = _money(monthly_allowance * months) if monthly_allowance is not None else None
    floor = threshold
    if period_allowance is not None:
        by_percent = period_allowance * percent / _HUNDRED
        floor = by_percent if floor is None else min(floor, by_percent)
    assert floor is not None
    # A plan tag means users whose last plan in the period is that plan (not those who already upgraded);
    # any other tag means users who used it at all.
    on_tag = f"{_LAST_PLAN_SQL} = $tag" if plan_name is not None else "bool_or(list_contains(tags, $tag))"
    sql = (
        f"SELECT user_id, {_METRICS_SQL}\n"
        f"FROM {USAGE_SOURCE}\n"
        f'WHERE "{PARTITION_COLUMN}" BETWEEN $start_date AND $end_date AND user_id IS NOT NULL\n'
        "GROUP BY user_id\n"
        f"HAVING {on_tag} AND COALESCE(SUM(total_cost), 0) >= $floor\n"
        "ORDER BY SUM(total_cost) DESC, user_id"
    )
    params: dict[str, object] = {"start_date": start, "end_date": end, "tag": tag, "floor": floor}
    if plan_name is not None:
        params["plan_prefix"] = config.plan_tag_prefix
    _, raw = scan_dataset(data_dir, start, end, sql, params)
    rows = []
    for user, cost, requests, tokens, unpriced in raw:
        spend = exact_cost(cost) if cost is not None else None  # NULL: no request of theirs had a price
        rows.append(
            {
                "user": user,
                "tag": tag,
                "cost": spend,
                "allowance": period_allowance,
                "percent_of_allowance": (
                    _ratio_percent(spend, period_allowance) if period_allowance and spend is not None else None
                ),
                "request_count": int(requests),
                "tokens": int(tokens or 0),
                **_unit_costs(spend, int(requests), int(tokens or 0)),
                "unpriced_request_count": int(unpriced),
            }
        )
    return rows


def _decimal_param(params: Params, name: str) -> Decimal | None:
    value = single_param(params, name)
    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite() or number < 0:
        raise ReportParameterError(f"{name} must be a number of 0 or more, got {value!r}")
    return number


def current_month(today: date | None = None) -> tuple[date, date]:
    today = today or datetime.now(UTC).date()
    return today.replace(day=1), today


def margins_from_params(data_dir: str | os.PathLike[str], config: RevenueConfig, params: Params) -> MarginsResult:
    """``GET /v1/margins``: ``start_date``/``end_date`` (default: this month to today, UTC), ``by``, and for
    ``by=upgrade`` ``tag``, ``allowance``, ``threshold``, ``percent``; ``limit`` rows. Any other name is refused."""
    refuse_unknown(params, MARGIN_PARAMETERS)
    first, today = current_month()
    end = date_param(params, "end_date", today)
    start = date_param(params, "start_date", end.replace(day=1) if single_param(params, "end_date") else first)
    by = (single_param(params, "by") or "customer").lower()
    return margins(
        data_dir,
        config,
        start_date=start,
        end_date=end,
        by=by,
        tag=single_param(params, "tag"),
        allowance=_decimal_param(params, "allowance"),
        threshold=_decimal_param(params, "threshold"),
        percent=_decimal_param(params, "percent"),
        limit=int_param(params, "limit", MAX_ROWS, 1, MAX_ROWS),
    )
