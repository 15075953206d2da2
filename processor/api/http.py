"""The HTTP API: ``GET /v1/report`` (Vercel AI Gateway's Custom Reporting endpoint), ``/v1/requests`` (the calls
behind a number), ``/v1/budgets``, ``/v1/margins`` and ``/v1/spikes``, served from the local Parquet dataset,
``/openapi.json`` describing them, and the dashboard at ``/`` (``api.dashboard``: static files that read these).

The endpoints only translate HTTP: query string in, ``report.py`` (or ``requests``, ``budgets``, ``margins``,
``spikes``) answers, JSON or CSV out. They are a Starlette app (routes, ``Request``, ``Response``) served by
``ingest.asgi_server.AsgiServer`` (Hypercorn on an event loop of its own). The standard library's threading server
it replaces spent a thread on every open connection, idle or slowloris ones included, and ran as many DuckDB scans
at once as clients asked for: a flood grew threads, memory and latency without bound.

* Queries: DuckDB blocks, so every query (and its JSON or CSV) runs in ``QueryPool``, ``max_concurrent_queries``
  threads, never on the event loop. Up to ``max_queued_queries`` more wait for a thread; past that a request is
  answered at once 503 with ``Retry-After: 1`` and ``{"error": {..., "type": "overloaded_error"}}`` (the shape
  of every error here; the type is the name Anthropic's API gives "busy, retry shortly"), so a flood costs bounded
  threads and memory and every client hears back promptly. A waiting query whose client left is dropped unrun.
* Connections: Hypercorn (``AsgiServer``, ``HttpLimits``) holds them on the event loop, with no thread each, closes
  one that sends no complete request head within ``idle_timeout`` (idle and slowloris alike), and listens with a
  backlog of ``SOMAXCONN``. A client that goes away while its query runs or its answer is written is logged at debug
  and counted (``ReportServer.dropped_connections``), not a traceback; one that leaves before its request head is
  complete never reaches the app and is Hypercorn's to close.
* Auth: with a token (``TOKENTRAIL_API_TOKEN`` for ``tokentrail serve``), every ``/v1/`` endpoint needs
  ``Authorization: Bearer <token>``; missing or wrong is 401 with Vercel's error shape
  ``{"error": {"message": ..., "type": "authentication_error"}}``. ``/healthz`` and ``/openapi.json`` stay open.
  An empty token is refused at construction (it would read as "no auth").
* Host: only names of this server are answered (``ingest.auth.HostCheck``: loopback names when bound to loopback,
  plus ``allowed_hosts``), anything else is 421: a DNS-rebinding page cannot read reports through a browser. Two
  ``Host`` or ``Content-Length`` headers are 400 (h11 refuses them before the app; the app checks again), and so are
  ``Content-Length`` and ``Transfer-Encoding`` together (h11 reads the body as chunked; the app refuses); the rule is
  ``ingest.auth.framing_problem``, shared with OTLP/HTTP.
* Errors: a bad parameter is 400 ``invalid_request_error`` with a message naming it, and so is a parameter name
  the endpoint does not read (with the closest known name: ``user`` → ``user_id``); an unknown path 404; a method
  other than GET 405 (``Allow: GET``); a bug 500 ``api_error``, its traceback in the log.
* Format: JSON by default; CSV with ``format=csv`` or ``Accept: text/csv`` (``format`` wins). A result cut at the
  row bound carries ``"truncated": true`` in JSON and the ``X-Result-Truncated: true`` header in both formats. A
  body is the bytes ``tokentrail report`` prints, plus a newline; every answer is ``Cache-Control: no-store`` and
  ``Server: tokentrail`` (no versions for a scanner to match).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tokentrail.processor import environment
from tokentrail.processor.api.dashboard import dashboard_routes
from tokentrail.processor.api.openapi import ENDPOINT_PARAMETERS, openapi_document
from tokentrail.processor.errors import TokenTrailError
from tokentrail.processor.ingest.asgi_server import DEFAULT_LIMITS, AsgiServer, HttpLimits
from tokentrail.processor.ingest.auth import HostCheck, bearer_matches, framing_problem
from tokentrail.processor.ingest.listen import ListenError
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
from tokentrail.processor.reports.requests import REQUEST_COLUMNS, requests_from_params, requests_json
from tokentrail.processor.reports.revenue import RevenueConfig, load_revenue
from tokentrail.processor.reports.spikes import SPIKE_COLUMNS, spikes_from_params

__all__ = [
    "API_FORMATS",
    "BUDGETS_PATH",
    "BUSY_ERROR_TYPE",
    "DEFAULT_API_HOST",
    "DEFAULT_API_PORT",
    "DEFAULT_MAX_CONCURRENT_QUERIES",
    "DEFAULT_MAX_QUEUED_QUERIES",
    "HEALTH_PATH",
    "MARGINS_PATH",
    "OPENAPI_PATH",
    "REPORT_PATH",
    "REQUESTS_PATH",
    "RETRY_AFTER_SECONDS",
    "SPIKES_PATH",
    "APIListenError",
    "APITokenError",
    "QueryPool",
    "ReportServer",
    "response_format",
]

logger = logging.getLogger(__name__)

DEFAULT_API_HOST: Final = "127.0.0.1"
DEFAULT_API_PORT: Final = 8787
REPORT_PATH: Final = "/v1/report"
REQUESTS_PATH: Final = "/v1/requests"
BUDGETS_PATH: Final = "/v1/budgets"
MARGINS_PATH: Final = "/v1/margins"
SPIKES_PATH: Final = "/v1/spikes"
HEALTH_PATH: Final = "/healthz"
OPENAPI_PATH: Final = "/openapi.json"
API_FORMATS: Final = ("json", "csv")
DEFAULT_MAX_CONCURRENT_QUERIES: Final = 4  # DuckDB uses every core for one scan: more at once only share them
DEFAULT_MAX_QUEUED_QUERIES: Final = 64
RETRY_AFTER_SECONDS: Final = 1
BUSY_ERROR_TYPE: Final = "overloaded_error"
_MAX_FIELDS: Final = 100  # a report has a dozen parameters; thousands would only be an attack on parse_qs
_CHUNK: Final = 64 * 1024  # a body is written in pieces so that a client leaving mid-response is noticed
_JSON: Final = "application/json; charset=utf-8"
_CSV: Final = "text/csv; charset=utf-8"
_T = TypeVar("_T")


def _error_body(message: str, kind: str) -> str:
    """OpenAI-style error object, which is what Vercel's gateway answers and what its clients parse."""
    return json.dumps({"error": {"message": message, "type": kind}})


