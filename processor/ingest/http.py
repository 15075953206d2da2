"""OTLP/HTTP for the receiver: ``POST /v1/traces`` (protobuf or JSON, optionally gzip) and ``GET /metrics``;
``POST /v1/metrics`` and ``POST /v1/logs`` the same way, acknowledged and counted, never stored (``ingest.signals``).

Status codes follow the OTLP/HTTP specification: 200 with an ``ExportTraceServiceResponse`` (in the request's
encoding) when the records are durable, 400 for a body that is not a request (nested too deeply included), two
``Content-Length`` or ``Host`` headers, or a ``Transfer-Encoding``, 401 for a missing or wrong bearer token, 411
without ``Content-Length``, 413 for a body over the size limit, 415 for another content type, 421 for a ``Host``
that is not a name of this server (DNS rebinding; ``auth.HostCheck``), 503 with ``Retry-After`` when the records
could not be stored (the sender retries). Every refusal is counted. ``GET /metrics`` serves the receiver's counters
as Prometheus text (behind the same token when one is set).
"""

from __future__ import annotations

import gzip
import logging
import socket
import ssl
import threading
import zlib
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from google.rpc import status_pb2  # type: ignore[import-untyped]  # googleapis-common-protos ships no stubs
from tokentrail.processor.ingest.auth import HostCheck, bearer_matches
from tokentrail.processor.ingest.listen import listen_error
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
RETRY_AFTER_SECONDS: Final = "2"
_TOO_DEEP: Final = "malformed OTLP/JSON: nested too deeply"
NOT_FOUND: Final = f"OTLP goes to POST {TRACES_PATH} (and {', '.join(SIGNALS)}, acknowledged but not stored)"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        pipeline: Pipeline,
        metrics: Metrics,
        token: str | None,
        labels: Mapping[str, str],
        reuse_port: bool,
        max_body: int,
        host_check: HostCheck,
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.token = token
        self.host_check = host_check
        self.labels = labels
        self.reuse_port = reuse_port
        self.max_body = max_body
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:  # a dropped client is not our error
        self.metrics.add(connections_dropped=1)
        log.debug("OTLP/HTTP connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "tokentrail"

    def version_string(self) -> str:
        return self.server_version  # the stdlib adds Python's version: a gift to whoever scans for old ones

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("otlp-http %s - " + format, self.address_string(), *args)

    # -- helpers ---------------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")  # the client learns it, instead of finding the socket closed
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, content_type: str, extra: dict[str, str] | None = None) -> None:
        """An error body as OTLP wants it: a google.rpc.Status (JSON or protobuf, matching the request)."""
        code = {400: 3, 401: 16, 413: 8, 415: 3, 404: 5, 405: 12, 503: 14}.get(status, 13)
        status_message = status_pb2.Status(code=code, message=message)
        if content_type == PROTOBUF:
            body = status_message.SerializeToString()
        else:
            body = response_json(status_message)
            content_type = JSON
        self._send(status, body, content_type, extra)

    def _authorized(self) -> bool:
        return bearer_matches(self.server.token, self.headers.get("Authorization"))

    def _refused(self, reply_type: str) -> bool:
        """Answers (and counts) a request no route may see: a foreign ``Host`` (421), or headers two parsers
        could read two ways (request smuggling through a proxy): two ``Host`` or ``Content-Length``, any
        ``Transfer-Encoding`` (not supported here; 400)."""
        hosts = self.headers.get_all("Host") or []
        problem = None
        if len(hosts) > 1:
            problem = "more than one Host header"
        elif len(self.headers.get_all("Content-Length") or []) > 1:
            problem = "more than one Content-Length header"
        elif self.headers.get("Transfer-Encoding") is not None:
            problem = "Transfer-Encoding is not supported; send the body with a Content-Length"
        if problem is not None:
            self.close_connection = True  # where the body ends is unknown: the connection cannot be reused
            self.server.metrics.add(requests_invalid=1)
            self._error(400, problem, reply_type)
            return True
        if not self.server.host_check.permits(hosts[0] if hosts else None):
            self.close_connection = True
            self.server.metrics.add(requests_wrong_host=1)
            self._error(421, self.server.host_check.refusal(hosts[0]), reply_type)
            return True
        return False

    # -- routes ----------------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        path = self.path.split("?", 1)[0]
        if self._refused(JSON):
            return
        if path != METRICS_PATH:
            self._error(404, f"not found: {path}; {NOT_FOUND}", JSON)
            return
        if not self._authorized():
            self.server.metrics.add(requests_unauthenticated=1)
            self._error(401, "missing or wrong bearer token", JSON, {"WWW-Authenticate": "Bearer"})
            return
        text = self.server.metrics.render(self.server.labels)
        self._send(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")

    def do_POST(self) -> None:  # noqa: N802
        pipeline, metrics = self.server.pipeline, self.server.metrics
        path = self.path.split("?", 1)[0]
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        reply_type = JSON if content_type == JSON else PROTOBUF
        if self._refused(reply_type):
            return
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            metrics.add(requests_invalid=1)
            self._error(411, "Content-Length is required", reply_type)
            return
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            metrics.add(requests_invalid=1)
            self._error(400, f"bad Content-Length {length_text[:40]!r}", reply_type)
            return
        if length > self.server.max_body:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            metrics.add(requests_too_large=1)
            self._error(413, f"body of {length} bytes exceeds the limit of {self.server.max_body}", reply_type)
            return
        body = self.rfile.read(length)
        signal: Signal | None = None
        if path != TRACES_PATH:
            signal = SIGNALS.get(path)
            if signal is None:
                self._error(404, f"not found: {path}; {NOT_FOUND}", reply_type)
                return
        if not self._authorized():
            metrics.add(requests_unauthenticated=1)
            self._error(401, "missing or wrong bearer token", reply_type, {"WWW-Authenticate": "Bearer"})
            return
        if content_type not in (PROTOBUF, JSON):
            metrics.add(requests_invalid=1)
            self._error(415, f"Content-Type must be {PROTOBUF} or {JSON}, got {content_type or 'none'!r}", JSON)
            return
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        try:
            body = self._decompress(body, encoding)
        except InvalidRequest as exc:
            metrics.add(requests_invalid=1)
            self._error(400, str(exc), reply_type)
            return
        if signal is not None:
            self._acknowledge(signal, body, reply_type)
            return
        try:
            if content_type == JSON:
                try:
                    request = parse_json_request(body)
                except RecursionError:  # json.loads on [[[[...]]]]: a bad body, not our bug
                    metrics.add(requests_invalid=1)
                    raise InvalidRequest(_TOO_DEEP) from None
                except InvalidRequest:
                    metrics.add(requests_invalid=1)
                    raise
                outcome = pipeline.export(request)
                self._send(200, response_json(outcome.response), JSON)
            else:
                outcome = pipeline.export_bytes(body)
                self._send(200, outcome.response.SerializeToString(), PROTOBUF)
        except InvalidRequest as exc:
            self._error(400, str(exc), reply_type)
        except OSError as exc:  # WALError, Backpressure, DiskFull: not stored, the sender retries
            metrics.add(requests_unavailable=1)
            log.warning("export refused: %s", exc)
            self._error(503, f"records not stored: {exc}", reply_type, {"Retry-After": RETRY_AFTER_SECONDS})
        except Exception:  # noqa: BLE001 - a bug answers 500 with its traceback logged, never a dropped connection
            log.exception("OTLP/HTTP export failed")
            self._error(500, "internal error while ingesting spans", reply_type)

    def _acknowledge(self, signal: Signal, body: bytes, reply_type: str) -> None:
        """Metrics and logs: counted, answered as OTLP wants, never stored."""
        metrics = self.server.metrics
        try:
            if reply_type == JSON:
                self._send(200, response_json(signal.acknowledge_json(body, metrics)), JSON)
            else:
                self._send(200, signal.acknowledge(body, metrics).SerializeToString(), PROTOBUF)
        except InvalidRequest as exc:
            self._error(400, str(exc), reply_type)
        except RecursionError:
            metrics.add(requests_invalid=1)
            self._error(400, _TOO_DEEP, reply_type)
        except Exception:  # noqa: BLE001 - a bug answers 500 with its traceback logged, never a dropped connection
            log.exception("OTLP/HTTP %s export failed", signal.name)
            self._error(500, f"internal error while reading {signal.name}", reply_type)

    def _decompress(self, body: bytes, encoding: str) -> bytes:
        limit = self.server.max_body
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


class HttpReceiver:
    """The OTLP/HTTP listener of one receiver, on its own threads. ``labels`` go on every ``/metrics`` sample;
    ``allowed_hosts`` are ``Host`` names answered besides this address's own (``auth.HostCheck``)."""

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
    ) -> None:
        host_check = HostCheck(host, allowed_hosts, token=token is not None)
        try:
            self._server = _Server(
                (host.strip("[]"), port), _Handler, pipeline, metrics, token, dict(labels or {}), reuse_port,
                max_body_bytes, host_check,
            )
        except OSError as exc:
            raise listen_error("OTLP/HTTP", host, port, exc) from None
        if tls_cert is not None and tls_key is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(str(tls_cert), str(tls_key))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.tls = tls_cert is not None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        if isinstance(host, bytes):  # typeshed allows it; an AF_INET/AF_INET6 socket gives str
            host = host.decode()
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> HttpReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="tokentrail-otlp-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
