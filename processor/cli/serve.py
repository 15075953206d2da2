"""``tokentrail serve``: the OTLP receiver (gRPC and HTTP) and the report API in one process, until SIGINT or
SIGTERM; budget alerts as records land, and spike alerts every few minutes, when given a budgets file."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Final
from urllib.parse import urlsplit

from tokentrail.processor import environment
from tokentrail.processor.api.dashboard import TraceUrlError, check_trace_url
from tokentrail.processor.api.http import DEFAULT_API_HOST, DEFAULT_API_PORT, ReportServer
from tokentrail.processor.ingest.admission import DEFAULT_MAX_EXPORTS, DEFAULT_MAX_INFLIGHT_BYTES
from tokentrail.processor.ingest.asgi_server import DEFAULT_LIMITS, HttpLimits
from tokentrail.processor.ingest.auth import is_loopback, parse_allowed_hosts
from tokentrail.processor.normalize.limits import LimitsError, load_call_limits
from tokentrail.processor.reports import budgets
from tokentrail.processor.reports.budgets import load_budgets
from tokentrail.processor.storage.dedupe import DEFAULT_WINDOW

__all__ = ["DEFAULT_GRPC_PORT", "DEFAULT_HTTP_PORT", "DEFAULT_MAX_MESSAGE_BYTES", "register", "run"]

# Not 4317: the OTel Collector owns the standard OTLP port and forwards GenAI spans here (otel-collector.yaml).
DEFAULT_GRPC_PORT: Final = 14317
DEFAULT_HTTP_PORT: Final = 14318  # likewise not 4318
# ``ingest.receiver.DEFAULT_MAX_MESSAGE_BYTES`` (a test keeps them equal): importing it would load gRPC for --help.
DEFAULT_MAX_MESSAGE_BYTES: Final = 64 << 20
GRPC_MAX_MESSAGE_BYTES: Final = (1 << 31) - 1  # gRPC's message length limits are C ints

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2


logger = logging.getLogger(__name__)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def register(commands: Any, default_data_dir: Path) -> None:
    serve = commands.add_parser("serve", help="run the OTLP receiver and the report API until interrupted")
    serve.add_argument("--data-dir", type=Path, default=default_data_dir, help=f"(env {environment.DATA_DIR})")
    serve.add_argument(
        "--host", default=DEFAULT_API_HOST, help="address every listener binds to (OTLP gRPC and HTTP, report API)"
    )
    serve.add_argument(
        "--grpc-port",
        type=_port,
        default=DEFAULT_GRPC_PORT,
        help="OTLP/gRPC receiver port (traces; metrics and logs are acknowledged, counted and dropped)",
    )
    serve.add_argument(
        "--api-port",
        type=_port,
        default=DEFAULT_API_PORT,
        help="report API port (GET /v1/report, /v1/budgets, /v1/margins, /v1/spikes, /openapi.json, /healthz)",
    )
    serve.add_argument(
        "--api-token",
        default=os.environ.get(environment.API_TOKEN),  # set but empty is refused in run(), never "no auth"
        help=f"require 'Authorization: Bearer TOKEN' on the report API's /v1/ endpoints (env {environment.API_TOKEN})",
    )
    serve.add_argument(
        "--http-port",
        type=_port,
        default=DEFAULT_HTTP_PORT,
        help="OTLP/HTTP receiver port (POST /v1/traces, /v1/metrics, /v1/logs; GET /metrics); 0 picks a free port",
    )
    serve.add_argument("--no-http", action="store_true", help="do not listen for OTLP/HTTP (nor serve GET /metrics)")
    serve.add_argument(
        "--ingest-token",
        default=os.environ.get(environment.INGEST_TOKEN),
        help=f"require 'authorization: Bearer TOKEN' on OTLP gRPC and HTTP, GET /metrics included "
        f"(env {environment.INGEST_TOKEN})",
    )
    serve.add_argument(
        "--allowed-hosts",
        default=os.environ.get(environment.ALLOWED_HOSTS),
        help="comma-separated Host names the report API and OTLP/HTTP answer besides this address's own (loopback "
        "names, IP addresses when --host is not loopback); others get 421 (DNS rebinding); '*' allows any "
        f"(env {environment.ALLOWED_HOSTS})",
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
        help="SO_REUSEPORT: several `tokentrail serve` processes (each with its own --receiver-id) share the OTLP ports "
        "(not the report API's: --no-api on all but one)",
    )
    serve.add_argument(
        "--max-disk-bytes",
        type=int,
        help="refuse new records (UNAVAILABLE / 503, the sender retries) once WAL + Parquet would exceed this",
    )
    serve.add_argument(
        "--max-message-bytes",
        metavar="BYTES",
        default=os.environ.get(environment.MAX_MESSAGE_BYTES),
        help=f"largest OTLP Export accepted, gRPC message or HTTP body; a larger one is refused (RESOURCE_EXHAUSTED "
        f"/ 413) (default {DEFAULT_MAX_MESSAGE_BYTES}: 64 MiB; env {environment.MAX_MESSAGE_BYTES})",
    )
    serve.add_argument(
        "--max-concurrent-exports",
        metavar="N",
        default=os.environ.get(environment.MAX_CONCURRENT_EXPORTS),
        help="OTLP Exports taken on at once, gRPC and HTTP together; past it an Export is refused at once, "
        "UNAVAILABLE / 503 with a retry delay, and the sender retries it "
        f"(default {DEFAULT_MAX_EXPORTS}; env {environment.MAX_CONCURRENT_EXPORTS})",
    )
    serve.add_argument(
        "--max-inflight-bytes",
        metavar="BYTES",
        default=os.environ.get(environment.MAX_INFLIGHT_BYTES),
        help="bytes of OTLP Exports held at once, gRPC and HTTP together; past it refused like "
        "--max-concurrent-exports (one Export alone always gets in) "
        f"(default {DEFAULT_MAX_INFLIGHT_BYTES}: 256 MiB; env {environment.MAX_INFLIGHT_BYTES})",
    )
    serve.add_argument(
        "--http-idle-timeout",
        metavar="SECONDS",
        default=os.environ.get(environment.HTTP_IDLE_TIMEOUT),
        help="seconds an HTTP connection (OTLP/HTTP, report API) may go without a complete request before it is "
        f"closed (default {DEFAULT_LIMITS.idle_timeout:g}; env {environment.HTTP_IDLE_TIMEOUT})",
    )
    serve.add_argument(
        "--http-read-timeout",
        metavar="SECONDS",
        default=os.environ.get(environment.HTTP_READ_TIMEOUT),
        help="seconds an HTTP connection may send nothing at all, even while its request is answered, before it is "
        "closed (what the idle timeout misses, e.g. a plaintext HTTP/2 preface); keep it above the slowest report "
        f"query (default {DEFAULT_LIMITS.read_timeout:g}; env {environment.HTTP_READ_TIMEOUT})",
    )
    serve.add_argument("--no-api", action="store_true", help="do not serve the report API (e.g. extra receivers)")
    serve.add_argument(
        "--budgets",
        type=Path,
        default=os.environ.get(environment.BUDGETS) or None,
        help=f"budgets TOML: threshold alerts as records land, spike alerts ([spikes]), GET /v1/budgets "
        f"(env {environment.BUDGETS})",
    )
    serve.add_argument(
        "--dashboard-url",
        metavar="URL",
        default=os.environ.get(environment.DASHBOARD_URL) or None,
        help="where people open the dashboard (e.g. https://tokentrail.example behind a proxy), for the links in "
        f"Slack alerts (default: the report API's own URL; env {environment.DASHBOARD_URL})",
    )
    serve.add_argument(
        "--revenue",
        type=Path,
        default=os.environ.get(environment.REVENUE) or None,
        help=f"revenue TOML for GET /v1/margins (env {environment.REVENUE})",
    )
    serve.add_argument(
        "--trace-url",
        metavar="TEMPLATE",
        default=os.environ.get(environment.TRACE_URL) or None,
        help="the dashboard's link from a call to its trace in your tracing backend, {trace_id} where the id goes, "
        f"e.g. 'https://tempo.example/trace/{{trace_id}}' (env {environment.TRACE_URL})",
    )
    serve.add_argument(
        "--pricing",
        type=Path,
        default=None,
        help=f"price overrides TOML (env {environment.PRICING}); validated at start, a bad file stops the receiver",
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
    serve.set_defaults(handler=run)


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


def _setup_problem(args: argparse.Namespace) -> str | None:
    """What makes this start unsafe, in one line: an empty token (it would read as "no auth"), or a report API
    beyond loopback that anyone reaching it could read."""
    for option, value, variable in (
        ("--api-token", args.api_token, environment.API_TOKEN),
        ("--ingest-token", args.ingest_token, environment.INGEST_TOKEN),
    ):
        if value is not None and not value.strip():
            return (f"{option} is empty (an empty {variable} counts): that would turn auth off; give a real token, "
                    "or unset it for none")
    if not args.no_api and not is_loopback(args.host) and args.api_token is None and not getattr(
        args, "allowed_hosts", None
    ):
        return (f"the report API on {args.host} would answer anyone who reaches it: set --api-token (env "
                f"{environment.API_TOKEN}), or behind a proxy that authenticates name it with --allowed-hosts (env "
                f"{environment.ALLOWED_HOSTS}), or --no-api")
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class _IngestBounds:
    """What ``--max-message-bytes``, ``--max-concurrent-exports``, ``--max-inflight-bytes``,
    ``--http-idle-timeout`` and ``--http-read-timeout`` (or their variables) ask for, checked."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_concurrent_exports: int = DEFAULT_MAX_EXPORTS
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES
    http_limits: HttpLimits = DEFAULT_LIMITS


