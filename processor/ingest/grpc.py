"""OTLP/gRPC for the receiver: ``TraceService/Export`` on a gRPC server, answered by the pipeline;
``MetricsService/Export`` and ``LogsService/Export`` acknowledged and counted, never stored (``ingest.signals``).

Status codes: OK once the records are durable (``partial_success`` carries rejected spans and warnings),
INVALID_ARGUMENT for a body that is not a request (not retried), UNAUTHENTICATED for a missing or wrong bearer token
(nothing stored), UNAVAILABLE when the records could not be stored (the sender retries), UNAVAILABLE with a
``google.rpc.RetryInfo`` when the receiver is full (``ingest.admission``; the sender retries after the delay).

Every Export passes ``ExportGate`` first, an interceptor that sees only the call's metadata: it refuses a wrong
token and a full receiver before a byte of the message is read, so neither an unauthenticated sender nor a crowd
of them costs more memory than gRPC's flow-control windows. gRPC reads a unary call's message before calling its
handler, so the gate answers with request-streaming handlers, which get the message only when they ask for it:
a refusal never asks. Not ``grpc.server(maximum_concurrent_rpcs=...)``: it answers RESOURCE_EXHAUSTED without
``RetryInfo``, which the Collector's OTLP exporter does not retry (the batch would be lost); UNAVAILABLE it always
retries, honouring ``RetryInfo``'s delay.

The gate cannot know a message's size before reading it, so it admits the largest a message may be
(``max_message_bytes``, which gRPC's ``max_receive_message_length`` enforces) and gives back the rest once the
message is read. Admitting for nothing and counting after the read let every export in flight read a whole message
at once (memory of exports x message size, far past ``--max-inflight-bytes``); reserved, at most
``max_inflight_bytes // max_message_bytes`` messages (one at least) are read at once.

Connections are bounded too: one that has not finished its handshake (TLS, HTTP/2 preface and settings) within
the HTTP idle timeout is closed, as OTLP/HTTP closes a silent one, and one with no call for
``MAX_CONNECTION_IDLE_SECONDS`` is closed gracefully (GOAWAY; a client reconnects on its next call).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, NoReturn

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]  # googleapis-common-protos ships no stubs
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from tokentrail.processor.ingest.admission import RETRY_AFTER_SECONDS, Admission, AdmissionPass, Busy
from tokentrail.processor.ingest.auth import bearer_matches
from tokentrail.processor.ingest.listen import ListenError, check_port_free
from tokentrail.processor.ingest.metrics import Metrics
from tokentrail.processor.ingest.pipeline import Pipeline
from tokentrail.processor.ingest.signals import SIGNALS, Signal
from tokentrail.processor.normalize.otlp import InvalidRequest

__all__ = [
    "MAX_CONNECTION_IDLE_SECONDS",
    "STATUS_DETAILS_KEY",
    "TRACE_SERVICE",
    "ExportGate",
    "GrpcTransport",
    "busy_trailer",
]

log = logging.getLogger(__name__)

TRACE_SERVICE: Final = "opentelemetry.proto.collector.trace.v1.TraceService"
STATUS_DETAILS_KEY: Final = "grpc-status-details-bin"
"""Trailing metadata carrying a serialized ``google.rpc.Status`` (the gRPC "richer error model")."""

SPARE_WORKERS: Final = 4
"""gRPC runs every handler on its thread pool, refusals included. Admitted exports hold at most ``max_exports``
threads; these few more answer refusals at once instead of queueing them behind the exports in flight."""

MAX_CONNECTION_IDLE_SECONDS: Final = 300.0
"""An HTTP/2 connection with no call for this long is closed (GOAWAY): a client that went quiet or away stops
holding a socket and its buffers. Long enough that a Collector exporting every few seconds keeps its connection;
one exporting more rarely reconnects on its next call, transparently."""

UNAUTHENTICATED_DETAILS: Final = "missing or wrong bearer token (authorization metadata)"
BUSY_EXPORTS_DETAILS: Final = f"receiver busy: too many exports in flight; retry in {RETRY_AFTER_SECONDS} s"
BUSY_BYTES_DETAILS: Final = f"receiver busy: too many bytes of exports in flight; retry in {RETRY_AFTER_SECONDS} s"

Handler = Callable[[bytes, grpc.ServicerContext], Message]


def busy_trailer(details: str) -> tuple[tuple[str, bytes], ...]:
    """The trailing metadata of a busy refusal: a ``google.rpc.Status`` (UNAVAILABLE, ``details``) holding a
    ``RetryInfo`` of ``RETRY_AFTER_SECONDS``. Its message must equal the call's details (clients check)."""
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromSeconds(RETRY_AFTER_SECONDS)
    status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message=details)
    status.details.add().Pack(retry)
    return ((STATUS_DETAILS_KEY, status.SerializeToString()),)


