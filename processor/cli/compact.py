"""``tokentrail compact``: merge each day's small Parquet files into one and drop exact duplicates.

Safe while receivers run and reports are read: every day is rewritten under the lock its flushers take and swapped
in atomically (see ``tokentrail.processor.storage.compaction``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tokentrail.processor import environment
from tokentrail.processor.cli.arguments import day_arg
from tokentrail.processor.cli.progress import Progress
from tokentrail.processor.reports.dataset import USAGE_DIR, require_dataset
from tokentrail.processor.storage.compaction import CompactionResult, RewriteError, compact_day, dataset_days

__all__ = ["register"]


def register(commands: Any, default_data_dir: Path) -> None:
    parser = commands.add_parser(
        "compact",
        help="merge each day's small Parquet files and drop exact duplicates (safe while serving)",
        description="Rewrites every day (or the days chosen) that has at least --min-files files into one file, "
        "keeping one record per call: (provider, response id), else (trace id, span id).",
    )
    parser.add_argument("--data-dir", type=Path, default=default_data_dir, help=f"(env {environment.DATA_DIR})")
    parser.add_argument("--start-date", type=day_arg, help="first day to compact (YYYY-MM-DD, UTC)")
    parser.add_argument("--end-date", type=day_arg, help="last day to compact (inclusive)")
    parser.add_argument(
        "--min-files", type=int, default=2, help="compact a day only if it has at least this many files (1: always)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per compacted day")
    parser.set_defaults(handler=_compact)


def _compact(args: argparse.Namespace) -> int:
    usage_dir = require_dataset(args.data_dir) / USAGE_DIR
    days = [
        d
        for d in dataset_days(usage_dir)
        if (args.start_date is None or d >= args.start_date) and (args.end_date is None or d <= args.end_date)
    ]
    progress = Progress("compact", len(days))
    results: list[CompactionResult] = []
    try:
        for done, day in enumerate(days):  # one day at a time (as `compaction.compact` does), to show which
            progress.show(done, f"compacting {day}")
            result = compact_day(usage_dir, day, min_files=args.min_files)
            if result is not None:
                results.append(result)
    except RewriteError as exc:
        progress.clear()
        print(f"tokentrail compact: {exc}", file=sys.stderr)
        return 1
    progress.clear()
    for r in results:
        if args.json:
            print(
                json.dumps(
                    {
                        "day": r.day.isoformat(),
                        "files_before": r.files_before,
                        "files_after": r.files_after,
                        "rows_before": r.rows_before,
                        "rows_after": r.rows_after,
                        "duplicates_removed": r.duplicates_removed,
                    }
                )
            )
        else:
            print(
                f"{r.day}: {r.files_before} file(s) -> {r.files_after}, {r.rows_before} row(s) -> {r.rows_after} "
                f"({r.duplicates_removed} duplicate(s) removed)"
            )
    if not results and not args.json:
        print(f"nothing to compact in {usage_dir}")
    return 0
