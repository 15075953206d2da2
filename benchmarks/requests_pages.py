"""The calls behind a number: ``GET /v1/requests`` pages timed against the report of the same range, in the same run.

The data is ``report_queries``' (``rows`` records over 30 days, kept in the same folder for the next run). A page is
timed as the HTTP API computes it minus HTTP (``requests_from_params``: parse, walk the days, two DuckDB scans per
batch, rows with exact ``Decimal`` costs); the baseline is ``run_report`` with ``group_by=none`` over the same range
and filters, the one-number question whose calls the page lists. A second baseline is the obvious single query over
every file of the range (``ORDER BY ... LIMIT``, no day walk): what the walk saves. Each is the best of ``repeat``
runs, alternating; the first page is checked equal to that single query's rows (``mismatches``).

* ``first_page``: 50 calls of the whole range, no filter: the dashboard's drill-down from a headline figure.
* ``first_page_1000``: the largest page.
* ``second_page``: the page after it, from its cursor.
* ``tag_first_page``: a tag about a tenth of the calls carry.
* ``rare_user_first_page``: a user with fewer calls than a page over the whole month: the walk must read every day
  (the worst case; its baseline is that user's report).

``python -m benchmarks.requests_pages [ROWS]`` (default 10,000,000).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
from tokentrail.processor.reports.query import ReportQuery
from tokentrail.processor.reports.report import run_report
from tokentrail.processor.reports.requests import requests_from_params

from benchmarks.report_queries import DAYS, FIRST_DAY, ONE_TAG, bench_dataset


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def _best_of(repeat: int, *fns: Callable[[], Any]) -> list[tuple[float, Any]]:
    """Each function ``repeat`` times, alternating; the best time of each and its last result."""
    best = [(float("inf"), None)] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t, result = _timed(fn)
            best[i] = (min(best[i][0], t), result)
    return best


def _single_query(root: Path, limit: int) -> Callable[[], list[tuple[Any, ...]]]:
    """The page as one query over every file of the range, no day walk."""
    sql = (
        f"SELECT *, epoch_us(\"timestamp\") FROM read_parquet('{root}/usage/*/*.parquet', hive_partitioning = true, "
        "hive_types = {'date': DATE}, union_by_name = true) "
        "ORDER BY \"timestamp\" DESC, trace_id DESC, span_id DESC, COALESCE(response_id, '') DESC "
        f"LIMIT {limit}"
    )

    def run() -> list[tuple[Any, ...]]:
        with duckdb.connect(":memory:") as con:
            con.execute("SET enable_progress_bar = false")
            return con.execute(sql).fetchall()

    return run


def _rare_user(root: Path, period: dict[str, str]) -> str:
    """A user with fewer calls in the period than a page: the walk cannot stop early."""
    rows = run_report(root, ReportQuery.from_params({**period, "group_by": "user", "order_by": "request_count:asc",
                                                    "limit": "1"}))
    return str(rows[0]["user"])


def run(rows: int = 10_000_000, *, repeat: int = 3, data_dir: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """Seconds (best of ``repeat``) and ratios against the same-range report, plus ``mismatches``."""
    out: dict[str, float] = {"rows": float(rows)}
    with bench_dataset(rows, data_dir, out) as root:
        period = {"start_date": FIRST_DAY.isoformat(), "end_date": (FIRST_DAY + timedelta(days=DAYS - 1)).isoformat()}
        rare = _rare_user(root, period)
        cases: dict[str, tuple[dict[str, str], dict[str, str]]] = {  # name -> (page parameters, report filters)
            "first_page": ({}, {}),
            "first_page_1000": ({"limit": "1000"}, {}),
            "tag_first_page": ({"tags": ONE_TAG}, {"tags": ONE_TAG}),
            "rare_user_first_page": ({"user_id": rare}, {"user_id": rare}),
        }
        mismatches = 0
        cursor = None
        for name, (page_params, filters) in cases.items():
            report = functools.partial(run_report, root, ReportQuery.from_params({**period, **filters,
                                                                                 "group_by": "none"}))
            page = functools.partial(requests_from_params, root, {**period, **page_params})
            fns: list[Callable[[], Any]] = [page, report]
            if name == "first_page":
                fns.append(_single_query(root, 51))
            timings = _best_of(repeat, *fns)
            (page_s, first), (report_s, total) = timings[:2]
            out[f"{name}_s"] = round(page_s, 4)
            out[f"{name}_report_s"] = round(report_s, 4)
            out[f"{name}_ratio"] = round(page_s / report_s, 3)
            if name == "first_page":
                single_s, single = timings[2]
                out["first_page_single_query_s"] = round(single_s, 4)
                out["first_page_vs_single_query_ratio"] = round(page_s / single_s, 3)
                mismatches += [r["span_id"] for r in first.rows] != [r[2] for r in single[:50]]
                cursor = first.next_cursor
            if name == "rare_user_first_page":
                out["rare_user_calls"] = float(len(first.rows))
                mismatches += len(first.rows) != total[0]["request_count"]
        second = functools.partial(requests_from_params, root, {**period, "cursor": str(cursor)})
        ((second_s, _),) = _best_of(repeat, second)
        out["second_page_s"] = round(second_s, 4)
        out["second_page_ratio"] = round(second_s / out["first_page_report_s"], 3)
        out["mismatches"] = float(mismatches)
    return out


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000), indent=2))
