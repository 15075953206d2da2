"""``tokentrail prices``: explain a number, list what is unpriced, check an overrides file, show price versions.

    tokentrail prices explain --provider openai --model gpt-4o --input 10000 --cached 4000 --output 1000
    tokentrail prices explain --provider perplexity --model sonar-deep-research --input 1000 --output 10000 --reasoning 8000
    tokentrail prices unpriced --start-date 2026-11-01 --end-date 2026-11-30
    tokentrail prices check pricing.toml
    tokentrail prices versions --start-date 2026-11-01 --end-date 2026-11-30

The price catalog (genai-prices) and the dataset readers are imported inside each subcommand's handler: loading
the catalog takes longer than everything else ``tokentrail --help`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokentrail.processor import environment
from tokentrail.processor.cli.arguments import day_arg

__all__ = ["register"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _when(text: str) -> datetime:
    """A date (noon UTC that day) or an ISO date and time (UTC when no offset is given)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(12), tzinfo=UTC)
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or date and time (ISO 8601): {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a token count: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a token count cannot be negative: {text!r}")
    return value


def _pricing_help() -> str:
    return f"overrides file (default: env {environment.PRICING}; none when unset)"


def register(commands: Any, default_data_dir: Path) -> None:
    prices = commands.add_parser("prices", help="explain a price, list unpriced models, check an overrides file")
    sub = prices.add_subparsers(dest="prices_command", metavar="SUBCOMMAND")
    sub.required = True

    ex = sub.add_parser(
        "explain",
        help="the catalog model, rates, each component and the total of one call",
        description="Counts are inclusive (OTel semantics): --cached and --cache-write are part of --input, "
        "--cache-write-1h of --cache-write, --input-audio of --input, --cached-audio of --cached and of --input-audio, "
        "--reasoning and --output-audio of --output. A part larger than its whole is an error.",
    )
    ex.add_argument("--provider", required=True, help="as on the span (gen_ai.provider.name) or a catalog id")
    ex.add_argument("--model", required=True, help="as on the span")
    ex.add_argument("--at", type=_when, help="request time: YYYY-MM-DD (noon UTC) or ISO date-time (default: now)")
    ex.add_argument("--input", type=_count, default=0, help="input tokens, cache reads and writes included")
    ex.add_argument("--cached", type=_count, default=0, help="cache-read input tokens")
    ex.add_argument("--cache-write", type=_count, default=0, help="cache-write input tokens (all TTLs)")
    ex.add_argument("--cache-write-1h", type=_count, default=0, help="of which written for 1 hour")
    ex.add_argument("--output", type=_count, default=0, help="output tokens, reasoning included")
    ex.add_argument(
        "--reasoning", type=_count, default=0,
        help="of the output, reasoning tokens (at the catalog's reasoning rate where it has one, else the output rate)",
    )
    ex.add_argument("--input-audio", type=_count, default=0, help="of the input, audio tokens")
    ex.add_argument("--cached-audio", type=_count, default=0, help="of the cache reads, audio tokens")
    ex.add_argument("--output-audio", type=_count, default=0, help="of the output, audio tokens")
    ex.add_argument("--service-tier", help="batch, flex, priority, fast, default (as the response reported it)")
    ex.add_argument("--credential-type", choices=("system", "byok"), default="system")
    ex.add_argument("--pricing", type=Path, help=_pricing_help())
    ex.add_argument("--format", choices=("text", "json"), default="text")
    ex.set_defaults(handler=_explain)

    un = sub.add_parser("unpriced", help="models with unpriced calls in a period: requests, tokens, why")
    un.add_argument("--data-dir", type=Path, default=default_data_dir, help=f"(env {environment.DATA_DIR})")
    un.add_argument("--start-date", type=day_arg, help="YYYY-MM-DD, UTC (default: 7 days ending --end-date)")
    un.add_argument("--end-date", type=day_arg, help="YYYY-MM-DD, inclusive (default: today, UTC)")
    un.add_argument("--pricing", type=Path, help=_pricing_help() + "; used to say what is priceable now")
    un.add_argument("--format", choices=("table", "json"), default="table")
    un.set_defaults(handler=_unpriced)

    ck = sub.add_parser("check", help="validate an overrides file: every problem, with its line")
    ck.add_argument("file", type=Path, nargs="?", help=_pricing_help())
    ck.set_defaults(handler=_check)

    ve = sub.add_parser("versions", help="which price versions produced a period's costs")
    ve.add_argument("--data-dir", type=Path, default=default_data_dir, help=f"(env {environment.DATA_DIR})")
    ve.add_argument("--start-date", type=day_arg, help="YYYY-MM-DD, UTC (default: 7 days ending --end-date)")
    ve.add_argument("--end-date", type=day_arg, help="YYYY-MM-DD, inclusive (default: today, UTC)")
    ve.add_argument("--format", choices=("table", "json"), default="table")
    ve.set_defaults(handler=_versions)


def _pricer(path: Path | None) -> Any:
    from tokentrail.processor.pricing.catalog import Pricer  # see the module docstring

    return Pricer(overrides=path) if path is not None else Pricer()


def _dates(args: argparse.Namespace) -> tuple[date, date]:
    end = args.end_date or datetime.now(UTC).date()
    start = args.start_date or end - timedelta(days=6)
    return start, end


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        text = format(value, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[str(_jsonable(row.get(c)) if row.get(c) is not None else "") for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


# (part, whole) flags of explain: a part cannot exceed its whole.
_PARTS = (
    ("cache_write_1h", "cache_write"),
    ("reasoning", "output"),
    ("output_audio", "output"),
    ("input_audio", "input"),
    ("cached_audio", "cached"),
    ("cached_audio", "input_audio"),
)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _part_errors(args: argparse.Namespace) -> list[str]:
    errors = []
    if args.cached + args.cache_write > args.input:
        errors.append(f"--cached ({args.cached:,}) plus --cache-write ({args.cache_write:,}) exceed --input ({args.input:,})")
    for part, whole in _PARTS:
        if getattr(args, part) > getattr(args, whole):
            errors.append(f"{_flag(part)} ({getattr(args, part):,}) exceeds {_flag(whole)} ({getattr(args, whole):,}), "
                          "which includes it")
    return errors


def _explain(args: argparse.Namespace) -> int:
    from tokentrail.processor.pricing.explain import explain  # see the module docstring
    from tokentrail.processor.pricing.overrides import PricingConfigError

    errors = _part_errors(args)
    if errors:
        for error in errors:
            print(f"tokentrail prices explain: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        pricer = _pricer(args.pricing)
    except PricingConfigError as exc:
        print(f"tokentrail prices explain: {exc}", file=sys.stderr)
        return EXIT_USAGE
    at = args.at or datetime.now(UTC)
    result = explain(
        pricer,
        args.provider,
        args.model,
        at,
        input_tokens=args.input,
        cached_input_tokens=args.cached,
        cache_creation_input_tokens=args.cache_write,
        cache_creation_1h_input_tokens=args.cache_write_1h,
        output_tokens=args.output,
        input_audio_tokens=args.input_audio,
        cached_audio_input_tokens=args.cached_audio,
        output_audio_tokens=args.output_audio,
        reasoning_tokens=args.reasoning,
        service_tier=args.service_tier,
        credential_type=args.credential_type,
    )
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        sys.stdout.write(result.text())
    if result.agrees_with_library is False:
        return EXIT_FAILURE
    return EXIT_OK if result.market_cost is not None else EXIT_FAILURE


def _unpriced(args: argparse.Namespace) -> int:
    from tokentrail.processor.pricing.overrides import PricingConfigError  # see the module docstring
    from tokentrail.processor.reports.dataset import require_dataset
    from tokentrail.processor.storage.reprice import unpriced_models

    require_dataset(args.data_dir)
    start, end = _dates(args)
    try:
        pricer = _pricer(args.pricing)
    except PricingConfigError as exc:
        print(f"tokentrail prices unpriced: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rows = unpriced_models(args.data_dir, start, end, pricer=pricer)
    if args.format == "json":
        print(json.dumps([{k: _jsonable(v) for k, v in row.items()} for row in rows], indent=2))
        return EXIT_OK
    if not rows:
        print(f"no unpriced calls from {start} to {end} in {args.data_dir}")
        return EXIT_OK
    total = sum(row["requests"] for row in rows)
    print(f"{total} unpriced call(s) from {start} to {end} (stored with NULL cost, counted in every report):")
    _print_table(rows, ["provider", "model", "requests", "input_tokens", "output_tokens", "last_seen", "reason"])
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from tokentrail.processor.pricing.overrides import PricingConfigError, load_overrides  # see the module docstring

    from_env = os.environ.get(environment.PRICING, "").strip()
    path = args.file or (Path(from_env) if from_env else None)
    if path is None:
        print(f"tokentrail prices check: no file given and {environment.PRICING} is not set", file=sys.stderr)
        return EXIT_USAGE
    try:
        overrides = load_overrides(path)
    except PricingConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILURE
    print(
        f"{path}: ok ({len(overrides.rules)} rule(s), {len(overrides.models)} custom model(s), "
        f"{len(overrides.aliases)} alias(es), BYOK total cost: {overrides.byok}; price_version tag "
        f"{overrides.version_tag})"
    )
    for rule in overrides.rules:
        print(f"  {rule.describe()}")
    for model in overrides.models:
        print(f"  {model.describe()}")
    return EXIT_OK


def _versions(args: argparse.Namespace) -> int:
    from tokentrail.processor.reports.dataset import require_dataset
    from tokentrail.processor.reports.formatting import format_table
    from tokentrail.processor.storage.reprice import price_versions  # see the module docstring

    require_dataset(args.data_dir)
    start, end = _dates(args)
    rows = price_versions(args.data_dir, start, end)
    if args.format == "json":
        print(json.dumps([{k: _jsonable(v) for k, v in row.items()} for row in rows], indent=2))
    elif not rows:
        print(f"no records from {start} to {end} in {args.data_dir}")
    else:
        # Money for people as every table shows it (to the cent, more where a cost would read $0.00); JSON is exact.
        columns = ["price_version", "requests", "unpriced_requests", "total_cost", "first_day", "last_day"]
        print(format_table(rows, columns), end="")
    return EXIT_OK
