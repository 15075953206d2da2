"""The OTLP/gRPC receiver: spans in, durable usage records out.

Per Export: normalize -> dedupe -> price -> WAL append (fsync) -> acknowledge. The response is sent only after the
records are on disk, so the Collector's retry covers any failure before that point: a WAL failure or a full
backlog answers UNAVAILABLE (retryable), a request that is not valid protobuf answers INVALID_ARGUMENT (not
retryable). A flusher thread turns closed WAL segments into Parquet; on start, segments left by a crash are replayed
first and their identities seed the dedupe window.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .dedupe import DEFAULT_WINDOW, DedupeWindow, DuplicateInFlightFailed
from .normalize import normalize_request
from .pricing import Pricer
from .schema import UsageRecord
from .storage import FlushResult, flush_segment, flush_wal
from .wal import WALError, WriteAheadLog, list_segments, validate_receiver_id

__all__ = ["Backpressure", "ExportOutcome", "Receiver", "default_receiver_id"]

log = logging.getLogger(__name__)

TRACE_SERVICE: Final = "opentelemetry.proto.collector.trace.v1.TraceService"
MAX_ERROR_MESSAGES: Final = 5


class Backpressure(WALError):
    """More data is waiting for Parquet than allowed: refuse until the flusher catches up."""


def default_receiver_id() -> str:
    """The host name, made safe as a file name: stable across restarts, so a restart replays its own WAL."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname() or "")[:64].strip(".-")
    return host or "receiver"


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    """What one Export did, for callers of ``Receiver.export`` (e.g. a future OTLP/HTTP front end)."""

    response: ExportTraceServiceResponse
    accepted: int
    rejected: int
    deduplicated: int
    unpriced: int
    skipped: int


