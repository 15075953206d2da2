"""``tokentrail margins``: revenue, cost and margin per customer, plan or feature (the rows of ``GET /v1/margins``)."""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokentrail.processor import environment
from tokentrail.processor.reports.dataset import require_dataset
from tokentrail.processor.reports.formatting import FORMATS, exact_json, format_csv, format_table
from tokentrail.processor.reports.margins import (
    MARGIN_COLUMNS,
    MARGIN_VIEWS,
    margins_from_params,
)
from tokentrail.processor.reports.revenue import load_revenue

__all__ = ["register"]

_PERCENT_COLUMNS = ("margin_percent", "percent_of_allowance")


def register(commands: Any, default_data_dir: Path) -> None:
    parser = commands.add_parser(
        "margins",
        help="revenue, cost and margin per customer, plan or feature; customers near the upgrade point",
        description="Revenue comes from a TOML file (see tokentrail.processor.reports.margins). Dates are inclusive UTC "
        "days; the default period is this month to today.",
    )
    parser.add_argument("--data-dir", type=Path, default=default_data_dir, help=f"(env {environment.DATA_DIR})")
    parser.add_argument("--revenue", default=os.environ.get(environment.REVENUE) or None,
                        help=f"the revenue TOML file (env {environment.REVENUE})")
    parser.add_argument("--start-date", help="YYYY-MM-DD (default: the first of --end-date's month)")
    parser.add_argument("--end-date", help="YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--check", action="store_true",
                        help="only validate the revenue file (every problem, with its line) and say what it holds")
    parser.add_argument("--by", default="customer", help=f"one of {', '.join(MARGIN_VIEWS)} (default customer)")
    parser.add_argument("--tag", help="--by upgrade: the tag whose users to check, e.g. plan:free")
    parser.add_argument("--allowance", help="--by upgrade: USD of cost per month the plan carries")
    parser.add_argument("--threshold", help="--by upgrade: USD of cost in the period")
    parser.add_argument("--percent", help="--by upgrade: percent of the allowance (default 80)")
    parser.add_argument("--limit", help="at most this many rows")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if not args.revenue:
        print(f"tokentrail margins: error: give the revenue file with --revenue FILE (or {environment.REVENUE})",
              file=sys.stderr)
        return 2
    config = load_revenue(args.revenue)
    if args.check:
        plans = ", ".join(config.plans) or "none"
        print(f"{args.revenue}: ok ({len(config.plans)} plan(s): {plans}; {len(config.customers)} customer contract(s))")
        return 0
    params = {
        "start_date": args.start_date, "end_date": args.end_date, "by": args.by, "tag": args.tag,
        "allowance": args.allowance, "threshold": args.threshold, "percent": args.percent, "limit": args.limit,
    }
    result = margins_from_params(args.data_dir, config, {k: v for k, v in params.items() if v is not None})
    require_dataset(args.data_dir)  # after the parameters (a bad one is bad usage whatever the path), before output
    columns = MARGIN_COLUMNS[result.by]
    if args.format == "json":
        text = exact_json(result.body())
    elif args.format == "csv":
        text = format_csv(result.rows, columns)
    else:
        shown = [{k: (_pct(v) if k in _PERCENT_COLUMNS else v) for k, v in row.items()} for row in result.rows]
        text = format_table(shown, columns)
        text += f"\n\n{result.start_date} to {result.end_date}. Margin: revenue - cost; revenue '-' means no plan " \
                "or contract prices the customer."
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _pct(value: object) -> str:
    return f"{value}%" if isinstance(value, Decimal) else "-"
