"""The HTTP API: ``GET /v1/report`` (Vercel AI Gateway's Custom Reporting endpoint), ``/v1/budgets``,
``/v1/margins`` and ``/v1/spikes``, served from the local Parquet dataset, and ``/openapi.json`` describing them.

The handler only translates HTTP: query string in, ``report.py`` (or ``budgets``, ``margins``, ``spikes``)
answers, JSON or CSV out. The standard library's threading server is enough for a report endpoint (each query is
one DuckDB scan) and adds no dependency.

* Auth: with a token (``TOKENTRAIL_API_TOKEN`` for ``tokentrail serve``), every ``/v1/`` endpoint needs
  ``Authorization: Bearer <token>``; missing or wrong is 401 with Vercel's error shape
  ``{"error": {"message": ..., "type": "authentication_error"}}``. ``/healthz`` and ``/openapi.json`` stay open.
  An empty token is refused at construction (it would read as "no auth").
* Host: only names of this server are answered (``ingest.auth.HostCheck``: loopback names when bound to loopback,
  plus ``allowed_hosts``), anything else is 421: a DNS-rebinding page cannot read reports through a browser. Two
  ``Host`` or ``Content-Length`` headers are 400.
* Connections: a listen queue of ``socket.SOMAXCONN`` (bursts of clients wait in it rather than being dropped
  and retried a second later); a client that goes away mid-request or mid-response is logged at debug and
  counted (``ReportServer.dropped_connections``), not a traceback.
* Errors: a bad parameter is 400 ``invalid_request_error`` with a message naming it, and so is a parameter name
  the endpoint does not read (with the closest known name: ``user`` → ``user_id``); an unknown path 404.
* Format: JSON by default; CSV with ``format=csv`` or ``Accept: text/csv`` (``format`` wins). A result cut at the
  row bound carries ``"truncated": true`` in JSON and the ``X-Result-Truncated: true`` header in both formats.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final
from urllib.parse import parse_qs, urlsplit

from tokentrail.processor import environment
from tokentrail.processor.api.openapi import ENDPOINT_PARAMETERS, openapi_document
from tokentrail.processor.errors import TokenTrailError
from tokentrail.processor.ingest.auth import HostCheck
from tokentrail.processor.ingest.listen import ListenError, listen_error
from tokentrail.processor.reports.budgets import (
    BUDGET_COLUMNS,
    BudgetsConfig,
    budgets_body,
    budgets_from_params,
    load_budgets,
)
from tokentrail.processor.reports.errors import ReportError, ReportParameterError
from tokentrail.processor.reports.formatting import exact_json, format_csv, report_json
from tokentrail.processor.reports.margins import MARGIN_COLUMNS, margins_from_params
from tokentrail.processor.reports.params import refuse_unknown, single_param
from tokentrail.processor.reports.query import ReportQuery
from tokentrail.processor.reports.report import Report
from tokentrail.processor.reports.revenue import RevenueConfig, load_revenue
from tokentrail.processor.reports.spikes import SPIKE_COLUMNS, spikes_from_params

__all__ = [
    "API_FORMATS",
    "APIListenError",
    "APITokenError",
    "BUDGETS_PATH",
    "DEFAULT_API_HOST",
    "DEFAULT_API_PORT",
    "MARGINS_PATH",
    "OPENAPI_PATH",
    "REPORT_PATH",
    "SPIKES_PATH",
    "ReportServer",
]

logger = logging.getLogger(__name__)

DEFAULT_API_HOST: Final = "127.0.0.1"
DEFAULT_API_PORT: Final = 8787
REPORT_PATH: Final = "/v1/report"
BUDGETS_PATH: Final = "/v1/budgets"
MARGINS_PATH: Final = "/v1/margins"
SPIKES_PATH: Final = "/v1/spikes"
HEALTH_PATH: Final = "/healthz"
OPENAPI_PATH: Final = "/openapi.json"
API_FORMATS: Final = ("json", "csv")
_MAX_FIELDS: Final = 100  # a report has a dozen parameters; thousands would only be an attack on parse_qs
_JSON: Final = "application/json; charset=utf-8"
_CSV: Final = "text/csv; charset=utf-8"


def _error_body(message: str, kind: str) -> str:
    """OpenAI-style error object, which is what Vercel's gateway answers and what its clients parse."""
    return json.dumps({"error": {"message": message, "type": kind}})


class _NotConfigured(ReportError):
    """The endpoint needs a file the server was not started with (404, with what to pass)."""


