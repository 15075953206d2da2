"""``tokentrail spikes``: what spends far more than usual in the latest hour or day (``GET /v1/spikes``)."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokentrail.processor import environment
from tokentrail.processor.reports.dataset import require_dataset
from tokentrail.processor.reports.formatting import FORMATS, exact_json, format_csv, format_table
from tokentrail.processor.reports.spikes import DIMENSIONS, SPIKE_COLUMNS, spikes_from_params

__all__ = ["register"]


def register(commands: Any, default_data_dir: Path) -> None:
    parser = commands.add_parser(
        "spikes",
        help="values whose latest hour or day is far above their usual",
        description="Compares the latest complete window with the median and MAD of the same weekday (days) or "
        "hour of day (hours) before; see tokentrail.processor.reports.spikes.",
    )
    parser.add_argument("--data-dir", type=Path, default=default_data_dir, help=f"(env {environment.DATA_DIR})")
    parser.add_argument("--dimension", default="model", help=f"one of {', '.join(DIMENSIONS)} (default model)")
    parser.add_argument("--window", default="day", help="hour or day (default day)")
    parser.add_argument("--seasonality", help="weekly, daily or none (default: weekly for day, daily for hour)")
    parser.add_argument("--baseline", help="number of baseline windows")
    parser.add_argument("--metric", default="total_cost", help="total_cost (default), request_count, ... ")
    parser.add_argument("--threshold", help="robust score from which a value is a spike (default 3.5)")
    parser.add_argument("--min-increase", help="smallest increase over the median that can be a spike")
    parser.add_argument("--as-of", help="YYYY-MM-DD (end of that day) or ISO date-time, UTC (default: now)")
    parser.add_argument("--partial", action="store_true", help="compare the window in progress so far")
    parser.add_argument("--all", action="store_true", dest="include_all", help="list every value, not only spikes")
    parser.add_argument("--limit", help="at most this many rows")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    params = {
        "dimension": args.dimension, "window": args.window, "seasonality": args.seasonality,
        "baseline": args.baseline, "metric": args.metric, "threshold": args.threshold,
        "min_increase": args.min_increase, "as_of": args.as_of, "partial": "true" if args.partial else None,
        "include_all": "true" if args.include_all else None, "limit": args.limit,
    }
    result = spikes_from_params(args.data_dir, {k: v for k, v in params.items() if v is not None})
    require_dataset(args.data_dir)  # after the parameters (a bad one is bad usage whatever the path), before output
    if args.format == "json":
        text = exact_json(result.body())
    elif args.format == "csv":
        text = format_csv(result.rows, SPIKE_COLUMNS)
    else:
        shown = [{**row, "score": _plain(row["score"]), "ratio": _ratio(row["ratio"], row["observed"]),
                  **({} if result.query.metric.endswith("cost") else
                     {"observed": _plain(row["observed"]), "expected": _plain(row["expected"]),
                      "mad": _plain(row["mad"])})} for row in result.rows]
        header = (f"{result.query.metric} by {result.query.dimension}, {result.body()['window_start']} to "
                  f"{result.body()['window_end']}, against {len(result.baseline_windows)} "
                  f"{result.query.seasonality if result.query.seasonality != 'none' else 'preceding'} "
                  f"baseline windows")
        if result.note:
            text = f"{header}\nNo judgement: {result.note}."
        elif not shown:
            text = f"{header}\nNo spikes."
        else:
            text = f"{header}\n\n" + format_table(shown, SPIKE_COLUMNS)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _plain(value: object) -> str:
    return str(value) if isinstance(value, Decimal) else "-" if value is None else f"{value:,}"


def _ratio(value: object, observed: object) -> str:
    """``new`` for something with no history; ``unknown`` when the latest window's cost is (all unpriced)."""
    if isinstance(value, Decimal):
        return f"{value}x"
    if value is None:
        return "unknown" if observed is None else "new"
    return str(value)