class _NotConfigured(ReportError):
    """The endpoint needs a file the server was not started with (404, with what to pass)."""


# -- the answers (run on QueryPool's threads) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reply:
    """A whole HTTP answer: built on a query thread, written by the event loop."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = _JSON


def _reply(status: int, text: str, headers: Mapping[str, str] | None = None, content_type: str = _JSON) -> _Reply:
    return _Reply(status, (text + "\n").encode("utf-8"), headers or {}, content_type)  # the bytes the CLI prints


def _error(status: int, message: str, kind: str, headers: Mapping[str, str] | None = None) -> _Reply:
    return _reply(status, _error_body(message, kind), headers)


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

    def requests_answer(self, params: Mapping[str, list[str]]) -> _Answer:
        # A page with a next one is "truncated": CSV, which has no next_cursor, still says there is more.
        page = requests_from_params(self.report.data_dir, params)
        return _Answer(requests_json(page), page.rows, REQUEST_COLUMNS, page.next_cursor is not None)

    def reply(self, path: str, params: Mapping[str, list[str]], fmt: str, query_string: str) -> _Reply:
        """The answer to ``path`` as bytes, any failure included: this runs on a query thread, where an exception
        would only be a traceback nobody answers."""
        try:
            answer = _ROUTES[path](self, params)
            headers = {"X-Result-Truncated": "true"} if answer.truncated else {}
            if fmt == "csv":
                return _reply(HTTPStatus.OK, format_csv(answer.rows, answer.columns).rstrip("\n"), headers, _CSV)
            return _reply(HTTPStatus.OK, answer.json_body, headers)
        except ReportParameterError as exc:
            return _error(HTTPStatus.BAD_REQUEST, exc.message, "invalid_request_error")
        except _NotConfigured as exc:
            return _error(HTTPStatus.NOT_FOUND, str(exc), "not_found_error")
        except ValueError as exc:
            return _error(HTTPStatus.BAD_REQUEST, str(exc), "invalid_request_error")
        except Exception:
            logger.exception("%s failed for %r", path, query_string)
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "the query failed; the server log has the details",
                          "api_error")


_ROUTES: Final[Mapping[str, Callable[[_App, Mapping[str, list[str]]], _Answer]]] = {
    REPORT_PATH: _App.report_answer,
    BUDGETS_PATH: _App.budgets_answer,
    MARGINS_PATH: _App.margins_answer,
    SPIKES_PATH: _App.spikes_answer,
    REQUESTS_PATH: _App.requests_answer,
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


# -- the query threads -------------------------------------------------------------------------------------------


class QueryPool:
    """The threads report queries run on: ``max_running`` at once and ``max_waiting`` more queued; ``submit`` past
    that is refused (None) at once, never blocking the event loop that calls it.

    A fixed pool bounds threads and memory where a thread per request did not, and refusing past the queue bounds
    latency: a client told 503 retries in a second, one queued behind hundreds would time out anyway. Public so a
    program embedding the server (or a test) can occupy it like a slow query would."""

    def __init__(self, max_running: int, max_waiting: int) -> None:
        if max_running < 1 or max_waiting < 0:
            raise ValueError(f"a query pool needs a thread or more and a queue of 0 or more "
                             f"(got {max_running} and {max_waiting})")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(max_running, thread_name_prefix="tokentrail-report-query")
        self._lock = threading.Lock()
        self._pending = 0

    @property
    def pending(self) -> int:
        """Calls submitted and not finished (running or waiting for a thread)."""
        with self._lock:
            return self._pending

    def submit(self, call: Callable[[], _T]) -> Future[_T] | None:
        """``call`` on a pool thread, or None when ``max_running + max_waiting`` calls are already pending.
        Cancelling the future of a call still waiting frees its place."""
        with self._lock:
            if self._pending >= self.max_running + self.max_waiting:
                return None
            self._pending += 1
        try:
            future = self._executor.submit(call)
        except BaseException:
            self._finished(None)
            raise
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future: object) -> None:
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        """Drops the calls still waiting; one running finishes on its thread (a DuckDB scan cannot be stopped)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


