"""``tokentrail reprice``: recompute the costs of stored records with the current catalog and overrides.

Each day is rewritten atomically (``compaction.rewrite_day``): reports never see a half re-priced day, and a crash
leaves every day either old or new. Safe while receivers run. Every re-priced record carries the new
``price_version`` (catalog version, plus the overrides file's hash); ``tokentrail prices versions`` shows them.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tokentrail.processor import environment
from tokentrail.processor.cli.arguments import day_arg
from tokentrail.processor.cli.progress import Progress
from tokentrail.processor.reports.dataset import USAGE_DIR, require_dataset
from tokentrail.processor.reports.formatting import money_decimals, usd
from tokentrail.processor.storage.compaction import RewriteError
from tokentrail.processor.storage.dataset import dataset_days

__all__ = ["register"]


def register(commands: Any, default_data_dir: Path) -> None:
    parser = commands.add_parser(
        "reprice",
        help="recompute stored costs (after a catalog update or an overrides change), one atomic day at a time",
        description="Re-prices every record of the days in range with the bundled (or auto-updated) catalog and the "
        "overrides file, stamping price_version. Dates are inclusive UTC days.",
    )
    parser.add_argument("--data-dir", type=Path, default=default_data_dir, help=f"(env {environment.DATA_DIR})")
    parser.add_argument("--start-date", type=day_arg, required=True, help="first day (YYYY-MM-DD, UTC)")
    parser.add_argument("--end-date", type=day_arg, help="last day, inclusive (default: today, UTC)")
    parser.add_argument("--pricing", type=Path,
                        help=f"overrides file (default: env {environment.PRICING}; none when unset)")
    parser.add_argument(
        "--update-catalog",
        action="store_true",
        help="fetch the latest catalog first (genai-prices' updater; falls back to the bundled data if offline)",
    )
    parser.add_argument("--dry-run", action="store_true", help="say what would change, write nothing")
    parser.add_argument("--json", action="store_true", help="one JSON object per day")
    parser.set_defaults(handler=_reprice)


def _reprice(args: argparse.Namespace) -> int:
    end = args.end_date or datetime.now(UTC).date()
    if args.start_date > end:
        print(f"tokentrail reprice: --start-date {args.start_date} is after --end-date {end}", file=sys.stderr)
        return 2
    require_dataset(args.data_dir)  # before the catalog loads: a wrong path is said at once
    # The price catalog (genai-prices) loads only for this command: it takes longer than the rest of the CLI.
    from tokentrail.processor.pricing.catalog import Pricer
    from tokentrail.processor.pricing.overrides import PricingConfigError
    from tokentrail.processor.pricing.updates import start_auto_update, stop_auto_update
    from tokentrail.processor.storage.reprice import RepriceDay, reprice

    if args.update_catalog:
        start_auto_update(wait=30)
    try:
        pricer = Pricer(overrides=args.pricing, auto_update=False)
    except PricingConfigError as exc:
        print(f"tokentrail reprice: {exc}", file=sys.stderr)
        return 2

    days = [d for d in dataset_days(args.data_dir / USAGE_DIR) if args.start_date <= d <= end]
    progress = Progress("reprice", len(days))

    def show(day: RepriceDay) -> None:
        progress.clear()
        if args.json:
            print(json.dumps(day.to_dict()), flush=True)
        else:
            verb = "would change" if args.dry_run else "changed"
            places = money_decimals([day.total_cost_before, day.total_cost_after])  # both ends alike (--json: exact)
            print(
                f"{day.day}: {day.rows} record(s), {day.changed} {verb}; unpriced {day.unpriced_before} -> "
                f"{day.unpriced_after}; total cost {usd(day.total_cost_before, places)} -> "
                f"{usd(day.total_cost_after, places)}",
                flush=True,
            )

    results: list[RepriceDay] = []
    try:
        for done, day in enumerate(days):  # one day at a time (as `reprice` does), to show which
            progress.show(done, f"{'checking' if args.dry_run else 'repricing'} {day}")
            results += reprice(args.data_dir, day, day, pricer=pricer, dry_run=args.dry_run, progress=show)
    except RewriteError as exc:
        progress.clear()
        print(f"tokentrail reprice: {exc} (the days already done keep their new prices)", file=sys.stderr)
        return 1
    finally:
        progress.clear()
        if args.update_catalog:
            stop_auto_update()
    if not args.json:
        if not results:
            print(f"no records from {args.start_date} to {end} in {args.data_dir}")
        else:
            print(f"price_version: {pricer.price_version}" + (" (dry run: nothing written)" if args.dry_run else ""))
    return 0