class _ReceiverLock:
    """An exclusive flock on ``wal/<receiver>.lock``: two live processes never share one receiver's WAL."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Receiver:
    """An OTLP/gRPC trace receiver writing usage records to ``data_dir/usage`` (Parquet) via ``data_dir/wal``."""

    def __init__(
        self,
        data_dir: Path | str,
        host: str = "127.0.0.1",
        grpc_port: int = 14317,
        receiver_id: str | None = None,
        flush_interval: float = 1.0,
        *,
        max_workers: int = 8,
        max_segment_bytes: int = 64 << 20,
        max_pending_bytes: int = 2 << 30,
        max_message_bytes: int = 64 << 20,
        dedupe_window: int = DEFAULT_WINDOW,
        reuse_port: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.wal_dir = self.data_dir / "wal"
        self.usage_dir = self.data_dir / "usage"
        self.host = host
        self.receiver_id = validate_receiver_id(receiver_id or default_receiver_id())
        self.flush_interval = flush_interval
        self.max_pending_bytes = max_pending_bytes
        self._requested_port = grpc_port
        self._bound_port: int | None = None
        self._max_workers = max_workers
        self._max_segment_bytes = max_segment_bytes
        self._max_message_bytes = max_message_bytes
        self._reuse_port = reuse_port
        self._dedupe = DedupeWindow(dedupe_window)
        self._pricer = Pricer()
        self._wal: WriteAheadLog | None = None
        self._server: grpc.Server | None = None
        self._lock = _ReceiverLock(self.wal_dir / f"{self.receiver_id}.lock")
        self._flush_lock = threading.Lock()
        self._stop_flusher = threading.Event()
        self._flusher: threading.Thread | None = None
        self._stats_lock = threading.Lock()
        self._stats = dict.fromkeys(
            ("received", "accepted", "rejected", "deduplicated", "unpriced", "skipped", "recovered"), 0
        )
        self._started = False
        self._listeners: list[Callable[[Sequence[UsageRecord]], None]] = []

    def add_listener(self, listener: Callable[[Sequence[UsageRecord]], None]) -> None:
        """Call ``listener(records)`` with each batch once it is durable (after the WAL fsync, before the ack).

        For consumers that act as records land (budgets, alerts). A listener runs on the request's thread, so it
        must be quick; its exceptions are logged and never fail the export — the records are already safe."""
        self._listeners.append(listener)

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def grpc_port(self) -> int:
        """The bound port (the real one when 0 was requested); the requested one before ``start``."""
        return self._bound_port if self._bound_port is not None else self._requested_port

    @property
    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    def start(self) -> Receiver:
        if self._started:
            return self
        self.wal_dir.mkdir(parents=True, exist_ok=True)
        self.usage_dir.mkdir(parents=True, exist_ok=True)
        if not self._lock.try_acquire():
            raise RuntimeError(
                f"receiver id {self.receiver_id!r} is in use by another live receiver on {self.data_dir}; "
                "give each receiver a unique receiver_id"
            )
        try:
            self._recover()
            self._wal = WriteAheadLog(
                self.wal_dir,
                self.receiver_id,
                max_segment_bytes=self._max_segment_bytes,
                max_segment_age=self.flush_interval,
            )
            self._started = True  # before the port opens: the first Export must not be refused
            self._start_server()
        except BaseException:
            self._started = False
            self._wal = None
            self._lock.release()
            raise
        self._stop_flusher.clear()
        self._flusher = threading.Thread(target=self._flush_loop, name=f"tokentrail-flusher-{self.receiver_id}")
        self._flusher.daemon = True
        self._flusher.start()
        return self

    def _start_server(self) -> None:
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="tokentrail-otlp"),
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.so_reuseport", 1 if self._reuse_port else 0),
            ],
        )
        handler = grpc.unary_unary_rpc_method_handler(
            self._export_rpc,
            request_deserializer=None,  # raw bytes: a bad message is our INVALID_ARGUMENT, not grpc's INTERNAL
            response_serializer=ExportTraceServiceResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": handler}),))
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        try:
            port = server.add_insecure_port(f"{host}:{self._requested_port}")
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {host}:{self._requested_port}: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot listen on {host}:{self._requested_port}")
        server.start()
        self._bound_port = port
        self._server = server

    def stop(self, grace: float = 5.0) -> None:
        """Stops accepting, waits for in-flight Exports, then writes everything acknowledged to Parquet."""
        if not self._started:
            return
        self._started = False
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        self._stop_flusher.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        try:
            self.flush()
        except Exception:
            log.exception("final flush failed; the WAL keeps the records and the next start replays them")
        if self._wal is not None:
            self._wal.close()
            self._wal = None
        self._lock.release()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- durability --------------------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Replays segments a previous run left behind: ours, and those of receivers whose lock nobody holds."""
        for tmp in self.usage_dir.glob(f"date=*/part-{self.receiver_id}-*.parquet.tmp"):
            tmp.unlink(missing_ok=True)  # a write that never reached its rename
        identities: list[tuple[str, str]] = []
        result = FlushResult()
        with self._flush_lock:
            by_owner: dict[str, list[Path]] = {}
            for rid, _seq, path in list_segments(self.wal_dir):
                by_owner.setdefault(rid, []).append(path)
            for rid, paths in by_owner.items():
                other = None
                if rid != self.receiver_id:
                    other = _ReceiverLock(self.wal_dir / f"{rid}.lock")
                    if not other.try_acquire():
                        continue  # a live receiver owns these
                try:
                    for path in paths:
                        flush_segment(path, self.usage_dir, collect_identities=True, result=result)
                finally:
                    if other is not None:
                        other.release()
            identities = result.identities
        if result.segments:
            log.info("replayed %d WAL segment(s): %d record(s)", result.segments, result.rows)
        self._dedupe.seed(identities)
        with self._stats_lock:
            self._stats["recovered"] += result.rows

    def flush(self) -> FlushResult:
        """Seals the current WAL segment and writes every acknowledged record to Parquet before returning."""
        wal = self._wal
        if wal is None:
            return FlushResult()
        with self._flush_lock:
            wal.rotate()
            return flush_wal(wal, self.usage_dir)

    def _flush_loop(self) -> None:
        while not self._stop_flusher.wait(self.flush_interval):
            wal = self._wal
            if wal is None:
                continue
            try:
                with self._flush_lock:
                    wal.rotate_if_older(self.flush_interval)
                    flush_wal(wal, self.usage_dir)
            except Exception:
                log.exception("flushing WAL to Parquet failed; will retry")

    # -- ingest ----------------------------------------------------------------------------------------------

    def export(self, request: ExportTraceServiceRequest) -> ExportOutcome:
        """The whole ingest path for one request. Raises ``WALError`` (records not stored: answer retryably)."""
        wal = self._wal
        if wal is None or not self._started:
            raise WALError("receiver is not running")
        result = normalize_request(request)
        with self._stats_lock:
            self._stats["received"] += result.received
        claim = self._dedupe.claim(result.records)
        fresh = claim.fresh
        try:
            unpriced = self._pricer.price_all(fresh)
            if fresh:
                if wal.pending_bytes() > self.max_pending_bytes:
                    raise Backpressure("too much data waiting for Parquet; retry later")
                wal.append(fresh)
        except BaseException:
            claim.abort()
            raise
        claim.commit()
        if fresh:
            self._notify(fresh)
        try:
            claim.wait_for_others()
        except DuplicateInFlightFailed as exc:
            raise WALError(str(exc)) from exc

        response = ExportTraceServiceResponse()
        if result.rejected:
            message = "; ".join(result.errors[:MAX_ERROR_MESSAGES])
            if result.rejected > MAX_ERROR_MESSAGES:
                message += f"; and {result.rejected - MAX_ERROR_MESSAGES} more rejected span(s)"
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=result.rejected, error_message=message)
            )
        outcome = ExportOutcome(
            response=response,
            accepted=len(fresh),
            rejected=result.rejected,
            deduplicated=claim.duplicates,
            unpriced=unpriced,
            skipped=result.skipped,
        )
        with self._stats_lock:
            stats = self._stats
            stats["accepted"] += outcome.accepted
            stats["rejected"] += outcome.rejected
            stats["deduplicated"] += outcome.deduplicated
            stats["unpriced"] += outcome.unpriced
            stats["skipped"] += outcome.skipped
        return outcome

    def _notify(self, records: Sequence[UsageRecord]) -> None:
        for listener in self._listeners:
            try:
                listener(records)
            except Exception:
                log.exception("a receiver listener failed; the records are stored regardless")

    def _export_rpc(self, data: bytes, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        try:
            request = ExportTraceServiceRequest.FromString(data)
        except (DecodeError, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed ExportTraceServiceRequest: {exc}")
        try:
            return self.export(request).response
        except OSError as exc:  # WALError, Backpressure, disk full: nothing was acknowledged, the Collector retries
            log.warning("export refused: %s", exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"records not stored: {exc}")
        except Exception:
            log.exception("export failed")
            context.abort(grpc.StatusCode.INTERNAL, "internal error while ingesting spans")
        raise AssertionError("unreachable")  # context.abort always raises