class _BadValue(ValueError):
    """A bound's option or variable that cannot be used: its message is the one line ``serve`` prints."""


def _whole(text: str | None, option: str, variable: str, default: int, most: int | None = None) -> int:
    if text is None or not text.strip():  # unset, or set empty: the default (as every TOKENTRAIL_ limit reads)
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or (most is not None and value > most):
        bound = f"1 to {most}" if most is not None else "1 or more"
        raise _BadValue(f"{option} (env {variable}) must be a whole number {bound}, got {text!r}")
    return value


def _seconds(text: str | None, option: str, variable: str, default: float) -> float:
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise _BadValue(f"{option} (env {variable}) must be a number of seconds above 0, got {text!r}")
    return value


def _ingest_bounds(args: argparse.Namespace) -> _IngestBounds:
    """The bounds the options (or their variables) give; a bad one is ``_BadValue``, one line naming the option."""
    return _IngestBounds(
        max_message_bytes=_whole(
            args.max_message_bytes, "--max-message-bytes", environment.MAX_MESSAGE_BYTES, DEFAULT_MAX_MESSAGE_BYTES,
            most=GRPC_MAX_MESSAGE_BYTES,
        ),
        max_concurrent_exports=_whole(
            args.max_concurrent_exports, "--max-concurrent-exports", environment.MAX_CONCURRENT_EXPORTS,
            DEFAULT_MAX_EXPORTS,
        ),
        max_inflight_bytes=_whole(
            args.max_inflight_bytes, "--max-inflight-bytes", environment.MAX_INFLIGHT_BYTES, DEFAULT_MAX_INFLIGHT_BYTES
        ),
        http_limits=dataclasses.replace(
            DEFAULT_LIMITS,
            idle_timeout=_seconds(
                args.http_idle_timeout, "--http-idle-timeout", environment.HTTP_IDLE_TIMEOUT,
                DEFAULT_LIMITS.idle_timeout,
            ),
            read_timeout=_seconds(
                args.http_read_timeout, "--http-read-timeout", environment.HTTP_READ_TIMEOUT,
                DEFAULT_LIMITS.read_timeout,
            ),
        ),
    )


