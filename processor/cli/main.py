"""``tokentrail``: the command line.

``tokentrail report``  — the same rows as ``GET /v1/report``, as a table, JSON (byte for byte the HTTP body) or CSV.
``tokentrail serve``   — the OTLP receiver and the report API in one process, until SIGINT or SIGTERM.
``tokentrail demo``    — the whole pipeline on this machine (see ``tokentrail.processor.demo.run``).

Further commands live in their own modules, ``processor/cli_<name>.py``, each with
``register(commands: argparse._SubParsersAction, default_data_dir: Path) -> None`` that adds its subparsers and sets
``handler=callable(args) -> int`` on them: a feature brings its command without editing this file.

Heavy modules (the receiver's gRPC stack, the demo's SDKs) are imported inside their command, so ``report``
starts fast and works with only DuckDB installed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Final, TextIO

from tokentrail.processor import environment
from tokentrail.processor.api.http import DEFAULT_API_HOST, DEFAULT_API_PORT, ReportServer
from tokentrail.processor.cli import budgets as budgets_command
from tokentrail.processor.cli import compact as compact_command
from tokentrail.processor.cli import margins as margins_command
from tokentrail.processor.cli import mcp as mcp_command
from tokentrail.processor.cli import prices as prices_command
from tokentrail.processor.cli import reprice as reprice_command
from tokentrail.processor.cli import spikes as spikes_command
from tokentrail.processor.cli import status as status_command
from tokentrail.processor.pricing.overrides import PRICING_ENV
from tokentrail.processor.reports import budgets
from tokentrail.processor.reports.budgets import BUDGETS_ENV, load_budgets
from tokentrail.processor.reports.formatting import FORMATS, TRUNCATED_NOTE, format_rows
from tokentrail.processor.reports.margins import REVENUE_ENV
from tokentrail.processor.reports.report import ReportError, ReportParameterError, ReportQuery, run_report
from tokentrail.processor.storage.dedupe import DEFAULT_WINDOW

__all__ = [
    "API_TOKEN_ENV",
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "DEFAULT_GRPC_PORT",
    "DEFAULT_REPORT_DAYS",
    "main",
]

DATA_DIR_ENV: Final = environment.DATA_DIR
API_TOKEN_ENV: Final = environment.API_TOKEN
DEFAULT_DATA_DIR: Final = "tokentrail-data"
# Not 4317: the OTel Collector owns the standard OTLP port and forwards GenAI spans here (otel-collector.yaml).
DEFAULT_GRPC_PORT: Final = 14317
DEFAULT_HTTP_PORT: Final = 14318  # likewise not 4318
INGEST_TOKEN_ENV: Final = environment.INGEST_TOKEN
DEFAULT_REPORT_DAYS: Final = 7

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2  # argparse's code for bad usage; bad report parameters are bad usage too

logger = logging.getLogger(__name__)



def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    # Built per call: defaults read the environment at run time, not at import time.
    default_data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    parser = argparse.ArgumentParser(
        prog="tokentrail", description="What every LLM API call costs, and who it was for, on OpenTelemetry."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    report = commands.add_parser(
        "report",
        help="cost and usage for a period, grouped like GET /v1/report",
        description="Dates are inclusive UTC days. Grouping by tag counts a request in each of its tags, so tag "
        "rows do not add up to the total.",
    )
    report.add_argument("--data-dir", type=Path, default=Path(default_data_dir), help=f"(env {DATA_DIR_ENV})")
    report.add_argument("--start-date", help=f"YYYY-MM-DD (default: {DEFAULT_REPORT_DAYS} days ending --end-date)")
    report.add_argument("--end-date", help="YYYY-MM-DD (default: today, UTC)")
    report.add_argument(
        "--group-by",
        help="comma-separated: day (default), user, model, tag, provider, credential_type, service, api, "
        "environment, operation; 'none' for one total row",
    )
    report.add_argument("--date-part", help="time bucket added to every row: hour, day, week, month")
    report.add_argument("--user-id")
    report.add_argument("--model")
    report.add_argument("--provider")
    report.add_argument("--credential-type", help="byok or system")
    report.add_argument("--tags", help="comma-separated tags to filter on")
    report.add_argument("--tags-match", help="any (default) or all of --tags")
    report.add_argument("--order-by", help="a metric or row key, optionally :asc or :desc (e.g. total_cost:desc)")
    report.add_argument("--limit", help="at most this many rows (1-10000)")
    report.add_argument("--format", choices=FORMATS, default="table")

    serve = commands.add_parser("serve", help="run the OTLP receiver and the report API until interrupted")
    serve.add_argument("--data-dir", type=Path, default=Path(default_data_dir), help=f"(env {DATA_DIR_ENV})")
    serve.add_argument("--host", default=DEFAULT_API_HOST, help="address both listeners bind to")
    serve.add_argument("--grpc-port", type=_port, default=DEFAULT_GRPC_PORT, help="OTLP/gRPC receiver port")
    serve.add_argument("--api-port", type=_port, default=DEFAULT_API_PORT, help="report API port")
    serve.add_argument(
        "--api-token",
        default=os.environ.get(API_TOKEN_ENV) or None,
        help=f"require 'Authorization: Bearer TOKEN' on /v1/report (env {API_TOKEN_ENV})",
    )
    serve.add_argument(
        "--http-port",
        type=_port,
        default=DEFAULT_HTTP_PORT,
        help="OTLP/HTTP receiver port (POST /v1/traces, GET /metrics); 0 picks a free port",
    )
    serve.add_argument("--no-http", action="store_true", help="do not listen for OTLP/HTTP")
    serve.add_argument(
        "--ingest-token",
        default=os.environ.get(INGEST_TOKEN_ENV) or None,
        help=f"require 'authorization: Bearer TOKEN' on OTLP gRPC and HTTP (env {INGEST_TOKEN_ENV})",
    )
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate (chain): serve OTLP gRPC and HTTP over TLS")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    serve.add_argument(
        "--receiver-id",
        help="unique per receiver process sharing --data-dir (names its WAL and Parquet files; default: host name)",
    )
    serve.add_argument(
        "--reuse-port",
        action="store_true",
        help="SO_REUSEPORT: several `tokentrail serve` processes (each with its own --receiver-id) share the ports",
    )
    serve.add_argument(
        "--max-disk-bytes",
        type=int,
        help="refuse new records (UNAVAILABLE / 503, the sender retries) once WAL + Parquet would exceed this",
    )
    serve.add_argument("--no-api", action="store_true", help="do not serve the report API (e.g. extra receivers)")
    serve.add_argument(
        "--budgets",
        type=Path,
        default=os.environ.get(BUDGETS_ENV) or None,
        help=f"budgets TOML: threshold alerts as records land, GET /v1/budgets (env {BUDGETS_ENV})",
    )
    serve.add_argument(
        "--revenue",
        type=Path,
        default=os.environ.get(REVENUE_ENV) or None,
        help=f"revenue TOML for GET /v1/margins (env {REVENUE_ENV})",
    )
    serve.add_argument(
        "--pricing",
        type=Path,
        default=None,
        help=f"price overrides TOML (env {PRICING_ENV}); validated at start, a bad file stops the receiver",
    )
    serve.add_argument(
        "--flush-interval", type=float, default=1.0, help="seconds between WAL-to-Parquet flushes (default 1)"
    )
    serve.add_argument(
        "--dedupe-window",
        type=int,
        default=DEFAULT_WINDOW,
        help="identities remembered to drop retried spans at ingest (default 1,000,000: about 130-155 MB)",
    )

    commands.add_parser("demo", help="run the whole pipeline locally and print reports", add_help=False)
    for module in _command_modules():
        module.register(commands, Path(default_data_dir))
    return parser


def _command_modules() -> list[Any]:
    """The subcommands kept in modules of their own, in the order ``--help`` lists them."""
    return [budgets_command, compact_command, margins_command, mcp_command, prices_command, reprice_command,
            spikes_command, status_command]


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["demo"]:
        # Handed over untouched: the demo owns its options, and argparse would reject ones it does not know.
        return _demo(args_list[1:])
    try:
        args = _parser().parse_args(args_list)
    except SystemExit as exc:  # argparse exits on bad usage and --help; main returns codes instead
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "report":
            return _report(args, sys.stdout)
        if args.command == "serve":
            return _serve(args)
        handler = getattr(args, "handler", None)
        if handler is not None:
            return int(handler(args))
    except ReportParameterError as exc:
        print(f"tokentrail {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ReportError as exc:
        print(f"tokentrail {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    raise AssertionError(args.command)


def _default_dates(start: str | None, end: str | None) -> tuple[str, str]:
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


def _report(args: argparse.Namespace, out: TextIO) -> int:
    start, end = _default_dates(args.start_date, args.end_date)
    params = {
        "start_date": start,
        "end_date": end,
        "group_by": args.group_by,
        "date_part": args.date_part,
        "user_id": args.user_id,
        "model": args.model,
        "provider": args.provider,
        "credential_type": args.credential_type,
        "tags": args.tags,
        "tags_match": args.tags_match,
        "order_by": args.order_by,
        "limit": args.limit,
    }
    # Through from_params, like the HTTP API: the same parameter gets the same validation and message.
    query = ReportQuery.from_params({name: value for name, value in params.items() if value is not None})
    rows = run_report(args.data_dir, query)
    text = format_rows(rows, args.format, query.columns)
    out.write(text if text.endswith("\n") else text + "\n")
    if getattr(rows, "truncated", False) and args.format == "csv":  # json and table say so themselves
        print(f"tokentrail report: {TRUNCATED_NOTE}", file=sys.stderr)
    return EXIT_OK


def _install_stop_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGINT and SIGTERM set ``stop``; returns a function restoring the previous handlers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # Python delivers signals to the main thread only; the caller stops us otherwise
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    return restore


def _serve(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    from tokentrail.processor.ingest.receiver import Receiver  # gRPC and protobuf load only for this command
    from tokentrail.processor.pricing.overrides import PricingConfigError

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = stop or threading.Event()
    restore = _install_stop_signals(stop)  # before anything starts: a signal mid-startup still stops cleanly
    data_dir: Path = args.data_dir
    tls_cert = args.tls_cert
    tls_key = args.tls_key
    if (tls_cert is None) != (tls_key is None):
        print("tokentrail serve: --tls-cert and --tls-key go together", file=sys.stderr)
        restore()
        return EXIT_USAGE
    http_port = None if args.no_http else args.http_port
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with _pricing_file(args.pricing):
            receiver = Receiver(
                data_dir,
                host=args.host,
                grpc_port=args.grpc_port,
                receiver_id=args.receiver_id,
                reuse_port=args.reuse_port,
                http_port=http_port,
                ingest_token=args.ingest_token,
                tls_cert=tls_cert,
                tls_key=tls_key,
                max_disk_bytes=args.max_disk_bytes,
                flush_interval=args.flush_interval,
                dedupe_window=args.dedupe_window,
            )
        # Loaded once, before anything listens: a bad file stops the start, and both users see the same budgets.
        budget_config = load_budgets(args.budgets) if args.budgets else None
        api = None if args.no_api else ReportServer(
            data_dir,
            host=args.host,
            port=args.api_port,
            token=args.api_token,
            budgets=budget_config,
            revenue=args.revenue,
        )
        monitor = budgets.attach(receiver, budget_config, data_dir) if budget_config is not None else None
        receiver.start()
        try:
            if api is not None:
                api.start()
            try:
                grpc_port = receiver.grpc_port
                bound_http = receiver.http_port
                http = f", OTLP/HTTP on {args.host}:{bound_http}" if bound_http is not None else ""
                report = f", report API on {api.url}/v1/report" if api is not None else ""
                print(
                    f"tokentrail: receiver {receiver.receiver_id}: OTLP/gRPC on {args.host}:{grpc_port}{http}{report}, "
                    f"data in {data_dir}/ (Ctrl-C to stop)",
                    file=sys.stderr,
                    flush=True,
                )
                while not stop.wait(0.5):  # a timed wait keeps the main thread responsive to signals
                    pass
            finally:
                if api is not None:
                    api.stop()
        finally:
            receiver.stop()  # the receiver finishes what it acknowledged before returning
            if monitor is not None:
                monitor.close()  # after the receiver: the last batches' alerts still go out
    except PricingConfigError as exc:  # a bad overrides file is a usage error, said before anything listens
        print(f"tokentrail serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, RuntimeError, ValueError) as exc:  # a port in use, a receiver id in use, a bad TLS file
        print(f"tokentrail serve: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        restore()
    print("tokentrail: stopped", file=sys.stderr, flush=True)
    return EXIT_OK


@contextlib.contextmanager
def _pricing_file(path: Path | None) -> Iterator[None]:
    """Name the overrides file while the receiver is built: its Pricer reads ``TOKENTRAIL_PRICING`` then, the one
    way in whether the file comes from here or the environment. Restored after, so nothing leaks to later users."""
    if path is None:
        yield
        return
    previous = os.environ.get(PRICING_ENV)
    os.environ[PRICING_ENV] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PRICING_ENV, None)
        else:
            os.environ[PRICING_ENV] = previous


def _demo(argv: list[str]) -> int:
    from tokentrail.processor.demo.run import main as demo_main

    code = demo_main(argv)
    return code if isinstance(code, int) else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
