"""``tokentrail doctor``: checks a deployment end to end and says what to fix, one line per check (OK, WARN, FAIL;
SKIP when a check cannot be made), exit 1 when any check FAILs.

The receiver check is made here: its facts are the status files ``tokentrail status`` reads (``cli.status``) and a
TCP connect to the gRPC port they name, and ``ingest`` is above the reports' floor. Every other check reads the
dataset, the filesystem or the catalog (``reports.health``).
"""

from __future__ import annotations

import argparse
import math
import socket
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from tokentrail.processor import environment
from tokentrail.processor.cli.status import STALE_SECONDS, collect_status
from tokentrail.processor.ingest.status import StatusReadError

if TYPE_CHECKING:
    from tokentrail.processor.reports.health import Check, UsageFacts

__all__ = ["receiver_check", "register"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
CONNECT_TIMEOUT: Final = 2.0  # seconds: a listening port on a reachable host answers far sooner
_ANY_ADDRESS: Final = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # a wildcard bind is reached locally


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _percent(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole percentage: {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"a percentage is 0 to 100: {text!r}")
    return value


def register(commands: Any, default_data_dir: Path) -> None:
    parser = commands.add_parser(
        "doctor",
        help="check a deployment end to end and say what to fix",
        description="One line per check (receiver, services, unpriced and no-usage calls, BYOK share, clock skew, "
        "disk, catalog age), with the fix for anything not OK. Exit 1 when any check FAILs.",
    )
    parser.add_argument("--data-dir", type=Path, default=default_data_dir, help=f"(env {environment.DATA_DIR})")
    parser.add_argument("--hours", type=_positive, default=24, help="the window judged, in hours (default 24)")
    parser.add_argument("--lookback-days", type=_positive, default=7,
                        help="services that sent within this many days and not in the window stopped (default 7)")
    parser.add_argument("--min-free-percent", type=_percent, default=10,
                        help="warn when the data dir's filesystem has less free space (default 10)")
    parser.add_argument("--catalog-max-age-days", type=_positive, default=60,
                        help="warn when the price catalog in use is older (default 60)")
    parser.add_argument("--no-connect", action="store_true",
                        help="do not try a TCP connect to the receivers' gRPC ports")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    # The checks load the price catalog (genai-prices) and DuckDB: only for this command, not for `tokentrail --help`.
    from tokentrail.processor.reports import health
    from tokentrail.processor.reports.formatting import exact_json

    now = datetime.now(UTC)
    window = health.Window(now, args.hours, args.lookback_days)
    dataset = health.dataset_check(args.data_dir)
    facts = health.usage_facts(args.data_dir, window) if dataset.status != health.FAIL else None
    pricer, overrides_error = health.load_pricer()
    checks = [dataset, receiver_check(args.data_dir, now, facts, connect=not args.no_connect)]
    if facts is None:
        checks += [health.skipped(name, "no dataset") for name in ("services", "unpriced", "no_usage", "byok", "clock")]
    else:
        checks += [
            health.services_check(facts, window),
            health.unpriced_check(facts, window, pricer),
            health.no_usage_check(facts, window),
            health.byok_check(facts, window),
            health.clock_check(facts, window),
        ]
    checks += [
        health.disk_check(args.data_dir, args.min_free_percent),
        health.catalog_check(facts, now, args.catalog_max_age_days, overrides_error),
    ]
    overall = health.worst(checks)
    if args.format == "json":
        print(exact_json({
            "data_dir": str(args.data_dir), "as_of": now, "hours": args.hours, "status": overall,
            "checks": [c.to_dict() for c in checks],
        }))
    else:
        print(f"tokentrail doctor: {args.data_dir}, the {args.hours} h to {now:%Y-%m-%d %H:%M} UTC")
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"{c.status:<5} {c.name:<{width}}  {c.summary}")
            if c.fix:
                print(textwrap.fill(f"fix: {c.fix}", width=118, initial_indent=" " * (width + 8),
                                    subsequent_indent=" " * (width + 13)))
        counts = {s: sum(c.status == s for c in checks) for s in (health.FAIL, health.WARN, health.OK, health.SKIP)}
        print(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return EXIT_FAILURE if overall == health.FAIL else EXIT_OK


def _connect(host: str, port: int) -> str | None:
    """None when ``host:port`` accepts a TCP connection, else why not."""
    try:
        with socket.create_connection((_ANY_ADDRESS.get(host, host), port), timeout=CONNECT_TIMEOUT):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def _count(metrics: object, name: str) -> int:
    value = metrics.get(name, 0) if isinstance(metrics, dict) else 0
    return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0


def receiver_check(data_dir: Path, now: datetime, facts: UsageFacts | None, *, connect: bool) -> Check:
    """Whether a receiver runs for this data dir (its status file is fresh and its process alive), answers on its
    gRPC port, and receives: spans counted, none refused."""
    from tokentrail.processor.reports.health import FAIL, OK, WARN, Check  # loaded with the checks, in _doctor

    serve = f"`tokentrail serve --data-dir {data_dir}`"
    if not data_dir.is_dir():  # (status files are read only from a directory: a file there is no receiver's)
        return Check("receiver", FAIL, f"no receiver has run on this data dir ({data_dir} is not a directory)",
                     f"start {serve}, or point --data-dir at the directory your receiver writes")
    try:
        receivers = collect_status(data_dir)["receivers"]
    except StatusReadError as exc:  # a file where the status or WAL folder should be
        return Check("receiver", FAIL, str(exc), f"move it away, then start {serve}")
    newest = facts.newest if facts is not None else None
    stored = f"newest stored call {newest:%Y-%m-%d %H:%M} UTC" if newest is not None else "no call stored recently"
    details: dict[str, Any] = {"receivers": [], "newest_call": newest}
    for r in receivers:
        m = r.get("metrics", {})
        details["receivers"].append({
            "receiver_id": r.get("receiver_id"), "state": r.get("state"), "host": r.get("host"),
            "grpc_port": r.get("grpc_port"), "updated_at": _moment(r.get("updated_at")),
            **{k: _count(m, k) for k in ("spans_received", "spans_accepted", "requests_unauthenticated",
                                         "requests_unavailable", "flush_errors")},
        })
    if not receivers:
        return Check("receiver", FAIL, f"no receiver has run on this data dir (no status file in {data_dir / 'status'})",
                     f"start {serve}, or point --data-dir at the directory your receiver writes", details)
    running = [r for r in receivers if r["state"] == "running"]
    if not running:
        last = max((r for r in receivers), key=lambda r: r.get("updated_at") or 0)
        when = _moment(last.get("updated_at"))
        said = f"{when:%Y-%m-%d %H:%M} UTC, {int((now - when).total_seconds()) // 60} min ago" if when else "unknown"
        return Check(
            "receiver", FAIL,
            f"no receiver running: {', '.join(str(r.get('receiver_id')) for r in receivers)} stopped (newest status "
            f"{said}); {stored}",
            f"start {serve}. A running receiver refreshes its status file every few seconds: one older than "
            f"{STALE_SECONDS:.0f} s, or whose process is gone, is stopped", details)
    problems: list[str] = []
    fixes: list[str] = []
    lines: list[str] = []
    for r in running:
        rid, host, port, m = r.get("receiver_id"), str(r.get("host") or ""), r.get("grpc_port"), r.get("metrics", {})
        where = f"{host}:{port}"
        if connect and isinstance(port, int):
            refused = _connect(host, port)
            if refused is not None:
                problems.append(f"{rid}: cannot connect to gRPC {where} from here ({refused})")
                fixes.append(f"check that {where} is reachable from where the Collector runs (firewall, --host "
                             "0.0.0.0 to listen beyond loopback)")
        received = _count(m, "spans_received")
        lines.append(f"{rid} on {where}, {received} span(s) received")
        other = _count(m, "metric_points_ignored") + _count(m, "log_records_ignored")
        if not received and other:
            problems.append(f"{rid} has received metrics or logs ({other}) but no span since it started")
            fixes.append(f"send traces to {where} too: TokenTrail bills from spans (a traces pipeline in the "
                         "Collector, see otel-collector.yaml)")
        elif not received:
            problems.append(f"{rid} has received no span since it started")
            fixes.append(f"point the Collector's OTLP exporter (or the services' OTEL_EXPORTER_OTLP_ENDPOINT) at "
                         f"{where} (see otel-collector.yaml)")
        if _count(m, "requests_unauthenticated"):
            problems.append(f"{rid} refused {_count(m, 'requests_unauthenticated')} request(s) without the right token")
            fixes.append(f"give the Collector's exporter the bearer token the receiver expects "
                         f"({environment.INGEST_TOKEN})")
        if _count(m, "requests_unavailable"):
            problems.append(f"{rid} refused {_count(m, 'requests_unavailable')} request(s) retryably (disk full, "
                            "backlog)")
            fixes.append("see the disk check and the receiver's log")
        if _count(m, "flush_errors"):
            problems.append(f"{rid} failed {_count(m, 'flush_errors')} flush(es) to Parquet")
            fixes.append("read the receiver's log (the WAL keeps the records and the flush is retried)")
    summary = "; ".join(lines) + f"; {stored}"
    if problems:
        return Check("receiver", WARN, summary + "; " + "; ".join(problems), "; ".join(dict.fromkeys(fixes)), details)
    return Check("receiver", OK, summary, details=details)


def _moment(epoch: object) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if isinstance(epoch, (int, float)) and math.isfinite(epoch) else None

