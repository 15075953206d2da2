"""Records and Parquet days for the report tests (report, budgets, margins, spikes, the HTTP API, MCP), written as
the receiver lays them out: ``usage/date=YYYY-MM-DD/part-*.parquet``, the date only in the path."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from tokentrail.processor.reports.query import ReportQuery
from tokentrail.processor.schema import PRICED, UsageRecord, records_to_table

__all__ = ["keys", "q", "rec", "rec_n", "write", "write_day"]

_seq = 0


def rec(ts: str, **fields: Any) -> UsageRecord:
    """A priced record at ``ts`` (UTC), with ids of its own; cost defaults to $1 total, $2 market."""
    global _seq
    _seq += 1
    defaults: dict[str, Any] = {
        "timestamp": datetime.fromisoformat(ts).replace(tzinfo=UTC),
        "trace_id": f"{_seq:032x}",
        "span_id": f"{_seq:016x}",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 10,
        "output_tokens": 5,
        "total_cost": Decimal("1"),
        "market_cost": Decimal("2"),
        "price_status": PRICED,
    }
    defaults.update(fields)
    return UsageRecord(**defaults)


def rec_n(n: int, ts: str, **fields: Any) -> UsageRecord:
    """Record number ``n`` (its trace and span ids) at ``ts``: 100 in, 20 out, one and two pico-dollars."""
    values: dict[str, Any] = {
        "timestamp": datetime.fromisoformat(ts).replace(tzinfo=UTC),
        "trace_id": f"{n:032x}",
        "span_id": f"{n:016x}",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 100,
        "output_tokens": 20,
        "total_cost": Decimal("0.000000000001"),
        "market_cost": Decimal("0.000000000002"),
        "price_status": PRICED,
    }
    values.update(fields)
    return UsageRecord(**values)


def write(data_dir: Path, records: list[UsageRecord], part: str = "part-r1-000001") -> None:
    """Write records into their day partitions as the receiver does (the date lives only in the path)."""
    by_day: dict[str, list[UsageRecord]] = {}
    for record in records:
        by_day.setdefault(record.day, []).append(record)
    for day, day_records in by_day.items():
        write_day(data_dir, day, day_records, part)


def write_day(data_dir: Path, day: str, records: list[UsageRecord], part: str = "part-r1-000001") -> None:
    """Write ``records`` as one file of ``day``."""
    folder = data_dir / "usage" / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(records_to_table(records), folder / f"{part}.parquet")


def q(start: str = "2025-03-01", end: str = "2025-03-31", **params: str) -> ReportQuery:
    """A report query over March 2025 (by default) from HTTP-style parameters."""
    return ReportQuery.from_params({"start_date": start, "end_date": end, **params})


def keys(rows: list[dict[str, Any]], *names: str) -> list[tuple[Any, ...]]:
    """The ``names`` of every row, as tuples, in row order."""
    return [tuple(row[n] for n in names) for row in rows]