# -- HTTP ----------------------------------------------------------------------------------------------------------


def _headers(reply: _Reply) -> dict[str, str]:
    return {"Cache-Control": "no-store", "Server": "tokentrail", **reply.headers}


def _response(reply: _Reply) -> Response:
    return Response(reply.body, reply.status, _headers(reply), reply.content_type)


async def _client_gone(receive: Receive) -> None:
    """Returns when the client has gone: Hypercorn says so through ``receive`` (a GET's request message comes first).
    It also says so once an answer is complete, so a caller cancels this when its answer is written."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # noqa: BLE001 - a receive that fails is a connection that ended
        return


class _Written(Response):
    """A query's answer, written in pieces: a client that resets mid-response makes a write fail, Hypercorn then
    reports the disconnect, and the rest is not written (and the client is counted) instead of vanishing unseen."""

    def __init__(self, reply: _Reply, gone: asyncio.Future[None], dropped: Callable[[Scope, str], None]) -> None:
        super().__init__(reply.body, reply.status, _headers(reply), reply.content_type)
        self._gone = gone
        self._dropped = dropped

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            body = memoryview(self.body)
            for start in range(0, len(body), _CHUNK):
                await send({"type": "http.response.body", "body": bytes(body[start:start + _CHUNK]),
                            "more_body": True})
                await asyncio.sleep(0)  # lets the watch see a disconnect this write caused
                if self._gone.done():
                    self._dropped(scope, "mid-response")
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._gone.cancel()


class _Unsent(Response):
    """No answer: its client has gone."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return


