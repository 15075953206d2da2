"""``tokentrail requests``: the calls behind a number, newest first, a page at a time: the same rows as
``GET /v1/requests``, as a table, JSON (byte for byte the HTTP body, ``next_cursor`` included) or CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from tokentrail.processor.cli.report import add_question_arguments, question_params, terminal_width
from tokentrail.processor.reports.dataset import require_dataset
from tokentrail.processor.reports.formatting import FORMATS, format_csv, format_table
from tokentrail.processor.reports.requests import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    REQUEST_COLUMNS,
    RequestsQuery,
    requests_json,
    run_requests,
)

__all__ = ["TABLE_COLUMNS", "register"]

# What a person scans a list of calls for; json and csv carry every field.
TABLE_COLUMNS: Final = (
    "timestamp", "user", "service", "model", "input_tokens", "output_tokens", "total_cost", "market_cost",
    "price_status", "status", "trace_id",
)
assert set(TABLE_COLUMNS) <= set(REQUEST_COLUMNS)


def register(commands: Any, default_data_dir: Path) -> None:
    parser = commands.add_parser(
        "requests",
        help="the calls behind a number, newest first (GET /v1/requests)",
        description="One row per stored call, with the same dates and filters as tokentrail report: the calls of a "
        "report row are the ones it counts. Prints one page; the next page's --cursor follows it.",
    )
    add_question_arguments(parser, default_data_dir)
    parser.add_argument("--limit", help=f"calls per page (1-{MAX_LIMIT}, default {DEFAULT_LIMIT})")
    parser.add_argument("--cursor", help="the next page: the cursor the previous page printed")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (default: the main fields, costs to the cent or first digits), json (the HTTP body, with "
        "next_cursor) or csv (every field, exact costs)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    params = {**question_params(args), "limit": args.limit, "cursor": args.cursor}
    query = RequestsQuery.from_params({name: value for name, value in params.items() if value is not None})
    page = run_requests(require_dataset(args.data_dir), query)  # after the parameters: a bad one is bad usage anyway
    if args.format == "json":
        text = requests_json(page)
    elif args.format == "csv":
        text = format_csv(page.rows, REQUEST_COLUMNS)
    else:
        shown = [{**row, "timestamp": row["timestamp"][:19].replace("T", " ")} for row in page.rows]
        text = format_table(shown, TABLE_COLUMNS, width=terminal_width())
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if page.next_cursor is not None and args.format != "json":  # json carries it in the body
        print(f"tokentrail requests: more calls: add --cursor {page.next_cursor}", file=sys.stderr)
    return 0
