"""``tokentrail budgets``: budget status (the rows of ``GET /v1/budgets``) as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokentrail.processor import environment
from tokentrail.processor.reports.budgets import BUDGET_COLUMNS, budgets_body, budgets_from_params, load_budgets
from tokentrail.processor.reports.budgets.config import BudgetsConfig, Webhook
from tokentrail.processor.reports.budgets.webhook import redact_url
from tokentrail.processor.reports.dataset import require_dataset
from tokentrail.processor.reports.formatting import FORMATS, exact_json, format_csv, format_table

__all__ = ["register"]

_TABLE_COLUMNS = ("budget", "value", "period_start", "amount", "spend", "remaining", "percent", "projected_spend",
                  "crossed", "unpriced_request_count")


def register(commands: Any, default_data_dir: Path) -> None:
    parser = commands.add_parser(
        "budgets",
        help="budget status: spend, remaining, percent and projected spend this period",
        description="Budgets come from a TOML file (see tokentrail.processor.reports.budgets). Periods are UTC.",
    )
    parser.add_argument("--data-dir", type=Path, default=default_data_dir, help=f"(env {environment.DATA_DIR})")
    parser.add_argument("--budgets", default=os.environ.get(environment.BUDGETS) or None,
                        help=f"the budgets TOML file (env {environment.BUDGETS})")
    parser.add_argument("--budget", help="only the budget with this name")
    parser.add_argument("--check", action="store_true",
                        help="only validate the budgets file (every problem, with its line) and list its budgets")
    parser.add_argument("--as-of", help="YYYY-MM-DD (end of that day) or ISO date-time, UTC (default: now)")
    parser.add_argument("--limit", help="rows per budget on each value (default 100)")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if not args.budgets:
        print(f"tokentrail budgets: error: give the budgets file with --budgets FILE (or {environment.BUDGETS})",
              file=sys.stderr)
        return 2
    config = load_budgets(args.budgets)
    if args.check:
        _print_check(args.budgets, config)
        return 0
    params = {"budget": args.budget, "as_of": args.as_of, "limit": args.limit}
    rows, truncated = budgets_from_params(args.data_dir, config, {k: v for k, v in params.items() if v is not None})
    require_dataset(args.data_dir)  # after the parameters (a bad one is bad usage whatever the path), before output
    if args.format == "json":
        text = exact_json(budgets_body(rows, truncated))
    elif args.format == "csv":
        text = format_csv(rows, BUDGET_COLUMNS)
    else:
        shown = [{**row, "percent": _pct(row["percent"]), "value": row["value"] or "(all)"} for row in rows]
        text = format_table(shown, _TABLE_COLUMNS) if rows else "No budgets." if not config.budgets else \
            "No spend against any budget this period."
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _print_check(path: str, config: BudgetsConfig) -> None:
    """What the file will do once served: each budget, where its alerts go (format and host only: a webhook's path
    and headers are secrets, as in the log), and the spike questions ``serve`` will ask. A budget without a webhook is said to
    alert nowhere, so a forgotten ``webhook`` line is seen here rather than on the day the money is gone."""
    print(f"{path}: ok ({len(config.budgets)} budget(s){', spike alerts' if _spikes_on(config) else ''})")
    for b in config.budgets:
        scope = b.scope if b.value is None else f"{b.scope}={b.value}"
        byok = ", BYOK at list price" if b.count_byok else ""
        alerts = ", ".join(f"{t}%" for t in b.thresholds)
        print(f"  {b.name}: {scope}, ${b.amount} {b.period}, alerts at {alerts}{byok}")
        print(f"    alerts to: {_destinations(b.webhooks)}")
    spikes = config.spikes
    if spikes is None:
        print("  spikes: no [spikes] table (spikes are listed by /v1/spikes, never sent)")
    elif not spikes.enabled:
        print("  spikes: [spikes] enabled = false (listed by /v1/spikes, never sent)")
    else:
        print(f"  spikes: checked every {spikes.interval:g} s by `tokentrail serve`")
        for q in spikes.queries:
            print(f"    {q.metric} by {q.dimension}, {q.window} windows ({q.seasonality}), over {q.threshold}x "
                  "the expected")
        print(f"    alerts to: {_destinations(spikes.webhooks)}")


def _spikes_on(config: BudgetsConfig) -> bool:
    return config.spikes is not None and config.spikes.enabled


def _destinations(webhooks: tuple[Webhook, ...]) -> str:
    if not webhooks:
        return "nowhere (no webhook: the status is in /v1/budgets, the log and the dashboard only)"
    return ", ".join(f"{hook.format} to {redact_url(hook.url)}" for hook in webhooks)


def _pct(value: object) -> str:
    return f"{value}%" if isinstance(value, Decimal) else "-"
