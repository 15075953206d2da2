"""One Export, transport-free: parse -> normalize -> dedupe -> price -> encode -> WAL append and fsync -> answer.

Records travel as columns (``schema.UsageColumns``), never as one object each. The answer is built only after the
records are on disk, so the sender's retry covers any failure before that point: every refusal is a ``WALError``
(an ``OSError``: ``Backpressure``, ``DiskFull``, a failed write or fsync), which the transports answer retryably
(UNAVAILABLE / 503); a body that is not a request is ``InvalidRequest`` (INVALID_ARGUMENT / 400, not retried).

The CPU-bound part (parse, normalize, dedupe, price, encode) runs one request at a time (``_work``): Python runs one
thread at a time anyway, and requests that wait on a lock stay off the GIL instead of taking it from each other
every switch interval (a hand-off that costs real CPU: docs/ARCHITECTURE.md, Performance). The WAL write and its
group-committed fsync run outside the lock, overlapping the next request's work. See docs/ARCHITECTURE.md, Pipeline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from tokentrail.processor.ingest.disk import DiskUsage
from tokentrail.processor.ingest.metrics import Metrics
from tokentrail.processor.normalize.otlp import InvalidRequest, parse_export_request
from tokentrail.processor.normalize.reader import NormalizeResult, normalize_request
from tokentrail.processor.pricing.catalog import Pricer
from tokentrail.processor.schema import UsageColumns, UsageRecord
from tokentrail.processor.storage.dedupe import Claim, DedupeWindow, DuplicateInFlightFailed, column_keys
from tokentrail.processor.storage.wal import Frame, WALError, WriteAheadLog, encode_table

__all__ = ["MAX_ERROR_MESSAGES", "STATS", "Backpressure", "DiskFull", "ExportOutcome", "Listener", "Pipeline"]

log = logging.getLogger(__name__)

MAX_ERROR_MESSAGES: Final = 5
STATS: Final = ("received", "accepted", "rejected", "deduplicated", "unpriced", "skipped", "recovered")
ENOSPC: Final = 28

Listener = Callable[[Sequence[UsageRecord]], None]


class Backpressure(WALError):
    """More data is waiting for Parquet than allowed: refuse until the flusher catches up."""


class DiskFull(WALError):
    """Storing the request would exceed ``max_disk_bytes`` (or the disk is full): refuse, the sender retries."""


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
    frame: Frame | None


class Pipeline:
    """The ingest path of one receiver. ``wal`` is None while the receiver is not running: every Export is then
    refused (retryably)."""

    def __init__(
        self,
        *,
        dedupe: DedupeWindow,
        pricer: Pricer,
        metrics: Metrics,
        disk: DiskUsage,
        max_pending_bytes: int,
    ) -> None:
        self.wal: WriteAheadLog | None = None
        self.max_pending_bytes = max_pending_bytes
        self._dedupe = dedupe
        self._pricer = pricer
        self._metrics = metrics
        self._disk = disk
        self._listeners: list[Listener] = []
        self._on_appended: Callable[[], None] = _nothing
        self._work = threading.Lock()  # one Export's CPU-bound part at a time (see the module docstring)
        self._stats_lock = threading.Lock()
        self._stats = dict.fromkeys(STATS, 0)

    def open(self, wal: WriteAheadLog, on_appended: Callable[[], None]) -> None:
        """Accept Exports into ``wal``; ``on_appended`` runs after each durable append (the flusher's lag clock)."""
        self._on_appended = on_appended
        self.wal = wal

    def close(self) -> None:
        """Refuse new Exports; those already past the check finish (the receiver waits for them)."""
        self.wal = None

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    def count(self, **amounts: int) -> None:
        with self._stats_lock:
            for name, amount in amounts.items():
                self._stats[name] += amount

    # -- one Export ------------------------------------------------------------------------------------------------

    def export(self, request: ExportTraceServiceRequest) -> ExportOutcome:
        """A parsed request (OTLP/HTTP JSON). Raises ``WALError`` when the records were not stored."""
        with self._work:
            prepared = self._prepare(normalize_request(request), [])
        return self._store(prepared)

    def export_bytes(self, data: bytes) -> ExportOutcome:
        """One serialized ExportTraceServiceRequest (the gRPC and HTTP/protobuf bodies). Raises ``InvalidRequest``
        for a body that is not one, ``WALError`` when the records were not stored."""
        with self._work:
            try:
                request, warnings = parse_export_request(data)
                result = normalize_request(request)
            except InvalidRequest:
                self._metrics.add(requests_invalid=1)
                raise
            prepared = self._prepare(result, warnings)
        return self._store(prepared)

    def _prepare(self, result: NormalizeResult, warnings: list[str]) -> _Prepared:
        wal = self.wal
        if wal is None:
            raise WALError("receiver is not running")
        self.count(received=result.received)
        columns = result.columns
        claim = self._dedupe.claim_keys(column_keys(columns))
        fresh = columns if len(claim.fresh) == len(columns) else columns.take(claim.fresh)
        try:
            unpriced = self._pricer.price_columns(fresh)
            frame = None
            if fresh:
                if wal.pending_bytes() > self.max_pending_bytes:
                    raise Backpressure("too much data waiting for Parquet; retry later")
                frame = encode_table(fresh.to_table())
                # Reserved under the work lock until appended (``_store``): the next request sees this one's bytes.
                if not self._disk.reserve(wal, len(frame)):
                    raise DiskFull(
                        ENOSPC, f"storing {len(frame)} more bytes would exceed max_disk_bytes={self._disk.max_bytes}"
                    )
        except BaseException:
            claim.abort()
            raise
        return _Prepared(wal, result, warnings, claim, fresh, unpriced, frame)

    def _store(self, prepared: _Prepared) -> ExportOutcome:
        """Makes the prepared records durable (WAL append + group-committed fsync), then answers."""
        result, claim, fresh, unpriced = prepared.result, prepared.claim, prepared.fresh, prepared.unpriced
        try:
            if prepared.frame is not None:
                try:
                    prepared.wal.append_frame(prepared.frame)
                finally:
                    self._disk.release(len(prepared.frame))  # in the WAL's bytes now, or never written
                self._metrics.add(wal_bytes_written=len(prepared.frame))
                self._on_appended()
        except BaseException:
            claim.abort()
            raise
        claim.commit()
        self._metrics.usage.observe(fresh)  # durable now, duplicates already dropped: each record counted once
        if fresh and self._listeners:
            self._notify(fresh.to_records())
        try:
            claim.wait_for_others()
        except DuplicateInFlightFailed as exc:
            raise WALError(str(exc)) from exc

        warnings = prepared.warnings + result.warnings
        outcome = ExportOutcome(
            response=_response(result, warnings),
            accepted=len(fresh),
            rejected=result.rejected,
            deduplicated=claim.duplicates,
            unpriced=unpriced,
            skipped=result.skipped,
        )
        self.count(
            accepted=outcome.accepted,
            rejected=outcome.rejected,
            deduplicated=outcome.deduplicated,
            unpriced=outcome.unpriced,
            skipped=outcome.skipped,
        )
        self._metrics.add(
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
            except Exception:  # noqa: BLE001 - the records are stored already; a listener's bug is logged, not the sender's
                log.exception("a receiver listener failed; the records are stored regardless")


def _response(result: NormalizeResult, warnings: list[str]) -> ExportTraceServiceResponse:
    """The answer: rejected spans and warnings in ``partial_success`` (``rejected_spans = 0`` with a message is
    OTLP's way to pass warnings back to the sender)."""
    response = ExportTraceServiceResponse()
    if result.rejected or warnings:
        parts = result.errors[:MAX_ERROR_MESSAGES]
        if result.rejected > MAX_ERROR_MESSAGES:
            parts.append(f"and {result.rejected - MAX_ERROR_MESSAGES} more rejected span(s)")
        parts += [f"warning: {w}" for w in warnings[:MAX_ERROR_MESSAGES]]
        response.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=result.rejected, error_message="; ".join(parts))
        )
    return response


def _nothing() -> None:
    pass
