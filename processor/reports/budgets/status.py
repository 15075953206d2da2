"""Budget status (``GET /v1/budgets``, ``tokentrail budgets``): per budget and scope value, spend so far,
remaining, percent, and the projected end-of-period spend.

Spend sums the priced requests; ``unpriced_request_count`` says how many it leaves out. A value none of whose
requests this period has a price has unknown spend: ``spend``, ``remaining``, ``percent`` and the projection are
``null``, never a $0 spend with the whole amount remaining."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from tokentrail.processor.reports.budgets.config import BudgetsConfig
from tokentrail.processor.reports.budgets.spend import ValueSpend, percent_of, spend_by_value
from tokentrail.processor.reports.dataset import exact_cost
from tokentrail.processor.reports.params import Params, int_param, parse_as_of, refuse_unknown, single_param
from tokentrail.processor.reports.query import MAX_ROWS

__all__ = [
    "BUDGET_COLUMNS",
    "BUDGET_PARAMETERS",
    "DEFAULT_STATUS_LIMIT",
    "budget_status",
    "budgets_body",
    "budgets_from_params",
]

DEFAULT_STATUS_LIMIT: Final = 100  # rows per "each" budget in a status answer
RATE_WINDOW_MAX: Final = timedelta(days=7)

# Every parameter GET /v1/budgets reads (besides ``format``), and so accepts: the OpenAPI document lists exactly these.
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
    "unpriced_request_count",
)


def budget_status(
    data_dir: str | os.PathLike[str],
    config: BudgetsConfig,
    *,
    as_of: datetime | None = None,
    budget: str | None = None,
    limit: int = DEFAULT_STATUS_LIMIT,
) -> tuple[list[dict[str, Any]], bool]:
    """``(rows, truncated)``: one row per budget and scope value, in file order; an "each" budget lists the values
    with spend this period, most spent (by percent) first, at most ``limit`` of them (``truncated`` if cut)."""
    moment = as_of or datetime.now(UTC)
    chosen = [config.get(budget)] if budget is not None else list(config.budgets)
    rows: list[dict[str, Any]] = []
    truncated = False
    for b in chosen:
        period = b.period_at(moment - timedelta(microseconds=1))  # as_of is exclusive
        rate_start = None
        if period.end is not None:
            rate_start = moment - min(period.end - period.start, RATE_WINDOW_MAX)
        spends = spend_by_value(data_dir, b, period, moment, rate_start)
        if not b.each:
            spends.setdefault(None if b.scope == "total" else b.value, ValueSpend(Decimal(0), Decimal(0), 0, 0))
        entries: list[tuple[Decimal, dict[str, Any]]] = []  # (percent, row)
        for value, (priced_spend, recent, requests, unpriced) in spends.items():
            if b.each and priced_spend == 0 and unpriced == 0:
                continue  # a value with only earlier (rate-window) spend has not spent this period
            # Unknown, not $0, when every request this period is unpriced: nothing below can be computed from it.
            spend = None if requests and unpriced == requests else priced_spend
            projected = None
            if spend is not None and period.end is not None and rate_start is not None:
                rate_window = (moment - rate_start).total_seconds()
                remaining_s = max((period.end - moment).total_seconds(), 0.0)
                projected = exact_cost(spend + recent * Decimal(remaining_s) / Decimal(rate_window))
            percent = percent_of(spend, b.amount) if spend is not None else None
            entries.append((percent if percent is not None else Decimal(-1), {
                "budget": b.name,
                "scope": b.scope,
                "value": value,
                "period": b.period,
                "period_start": period.start.date().isoformat(),
                "period_end": period.last_day.isoformat() if period.last_day else None,
                "amount": b.amount,
                "spend": spend,
                "remaining": b.amount - spend if spend is not None else None,
                "percent": percent,
                "projected_spend": projected,
                "projected_percent": percent_of(projected, b.amount) if projected is not None else None,
                "thresholds": [int(t) if t == t.to_integral_value() else t for t in b.thresholds],
                "crossed": [
                    int(t) if t == t.to_integral_value() else t
                    for t in b.thresholds if percent is not None and t <= percent
                ],
                "count_byok": b.count_byok,
                "unpriced_request_count": unpriced,
            }))
        entries.sort(key=lambda e: (-e[0], str(e[1]["value"])))
        if len(entries) > limit:
            entries, truncated = entries[:limit], True
        rows.extend(row for _, row in entries)
    return rows, truncated


def budgets_body(rows: list[dict[str, Any]], truncated: bool) -> dict[str, object]:
    """The ``GET /v1/budgets`` body: ``{"results": rows}``, plus ``"truncated": true`` when rows were cut."""
    return {"results": rows, "truncated": True} if truncated else {"results": rows}


def budgets_from_params(
    data_dir: str | os.PathLike[str], config: BudgetsConfig, params: Params
) -> tuple[list[dict[str, Any]], bool]:
    """``GET /v1/budgets``: ``budget`` (one by name), ``as_of`` (default now), ``limit`` (per "each" budget); any
    other name is refused."""
    refuse_unknown(params, BUDGET_PARAMETERS)
    return budget_status(
        data_dir,
        config,
        as_of=parse_as_of(single_param(params, "as_of")),
        budget=single_param(params, "budget"),
        limit=int_param(params, "limit", DEFAULT_STATUS_LIMIT, 1, MAX_ROWS),
    )