_BUSY: Final = {
    Busy.EXPORTS: (BUSY_EXPORTS_DETAILS, busy_trailer(BUSY_EXPORTS_DETAILS)),
    Busy.BYTES: (BUSY_BYTES_DETAILS, busy_trailer(BUSY_BYTES_DETAILS)),
}


class ExportGate(grpc.ServerInterceptor):
    """Decides each Export from its metadata alone, on gRPC's serving thread, before its message is read: a wrong
    token is UNAUTHENTICATED (``requests_unauthenticated``), a full receiver UNAVAILABLE with ``RetryInfo``
    (``requests_busy``), its details naming the bound met. An Export is admitted for ``max_message_bytes``, the
    most its message can be; its handler shrinks the pass to the message's size once read and releases it when
    answered. A message that has not arrived ``message_timeout`` seconds after the handler asked for it cancels the
    call: a sender that never sends cannot keep its pass (OTLP/HTTP's ``body_timeout``). Other methods pass through
    untouched."""

    def __init__(
        self,
        *,
        token: str | None,
        admission: Admission,
        metrics: Metrics,
        methods: Iterable[str],
        max_message_bytes: int,
        message_timeout: float,
    ) -> None:
        self._token = token
        self._admission = admission
        self._metrics = metrics
        self._methods = frozenset(methods)
        self._max_message_bytes = max_message_bytes
        self._message_timeout = message_timeout

    def intercept_service(
        self, continuation: Callable[[Any], grpc.RpcMethodHandler | None], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or details.method not in self._methods:
            return handler
        if not bearer_matches(self._token, _authorization(details.invocation_metadata)):
            self._metrics.add(requests_unauthenticated=1)
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_DETAILS)
        admitted = self._admission.try_admit(self._max_message_bytes)
        if isinstance(admitted, Busy):
            self._metrics.add(requests_busy=1)
            details, trailer = _BUSY[admitted]
            return _refusal(handler, grpc.StatusCode.UNAVAILABLE, details, trailer)
        return grpc.stream_unary_rpc_method_handler(
            self._admitted(handler.unary_unary, admitted),
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )

    def _admitted(
        self, handle: Handler, admitted: AdmissionPass
    ) -> Callable[[Iterator[bytes], grpc.ServicerContext], Message]:
        # Called on every admitted call, even one whose client has gone (gRPC calls a request-streaming handler
        # before reading anything): the ``finally`` is the one place the pass is given back.
        def export(requests: Iterator[bytes], context: grpc.ServicerContext) -> Message:
            try:
                watchdog = threading.Timer(self._message_timeout, context.cancel)
                watchdog.daemon = True
                watchdog.start()
                try:
                    data = _one_message(requests, context)
                finally:
                    watchdog.cancel()
                admitted.shrink_to(len(data))  # within the reservation: gRPC refuses a bigger one (inflated too)
                return handle(data, context)
            finally:
                admitted.release()

        return export


def _refusal(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str, trailer: tuple[tuple[str, bytes], ...] = ()
) -> grpc.RpcMethodHandler:
    """A handler answering ``code`` without reading the message (request-streaming: gRPC does not read for it)."""

    def refuse(requests: Iterator[bytes], context: grpc.ServicerContext) -> NoReturn:
        if trailer:
            context.set_trailing_metadata(trailer)
        _abort(context, code, details)

    return grpc.stream_unary_rpc_method_handler(
        refuse, request_deserializer=None, response_serializer=handler.response_serializer
    )


def _one_message(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    try:
        return next(requests)
    except StopIteration:  # no message: a client that sent none, or one over the size limit (gRPC answered it)
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "an Export carries exactly one request message")
    except grpc.RpcError:  # the client cancelled or went away: nobody to answer
        _abort(context, grpc.StatusCode.CANCELLED, "the client went away")


