"""OTLP/HTTP for the receiver: ``POST /v1/traces`` (protobuf or JSON, optionally gzip) and ``GET /metrics``;
``POST /v1/metrics`` and ``POST /v1/logs`` the same way, acknowledged and counted, never stored (``ingest.signals``).

Why an ASGI app on Hypercorn (``ingest.asgi_server``) and not the standard library's threaded server: that server
held a thread for every open connection, read the body before it knew who was sending it, and had no deadline for
a client that sends nothing. Here an open connection costs a few kilobytes on one event loop; Hypercorn closes a
connection that has not sent a complete request head within ``HttpLimits.idle_timeout`` (slowloris included) and
frames bodies with h11 (chunked bodies are accepted; what h11 cannot frame one way is its own 400).

Each ``POST`` is checked in this order, the cheap and unauthenticated refusals first, none of them reading the body:
``Host`` (421, DNS rebinding: ``auth.HostCheck``), ``Transfer-Encoding`` with ``Content-Length`` (400: a proxy in
front may have framed it by the length), the path (404), the bearer token (401), ``Content-Type`` (415),
``Content-Length`` over ``max_body_bytes`` (413), then ``ingest.admission`` (503 with ``Retry-After`` when the
receiver already holds its number of exports or bytes). Only then is the body read, within ``max_body_bytes``
(413) and ``HttpLimits.body_timeout`` (408). A refusal sent before the body was read closes the connection, so an
unauthenticated or refused sender costs no memory for its body. The admitted body is decompressed (gzip/deflate,
inflated no further than ``max_body_bytes``: 400), parsed and exported on a pool of ``admission.max_exports``
threads: the export waits for the WAL fsync, which must never stall the event loop.

The admission counts the bytes a request will hold: its ``Content-Length`` before reading; a body of unknown length
(chunked) is admitted for nothing and adds each chunk as it arrives, and an inflated body adds what it inflated
to; either refused (503) when it no longer fits. Over HTTP/2 (TLS with ALPN) an early refusal is finished only once
the client's body has arrived (thrown away as it comes, within ``body_timeout``), because Hypercorn 0.18 drops the
whole connection on data for a stream it has finished answering. A client gone before its answer is counted
(``connections_dropped``), quietly.

Status codes otherwise follow the OTLP/HTTP specification: 200 with an ``ExportTraceServiceResponse`` (in the
request's encoding) when the records are durable, 400 for a body that is not a request (nested too deeply
included), 503 with ``Retry-After`` when the records could not be stored (disk full, backlog, WAL error: the
sender retries), 500 for a bug (its traceback logged). Error bodies are a ``google.rpc.Status`` in the request's
encoding. Every refusal is counted in ``Metrics``, except those h11 answers itself (two differing
``Content-Length`` or ``Host`` headers, a malformed head) before this app sees the request. ``GET /metrics`` serves
the receiver's counters as Prometheus text (behind the same token when one is set); other methods are 405.
Responses say ``server: tokentrail``, without versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import zlib
from collections.abc import Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from google.rpc import status_pb2  # type: ignore[import-untyped]  # googleapis-common-protos ships no stubs
from tokentrail.processor.ingest.admission import RETRY_AFTER_SECONDS, Admission, AdmissionPass
from tokentrail.processor.ingest.asgi_server import (
    DEFAULT_LIMITS,
    AsgiServer,
    BodyTooLarge,
    BodyTooSlow,
    HttpLimits,
    Receive,
    Scope,
    Send,
    read_body,
)
from tokentrail.processor.ingest.auth import HostCheck, bearer_matches, framing_problem
from tokentrail.processor.ingest.metrics import Metrics
from tokentrail.processor.ingest.pipeline import Pipeline
from tokentrail.processor.ingest.signals import SIGNALS, Signal
from tokentrail.processor.normalize.otlp import InvalidRequest, parse_json_request, response_json

__all__ = ["METRICS_PATH", "TRACES_PATH", "HttpReceiver"]

log = logging.getLogger(__name__)

TRACES_PATH: Final = "/v1/traces"
METRICS_PATH: Final = "/metrics"
PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
_TOO_DEEP: Final = "malformed OTLP/JSON: nested too deeply"
NOT_FOUND: Final = f"OTLP goes to POST {TRACES_PATH} (and {', '.join(SIGNALS)}, acknowledged but not stored)"
_RPC_CODES: Final = {400: 3, 401: 16, 404: 5, 405: 12, 408: 4, 413: 8, 415: 3, 421: 7, 503: 14}  # else 13, INTERNAL
_RETRY: Final = (("Retry-After", str(RETRY_AFTER_SECONDS)),)
_BUSY: Final = "the receiver is busy; retry later"


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


def _error(status: int, message: str, reply_type: str, headers: tuple[tuple[str, str], ...] = ()) -> _Answer:
    """An error body as OTLP wants it: a google.rpc.Status (JSON or protobuf, matching the request)."""
    status_message = status_pb2.Status(code=_RPC_CODES.get(status, 13), message=message)
    if reply_type == PROTOBUF:
        return _Answer(status, status_message.SerializeToString(), PROTOBUF, headers)
    return _Answer(status, response_json(status_message), JSON, headers)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidRequest(f"unsupported Content-Encoding {encoding!r} (gzip, deflate or identity)")
    try:
        decompressor = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        out = decompressor.decompress(body, limit + 1)  # a zip bomb stops at the limit
        if len(out) > limit or decompressor.unconsumed_tail:
            raise InvalidRequest(f"decompressed body exceeds the limit of {limit} bytes")
        return out
    except (zlib.error, gzip.BadGzipFile, EOFError) as exc:
        raise InvalidRequest(f"body is not valid {encoding}: {exc}") from None


class _Busy(Exception):
    """A body without ``Content-Length`` outgrew what the admission had room for."""


class _Export:
    """The blocking part of one export, run on the receiver's pool: decompress, parse, ``Pipeline`` (which returns
    once the WAL fsync covers the records), serialize the answer."""

    def __init__(self, pipeline: Pipeline, metrics: Metrics, max_body: int) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.max_body = max_body

    def __call__(
        self, body: bytes, encoding: str, content_type: str, signal: Signal | None, admitted: AdmissionPass
    ) -> _Answer:
        metrics = self.metrics
        try:
            data = _decompress(body, encoding, self.max_body)
        except InvalidRequest as exc:
            metrics.add(requests_invalid=1)
            return _error(400, str(exc), content_type)
        if data is not body:
            if not admitted.grow(len(data)):  # inflated, it no longer fits beside the others in flight
                metrics.add(requests_busy=1)
                return _error(503, _BUSY, content_type, _RETRY)
        if signal is not None:
            return self._acknowledge(signal, data, content_type)
        try:
            if content_type == JSON:
                try:
                    request = parse_json_request(data)
                except RecursionError:  # json.loads on [[[[...]]]]: a bad body, not our bug
                    metrics.add(requests_invalid=1)
                    raise InvalidRequest(_TOO_DEEP) from None
                except InvalidRequest:
                    metrics.add(requests_invalid=1)
                    raise
                return _Answer(200, response_json(self.pipeline.export(request).response), JSON)
            return _Answer(200, self.pipeline.export_bytes(data).response.SerializeToString(), PROTOBUF)
        except InvalidRequest as exc:
            return _error(400, str(exc), content_type)
        except OSError as exc:  # WALError, Backpressure, DiskFull: not stored, the sender retries
            metrics.add(requests_unavailable=1)
            log.warning("export refused: %s", exc)
            return _error(503, f"records not stored: {exc}", content_type, _RETRY)
        except Exception:  # noqa: BLE001 - a bug answers 500 with its traceback logged, never a dropped connection
            log.exception("OTLP/HTTP export failed")
            return _error(500, "internal error while ingesting spans", content_type)

    def _acknowledge(self, signal: Signal, data: bytes, content_type: str) -> _Answer:
        """Metrics and logs: counted, answered as OTLP wants, never stored."""
        try:
            if content_type == JSON:
                return _Answer(200, response_json(signal.acknowledge_json(data, self.metrics)), JSON)
            return _Answer(200, signal.acknowledge(data, self.metrics).SerializeToString(), PROTOBUF)
        except InvalidRequest as exc:
            return _error(400, str(exc), content_type)
        except RecursionError:
            self.metrics.add(requests_invalid=1)
            return _error(400, _TOO_DEEP, content_type)
        except Exception:  # noqa: BLE001 - a bug answers 500 with its traceback logged, never a dropped connection
            log.exception("OTLP/HTTP %s export failed", signal.name)
            return _error(500, f"internal error while reading {signal.name}", content_type)


class _Exchange:
    """One request's headers, and its answer."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, body_timeout: float) -> None:
        self.receive = receive
        self._send = send
        self._body_timeout = body_timeout
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self._http1 = str(scope.get("http_version", "1.1")).startswith("1")
        self.raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.headers: dict[str, list[str]] = {}
        for name, value in self.raw_headers:
            self.headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        self.content_type = (self.header("content-type") or "").split(";", 1)[0].strip().lower()
        # Errors come in the request's encoding: protobuf unless it sent JSON; JSON to anything but an export.
        self.reply_type = PROTOBUF if self.method == "POST" and self.content_type != JSON else JSON
        self.body_read = False
        self.started = False

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None

    def _body_announced(self) -> bool:
        length = self.header("content-length")
        return "transfer-encoding" in self.headers or (length is not None and length.strip() not in ("", "0"))

    async def answer(self, answer: _Answer) -> None:
        """Sends ``answer``. Sent before the body was read, it closes an HTTP/1 connection (the unread rest cannot
        be told from a next request) while what Hypercorn already queued of the body is thrown away: Hypercorn
        delivers the client's disconnect through the same bounded queue, and a full one would hang the answer."""
        headers = [
            (b"server", b"tokentrail"),
            (b"content-type", answer.content_type.encode()),
            (b"content-length", str(len(answer.body)).encode()),
            *((name.lower().encode(), value.encode("latin-1")) for name, value in answer.headers),
        ]
        drain: asyncio.Task[None] | None = None
        body_ended = asyncio.Event()
        if not self.body_read:
            if self._http1 and self._body_announced():
                headers.append((b"connection", b"close"))
            drain = asyncio.create_task(_discard(self.receive, body_ended))
        self.started = True
        try:
            await self._send({"type": "http.response.start", "status": answer.status, "headers": headers})
            if drain is not None and not self._http1:
                # Hypercorn 0.18 drops a whole HTTP/2 connection (every stream on it) when DATA arrives for a stream
                # it has finished answering (pgjones/hypercorn#329): the answer ends once the client's body has
                # (thrown away as it comes), or after body_timeout.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(body_ended.wait(), self._body_timeout)
            await self._send({"type": "http.response.body", "body": answer.body})
        finally:
            if drain is not None:
                drain.cancel()


