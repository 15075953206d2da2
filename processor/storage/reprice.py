"""Stored prices: re-pricing days of records, which price versions produced a period's numbers, what is unpriced.

``reprice(data_dir, start, end)`` recomputes ``market_cost``, ``total_cost``, ``price_status`` and
``price_version`` of every stored record in the range with today's catalog and overrides (after a catalog update or
an override change), one day at a time through ``compaction.rewrite_day``: each day is swapped in atomically, so a
reader sees either the old or the new prices of a day, never a mix, and a crash leaves every day either old or new.
Records whose response carried no usage (``price_status = no_usage``, or the older ``usage-missing`` marker in
``price_version``) stay unpriced: ``no_usage`` with NULL costs and no price version.

``price_versions`` and ``unpriced_models`` are read-only queries (DuckDB over the day partitions).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
from tokentrail.processor.errors import TokenTrailError
from tokentrail.processor.pricing.catalog import OPTIONAL_FIELDS, USAGE_MISSING, Pricer
from tokentrail.processor.schema import COST_TYPE, NO_USAGE, PRICED, to_cost
from tokentrail.processor.storage.compaction import read_day, rewrite_day
from tokentrail.processor.storage.dataset import USAGE_DIR, dataset_days, dataset_files

__all__ = ["RepriceDay", "RepriceRangeError", "price_versions", "reprice", "reprice_table", "unpriced_models"]

log = logging.getLogger(__name__)

_READ: Final = (
    "timestamp",
    "provider",
    "model",
    "credential_type",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "price_status",
    "price_version",
    *OPTIONAL_FIELDS,
)
_DEFAULTS: Final = {"service_tier": None}  # other optional fields are counts: 0 when a table lacks the column


class RepriceRangeError(TokenTrailError, ValueError):
    """A re-pricing range that ends before it starts."""


class _Row:
    """One stored record as the pricer reads and writes it (the pricer sets the costs, status and version): the
    fields of a ``UsageRecord`` the pricer uses, without building whole records."""

    __slots__ = (*_READ, "market_cost", "total_cost")
    market_cost: Decimal | None
    total_cost: Decimal | None
    price_status: str
    price_version: str | None


@dataclass(frozen=True, slots=True)
class RepriceDay:
    day: date
    rows: int
    changed: int  # rows whose market cost, total cost or status changed
    unpriced_before: int
    unpriced_after: int
    market_cost_before: Decimal
    market_cost_after: Decimal
    total_cost_before: Decimal
    total_cost_after: Decimal
    price_version: str
    written: bool  # False for a dry run

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, date) else str(value) if isinstance(value, Decimal) else value
        return out


def _column(table: pa.Table, name: str) -> list[Any]:
    if name in table.column_names:
        return table[name].to_pylist()
    return [_DEFAULTS.get(name, 0)] * table.num_rows


def reprice_table(table: pa.Table, pricer: Pricer) -> tuple[pa.Table, dict[str, Any]]:
    """The table with every row priced again, and what changed. Columns other than the four prices are untouched."""
    columns = {name: _column(table, name) for name in _READ}
    rows = []
    for i in range(table.num_rows):
        row = _Row()
        for name in _READ:
            setattr(row, name, columns[name][i])
        row.market_cost = row.total_cost = None
        rows.append(row)
    pricer.price_all(rows)  # type: ignore[arg-type]  # a _Row carries every field the pricer reads and writes
    market = [to_cost(r.market_cost) for r in rows]
    total = [to_cost(r.total_cost) for r in rows]
    status = [r.price_status for r in rows]
    version = [r.price_version for r in rows]
    old_market = _column(table, "market_cost")
    old_total = _column(table, "total_cost")
    old_status = _column(table, "price_status")
    stats = {
        "rows": table.num_rows,
        "changed": sum(
            1
            for i in range(table.num_rows)
            if (market[i], total[i], status[i]) != (old_market[i], old_total[i], old_status[i])
        ),
        "unpriced_before": sum(1 for i in range(table.num_rows) if old_status[i] != PRICED or old_total[i] is None),
        "unpriced_after": sum(1 for i in range(table.num_rows) if status[i] != PRICED or total[i] is None),
        "market_cost_before": sum((v for v in old_market if v is not None), Decimal(0)),
        "market_cost_after": sum((v for v in market if v is not None), Decimal(0)),
        "total_cost_before": sum((v for v in old_total if v is not None), Decimal(0)),
        "total_cost_after": sum((v for v in total if v is not None), Decimal(0)),
    }
    out = table
    for name, values, kind in (
        ("market_cost", market, COST_TYPE),
        ("total_cost", total, COST_TYPE),
        ("price_status", status, pa.string()),
        ("price_version", version, pa.string()),
    ):
        array = pa.array(values, type=kind)
        if name in out.column_names:
            out = out.set_column(out.column_names.index(name), name, array)
        else:
            out = out.append_column(name, array)
    return out, stats


def _days(usage_dir: Path, start: date, end: date) -> list[date]:
    return [d for d in dataset_days(usage_dir) if start <= d <= end]


def _reprice_day(usage_dir: Path, day: date, pricer: Pricer, dry_run: bool) -> dict[str, Any]:
    """What re-pricing ``day`` changes (``reprice_table``'s stats; empty for a day without files), written unless
    ``dry_run``."""
    seen: dict[str, Any] = {}

    def transform(table: pa.Table) -> pa.Table:
        out, stats = reprice_table(table, pricer)
        seen.update(stats)
        return out

    if dry_run:
        table = read_day(usage_dir, day)
        if table.num_rows:
            transform(table)
    else:
        rewrite_day(usage_dir, day, transform)
    return seen


def reprice(
    data_dir: str | os.PathLike[str],
    start: date,
    end: date,
    *,
    pricer: Pricer | None = None,
    dry_run: bool = False,
    progress: Callable[[RepriceDay], None] | None = None,
) -> list[RepriceDay]:
    """Re-prices every stored day in [start, end] (UTC, inclusive); one atomic rewrite per day. ``dry_run``
    computes what would change without writing. Returns one result per day that has records."""
    if start > end:
        raise RepriceRangeError(f"start date {start} is after end date {end}")
    pricer = pricer or Pricer()
    usage_dir = Path(data_dir) / USAGE_DIR
    results: list[RepriceDay] = []
    for day in _days(usage_dir, start, end):
        seen = _reprice_day(usage_dir, day, pricer, dry_run)
        if not seen:
            continue  # no files that day
        result = RepriceDay(day=day, price_version=pricer.price_version, written=not dry_run, **seen)
        log.info(
            "%s %s: %d row(s), %d changed, unpriced %d -> %d, total cost %s -> %s",
            "would reprice" if dry_run else "repriced",
            day,
            result.rows,
            result.changed,
            result.unpriced_before,
            result.unpriced_after,
            result.total_cost_before,
            result.total_cost_after,
        )
        results.append(result)
        if progress is not None:
            progress(result)
    return results


# -- read-only queries -----------------------------------------------------------------------------------------------


def _query(data_dir: str | os.PathLike[str], start: date, end: date, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    import duckdb  # loaded by the queries that need it, not by re-pricing

    for attempt in range(3):
        files = dataset_files(data_dir, start, end)
        if not files:
            return []
        try:
            with duckdb.connect(":memory:") as con:
                cursor = con.execute(sql, {**params, "files": files})
                names = [d[0] for d in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]
        except duckdb.IOException:
            # A rewrite (compaction, re-pricing) replaced a file listed a moment ago: list again.
            if attempt == 2 or all(os.path.exists(f) for f in files):
                raise
    raise AssertionError("unreachable")


_SOURCE: Final = "read_parquet($files, union_by_name = true)"


def price_versions(data_dir: str | os.PathLike[str], start: date, end: date) -> list[dict[str, Any]]:
    """Which price versions produced the costs of a period: one row per ``price_version`` (NULL for records never
    priced, among them calls whose response carried no usage; ``usage-missing`` for such calls stored before
    ``price_status = no_usage``) with its request count, costs and first and last UTC day,
    most requests first."""
    sql = (
        "SELECT price_version, COUNT(*) AS requests, "
        "COUNT(*) FILTER (WHERE price_status <> $priced OR total_cost IS NULL) AS unpriced_requests, "
        "COALESCE(SUM(total_cost), 0) AS total_cost, COALESCE(SUM(market_cost), 0) AS market_cost, "
        "CAST(MIN(timestamp) AS DATE) AS first_day, CAST(MAX(timestamp) AS DATE) AS last_day "
        f"FROM {_SOURCE} GROUP BY price_version ORDER BY requests DESC, price_version NULLS LAST"
    )
    rows = _query(data_dir, start, end, sql, {"priced": PRICED})
    for row in rows:
        for key in ("first_day", "last_day"):
            if isinstance(row[key], datetime):
                row[key] = row[key].date()
    return rows


def unpriced_models(
    data_dir: str | os.PathLike[str], start: date, end: date, *, pricer: Pricer | None = None
) -> list[dict[str, Any]]:
    """Every (provider, model) with unpriced records in the period: requests, tokens, first and last seen, and why
    (``reason``), including whether the catalog and overrides in use now would price it (then re-price)."""
    sql = (
        "SELECT provider, model, COUNT(*) AS requests, "
        "CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, "
        "CAST(SUM(cached_input_tokens) AS BIGINT) AS cached_input_tokens, "
        "CAST(SUM(cache_creation_input_tokens) AS BIGINT) AS cache_creation_input_tokens, "
        "COUNT(*) FILTER (WHERE price_status = $no_usage OR price_version = $missing) AS without_usage, "
        "MIN(timestamp) AS first_seen, MAX(timestamp) AS last_seen "
        f"FROM {_SOURCE} WHERE price_status <> $priced OR total_cost IS NULL "
        "GROUP BY provider, model ORDER BY requests DESC, provider, model"
    )
    rows = _query(data_dir, start, end, sql, {"priced": PRICED, "no_usage": NO_USAGE, "missing": USAGE_MISSING})
    if not rows:
        return rows
    pricer = pricer or Pricer()
    for row in rows:
        reasons = []
        if row["without_usage"]:
            reasons.append(f"{row['without_usage']} call(s) reported no usage")
        if row["without_usage"] < row["requests"]:
            last = row["last_seen"]
            entry = pricer._entry(row["provider"], row["model"], last.date(), None)
            if entry.kind == 0:
                reasons.append(entry.reason or "no price")
            else:
                reasons.append("priceable now: run `tokentrail reprice` for these days")
        row["reason"] = "; ".join(reasons)
    return rows
