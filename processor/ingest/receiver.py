"""The OTLP receiver: spans in (gRPC, and HTTP when asked), durable usage records out.

``Receiver`` only composes the parts, each a module with one job: ``grpc`` and ``http`` (transports), ``pipeline``
(one Export: normalize -> dedupe -> price -> WAL -> answer), ``recovery`` (replay at start, dedupe re-seeding),
``flusher`` (WAL -> Parquet in the background), ``status`` (the status file), ``disk`` (``max_disk_bytes``),
``admission`` (exports and bytes in flight: one bound both transports share), ``metrics``, ``signals`` (OTLP
metrics and logs: counted, acknowledged, never stored) and ``listen`` (a taken port is one ``ListenError``).
Data flows one way: the transports call the pipeline, which writes the WAL the flusher reads.

Several receiver processes may share one data directory (and, with ``reuse_port``, one port): each needs its own
``receiver_id`` (it names its WAL segments and Parquet files); per-day locks keep their flushers and compaction apart.
See docs/ARCHITECTURE.md, Pipeline and Durability and dedupe.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tokentrail.processor.errors import TokenTrailError
from tokentrail.processor.ingest.admission import DEFAULT_MAX_EXPORTS, DEFAULT_MAX_INFLIGHT_BYTES, Admission
from tokentrail.processor.ingest.asgi_server import DEFAULT_LIMITS, HttpLimits
from tokentrail.processor.ingest.auth import bearer_matches
from tokentrail.processor.ingest.disk import DiskUsage
from tokentrail.processor.ingest.flusher import Flusher
from tokentrail.processor.ingest.gc_tuning import raise_gc_threshold, restore_gc_threshold
from tokentrail.processor.ingest.grpc import GrpcTransport
from tokentrail.processor.ingest.http import HttpReceiver
from tokentrail.processor.ingest.metrics import Metrics
from tokentrail.processor.ingest.pipeline import ExportOutcome, Listener, Pipeline
from tokentrail.processor.ingest.recovery import recover
from tokentrail.processor.ingest.status import StatusFile, status_path
from tokentrail.processor.pricing.catalog import Pricer
from tokentrail.processor.storage.dedupe import DEFAULT_WINDOW, DedupeWindow
from tokentrail.processor.storage.parquet import FlushResult
from tokentrail.processor.storage.receiver_lock import ReceiverLock
from tokentrail.processor.storage.wal import WriteAheadLog, validate_receiver_id

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "Receiver", "ReceiverConfigError", "ReceiverIdInUse", "default_receiver_id"]

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES: Final = 64 << 20
"""One Export's size limit (gRPC ``max_receive_message_length``, the OTLP/HTTP body): a larger one is refused
(RESOURCE_EXHAUSTED / 413). Far above a Collector's batches, which are a few MiB."""


class ReceiverIdInUse(TokenTrailError, RuntimeError):
    """Another live receiver holds this receiver id on this data directory."""


class ReceiverConfigError(TokenTrailError, ValueError):
    """A receiver setting that cannot work (half a TLS pair, a disk cap or a bound that is not positive)."""


