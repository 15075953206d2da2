"""The OTLP receiver (gRPC, and HTTP via ``receiver_http``): spans in, durable usage records out.

Per Export: parse -> normalize -> dedupe -> price -> encode (one request at a time: ``_prepare``) -> WAL append and
group-committed fsync (concurrently with the next request's work: ``_store``) -> acknowledge. Records travel as columns
(``schema.UsageColumns``), never as one object each. The response is sent only after the records are on disk, so the
Collector's retry covers any failure before that point: a WAL failure, a full disk (``max_disk_bytes``) or a full
backlog answers UNAVAILABLE / 503 (retryable), a request that is not valid protobuf answers INVALID_ARGUMENT / 400 (not
retryable), a missing or wrong token UNAUTHENTICATED / 401 (nothing stored). A flusher thread turns closed WAL segments
into Parquet; on start, segments left by a crash are replayed first and their identities seed the dedupe window.

Several receiver processes may share one data directory (and, with ``reuse_port``, one port): each needs its own
``receiver_id`` (it names its WAL segments and Parquet files); per-day locks keep their flushers and compaction apart.
"""

from __future__ import annotations

import fcntl
import gc
import hmac
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from tokentrail.processor import environment
from tokentrail.processor.ingest.metrics import STATUS_DIR, Metrics
from tokentrail.processor.normalize.otlp import InvalidRequest, parse_export_request
from tokentrail.processor.normalize.reader import NormalizeResult, normalize_bytes, normalize_request
from tokentrail.processor.pricing.catalog import Pricer
from tokentrail.processor.schema import UsageColumns, UsageRecord
from tokentrail.processor.storage.dedupe import (
    DEFAULT_WINDOW,
    Claim,
    DedupeWindow,
    DuplicateInFlightFailed,
    column_keys,
)
from tokentrail.processor.storage.parquet import FlushResult, flush_segment, flush_wal
from tokentrail.processor.storage.wal import WALError, WriteAheadLog, encode_table, list_segments, validate_receiver_id

__all__ = [
    "INGEST_TOKEN_ENV",
    "Backpressure",
    "DiskFull",
    "ExportOutcome",
    "Receiver",
    "default_receiver_id",
]

INGEST_TOKEN_ENV: Final = environment.INGEST_TOKEN

log = logging.getLogger(__name__)

TRACE_SERVICE: Final = "opentelemetry.proto.collector.trace.v1.TraceService"
MAX_ERROR_MESSAGES: Final = 5
RECENT_SECONDS: Final = 3600  # Parquet written this recently seeds the dedupe window at start


# The cyclic garbage collector's first threshold while a receiver runs. An Export allocates thousands of short-lived,
# acyclic rows; at Python's default (700 allocations) the collector ran about ten times per request, ~20 % of the
# ingest CPU (measured: benchmarks/receiver_stages.py). Restored when the last receiver of the process stops.
GC_THRESHOLD: Final = 50_000
_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None


def _raise_gc_threshold() -> None:
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            saved = gc.get_threshold()
            if 0 < saved[0] < GC_THRESHOLD:  # 0: collection disabled by the application, left alone
                _gc_saved = saved
                gc.set_threshold(GC_THRESHOLD, *saved[1:])
        _gc_users += 1


def _restore_gc_threshold() -> None:
    global _gc_users, _gc_saved
    with _gc_lock:
        _gc_users -= 1
        if _gc_users == 0 and _gc_saved is not None:
            if gc.get_threshold()[0] == GC_THRESHOLD:  # unless someone else changed it since
                gc.set_threshold(*_gc_saved)
            _gc_saved = None


class Backpressure(WALError):
    """More data is waiting for Parquet than allowed: refuse until the flusher catches up."""


class DiskFull(WALError):
    """Storing the request would exceed ``max_disk_bytes`` (or the disk is full): refuse, the sender retries."""