@dataclass(frozen=True, slots=True)
class _Answer:
    json_body: str
    rows: Sequence[Mapping[str, object]]
    columns: Sequence[str]
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class _App:
    report: Report
    token: str | None
    budgets: BudgetsConfig | None
    revenue: RevenueConfig | None

    def report_answer(self, params: Mapping[str, list[str]]) -> _Answer:
        query = ReportQuery.from_params(params)
        rows = self.report.run(query)
        return _Answer(report_json(rows), rows, query.columns, rows.truncated)

    def budgets_answer(self, params: Mapping[str, list[str]]) -> _Answer:
        if self.budgets is None:
            raise _NotConfigured("no budgets are configured: start the server with --budgets FILE "
                                 f"(or {environment.BUDGETS})")
        rows, truncated = budgets_from_params(self.report.data_dir, self.budgets, params)
        return _Answer(exact_json(budgets_body(rows, truncated)), rows, BUDGET_COLUMNS, truncated)

    def margins_answer(self, params: Mapping[str, list[str]]) -> _Answer:
        if self.revenue is None:
            raise _NotConfigured("no revenue file is configured: start the server with --revenue FILE "
                                 f"(or {environment.REVENUE})")
        result = margins_from_params(self.report.data_dir, self.revenue, params)
        return _Answer(exact_json(result.body()), result.rows, MARGIN_COLUMNS[result.by], result.truncated)

    def spikes_answer(self, params: Mapping[str, list[str]]) -> _Answer:
        result = spikes_from_params(self.report.data_dir, params)
        return _Answer(exact_json(result.body()), result.rows, SPIKE_COLUMNS, result.truncated)


_ROUTES: Final[Mapping[str, Callable[[_App, Mapping[str, list[str]]], _Answer]]] = {
    REPORT_PATH: _App.report_answer,
    BUDGETS_PATH: _App.budgets_answer,
    MARGINS_PATH: _App.margins_answer,
    SPIKES_PATH: _App.spikes_answer,
}


def response_format(params: Mapping[str, list[str]], accept: str | None) -> str:
    """``format`` if given (json or csv), else CSV when ``Accept`` prefers ``text/csv`` to JSON, else JSON."""
    fmt = single_param(params, "format")
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in API_FORMATS:
            raise ReportParameterError(f"unknown format {fmt!r}; use one of {', '.join(API_FORMATS)}")
        return fmt
    quality: dict[str, float] = {}
    for part in (accept or "").split(","):
        media, *options = [p.strip() for p in part.split(";")]
        q = 1.0
        for option in options:
            name, _, value = option.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[media.lower()] = max(q, quality.get(media.lower(), 0.0))
    csv_q = quality.get("text/csv", 0.0)
    json_q = quality.get("application/json", 0.0)
    wildcard_q = max(quality.get("*/*", 0.0), quality.get("application/*", 0.0), quality.get("text/*", 0.0))
    # CSV only when asked for by name and not beaten: JSON wins a tie with itself, CSV a tie with a wildcard.
    return "csv" if csv_q > 0 and csv_q > json_q and csv_q >= wildcard_q else "json"


class APITokenError(TokenTrailError, ValueError):
    """An empty or blank token: refused, since it would silently mean "no auth"."""


