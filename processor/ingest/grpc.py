"""OTLP/gRPC for the receiver: ``TraceService/Export`` on a gRPC server, answered by the pipeline;
``MetricsService/Export`` and ``LogsService/Export`` acknowledged and counted, never stored (``ingest.signals``).

Status codes: OK once the records are durable (``partial_success`` carries rejected spans and warnings),
INVALID_ARGUMENT for a body that is not a request (not retried), UNAUTHENTICATED for a missing or wrong bearer token
(nothing stored), UNAVAILABLE when the records could not be stored (the sender retries).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, NoReturn

import grpc
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from tokentrail.processor.ingest.auth import bearer_matches
from tokentrail.processor.ingest.listen import ListenError, check_port_free
from tokentrail.processor.ingest.metrics import Metrics
from tokentrail.processor.ingest.pipeline import Pipeline
from tokentrail.processor.ingest.signals import SIGNALS, Signal
from tokentrail.processor.normalize.otlp import InvalidRequest

__all__ = ["TRACE_SERVICE", "GrpcTransport"]

log = logging.getLogger(__name__)

TRACE_SERVICE: Final = "opentelemetry.proto.collector.trace.v1.TraceService"


class GrpcTransport:
    """The OTLP/gRPC listener of one receiver, on gRPC's own thread pool."""

    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        token: str | None,
        host: str,
        port: int,
        max_workers: int,
        max_message_bytes: int,
        reuse_port: bool,
        tls_cert: Path | None,
        tls_key: Path | None,
    ) -> None:
        self._pipeline = pipeline
        self._metrics = metrics
        self._token = token
        self._host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self._requested_port = port
        self._max_workers = max_workers
        self._max_message_bytes = max_message_bytes
        self._reuse_port = reuse_port
        self._tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
        self._server: grpc.Server | None = None
        self.port: int | None = None

    def start(self) -> int:
        """Listens and serves; returns the bound port (the real one when 0 was asked for). Raises ``ListenError``
        (an ``OSError``) when the address cannot be bound."""
        # Before gRPC tries: its core prints its own error line for a port in use (see ``ingest.listen``).
        check_port_free("OTLP/gRPC", self._host, self._requested_port, reuse_port=self._reuse_port)
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="tokentrail-otlp"),
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.so_reuseport", 1 if self._reuse_port else 0),
            ],
        )
        handler = grpc.unary_unary_rpc_method_handler(
            self._export,
            request_deserializer=None,  # raw bytes: a bad message is our INVALID_ARGUMENT, not grpc's INTERNAL
            response_serializer=ExportTraceServiceResponse.SerializeToString,
        )
        handlers = [grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": handler})]
        for signal in SIGNALS.values():
            other = grpc.unary_unary_rpc_method_handler(
                self._acknowledger(signal), request_deserializer=None, response_serializer=_serialize
            )
            handlers.append(grpc.method_handlers_generic_handler(signal.grpc_service, {"Export": other}))
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
        if self._token is not None and not bearer_matches(self._token, _authorization(context)):
            self._metrics.add(requests_unauthenticated=1)
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (authorization metadata)")
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

    def _acknowledger(self, signal: Signal) -> Callable[[bytes, grpc.ServicerContext], Message]:
        """The Export of a signal TokenTrail does not store: the traces' token check and status codes, then counted."""

        def export(data: bytes, context: grpc.ServicerContext) -> Message:
            if self._token is not None and not bearer_matches(self._token, _authorization(context)):
                self._metrics.add(requests_unauthenticated=1)
                _abort(context, grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (authorization metadata)")
            try:
                return signal.acknowledge(data, self._metrics)
            except InvalidRequest as exc:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except Exception:  # noqa: BLE001 - a bug answers INTERNAL with its traceback logged, never a dead thread
                log.exception("OTLP %s export failed", signal.name)
                _abort(context, grpc.StatusCode.INTERNAL, f"internal error while reading {signal.name}")

        return export


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _authorization(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    context.abort(code, details)
    raise AssertionError("unreachable: grpc's abort raises")