async def _discard(receive: Receive, ended: asyncio.Event) -> None:
    """Throws the body away as it comes; ``ended`` is set when it is all in (or the client is gone)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            ended.set()
            return
        if not message.get("more_body", False):
            ended.set()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _growing(receive: Receive, admitted: AdmissionPass) -> Receive:
    """``receive`` that adds each chunk of a body of unknown length to the admission as it arrives."""

    async def counted() -> MutableMapping[str, Any]:
        message = await receive()
        if not admitted.grow(len(message.get("body", b""))):
            raise _Busy
        return message

    return counted


class _OtlpApp:
    """The ASGI app: the checks in the module docstring's order, the body read on the event loop, the rest on
    ``pool``."""

    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        token: str | None,
        labels: Mapping[str, str],
        host_check: HostCheck,
        admission: Admission,
        max_body: int,
        limits: HttpLimits,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.metrics = metrics
        self.token = token
        self.labels = dict(labels)
        self.host_check = host_check
        self.admission = admission
        self.max_body = max_body
        self.limits = limits
        self.pool = pool
        self.export = _Export(pipeline, metrics, max_body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # a WebSocket upgrade: Hypercorn refuses it when the app does not accept
        exchange = _Exchange(scope, receive, send, self.limits.body_timeout)
        try:
            await self._route(exchange)
        except Exception:  # noqa: BLE001 - a bug answers 500 with its traceback logged, never a dropped connection
            log.exception("OTLP/HTTP request failed")
            if not exchange.started:
                await exchange.answer(_error(500, "internal error", exchange.reply_type))

    async def _route(self, exchange: _Exchange) -> None:
        refusal = self._refusal(exchange)
        if refusal is not None:
            await exchange.answer(refusal)
        elif exchange.method == "POST":
            await self._post(exchange)
        elif exchange.method == "GET":
            await self._get(exchange)
        else:
            allow = (("Allow", "GET, POST"),)
            await exchange.answer(_error(405, f"{exchange.method[:20]} is not allowed; {NOT_FOUND}", JSON, allow))

    def _refusal(self, exchange: _Exchange) -> _Answer | None:
        """A request no route may see: a foreign ``Host`` (421), or an ambiguous head (``auth.framing_problem``:
        400)."""
        host = exchange.header("host")
        if not self.host_check.permits(host):
            self.metrics.add(requests_wrong_host=1)
            return _error(421, self.host_check.refusal(host or ""), exchange.reply_type)
        problem = framing_problem(exchange.raw_headers)
        if problem is not None:
            self.metrics.add(requests_invalid=1)
            return _error(400, problem, exchange.reply_type)
        return None

    def _unauthorized(self, exchange: _Exchange, reply_type: str) -> _Answer | None:
        if bearer_matches(self.token, exchange.header("authorization")):
            return None
        self.metrics.add(requests_unauthenticated=1)
        return _error(401, "missing or wrong bearer token", reply_type, (("WWW-Authenticate", "Bearer"),))

    async def _get(self, exchange: _Exchange) -> None:
        if exchange.path != METRICS_PATH:
            await exchange.answer(_error(404, f"not found: {exchange.path[:200]}; {NOT_FOUND}", JSON))
            return
        refused = self._unauthorized(exchange, JSON)
        if refused is not None:
            await exchange.answer(refused)
            return
        # Off the loop: the disk gauge lists and stats WAL segments.
        text = await asyncio.get_running_loop().run_in_executor(self.pool, self.metrics.render, self.labels)
        await exchange.answer(_Answer(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8"))

    async def _post(self, exchange: _Exchange) -> None:
        reply_type, metrics = exchange.reply_type, self.metrics
        signal: Signal | None = None
        if exchange.path != TRACES_PATH:
            signal = SIGNALS.get(exchange.path)
            if signal is None:
                await exchange.answer(_error(404, f"not found: {exchange.path[:200]}; {NOT_FOUND}", reply_type))
                return
        refused = self._unauthorized(exchange, reply_type)
        if refused is not None:
            await exchange.answer(refused)
            return
        if exchange.content_type not in (PROTOBUF, JSON):
            metrics.add(requests_invalid=1)
            got = exchange.content_type or "none"
            await exchange.answer(_error(415, f"Content-Type must be {PROTOBUF} or {JSON}, got {got[:100]!r}", JSON))
            return
        length_text = exchange.header("content-length")
        length: int | None = None
        if length_text is not None:
            try:
                length = int(length_text)
                if length < 0:
                    raise ValueError
            except ValueError:  # h11 refuses these itself; HTTP/2 leaves them to us
                metrics.add(requests_invalid=1)
                await exchange.answer(_error(400, f"bad Content-Length {length_text[:40]!r}", reply_type))
                return
            if length > self.max_body:
                metrics.add(requests_too_large=1)
                await exchange.answer(
                    _error(413, f"body of {length} bytes exceeds the limit of {self.max_body}", reply_type)
                )
                return
        # A body of unknown length (chunked, or HTTP/2 without content-length) is admitted for nothing and grows
        # its share chunk by chunk: counting it as max_body up front would refuse it whenever anything else is
        # in flight, and it would claim memory it may never use.
        admitted = self.admission.admit(length or 0)
        if admitted is None:
            metrics.add(requests_busy=1)
            await exchange.answer(_error(503, _BUSY, reply_type, _RETRY))
            return
        try:
            await self._export(exchange, signal, admitted, length is None)
        finally:
            admitted.release()

    async def _export(self, exchange: _Exchange, signal: Signal | None, admitted: AdmissionPass, grows: bool) -> None:
        reply_type, metrics = exchange.reply_type, self.metrics
        receive = _growing(exchange.receive, admitted) if grows else exchange.receive
        try:
            body = await read_body(receive, self.max_body, self.limits.body_timeout)
        except BodyTooLarge as exc:
            metrics.add(requests_too_large=1)
            await exchange.answer(_error(413, str(exc), reply_type))
            return
        except BodyTooSlow as exc:
            metrics.add(requests_timed_out=1)
            await exchange.answer(_error(408, str(exc), reply_type))
            return
        except _Busy:
            metrics.add(requests_busy=1)
            await exchange.answer(_error(503, _BUSY, reply_type, _RETRY))
            return
        except ConnectionResetError:
            metrics.add(connections_dropped=1)
            log.debug("OTLP/HTTP client went away mid-body")
            return
        exchange.body_read = True
        encoding = (exchange.header("content-encoding") or "identity").strip().lower()
        gone = asyncio.ensure_future(exchange.receive())  # with the whole body in, only a disconnect can come
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                self.pool, self.export, body, encoding, exchange.content_type, signal, admitted
            )
        finally:
            left = gone.done() and not gone.cancelled() and gone.result()["type"] == "http.disconnect"
            gone.cancel()
        if left:  # the records are stored or refused all the same; a retry is deduplicated
            metrics.add(connections_dropped=1)
            log.debug("OTLP/HTTP client went away before its answer")
            return
        await exchange.answer(answer)


class HttpReceiver:
    """The OTLP/HTTP listener of one receiver, on an event loop of its own plus a pool of ``admission.max_exports``
    threads for the exports. ``labels`` go on every ``/metrics`` sample; ``allowed_hosts`` are ``Host`` names
    answered besides this address's own (``auth.HostCheck``); ``admission`` is shared with the other transports
    (None: one of this listener's own, with the defaults)."""

    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        token: str | None = None,
        labels: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 14318,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        reuse_port: bool = False,
        max_body_bytes: int = 64 << 20,
        allowed_hosts: Sequence[str] = (),
        admission: Admission | None = None,
        limits: HttpLimits = DEFAULT_LIMITS,
    ) -> None:
        self.admission = admission if admission is not None else Admission()
        self._pool = ThreadPoolExecutor(self.admission.max_exports, thread_name_prefix="tokentrail-otlp-http")
        app = _OtlpApp(
            pipeline,
            metrics,
            token=token,
            labels=labels or {},
            host_check=HostCheck(host, allowed_hosts, token=token is not None),
            admission=self.admission,
            max_body=max_body_bytes,
            limits=limits,
            pool=self._pool,
        )
        self._server = AsgiServer(
            app,
            transport="OTLP/HTTP",
            host=host,
            port=port,
            limits=limits,
            reuse_port=reuse_port,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )

    @property
    def tls(self) -> bool:
        return self._server.tls

    @property
    def port(self) -> int:
        """The bound port once started (the real one when 0 was asked for)."""
        return self._server.port

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> HttpReceiver:
        """Listens. Raises ``ListenError`` (an ``OSError``) when the port cannot be bound, ``ssl.SSLError`` or
        ``OSError`` for an unusable certificate or key."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stops accepting, lets requests in flight finish, then waits for the exports still on the pool (the WAL
        closes after this returns)."""
        self._server.stop()
        self._pool.shutdown(wait=True)