def default_receiver_id() -> str:
    """The host name, made safe as a file name: stable across restarts, so a restart replays its own WAL."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname() or "")[:64].strip(".-")
    return host or "receiver"


class Receiver:
    """An OTLP trace receiver writing usage records to ``data_dir/usage`` (Parquet) via ``data_dir/wal``."""

    def __init__(
        self,
        data_dir: Path | str,
        host: str = "127.0.0.1",
        grpc_port: int = 14317,
        receiver_id: str | None = None,
        flush_interval: float = 1.0,
        *,
        max_segment_bytes: int = 64 << 20,
        max_pending_bytes: int = 2 << 30,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_concurrent_exports: int = DEFAULT_MAX_EXPORTS,
        max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
        http_limits: HttpLimits = DEFAULT_LIMITS,
        dedupe_window: int = DEFAULT_WINDOW,
        reuse_port: bool = False,
        http_port: int | None = None,
        ingest_token: str | None = None,
        tls_cert: Path | str | None = None,
        tls_key: Path | str | None = None,
        max_disk_bytes: int | None = None,
        status_interval: float = 5.0,
        pricer: Pricer | None = None,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.wal_dir = self.data_dir / "wal"
        self.usage_dir = self.data_dir / "usage"
        self.host = host
        self.receiver_id = validate_receiver_id(receiver_id or default_receiver_id())
        self.flush_interval = flush_interval
        self.ingest_token = ingest_token or None
        self.allowed_hosts = tuple(allowed_hosts)  # Host names OTLP/HTTP answers besides its own (auth.HostCheck)
        if (tls_cert is None) != (tls_key is None):
            raise ReceiverConfigError("TLS needs both a certificate and a key file")
        if max_disk_bytes is not None and max_disk_bytes <= 0:
            raise ReceiverConfigError(f"max_disk_bytes must be positive, got {max_disk_bytes}")
        _check_bounds(max_message_bytes, max_concurrent_exports, max_inflight_bytes, http_limits)
        self.tls_cert = Path(tls_cert) if tls_cert is not None else None
        self.tls_key = Path(tls_key) if tls_key is not None else None
        self._requested_grpc_port = grpc_port
        self._requested_http_port = http_port
        self._max_segment_bytes = max_segment_bytes
        self._max_message_bytes = max_message_bytes
        self._http_limits = http_limits
        self._reuse_port = reuse_port
        self.metrics = Metrics()
        # One bound for both transports (a sender cannot double it by splitting its exports over gRPC and HTTP);
        # ``admission.in_flight`` says what it holds now.
        self.admission = Admission(max_concurrent_exports, max_inflight_bytes)
        self._disk = DiskUsage(self.usage_dir, max_disk_bytes)
        self._dedupe = DedupeWindow(dedupe_window)
        self._pipeline = Pipeline(
            dedupe=self._dedupe,
            # Built now when not given: it reads the catalog and TOKENTRAIL_PRICING's overrides, and a bad overrides
            # file stops the constructor, before anything listens.
            pricer=pricer if pricer is not None else Pricer(),
            metrics=self.metrics,
            disk=self._disk,
            max_pending_bytes=max_pending_bytes,
        )
        self._status = StatusFile(
            status_path(self.data_dir, self.receiver_id), self._describe, self.metrics.snapshot, status_interval
        )
        self._lock = ReceiverLock(self.wal_dir, self.receiver_id)
        self._wal: WriteAheadLog | None = None
        self._flusher: Flusher | None = None
        self._grpc: GrpcTransport | None = None
        self._http: HttpReceiver | None = None
        self._started = False

    # -- what callers see ------------------------------------------------------------------------------------------

    @property
    def grpc_port(self) -> int:
        """The bound port (the real one when 0 was requested); the requested one before ``start``."""
        if self._grpc is not None and self._grpc.port is not None:
            return self._grpc.port
        return self._requested_grpc_port

    @property
    def http_port(self) -> int | None:
        """The bound OTLP/HTTP port, or None when HTTP is off."""
        if self._http is not None:
            return self._http.port
        return self._requested_http_port

    @property
    def wal(self) -> WriteAheadLog | None:
        """The write-ahead log while running, else None."""
        return self._wal

    @property
    def stats(self) -> dict[str, int]:
        return self._pipeline.stats()

    @property
    def max_disk_bytes(self) -> int | None:
        return self._disk.max_bytes

    @max_disk_bytes.setter
    def max_disk_bytes(self, value: int | None) -> None:
        """Takes effect with the next Export (an operator freed or took space)."""
        self._disk.max_bytes = value

    @property
    def max_pending_bytes(self) -> int:
        return self._pipeline.max_pending_bytes

    def disk_used(self) -> int:
        """Bytes counted against ``max_disk_bytes``: Parquet under ``usage/`` plus the WAL not yet flushed."""
        return self._disk.used(self._wal)

    def status_path(self) -> Path:
        return self._status.path

    def check_token(self, presented: str | None) -> bool:
        """True when no token is required, or ``presented`` is ``Bearer <token>`` (constant-time comparison)."""
        return bearer_matches(self.ingest_token, presented)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(records)`` with each batch once it is durable (after the WAL fsync, before the ack).

        For consumers that act as records land (budgets, alerts). A listener runs on the request's thread, so it
        must be quick; its exceptions are logged and never fail the export: the records are already safe."""
        self._pipeline.add_listener(listener)

    def export(self, request: ExportTraceServiceRequest) -> ExportOutcome:
        """The whole ingest path for one request. Raises ``WALError`` (records not stored: answer retryably)."""
        return self._pipeline.export(request)

    def export_bytes(self, data: bytes) -> ExportOutcome:
        """One serialized ExportTraceServiceRequest. Raises ``InvalidRequest`` for a body that is not one,
        ``WALError`` when the records were not stored."""
        return self._pipeline.export_bytes(data)

    def flush(self) -> FlushResult:
        """Seals the current WAL segment and writes every acknowledged record to Parquet before returning."""
        if self._flusher is None:
            return FlushResult()
        return self._flusher.flush()

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> Receiver:
        """Recovers, then listens. Raises ``ReceiverIdInUse``, or ``ListenError`` (an ``OSError`` whose message
        names the port and the fix) when a port is taken; either way nothing is left running or locked."""
        if self._started:
            return self
        self.wal_dir.mkdir(parents=True, exist_ok=True)
        self.usage_dir.mkdir(parents=True, exist_ok=True)
        if not self._lock.try_acquire():
            raise ReceiverIdInUse(
                f"receiver id {self.receiver_id!r} is in use by another live receiver on {self.data_dir}; "
                "give each receiver a unique receiver_id"
            )
        try:
            self._recover()
            wal = WriteAheadLog(
                self.wal_dir,
                self.receiver_id,
                max_segment_bytes=self._max_segment_bytes,
                max_segment_age=self.flush_interval,
            )
            flusher = Flusher(
                wal,
                self.usage_dir,
                interval=self.flush_interval,
                metrics=self.metrics,
                disk=self._disk,
                housekeeping=self._housekeeping,
            )
            self._wal, self._flusher = wal, flusher
            self._pipeline.open(wal, flusher.note_appended)  # before the ports open: no first Export refused
            self._started = True
            self._register_gauges(flusher)
            self._disk.refresh(force=True)
            self._grpc = GrpcTransport(
                self._pipeline,
                self.metrics,
                admission=self.admission,
                token=self.ingest_token,
                host=self.host,
                port=self._requested_grpc_port,
                max_message_bytes=self._max_message_bytes,
                message_timeout=self._http_limits.body_timeout,  # the same deadline as an OTLP/HTTP body's
                idle_timeout=self._http_limits.idle_timeout,  # a silent connection closed as OTLP/HTTP closes one
                reuse_port=self._reuse_port,
                tls_cert=self.tls_cert,
                tls_key=self.tls_key,
            )
            self._grpc.start()
            if self._requested_http_port is not None:
                self._http = HttpReceiver(
                    self._pipeline,
                    self.metrics,
                    token=self.ingest_token,
                    labels={"receiver_id": self.receiver_id},
                    host=self.host,
                    port=self._requested_http_port,
                    tls_cert=self.tls_cert,
                    tls_key=self.tls_key,
                    reuse_port=self._reuse_port,
                    max_body_bytes=self._max_message_bytes,
                    allowed_hosts=self.allowed_hosts,
                    admission=self.admission,
                    limits=self._http_limits,
                ).start()
        except BaseException:
            self._started = False
            self._pipeline.close()
            if self._grpc is not None:
                self._grpc.stop(None)
                self._grpc = None
            self._wal = None
            self._flusher = None
            self._lock.release()
            raise
        raise_gc_threshold()
        flusher.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stops accepting, waits for in-flight Exports, then writes everything acknowledged to Parquet."""
        if not self._started:
            return
        self._started = False
        self._pipeline.close()
        try:
            if self._http is not None:
                self._http.stop()
                self._http = None
            if self._grpc is not None:
                self._grpc.stop(grace)  # kept: ``grpc_port`` still says where it listened
            flusher, wal = self._flusher, self._wal
            if flusher is not None:
                flusher.stop()
                try:
                    flusher.flush()
                except Exception:  # noqa: BLE001 - stop must release the WAL and its lock; logged, the WAL keeps the records
                    log.exception("final flush failed; the WAL keeps the records and the next start replays them")
            if wal is not None:
                wal.close()
            self._wal = None
            self._flusher = None
            self._status.write()
            self._lock.release()
        finally:
            restore_gc_threshold()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the parts' glue -------------------------------------------------------------------------------------------

    def _recover(self) -> None:
        result = recover(self.wal_dir, self.usage_dir, self.receiver_id, self._dedupe)
        self._pipeline.count(recovered=result.rows)
        self.metrics.add(
            records_recovered=result.rows,
            parquet_rows_written=result.rows,
            parquet_files_written=len(result.files),
            wal_corrupt_frames=result.corrupt_frames,
            wal_torn_tails=result.torn_tails,
        )

    def _housekeeping(self) -> None:
        """After each flusher round, on its thread: the disk walk when due, the status file when due."""
        self._disk.refresh()
        self._status.write_if_due()

    def _register_gauges(self, flusher: Flusher) -> None:
        m = self.metrics
        m.gauge("wal_pending_bytes", lambda: self._wal.pending_bytes() if self._wal is not None else 0)
        m.gauge("disk_used_bytes", self.disk_used)
        m.gauge("dedupe_window_entries", lambda: len(self._dedupe))
        m.gauge("flush_lag_seconds", flusher.lag_seconds)
        m.gauge("exports_in_flight", lambda: self.admission.in_flight[0])
        m.gauge("bytes_in_flight", lambda: self.admission.in_flight[1])

    def _describe(self) -> Mapping[str, object]:
        return {
            "receiver_id": self.receiver_id,
            "pid": os.getpid(),
            "host": self.host,
            "grpc_port": self.grpc_port,
            "http_port": self.http_port,
            "running": self._started,
            "started_at": self.metrics.started,
            "max_disk_bytes": self.max_disk_bytes,
            "tls": self.tls_cert is not None,
            "auth": self.ingest_token is not None,
        }


def _check_bounds(max_message_bytes: int, max_exports: int, max_inflight_bytes: int, limits: HttpLimits) -> None:
    """Every bound positive, or ``ReceiverConfigError`` naming it: a zero would refuse everything, quietly."""
    for name, value in (
        ("max_message_bytes", max_message_bytes),
        ("max_concurrent_exports", max_exports),
        ("max_inflight_bytes", max_inflight_bytes),
        ("http_limits.idle_timeout", limits.idle_timeout),
        ("http_limits.body_timeout", limits.body_timeout),
        ("http_limits.read_timeout", limits.read_timeout),
        ("http_limits.header_bytes", limits.header_bytes),
    ):
        if not value > 0:  # also refuses NaN
            raise ReceiverConfigError(f"{name} must be positive, got {value}")