def default_receiver_id() -> str:
    """The host name, made safe as a file name: stable across restarts, so a restart replays its own WAL."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname() or "")[:64].strip(".-")
    return host or "receiver"


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    """What one Export did, for callers of ``Receiver.export`` (the gRPC and HTTP front ends)."""

    response: ExportTraceServiceResponse
    accepted: int
    rejected: int
    deduplicated: int
    unpriced: int
    skipped: int


@dataclass(frozen=True, slots=True)
class _Prepared:
    """An Export between its CPU-bound part and its WAL write."""

    wal: WriteAheadLog
    result: NormalizeResult
    warnings: list[str]
    claim: Claim
    fresh: UsageColumns
    unpriced: int
    frame: bytes


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
        http_port: int | None = None,
        ingest_token: str | None = None,
        tls_cert: Path | str | None = None,
        tls_key: Path | str | None = None,
        max_disk_bytes: int | None = None,
        status_interval: float = 5.0,
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
        self._requested_http_port = http_port
        self._http = None  # receiver_http.HttpReceiver, when http_port is not None
        self.ingest_token = ingest_token or None
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("TLS needs both a certificate and a key file")
        self.tls_cert = Path(tls_cert) if tls_cert is not None else None
        self.tls_key = Path(tls_key) if tls_key is not None else None
        if max_disk_bytes is not None and max_disk_bytes <= 0:
            raise ValueError("max_disk_bytes must be positive")
        self.max_disk_bytes = max_disk_bytes
        self.status_interval = status_interval
        self.metrics = Metrics()
        self._dataset_bytes = 0
        self._dataset_scanned = 0.0
        self._unflushed_since: float | None = None
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
        self._work = threading.Lock()  # one Export's CPU-bound part at a time (see ``_prepare``)

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

    @property
    def http_port(self) -> int | None:
        """The bound OTLP/HTTP port, or None when HTTP is off."""
        if self._http is not None:
            return self._http.port
        return self._requested_http_port

    def check_token(self, presented: str | None) -> bool:
        """True when no token is required, or ``presented`` is ``Bearer <token>`` (constant-time comparison)."""
        if self.ingest_token is None:
            return True
        if not presented:
            return False
        scheme, _, value = presented.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), self.ingest_token.encode())

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
            self._register_gauges()
            self._refresh_dataset_bytes(force=True)
            self._start_server()
            if self._requested_http_port is not None:
                from tokentrail.processor.ingest.http import HttpReceiver

                self._http = HttpReceiver(
                    self,
                    host=self.host,
                    port=self._requested_http_port,
                    tls_cert=self.tls_cert,
                    tls_key=self.tls_key,
                    reuse_port=self._reuse_port,
                    max_body_bytes=self._max_message_bytes,
                ).start()
        except BaseException:
            self._started = False
            if self._server is not None:
                self._server.stop(None)
                self._server = None
            self._wal = None
            self._lock.release()
            raise
        _raise_gc_threshold()
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
            if self.tls_cert is not None and self.tls_key is not None:
                credentials = grpc.ssl_server_credentials([(self.tls_key.read_bytes(), self.tls_cert.read_bytes())])
                port = server.add_secure_port(f"{host}:{self._requested_port}", credentials)
            else:
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
        try:
            if self._http is not None:
                self._http.stop()
                self._http = None
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
            self._write_status()
            self._lock.release()
        finally:
            _restore_gc_threshold()

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
        identities: list[str] = []
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
        self._dedupe.seed(self._recent_parquet_identities())
        self._dedupe.seed(identities)
        with self._stats_lock:
            self._stats["recovered"] += result.rows
        self.metrics.add(records_recovered=result.rows, parquet_rows_written=result.rows, parquet_files_written=len(result.files))

    def _recent_parquet_identities(self) -> list[str]:
        """Identities in Parquet files written in the last ``RECENT_SECONDS`` (by any receiver): a batch acknowledged
        just before a crash may already be in Parquet (its segment flushed and deleted), and the sender retries it
        if the acknowledgement was lost. Compaction would remove such a copy; this keeps it out in the first place."""
        import pyarrow.parquet as pq
        from tokentrail.processor.storage.parquet import _identities

        cutoff = time.time() - RECENT_SECONDS
        recent: list[tuple[float, str]] = []
        for directory in self.usage_dir.glob("date=*"):
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if not entry.name.endswith(".parquet") or entry.name.startswith((".", "_")):
                    continue
                try:
                    mtime = entry.stat().st_mtime
                except OSError:
                    continue
                if mtime >= cutoff:
                    recent.append((mtime, entry.path))
        identities: list[str] = []
        for _mtime, path in sorted(recent):  # oldest first: the newest end up most recent in the window
            try:
                table = pq.read_table(path, columns=["provider", "response_id", "trace_id", "span_id"])
            except Exception as exc:  # an unreadable file must not stop the receiver
                log.warning("cannot read %s to seed the dedupe window: %s", path, exc)
                continue
            identities.extend(_identities(table))
        return identities

    def flush(self) -> FlushResult:
        """Seals the current WAL segment and writes every acknowledged record to Parquet before returning."""
        wal = self._wal
        if wal is None:
            return FlushResult()
        with self._flush_lock:
            started = time.monotonic()
            wal.rotate()
            result = self._flushed(flush_wal(wal, self.usage_dir), started)
        return result

    def _flushed(self, result: FlushResult, started: float) -> FlushResult:
        if result.rows:
            self.metrics.add(parquet_rows_written=result.rows, parquet_files_written=len(result.files))
            added = 0
            for path in result.files:
                try:
                    added += path.stat().st_size
                except OSError:
                    pass
            self._dataset_bytes += added
        since = self._unflushed_since
        if since is not None and since <= started:
            self._unflushed_since = None
        return result

    def _flush_loop(self) -> None:
        last_status = 0.0
        while not self._stop_flusher.wait(self.flush_interval):
            wal = self._wal
            if wal is None:
                continue
            try:
                with self._flush_lock:
                    started = time.monotonic()
                    wal.rotate_if_older(self.flush_interval)
                    self._flushed(flush_wal(wal, self.usage_dir), started)
            except Exception:
                self.metrics.add(flush_errors=1)
                log.exception("flushing WAL to Parquet failed; will retry")
            self._refresh_dataset_bytes()
            if time.monotonic() - last_status >= self.status_interval:
                last_status = time.monotonic()
                self._write_status()

    # -- disk accounting and status ----------------------------------------------------------------------------

    def _refresh_dataset_bytes(self, force: bool = False) -> None:
        """Parquet bytes under ``usage/`` (all receivers', compaction's): rescanned every 30 s, added to on flush."""
        if self.max_disk_bytes is None and not force:
            return
        now = time.monotonic()
        if not force and now - self._dataset_scanned < 30.0:
            return
        total = 0
        for root, _dirs, files in os.walk(self.usage_dir):
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except OSError:
                    pass
        self._dataset_bytes = total
        self._dataset_scanned = now

    def disk_used(self) -> int:
        wal = self._wal
        return self._dataset_bytes + (wal.pending_bytes() if wal is not None else 0)

    def _register_gauges(self) -> None:
        m = self.metrics
        m.gauge("wal_pending_bytes", lambda: self._wal.pending_bytes() if self._wal is not None else 0)
        m.gauge("disk_used_bytes", self.disk_used)
        m.gauge("dedupe_window_entries", lambda: len(self._dedupe))
        m.gauge(
            "flush_lag_seconds",
            lambda: 0.0 if self._unflushed_since is None else time.monotonic() - self._unflushed_since,
        )

    def status_path(self) -> Path:
        return self.data_dir / STATUS_DIR / f"{self.receiver_id}.json"

    def _write_status(self) -> None:
        try:
            self.metrics.write_status(
                self.status_path(),
                {
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
                },
            )
        except OSError as exc:
            log.warning("cannot write %s: %s", self.status_path(), exc)

    # -- ingest ----------------------------------------------------------------------------------------------

    def export(self, request: ExportTraceServiceRequest) -> ExportOutcome:
        """The whole ingest path for one request. Raises ``WALError`` (records not stored: answer retryably)."""
        with self._work:
            prepared = self._prepare(normalize_request(request), [])
        return self._store(prepared)

    def export_bytes(self, data: bytes) -> ExportOutcome:
        """One serialized ExportTraceServiceRequest (the gRPC and HTTP/protobuf bodies). Raises ``InvalidRequest``
        for a body that is not one, ``WALError`` when the records were not stored."""
        with self._work:
            result = normalize_bytes(data)  # the C scanner; None leaves the request to protobuf
            if result is None:
                self.metrics.add(requests_protobuf_path=1)
                try:
                    request, warnings = parse_export_request(data)
                except InvalidRequest:
                    self.metrics.add(requests_invalid=1)
                    raise
                prepared = self._prepare(normalize_request(request), warnings)
            else:
                prepared = self._prepare(result, [])
        return self._store(prepared)

    # The CPU-bound part of an Export (parse, normalize, dedupe, price, encode) runs under ``_work``, one request at
    # a time: Python runs one thread at a time anyway, and requests that wait on a lock stay off the GIL instead of
    # taking it from each other every switch interval (measured: that hand-off was ~12 % of the process's CPU). The
    # WAL write and its fsync run outside, overlapping the next request's work.

    def _prepare(self, result: NormalizeResult, warnings: list[str]) -> _Prepared:
        wal = self._wal
        if wal is None or not self._started:
            raise WALError("receiver is not running")
        with self._stats_lock:
            self._stats["received"] += result.received
        columns = result.columns
        claim = self._dedupe.claim_keys(column_keys(columns))
        fresh = columns if len(claim.fresh) == len(columns) else columns.take(claim.fresh)
        try:
            unpriced = self._pricer.price_columns(fresh)
            frame = b""
            if fresh:
                if wal.pending_bytes() > self.max_pending_bytes:
                    raise Backpressure("too much data waiting for Parquet; retry later")
                frame = encode_table(fresh.to_table())
                if self.max_disk_bytes is not None and self.disk_used() + len(frame) > self.max_disk_bytes:
                    raise DiskFull(
                        28, f"storing {len(frame)} more bytes would exceed max_disk_bytes={self.max_disk_bytes}"
                    )
        except BaseException:
            claim.abort()
            raise
        return _Prepared(wal, result, warnings, claim, fresh, unpriced, frame)

    def _store(self, prepared: _Prepared) -> ExportOutcome:
        """Makes the prepared records durable (WAL append + group-committed fsync), then answers."""
        result, claim, fresh, unpriced = prepared.result, prepared.claim, prepared.fresh, prepared.unpriced
        try:
            if prepared.frame:
                prepared.wal.append_frame(prepared.frame)
                self.metrics.add(wal_bytes_written=len(prepared.frame))
                if self._unflushed_since is None:
                    self._unflushed_since = time.monotonic()
        except BaseException:
            claim.abort()
            raise
        claim.commit()
        if fresh and self._listeners:
            self._notify(fresh.to_records())
        try:
            claim.wait_for_others()
        except DuplicateInFlightFailed as exc:
            raise WALError(str(exc)) from exc

        response = ExportTraceServiceResponse()
        warnings = prepared.warnings + result.warnings
        if result.rejected or warnings:
            # rejected_spans = 0 with a message is OTLP's way to pass warnings back to the sender.
            parts = result.errors[:MAX_ERROR_MESSAGES]
            if result.rejected > MAX_ERROR_MESSAGES:
                parts.append(f"and {result.rejected - MAX_ERROR_MESSAGES} more rejected span(s)")
            parts += [f"warning: {w}" for w in warnings[:MAX_ERROR_MESSAGES]]
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=result.rejected, error_message="; ".join(parts))
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
        self.metrics.add(
            spans_received=result.received,
            spans_accepted=outcome.accepted,
            spans_rejected=outcome.rejected,
            spans_deduplicated=outcome.deduplicated,
            spans_skipped=outcome.skipped,
            records_unpriced=outcome.unpriced,
            fields_dropped=result.dropped_fields + len(warnings) - len(result.warnings),
            requests_ok=1,
        )
        return outcome

    def _notify(self, records: Sequence[UsageRecord]) -> None:
        for listener in self._listeners:
            try:
                listener(records)
            except Exception:
                log.exception("a receiver listener failed; the records are stored regardless")

    def _export_rpc(self, data: bytes, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        if self.ingest_token is not None:
            presented = None
            for key, value in context.invocation_metadata() or ():
                if key == "authorization":
                    presented = value if isinstance(value, str) else value.decode("latin-1")
                    break
            if not self.check_token(presented):
                self.metrics.add(requests_unauthenticated=1)
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (authorization metadata)")
        try:
            return self.export_bytes(data).response
        except InvalidRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except OSError as exc:  # WALError, Backpressure, disk full: nothing was acknowledged, the Collector retries
            self.metrics.add(requests_unavailable=1)
            log.warning("export refused: %s", exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"records not stored: {exc}")
        except Exception:
            log.exception("export failed")
            context.abort(grpc.StatusCode.INTERNAL, "internal error while ingesting spans")
        raise AssertionError("unreachable")  # context.abort always raises