# The report API's listen failure: the receiver's (``ingest.listen``), one line naming the address and --api-port.
APIListenError = ListenError


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never blocks stop()
    request_queue_size = socket.SOMAXCONN  # the listen backlog (the kernel caps it at net.core.somaxconn)

    def __init__(self, address: tuple[str, int], app: _App, host_check: HostCheck) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.host_check = host_check
        self.dropped = 0
        self._dropped_lock = threading.Lock()
        self.openapi = json.dumps(openapi_document(), indent=1)
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that left (reset, closed before our answer) is its business: debug, counted. Anything else
        is ours: logged with its traceback (the stdlib prints it to stderr, around the log)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            with self._dropped_lock:
                self.dropped += 1
            logger.debug("report API client %s went away: %r", client_address, exc)
        else:
            logger.exception("report API connection from %s failed", client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive for clients that poll; every response sets Content-Length
    server_version = "tokentrail"
    timeout = 30  # seconds a connection may sit idle: a stuck client must not hold a thread forever

    def version_string(self) -> str:
        return self.server_version  # the stdlib adds Python's version: a gift to whoever scans for old ones

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self._refused():
            return
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        if path == HEALTH_PATH:
            self._send(HTTPStatus.OK, json.dumps({"status": "ok"}))
        elif path == OPENAPI_PATH:
            self._send(HTTPStatus.OK, self.server.openapi)
        elif path in _ROUTES:
            if not self._authorized():
                self._send(
                    HTTPStatus.UNAUTHORIZED,
                    _error_body("missing or wrong bearer token", "authentication_error"),
                    {"WWW-Authenticate": 'Bearer realm="tokentrail"'},
                )
                return
            self._answer(path, url.query)
        else:
            self._send(HTTPStatus.NOT_FOUND, _error_body(f"no such endpoint: {url.path}", "not_found_error"))

    def _answer(self, path: str, query_string: str) -> None:
        try:
            params = parse_qs(query_string, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
            refuse_unknown(params, ENDPOINT_PARAMETERS[path])  # first, so format's misspellings are caught too
            fmt = response_format(params, self.headers.get("Accept"))
            params.pop("format", None)  # the server's, not the endpoint's: each endpoint refuses names it does not read
            answer = _ROUTES[path](self.server.app, params)
        except ReportParameterError as exc:
            self._send(HTTPStatus.BAD_REQUEST, _error_body(exc.message, "invalid_request_error"))
        except _NotConfigured as exc:
            self._send(HTTPStatus.NOT_FOUND, _error_body(str(exc), "not_found_error"))
        except ValueError as exc:  # parse_qs: too many fields
            self._send(HTTPStatus.BAD_REQUEST, _error_body(str(exc), "invalid_request_error"))
        except Exception:
            logger.exception("%s failed for %r", self.path.split("?")[0], query_string)
            self._send(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                _error_body("the query failed; the server log has the details", "api_error"),
            )
        else:
            headers = {"X-Result-Truncated": "true"} if answer.truncated else {}
            if fmt == "csv":
                self._send(HTTPStatus.OK, format_csv(answer.rows, answer.columns).rstrip("\n"), headers, _CSV)
            else:
                self._send(HTTPStatus.OK, answer.json_body, headers)

    def _refused(self) -> bool:
        """A request no route may see: two ``Host`` or ``Content-Length`` headers (read two ways by two parsers:
        request smuggling through a proxy) are 400, a ``Host`` that is not this server's 421."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1 or len(self.headers.get_all("Content-Length") or []) > 1:
            self.close_connection = True
            what = "Host" if len(hosts) > 1 else "Content-Length"
            self._send(HTTPStatus.BAD_REQUEST, _error_body(f"more than one {what} header", "invalid_request_error"))
            return True
        if not self.server.host_check.permits(hosts[0] if hosts else None):
            self.close_connection = True
            body = _error_body(self.server.host_check.refusal(hosts[0]), "invalid_request_error")
            self._send(HTTPStatus.MISDIRECTED_REQUEST, body)
            return True
        return False

    def _authorized(self) -> bool:
        token = self.server.app.token
        if token is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())

    def _not_allowed(self) -> None:
        if self._refused():
            return
        body = _error_body("only GET is supported", "invalid_request_error")
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, body, {"Allow": "GET"})

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed  # noqa: N815

    def _send(
        self, status: HTTPStatus, body: str, headers: Mapping[str, str] | None = None, content_type: str = _JSON
    ) -> None:
        data = (body + "\n").encode("utf-8")  # the same bytes `tokentrail report --format json` prints
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature from http.server)
        logger.debug("%s " + format, self.address_string(), *args)


class ReportServer:
    """The HTTP API on its own thread. ``port=0`` picks a free port; read ``port`` after ``start()``.

    ``token``: when set, every ``/v1/`` endpoint requires ``Authorization: Bearer <token>`` (``/healthz`` and
    ``/openapi.json`` stay open); an empty one is a ``ValueError``. Bind to a non-loopback host only with a token
    or behind a proxy that authenticates. ``allowed_hosts``: ``Host`` names answered besides this address's own
    (``ingest.auth.HostCheck``; ``*`` for any). ``budgets`` and ``revenue`` (a file path or a loaded config) enable ``/v1/budgets`` and
    ``/v1/margins``; they are read here, so a bad file stops the server from starting, not a request later.
    ``start()`` raises ``APIListenError`` (an ``OSError``) naming the address when it cannot listen there.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        host: str = DEFAULT_API_HOST,
        port: int = DEFAULT_API_PORT,
        *,
        token: str | None = None,
        budgets: BudgetsConfig | str | os.PathLike[str] | None = None,
        revenue: RevenueConfig | str | os.PathLike[str] | None = None,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        if token is not None and not token.strip():
            raise APITokenError("the report API token is empty: give a real one, or none for no auth")
        self._host_check = HostCheck(host, allowed_hosts, token=token is not None)
        self._app = _App(
            report=Report(data_dir),
            token=token,
            budgets=load_budgets(budgets) if budgets is not None else None,
            revenue=load_revenue(revenue) if revenue is not None else None,
        )
        self._host = host
        self._port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port once started (the real one when asked for 0), else the configured one."""
        if self._httpd is not None:
            return int(self._httpd.server_address[1])
        return self._port

    @property
    def dropped_connections(self) -> int:
        """Connections the clients reset or closed before their answer was written, since ``start()``."""
        return self._httpd.dropped if self._httpd is not None else 0

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._httpd is not None:
            raise RuntimeError("ReportServer already started")
        try:
            self._httpd = _HTTPServer((self._host, self._port), self._app, self._host_check)
        except OSError as exc:
            raise listen_error("the report API", self._host, self._port, exc) from None
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="tokentrail-report-api", daemon=True
        )
        self._thread.start()
        logger.info("report API listening on %s%s", self.url, REPORT_PATH)

    def stop(self) -> None:
        """Stop accepting, close the socket, wait for the serving thread. Safe to call twice."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ReportServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
