"""Spend per scope value of one budget, from the Parquet dataset: what the status reports and what the alert
monitor starts a period from. Spend is ``total_cost`` (BYOK calls at ``market_cost`` when the budget counts them);
unpriced calls add nothing, and are counted, so a spend that leaves them out can say so."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final, NamedTuple

from tokentrail.processor.reports.budgets.config import SCOPE_COLUMNS, Budget, Period
from tokentrail.processor.reports.dataset import USAGE_SOURCE, exact_cost, scan_dataset
from tokentrail.processor.schema import PARTITION_COLUMN

__all__ = ["ValueSpend", "percent_of", "spend_by_value"]

_PERCENT: Final = Decimal("0.01")
_HUNDRED: Final = Decimal(100)


class ValueSpend(NamedTuple):
    """One scope value's spend: priced requests in the period, and in the rate window; the period's requests,
    and how many of them have no known cost (they add nothing to ``spend``)."""

    spend: Decimal
    recent: Decimal
    requests: int
    unpriced: int


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
        column = f'"{SCOPE_COLUMNS[budget.scope]}"'
        key = column
        if budget.each:
            where.append(f"{column} IS NOT NULL")  # requests without a user are nobody's to budget
        else:
            params["value"] = budget.value
            where.append(f"{column} = $value")
    recent = ", SUM(spend) FILTER (WHERE \"timestamp\" >= $rate_start) AS recent" if with_rate else ""
    sql = (
        "SELECT scope_value, SUM(spend) FILTER (WHERE \"timestamp\" >= $period_start) AS spend,\n"
        "  COUNT(*) FILTER (WHERE \"timestamp\" >= $period_start) AS requests,\n"
        f"  COUNT(*) FILTER (WHERE \"timestamp\" >= $period_start AND spend IS NULL) AS unpriced{recent}\n"
        f"FROM (SELECT {key} AS scope_value, {spend} AS spend, \"timestamp\" FROM {USAGE_SOURCE}\n"
        f"      WHERE {' AND '.join(where)}) AS records\n"
        "GROUP BY scope_value"
    )
    return sql, params


def spend_by_value(
    data_dir: str | os.PathLike[str], budget: Budget, period: Period, as_of: datetime, rate_start: datetime | None
) -> dict[str | None, ValueSpend]:
    """``{scope value: spend in period, spend since rate_start, requests, unpriced}`` up to ``as_of``."""
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
    out: dict[str | None, ValueSpend] = {}
    for row in rows:
        value = row[0]
        out[value if value is None else str(value)] = ValueSpend(
            exact_cost(row[1]),
            exact_cost(row[4]) if rate_start is not None else Decimal(0),
            int(row[2]),
            int(row[3]),
        )
    return out


def percent_of(spend: Decimal, amount: Decimal) -> Decimal:
    return (spend * _HUNDRED / amount).quantize(_PERCENT)
