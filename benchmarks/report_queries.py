"""Report queries: the report API's answers timed against hand-written DuckDB SQL on the same files, in the same run.

A generator writes ``rows`` realistic usage records over 30 days as the receiver lays them out
(``usage/date=YYYY-MM-DD/*.parquet``, zstd, dictionary strings, 1M-row row groups): users skewed (a few heavy
customers, a long tail; ``rows / 100`` of them), 1-4 tags each from 30 (plans, features, teams), 50 models from 6
providers, a fifth of calls BYOK, 1 % unpriced. Arrays are built with ``pyarrow.compute`` (no Python object per
record), so 10M records take about a minute once; the files are kept in ``data_dir`` for the next run.

Each query runs ``repeat`` times both ways, alternating, and the best time of each counts (the least disturbed by
the machine). ``run_report`` does what the HTTP API does minus HTTP: list the day partitions, build the SQL, run it,
turn rows into dicts with exact ``Decimal`` costs. The raw SQL is what a person would write with DuckDB on the same
files, fetching the same rows into Python. Both answers are checked equal (``mismatches``).

``python -m benchmarks.report_queries [ROWS]`` (default 10,000,000); target: ratio ≤ 1.2 and under 1 s each.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokentrail.processor.reports.dataset import exact_cost
from tokentrail.processor.reports.query import MAX_ROWS, ReportQuery
from tokentrail.processor.reports.report import run_report
from tokentrail.processor.schema import ARROW_SCHEMA, PRICED, UNPRICED
from tokentrail.processor.storage.parquet import COMPRESSION, DICTIONARY_COLUMNS, ROW_GROUP_SIZE

DAYS = 30
FIRST_DAY = date(2026, 10, 1)
N_MODELS = 50
PROVIDERS = ("openai", "anthropic", "google", "mistral", "deepseek", "xai")
PLANS = ("plan:free", "plan:pro", "plan:team", "plan:enterprise")
FEATURES = tuple(f"feature:{name}" for name in (
    "chat", "search", "summarize", "translate", "classify", "extract", "agent", "code", "rag", "vision",
    "voice", "email", "sql", "review", "plan", "draft", "rewrite", "qa", "tagging", "moderation",
))
TEAMS = tuple(f"team:{name}" for name in ("growth", "core", "ml", "support", "ops", "sales"))
TAGS = (*PLANS, *FEATURES, *TEAMS)  # 30
ONE_TAG = "feature:search"
_US_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _tag_combos(rng: random.Random, n: int = 1000) -> list[list[str]]:
    """Distinct-tag lists of 1-4 tags: usually a plan, a feature or two, sometimes a team."""
    combos = []
    for _ in range(n):
        tags = [rng.choice(PLANS)] if rng.random() < 0.9 else []
        tags += rng.sample(FEATURES, rng.randint(1, 2))
        if rng.random() < 0.3:
            tags.append(rng.choice(TEAMS))
        combos.append(tags[:4])
    return combos


def _skewed(n: int, size: int, power: float, seed: int) -> pa.Array:
    """Indices in ``0..size-1``, small ones far more often: ``floor(size * u**power)``."""
    u = pc.random(n, initializer=seed)
    return pc.cast(pc.floor(pc.multiply(pc.power(u, power), size - 1e-9)), pa.int64())


def _day_table(day: date, n: int, seed: int, users: pa.Array, combos: pa.Array) -> pa.Table:
    models = pa.array([f"model-{i:02d}" for i in range(N_MODELS)])
    providers = pa.array([PROVIDERS[i % len(PROVIDERS)] for i in range(N_MODELS)])
    model_idx = _skewed(n, N_MODELS, 2.0, seed + 1)
    offset = int((datetime(day.year, day.month, day.day, tzinfo=UTC) - _EPOCH) / timedelta(microseconds=1))
    ts_us = pc.add(pc.cast(pc.floor(pc.multiply(pc.random(n, initializer=seed + 2), _US_PER_DAY - 1)), pa.int64()),
                   offset)
    input_tokens = pc.cast(pc.add(pc.floor(pc.multiply(pc.power(pc.random(n, initializer=seed + 3), 3), 30_000)), 50),
                           pa.int64())
    output_tokens = pc.cast(pc.add(pc.floor(pc.multiply(pc.power(pc.random(n, initializer=seed + 4), 2), 2_000)), 5),
                            pa.int64())
    cached = pc.cast(pc.floor(pc.multiply(input_tokens, pc.multiply(pc.random(n, initializer=seed + 5), 0.5))),
                     pa.int64())
    # Cost in nano-dollars from tokens and a per-model price, then decimal128(18, 12) without a Python Decimal.
    price_in = pc.take(pa.array([50 + 97 * i % 3000 for i in range(N_MODELS)], pa.int64()), model_idx)  # n$/token
    nanos = pc.add(pc.multiply(input_tokens, price_in), pc.multiply(output_tokens, pc.multiply(price_in, 4)))
    market = pc.cast(
        pc.multiply(pc.cast(nanos, pa.decimal128(19, 0)), pa.scalar(Decimal("0.000000001"), pa.decimal128(9, 9))),
        ARROW_SCHEMA.field("market_cost").type,
    )
    byok = pc.less(pc.random(n, initializer=seed + 6), 0.2)
    unpriced = pc.less(pc.random(n, initializer=seed + 7), 0.01)
    zero = pa.scalar(Decimal(0), ARROW_SCHEMA.field("total_cost").type)
    null_cost = pa.scalar(None, ARROW_SCHEMA.field("total_cost").type)
    total = pc.if_else(unpriced, null_cost, pc.if_else(byok, zero, market))
    market = pc.if_else(unpriced, null_cost, market)
    row_ids = pc.cast(pc.add(pa.array(range(n), pa.int64()), seed * 10_000_000), pa.string())
    services = pa.array(["web", "worker", "api", "batch"])
    columns: dict[str, Any] = {
        "timestamp": pc.cast(ts_us, pa.timestamp("us", tz="UTC")),
        "trace_id": row_ids,
        "span_id": row_ids,
        "response_id": pa.nulls(n, pa.string()),
        "service": pc.take(services, _skewed(n, 4, 1.5, seed + 8)),
        "environment": pa.array(["prod"] * n),
        "source": pa.array(["tokentrail"] * n),
        "api": pa.array(["chat.completions"] * n),
        "operation": pa.array(["chat"] * n),
        "provider": pc.take(providers, model_idx),
        "model": pc.take(models, model_idx),
        "request_model": pa.nulls(n, pa.string()),
        "user_id": pc.take(users, _skewed(n, len(users), 4.0, seed + 9)),
        "tags": pc.take(combos, _skewed(n, len(combos), 2.0, seed + 10)),
        # Conversations of 8 calls in a row: group_by=conversation has an eighth as many rows as records.
        "conversation_id": pc.binary_join_element_wise(
            "conv_", pc.cast(pc.add(pc.divide(pa.array(range(n), pa.int64()), 8), seed * 10_000_000), pa.string()), ""
        ),
        "credential_type": pc.if_else(byok, "byok", "system"),
        "credential_id": pa.nulls(n, pa.string()),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_input_tokens": cached,
        "cache_creation_input_tokens": pa.array([0] * n, pa.int64()),
        "reasoning_tokens": pa.array([0] * n, pa.int64()),
        "cache_creation_1h_input_tokens": pa.array([0] * n, pa.int64()),
        "input_audio_tokens": pa.array([0] * n, pa.int64()),
        "output_audio_tokens": pa.array([0] * n, pa.int64()),
        "service_tier": pa.nulls(n, pa.string()),
        "total_cost": total,
        "market_cost": market,
        "reported_cost": pa.nulls(n, ARROW_SCHEMA.field("reported_cost").type),
        "currency": pa.array(["USD"] * n),
        "price_status": pc.if_else(unpriced, UNPRICED, PRICED),
        "price_version": pa.nulls(n, pa.string()),
        "duration_ms": pc.multiply(pc.random(n, initializer=seed + 11), 3000.0),
        "streamed": pc.less(pc.random(n, initializer=seed + 12), 0.5),
        "status": pa.array(["ok"] * n),
        "error_type": pa.nulls(n, pa.string()),
    }
    table = pa.Table.from_arrays([columns[f.name] for f in ARROW_SCHEMA], schema=ARROW_SCHEMA)
    return table.sort_by("timestamp")


def generate(data_dir: Path, rows: int, *, seed: int = 1) -> None:
    """Write ``rows`` records over ``DAYS`` days into ``data_dir/usage/date=.../part-bench-000001.parquet``."""
    rng = random.Random(seed)
    users = pa.array([f"cust_{i:06d}" for i in range(max(50, rows // 100))])
    combos = pa.array(_tag_combos(rng), pa.list_(pa.string()))
    per_day = [rows // DAYS + (1 if i < rows % DAYS else 0) for i in range(DAYS)]
    for i, n in enumerate(per_day):
        day = FIRST_DAY + timedelta(days=i)
        folder = data_dir / "usage" / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        if n:
            pq.write_table(
                _day_table(day, n, seed * 1000 + i * 20, users, combos),
                folder / "part-bench-000001.parquet",
                compression=COMPRESSION,
                use_dictionary=list(DICTIONARY_COLUMNS),
                row_group_size=ROW_GROUP_SIZE,
            )


# ---------------------------------------------------------------------------------------------------------------
# The queries: the report's, and the same question in hand-written DuckDB SQL.

_METRICS_SQL = (
    "SUM(total_cost) AS total_cost, SUM(market_cost) AS market_cost, SUM(input_tokens) AS input_tokens, "
    "SUM(output_tokens) AS output_tokens, SUM(cached_input_tokens) AS cached_input_tokens, "
    "SUM(cache_creation_input_tokens) AS cache_creation_input_tokens, SUM(reasoning_tokens) AS reasoning_tokens, "
    "COUNT(*) AS request_count, COUNT(*) FILTER (WHERE price_status <> 'priced') AS unpriced_request_count"
)


# Bumped when the generated records change (a column added): a kept dataset of another version is generated again.
DATASET_VERSION: Final = 2  # 2: conversation_id


def _queries(start: date, end: date) -> dict[str, tuple[dict[str, str], str, int]]:
    """name -> (report parameters, raw SQL, number of key columns in the raw rows)."""
    period = {"start_date": start.isoformat(), "end_date": end.isoformat()}
    where = f"date BETWEEN DATE '{start}' AND DATE '{end}'"
    return {
        "model_by_day": (
            {**period, "date_part": "day", "group_by": "model"},
            f"SELECT strftime(date, '%Y-%m-%d') AS day, model, {_METRICS_SQL} FROM {{src}} WHERE {where} "
            "GROUP BY date, model ORDER BY date, total_cost DESC, model",
            2,
        ),
        "by_tag": (
            {**period, "group_by": "tag"},
            f"SELECT tag, {_METRICS_SQL} FROM (SELECT UNNEST(tags) AS tag, * EXCLUDE (tags) FROM {{src}} "
            f"WHERE {where}) GROUP BY tag ORDER BY total_cost DESC, tag",
            1,
        ),
        "top_100_users": (
            {**period, "group_by": "user", "order_by": "total_cost", "limit": "100"},
            f"SELECT user_id, {_METRICS_SQL} FROM {{src}} WHERE {where} GROUP BY user_id "
            "ORDER BY total_cost DESC NULLS LAST, user_id LIMIT 100",
            1,
        ),
        "top_100_conversations": (
            {**period, "group_by": "conversation", "order_by": "total_cost", "limit": "100"},
            f"SELECT conversation_id, {_METRICS_SQL} FROM {{src}} WHERE {where} GROUP BY conversation_id "
            "ORDER BY total_cost DESC NULLS LAST, conversation_id LIMIT 100",
            1,
        ),
        "one_tags_users": (
            {**period, "group_by": "user", "tags": ONE_TAG},
            f"SELECT user_id, {_METRICS_SQL} FROM {{src}} WHERE {where} AND list_contains(tags, '{ONE_TAG}') "
            f"GROUP BY user_id ORDER BY total_cost DESC, user_id LIMIT {MAX_ROWS}",
            1,
        ),
    }


def _raw_runner(data_dir: Path, sql: str) -> Callable[[], list[tuple[Any, ...]]]:
    src = (f"read_parquet('{data_dir}/usage/*/*.parquet', hive_partitioning = true, "
           "hive_types = {'date': DATE})")

    def run() -> list[tuple[Any, ...]]:
        with duckdb.connect(":memory:") as con:
            con.execute("SET enable_progress_bar = false")
            return con.execute(sql.format(src=src)).fetchall()

    return run


def _best(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def _same(ours: list[dict[str, Any]], raw: list[tuple[Any, ...]], n_keys: int) -> bool:
    """Same groups with the same total_cost and request_count (order aside: ties may sort either way)."""
    mine = {tuple(list(row.values())[:n_keys]): (row["total_cost"], row["request_count"]) for row in ours}
    theirs = {
        tuple(row[:n_keys]): (None if row[n_keys] is None else exact_cost(row[n_keys]), int(row[n_keys + 7]))
        for row in raw
    }
    return mine == theirs


@contextlib.contextmanager
def bench_dataset(
    rows: int, data_dir: str | os.PathLike[str] | None, out: dict[str, float]
) -> Iterator[Path]:
    """The ``rows``-record dataset, generated once and kept in the temp directory from 1M records up (or in
    ``data_dir``), so the query benchmarks share it; ``out`` gains ``generate_s`` when it was generated."""
    keep = data_dir is not None or rows >= 1_000_000
    root = Path(data_dir) if data_dir is not None else Path(tempfile.gettempdir()) / f"tokentrail-bench-{rows}"
    marker = root / ".complete"
    stamp = f"{rows} {DATASET_VERSION}"
    try:
        if not marker.exists() or marker.read_text() != stamp:
            shutil.rmtree(root, ignore_errors=True)
            t0 = time.perf_counter()
            generate(root, rows)
            marker.write_text(stamp)
            out["generate_s"] = round(time.perf_counter() - t0, 2)
        yield root
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def run(rows: int = 10_000_000, *, repeat: int = 3, data_dir: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """Time each query ``repeat`` times both ways; returns seconds (best of) and ratios, plus ``mismatches``."""
    out: dict[str, float] = {"rows": float(rows)}
    with bench_dataset(rows, data_dir, out) as root:
        start, end = FIRST_DAY, FIRST_DAY + timedelta(days=DAYS - 1)
        mismatches = 0
        for name, (params, sql, n_keys) in _queries(start, end).items():
            query = ReportQuery.from_params(params)
            raw_fn = _raw_runner(root, sql)
            ours_times, raw_times = [], []
            ours: list[dict[str, Any]] = []
            raw: list[tuple[Any, ...]] = []
            for _ in range(repeat):
                t, ours = _best(functools.partial(run_report, root, query))
                ours_times.append(t)
                t, raw = _best(raw_fn)
                raw_times.append(t)
            if not _same(ours, raw, n_keys):
                mismatches += 1
            out[f"{name}_s"] = round(min(ours_times), 4)
            out[f"{name}_raw_s"] = round(min(raw_times), 4)
            out[f"{name}_ratio"] = round(min(ours_times) / min(raw_times), 3)
        out["mismatches"] = float(mismatches)
    return out


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000), indent=2))