class GrpcTransport:
    """The OTLP/gRPC listener of one receiver, on gRPC's own thread pool, behind ``ExportGate``. ``idle_timeout``
    bounds a connection's handshake (the HTTP surfaces' idle timeout: a client that connects and says nothing)."""

    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        admission: Admission,
        token: str | None,
        host: str,
        port: int,
        max_message_bytes: int,
        message_timeout: float,
        idle_timeout: float,
        reuse_port: bool,
        tls_cert: Path | None,
        tls_key: Path | None,
    ) -> None:
        self._pipeline = pipeline
        self._metrics = metrics
        self._admission = admission
        self._token = token
        self._host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self._requested_port = port
        self._max_message_bytes = max_message_bytes
        self._message_timeout = message_timeout
        self._idle_timeout = idle_timeout
        self._reuse_port = reuse_port
        self._tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
        self._server: grpc.Server | None = None
        self.port: int | None = None

    def start(self) -> int:
        """Listens and serves; returns the bound port (the real one when 0 was asked for). Raises ``ListenError``
        (an ``OSError``) when the address cannot be bound."""
        # Before gRPC tries: its core prints its own error line for a port in use (see ``ingest.listen``).
        check_port_free("OTLP/gRPC", self._host, self._requested_port, reuse_port=self._reuse_port)
        services = [TRACE_SERVICE, *(s.grpc_service for s in SIGNALS.values())]
        gate = ExportGate(
            token=self._token,
            admission=self._admission,
            metrics=self._metrics,
            methods=[f"/{service}/Export" for service in services],
            max_message_bytes=self._max_message_bytes,
            message_timeout=self._message_timeout,
        )
        server = grpc.server(
            ThreadPoolExecutor(
                max_workers=self._admission.max_exports + SPARE_WORKERS, thread_name_prefix="tokentrail-otlp"
            ),
            interceptors=[gate],
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.so_reuseport", 1 if self._reuse_port else 0),
                ("grpc.server_handshake_timeout_ms", _milliseconds(self._idle_timeout)),
                ("grpc.max_connection_idle_ms", _milliseconds(MAX_CONNECTION_IDLE_SECONDS)),
            ],
        )
        # Raw bytes in (no request_deserializer): a bad message is our INVALID_ARGUMENT, not gRPC's INTERNAL.
        handlers = [_export_handler(TRACE_SERVICE, self._export)]
        handlers += [_export_handler(s.grpc_service, self._acknowledger(s)) for s in SIGNALS.values()]
        server.add_generic_rpc_handlers(tuple(handlers))
        address = f"{self._host}:{self._requested_port}"
        try:
            if self._tls is not None:
                cert, key = self._tls
                credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as exc:  # bound by another process since the check
            raise ListenError(f"cannot listen for OTLP/gRPC on {address}: {exc}") from exc
        if port == 0:
            raise ListenError(f"cannot listen for OTLP/gRPC on {address}")
        server.start()
        self._server = server
        self.port = port
        return port

    def stop(self, grace: float | None) -> None:
        """Stops accepting and waits up to ``grace`` seconds for Exports in flight."""
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None

    def _export(self, data: bytes, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        """One admitted, authenticated trace Export (``ExportGate`` checked both)."""
        try:
            return self._pipeline.export_bytes(data).response
        except InvalidRequest as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except OSError as exc:  # WALError, Backpressure, DiskFull: nothing was acknowledged, the sender retries
            self._metrics.add(requests_unavailable=1)
            log.warning("export refused: %s", exc)
            _abort(context, grpc.StatusCode.UNAVAILABLE, f"records not stored: {exc}")
        except Exception:  # noqa: BLE001 - a bug answers INTERNAL with its traceback logged, never a dead server thread
            log.exception("export failed")
            _abort(context, grpc.StatusCode.INTERNAL, "internal error while ingesting spans")

    def _acknowledger(self, signal: Signal) -> Handler:
        """The Export of a signal TokenTrail does not store: the traces' gate and status codes, then counted."""

        def export(data: bytes, context: grpc.ServicerContext) -> Message:
            try:
                return signal.acknowledge(data, self._metrics)
            except InvalidRequest as exc:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except Exception:  # noqa: BLE001 - a bug answers INTERNAL with its traceback logged, never a dead thread
                log.exception("OTLP %s export failed", signal.name)
                _abort(context, grpc.StatusCode.INTERNAL, f"internal error while reading {signal.name}")

        return export


def _export_handler(service: str, handle: Handler) -> grpc.GenericRpcHandler:
    handler = grpc.unary_unary_rpc_method_handler(handle, request_deserializer=None, response_serializer=_serialize)
    return grpc.method_handlers_generic_handler(service, {"Export": handler})


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _authorization(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    context.abort(code, details)
    raise AssertionError("unreachable: grpc's abort raises")