class _Gate:
    """What every request passes before routing: a ``Host`` this server answers; one ``Host``, one
    ``Content-Length`` and not both it and ``Transfer-Encoding`` (read two ways by two parsers: request smuggling
    through a proxy; h11 refuses some of these, not all); the method GET. A trailing slash does not matter, and a
    bug anywhere after is a 500 in our error shape, logged here once."""

    def __init__(self, app: ASGIApp, host_check: HostCheck) -> None:
        self._app = app
        self._host_check = host_check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)  # lifespan
            return
        refusal = self._refusal(Headers(scope=scope), scope["method"])
        if refusal is not None:
            await _response(refusal)(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        scope = {**scope, "path": scope["path"].rstrip("/") or "/"}
        try:
            await self._app(scope, receive, tracked)
        except Exception:
            logger.exception("report API request %s %s failed", scope["method"], scope["path"])
            if not started:
                await _response(_error(HTTPStatus.INTERNAL_SERVER_ERROR, "the request failed; the server log has "
                                       "the details", "api_error"))(scope, receive, send)

    def _refusal(self, headers: Headers, method: str) -> _Reply | None:
        problem = framing_problem(headers.raw)
        if problem is not None:
            return _error(HTTPStatus.BAD_REQUEST, problem, "invalid_request_error", {"Connection": "close"})
        hosts = headers.getlist("host")
        if not self._host_check.permits(hosts[0] if hosts else None):
            return _error(HTTPStatus.MISDIRECTED_REQUEST, self._host_check.refusal(hosts[0]),
                          "invalid_request_error", {"Connection": "close"})
        if method != "GET":
            return _error(HTTPStatus.METHOD_NOT_ALLOWED, "only GET is supported", "invalid_request_error",
                          {"Allow": "GET"})
        return None


class _Endpoints:
    """The routes and what they share: the queries, the pool they run on, the count of clients that left."""

    def __init__(self, app: _App, pool: QueryPool, dashboard: Sequence[Route] = ()) -> None:
        self._app = app
        self._pool = pool
        self._openapi = _reply(HTTPStatus.OK, json.dumps(openapi_document(), indent=1))
        self._dashboard = dashboard  # GET / and its assets (api.dashboard): no data, so no token
        self.dropped = 0  # changed on the event loop only

    def routes(self) -> list[Route]:
        return [
            Route(HEALTH_PATH, self.health, methods=["GET"]),
            Route(OPENAPI_PATH, self.openapi, methods=["GET"]),
            *(Route(path, partial(self.query, path), methods=["GET"]) for path in _ROUTES),
            *self._dashboard,
        ]

    async def health(self, request: Request) -> Response:
        return _response(_reply(HTTPStatus.OK, json.dumps({"status": "ok"})))

    async def openapi(self, request: Request) -> Response:
        return _response(self._openapi)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code != HTTPStatus.NOT_FOUND:
            return _response(_error(exc.status_code, exc.detail, "invalid_request_error", exc.headers))
        return _response(_error(HTTPStatus.NOT_FOUND, f"no such endpoint: {request.url.path}", "not_found_error"))

    async def query(self, path: str, request: Request) -> Response:
        if not bearer_matches(self._app.token, request.headers.get("authorization")):
            return _response(_error(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token", "authentication_error",
                                    {"WWW-Authenticate": 'Bearer realm="tokentrail"'}))
        query_string = request.scope["query_string"].decode("latin-1")
        try:
            params = parse_qs(query_string, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
            refuse_unknown(params, ENDPOINT_PARAMETERS[path])  # first, so format's misspellings are caught too
            fmt = response_format(params, request.headers.get("accept"))
        except ReportParameterError as exc:
            return _response(_error(HTTPStatus.BAD_REQUEST, exc.message, "invalid_request_error"))
        except ValueError as exc:  # parse_qs: too many fields
            return _response(_error(HTTPStatus.BAD_REQUEST, str(exc), "invalid_request_error"))
        params.pop("format", None)  # the server's, not the endpoint's: each endpoint refuses names it does not read
        future = self._pool.submit(partial(self._app.reply, path, params, fmt, query_string))
        if future is None:
            return _response(_error(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the report API is busy ({self._pool.max_running} queries running, {self._pool.max_waiting} "
                f"waiting); retry in {RETRY_AFTER_SECONDS} s",
                BUSY_ERROR_TYPE, {"Retry-After": str(RETRY_AFTER_SECONDS)},
            ))
        gone = asyncio.ensure_future(_client_gone(request.receive))
        answer = asyncio.wrap_future(future)
        try:
            either: set[asyncio.Future[Any]] = {gone, answer}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled: the server is stopping
            answer.cancel()
            gone.cancel()
            raise
        if not answer.done():
            answer.cancel()  # a query still waiting for a thread is dropped; a running one finishes unread
            self._count_dropped(request.scope, "before its answer")
            return _Unsent()
        return _Written(answer.result(), gone, self._count_dropped)

    def _count_dropped(self, scope: Scope, when: str) -> None:
        self.dropped += 1
        logger.debug("report API client %s went away %s", scope.get("client"), when)


def _starlette(endpoints: _Endpoints, host_check: HostCheck) -> Starlette:
    return Starlette(
        routes=endpoints.routes(),
        middleware=[Middleware(_Gate, host_check=host_check)],
        exception_handlers={HTTPException: endpoints.not_found},
    )


class ReportServer:
    """The HTTP API on its own thread and event loop. ``port=0`` picks a free port; read ``port`` after ``start()``.

    ``token``: when set, every ``/v1/`` endpoint requires ``Authorization: Bearer <token>`` (``/healthz`` and
    ``/openapi.json`` stay open); an empty one is a ``ValueError``. Bind to a non-loopback host only with a token
    or behind a proxy that authenticates. ``allowed_hosts``: ``Host`` names answered besides this address's own
    (``ingest.auth.HostCheck``; ``*`` for any). ``budgets`` and ``revenue`` (a file path or a loaded config) enable
    ``/v1/budgets`` and ``/v1/margins``; they are read here, so a bad file stops the server from starting, not a
    request later. ``limits``: what each connection is held to (idle and slow clients, header size).
    ``max_concurrent_queries`` run at once and ``max_queued_queries`` wait; a request past both is a 503.
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
        limits: HttpLimits = DEFAULT_LIMITS,
        max_concurrent_queries: int = DEFAULT_MAX_CONCURRENT_QUERIES,
        max_queued_queries: int = DEFAULT_MAX_QUEUED_QUERIES,
        trace_url: str | None = None,
    ) -> None:
        if token is not None and not token.strip():
            raise APITokenError("the report API token is empty: give a real one, or none for no auth")
        if max_concurrent_queries < 1 or max_queued_queries < 0:
            raise ValueError(f"max_concurrent_queries must be 1 or more and max_queued_queries 0 or more "
                             f"(got {max_concurrent_queries} and {max_queued_queries})")
        self._host_check = HostCheck(host, allowed_hosts, token=token is not None)
        self._app = _App(
            report=Report(data_dir),
            token=token,
            budgets=load_budgets(budgets) if budgets is not None else None,
            revenue=load_revenue(revenue) if revenue is not None else None,
        )
        self._host = host
        self._port = port
        self._limits = limits
        self._pool_size = (max_concurrent_queries, max_queued_queries)
        self._server: AsgiServer | None = None
        self._pool: QueryPool | None = None
        self._endpoints: _Endpoints | None = None
        # The dashboard at GET / (``trace_url``: its link from a call to the trace, with ``{trace_id}``); built
        # here, so a bad template (TraceUrlError, a ValueError) stops the server from starting.
        self._dashboard = dashboard_routes(token_required=token is not None, trace_url=trace_url)

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port once started (the real one when asked for 0), else the configured one."""
        return self._server.port if self._server is not None else self._port

    @property
    def dropped_connections(self) -> int:
        """Clients that went away after their request and before their whole answer was written, since ``start()``."""
        return self._endpoints.dropped if self._endpoints is not None else 0

    @property
    def queries(self) -> QueryPool:
        """The pool the queries of the running server run on (``RuntimeError`` when not started)."""
        if self._pool is None:
            raise RuntimeError("ReportServer is not started")
        return self._pool

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("ReportServer already started")
        pool = QueryPool(*self._pool_size)
        endpoints = _Endpoints(self._app, pool, self._dashboard)
        server = AsgiServer(_starlette(endpoints, self._host_check), transport="the report API", host=self._host,
                            port=self._port, limits=self._limits)
        try:
            server.start()
        except BaseException:
            pool.close()
            raise
        self._server, self._pool, self._endpoints = server, pool, endpoints
        logger.info("report API listening on %s%s", self.url, REPORT_PATH)

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (``limits.graceful_timeout``), close the socket, drop the
        queries still waiting. Safe to call twice."""
        server, pool = self._server, self._pool
        if server is None:
            return
        server.stop()
        if pool is not None:
            pool.close()
        self._server = None
        self._pool = None

    def __enter__(self) -> ReportServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
