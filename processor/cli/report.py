"""``tokentrail report``: the same rows as ``GET /v1/report``, as a table, JSON (byte for byte the HTTP body) or
CSV."""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from tokentrail.processor import environment
from tokentrail.processor.reports.dataset import require_dataset
from tokentrail.processor.reports.formatting import FORMATS, TRUNCATED_NOTE, format_rows
from tokentrail.processor.reports.query import EXTENSION_FILTERS, MAX_ROWS, ReportQuery
from tokentrail.processor.reports.report import run_report

__all__ = [
    "DEFAULT_REPORT_DAYS", "add_question_arguments", "default_dates", "question_params", "register", "terminal_width"
]

DEFAULT_REPORT_DAYS: Final = 7


def add_question_arguments(parser: argparse.ArgumentParser, default_data_dir: Path) -> None:
    """The data directory, dates and filters every report-like command takes (read back by ``question_params``)."""
    parser.add_argument("--data-dir", type=Path, default=default_data_dir, help=f"(env {environment.DATA_DIR})")
    parser.add_argument("--start-date", help=f"YYYY-MM-DD (default: {DEFAULT_REPORT_DAYS} days ending --end-date)")
    parser.add_argument("--end-date", help="YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--user-id")
    parser.add_argument("--model")
    parser.add_argument("--provider")
    parser.add_argument("--credential-type", help="byok or system")
    for name in EXTENSION_FILTERS:
        parser.add_argument(f"--{name.replace('_', '-')}", help=_FILTER_HELP[name])
    parser.add_argument("--tags", help="comma-separated tags to filter on")
    parser.add_argument("--tags-match", help="any (default) or all of --tags")


# The filters beyond Vercel's four are options named after their parameters (--conversation-id, --trace-id, ...).
_FILTER_HELP: Final = {
    "service": "only this service's calls (service.name)",
    "environment": "only this environment's calls (deployment.environment)",
    "api": "only calls to this API (e.g. openai.chat_completions)",
    "operation": "only this operation's calls (chat, embeddings, ...)",
    "conversation_id": "only this conversation's calls (gen_ai.conversation.id or a session/thread id)",
    "trace_id": "only this trace's calls (32 hex digits): one agent run or request",
}


def register(commands: Any, default_data_dir: Path) -> None:
    report = commands.add_parser(
        "report",
        help="cost and usage for a period, grouped like GET /v1/report",
        description="Dates are inclusive UTC days. Grouping by tag counts a request in each of its tags, so tag "
        "rows do not add up to the total.",
    )
    add_question_arguments(report, default_data_dir)
    report.add_argument(
        "--group-by",
        help="comma-separated: day (default), user, model, tag, provider, credential_type, service, api, "
        "environment, operation, conversation (cost per conversation), trace (cost per agent run or request); "
        "'none' for one total row",
    )
    report.add_argument("--date-part", help="time bucket added to every row: hour, day, week, month")
    report.add_argument("--order-by", help="a metric or row key, optionally :asc or :desc (e.g. total_cost:desc)")
    report.add_argument("--limit", help=f"at most this many rows (1-{MAX_ROWS})")
    report.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (default; on a terminal, fits its width and names the columns it left out), json or csv "
        "(every column, exact costs)",
    )
    report.set_defaults(handler=_run)


def default_dates(start: str | None, end: str | None) -> tuple[str, str]:
    """Last DEFAULT_REPORT_DAYS days ending today (UTC), or ending --end-date if only that was given."""
    if end is None:
        end = datetime.now(UTC).date().isoformat()
    if start is None:
        try:
            anchor = date.fromisoformat(end)
        except ValueError:
            return end, end  # let the query's validation name the bad --end-date
        start = (anchor - timedelta(days=DEFAULT_REPORT_DAYS - 1)).isoformat()
    return start, end


def terminal_width() -> int | None:
    """The width a table must fit when stdout is a terminal (``COLUMNS`` wins, as ``shutil`` reads it); ``None``
    when it is not (piped or redirected: whatever reads it gets every column)."""
    try:
        is_terminal = sys.stdout.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stdout is no terminal
        return None
    return shutil.get_terminal_size().columns if is_terminal else None


def question_params(args: argparse.Namespace) -> dict[str, str]:
    """The dates (defaulted) and filters a report-like command was given, as the HTTP API's parameters: each command
    parses them with its query's ``from_params``, so the same parameter gets the same validation and message."""
    start, end = default_dates(args.start_date, args.end_date)
    params = {
        "start_date": start,
        "end_date": end,
        "user_id": args.user_id,
        "model": args.model,
        "provider": args.provider,
        "credential_type": args.credential_type,
        **{name: getattr(args, name) for name in EXTENSION_FILTERS},
        "tags": args.tags,
        "tags_match": args.tags_match,
    }
    return {name: value for name, value in params.items() if value is not None}


def _run(args: argparse.Namespace) -> int:
    params = {
        **question_params(args),
        "group_by": args.group_by,
        "date_part": args.date_part,
        "order_by": args.order_by,
        "limit": args.limit,
    }
    query = ReportQuery.from_params({name: value for name, value in params.items() if value is not None})
    rows = run_report(require_dataset(args.data_dir), query)  # after the parameters: a bad one is bad usage anyway
    text = format_rows(rows, args.format, query.columns, width=terminal_width())
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if getattr(rows, "truncated", False) and args.format == "csv":  # json and table say so themselves
        print(f"tokentrail report: {TRUNCATED_NOTE}", file=sys.stderr)
    return 0