def _dashboard_problem(url: str | None) -> str | None:
    """Checked before anything listens: a link that cannot be opened would reach people only in their first alert."""
    if url is None or (urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc):
        return None
    return f"--dashboard-url (env {environment.DASHBOARD_URL}) must be an http:// or https:// URL, got {url!r}"


def _dashboard_url(
    url: str | None, api: ReportServer | None, config: budgets.BudgetsConfig | None
) -> Callable[[], str | None]:
    """The base of the dashboard links in Slack alerts, asked at each delivery: ``--dashboard-url``, else the report
    API's URL once its port is known. None (no link) without an API, or when it listens on every address: 0.0.0.0
    is no address to open from elsewhere, and a link to it would be false."""
    if url is not None:
        return lambda: url
    if api is None:
        return lambda: None
    try:
        anywhere = ipaddress.ip_address(api.host.strip("[]")).is_unspecified
    except ValueError:
        anywhere = api.host == ""
    if anywhere:
        slack = config is not None and any(
            hook.format == "slack"
            for hooks in ([b.webhooks for b in config.budgets] + ([config.spikes.webhooks] if config.spikes else []))
            for hook in hooks
        )
        if slack:
            logger.info("Slack alerts carry no dashboard link: the report API listens on %s; set --dashboard-url "
                        "(env %s) to where people open it", api.host, environment.DASHBOARD_URL)
        return lambda: None
    return lambda: api.url if api.port else None


def run(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    # gRPC, protobuf and the price catalog load only for this command: the other commands start without them.
    from tokentrail.processor.ingest.receiver import Receiver
    from tokentrail.processor.pricing.catalog import Pricer
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
    problem = _setup_problem(args)
    if problem is not None:
        print(f"tokentrail serve: {problem}", file=sys.stderr)
        restore()
        return EXIT_USAGE
    try:
        bounds = _ingest_bounds(args)
    except _BadValue as exc:
        print(f"tokentrail serve: {exc}", file=sys.stderr)
        restore()
        return EXIT_USAGE
    try:
        trace_url = check_trace_url(args.trace_url) if getattr(args, "trace_url", None) else None
    except TraceUrlError as exc:
        print(f"tokentrail serve: {exc}", file=sys.stderr)
        restore()
        return EXIT_USAGE
    dashboard_problem = _dashboard_problem(getattr(args, "dashboard_url", None))
    if dashboard_problem is not None:
        print(f"tokentrail serve: {dashboard_problem}", file=sys.stderr)
        restore()
        return EXIT_USAGE
    allowed_hosts = parse_allowed_hosts(getattr(args, "allowed_hosts", None))
    http_port = None if args.no_http else args.http_port
    try:
        # TOKENTRAIL_MAX_{INPUT,OUTPUT}_TOKENS_PER_CALL, read once before anything listens: a bad value stops the start.
        load_call_limits()
        data_dir.mkdir(parents=True, exist_ok=True)
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
            allowed_hosts=allowed_hosts,
            max_message_bytes=bounds.max_message_bytes,
            max_concurrent_exports=bounds.max_concurrent_exports,
            max_inflight_bytes=bounds.max_inflight_bytes,
            http_limits=bounds.http_limits,
            # --pricing wins over TOKENTRAIL_PRICING, which the Pricer reads when no file is named here.
            pricer=Pricer(overrides=args.pricing) if args.pricing is not None else None,
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
            allowed_hosts=allowed_hosts,
            limits=bounds.http_limits,
            trace_url=trace_url,
        )
        dashboard = _dashboard_url(getattr(args, "dashboard_url", None), api, budget_config)
        monitor = budgets.attach(receiver, budget_config, data_dir, dashboard_url=dashboard) \
            if budget_config is not None else None
        receiver.start()
        spike_monitor = None
        try:
            # Reads Parquet on a thread of its own, every interval_seconds: never on the ingest path.
            spike_monitor = budgets.start_spike_alerts(budget_config, data_dir, dashboard_url=dashboard) \
                if budget_config is not None else None
            if api is not None:
                api.start()
            try:
                grpc_port = receiver.grpc_port
                bound_http = receiver.http_port
                http = f", OTLP/HTTP on {args.host}:{bound_http}" if bound_http is not None else ""
                report = f", report API on {api.url}/v1/report, dashboard on {api.url}/" if api is not None else ""
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
            if spike_monitor is not None:
                spike_monitor.close()
    except PricingConfigError as exc:  # a bad overrides file is a usage error, said before anything listens
        print(f"tokentrail serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LimitsError as exc:
        print(f"tokentrail serve: {exc}", file=sys.stderr)
        restore()
        return EXIT_USAGE
    except (OSError, RuntimeError, ValueError) as exc:  # a port in use, a receiver id in use, a bad TLS file
        print(f"tokentrail serve: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        restore()
    print("tokentrail: stopped", file=sys.stderr, flush=True)
    return EXIT_OK
