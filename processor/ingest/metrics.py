"""The receiver's own counters: spans received / accepted / rejected / deduplicated / skipped, unpriced records,
dropped fields, metric points and log records acknowledged but not stored, WAL bytes, flush lag, exports and bytes
in flight (``ingest.admission``). Exposed as Prometheus text on ``GET /metrics`` and in the status file
(``ingest.status``) for ``tokentrail status``.

Counters are plain integers behind one lock: an Export updates them once per request, not per span.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final

__all__ = ["COUNTERS", "GAUGES", "Metrics", "render_prometheus"]

PREFIX: Final = "tokentrail_receiver_"

# name -> help. Counters only ever grow (per process); gauges are sampled when read.
COUNTERS: Final[dict[str, str]] = {
    "spans_received": "Spans in accepted Export requests (GenAI or not).",
    "spans_accepted": "Usage records made durable (WAL fsync) and acknowledged.",
    "spans_rejected": "GenAI spans rejected as invalid (reported in partial_success.rejected_spans).",
    "spans_deduplicated": "Records dropped at ingest as repeats of a record already stored.",
    "spans_skipped": "Spans that are not LLM calls to count (other spans, agent aggregates, duplicates).",
    "records_unpriced": "Accepted records stored with price_status=unpriced.",
    "fields_dropped": "Attribution values dropped or truncated (the record was kept).",
    "records_recovered": "Records replayed from the WAL at start (a previous run's acknowledged work).",
    "metric_points_ignored": "OTLP metric data points acknowledged and dropped (TokenTrail bills from spans).",
    "log_records_ignored": "OTLP log records acknowledged and dropped, never stored (they may carry prompts).",
    "requests_ok": "Export requests acknowledged (traces, metrics and logs).",
    "requests_invalid": "Export requests refused as malformed (INVALID_ARGUMENT / HTTP 400).",
    "requests_unauthenticated": "Export requests refused for a missing or wrong token.",
    "requests_unavailable": "Export requests refused retryably (disk full, backlog, WAL error).",
    "requests_too_large": "OTLP/HTTP requests refused unread for a body over the size limit (HTTP 413).",
    "requests_busy": "Export requests refused retryably because the receiver was full (UNAVAILABLE / 503, Retry-After).",
    "requests_timed_out": "OTLP/HTTP requests whose body did not arrive in time (HTTP 408).",
    "requests_wrong_host": "OTLP/HTTP requests refused for a Host that is not this server's (HTTP 421).",
    "connections_dropped": "OTLP/HTTP connections the client closed or reset mid-request (logged at debug).",
    "wal_bytes_written": "Bytes appended to the write-ahead log.",
    "wal_corrupt_frames": "Damaged WAL frames found (their records lost; bytes kept in wal/quarantine/).",
    "wal_torn_tails": "Partial last frames a crash left in a WAL segment, dropped (never acknowledged).",
    "parquet_rows_written": "Rows written to Parquet by the flusher.",
    "parquet_files_written": "Parquet files written by the flusher.",
    "flush_errors": "Flush attempts that failed (the WAL keeps the records; retried).",
}
GAUGES: Final[dict[str, str]] = {
    "wal_pending_bytes": "Bytes in the WAL not yet in Parquet.",
    "flush_lag_seconds": "Age of the oldest acknowledged record not yet in Parquet (0 when none).",
    "disk_used_bytes": "WAL plus Parquet bytes counted against --max-disk-bytes.",
    "dedupe_window_entries": "Identities held by the ingest dedupe window.",
    "exports_in_flight": "Exports admitted and not yet answered, gRPC and HTTP together (--max-concurrent-exports).",
    "bytes_in_flight": (
        "Bytes the exports in flight hold, a gRPC one --max-message-bytes until its message is read "
        "(--max-inflight-bytes)."
    ),
    "uptime_seconds": "Seconds since the receiver started.",
}


class Metrics:
    """Thread-safe counters plus gauge callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._gauges: dict[str, Callable[[], float]] = {}
        self.started = time.time()

    def add(self, **amounts: int) -> None:
        with self._lock:
            counters = self._counters
            for name, amount in amounts.items():
                counters[name] += amount

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        if name not in GAUGES:
            raise KeyError(name)
        self._gauges[name] = read

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def snapshot(self) -> dict[str, float]:
        values: dict[str, float] = dict(self.counters())
        values["uptime_seconds"] = round(time.time() - self.started, 3)
        for name, read in self._gauges.items():
            try:
                values[name] = float(read())
            except Exception:  # noqa: BLE001 - a gauge must never break /metrics: NaN says it failed
                values[name] = float("nan")
        return values

    def render(self, labels: Mapping[str, str] | None = None) -> str:
        return render_prometheus(self.snapshot(), labels)


def _label_text(labels: Mapping[str, str] | None) -> str:
    if not labels:
        return ""
    escaped = (
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), " ")}"'
        for k, v in labels.items()
    )
    return "{" + ",".join(escaped) + "}"


def _number(value: float) -> str:
    """Exact: a whole number in full (``:g`` kept six digits, so 2,097,152 bytes read 2.09715e+06), else ``repr``;
    NaN and infinities spelt as the exposition format spells them."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value == int(value) else repr(float(value))


def render_prometheus(values: Mapping[str, float], labels: Mapping[str, str] | None = None) -> str:
    """Prometheus text exposition format 0.0.4."""
    label_text = _label_text(labels)
    lines: list[str] = []
    for kind, names, suffix in (("counter", COUNTERS, "_total"), ("gauge", GAUGES, "")):
        for name, help_text in names.items():
            if name in values:
                full, value = f"{PREFIX}{name}{suffix}", _number(values[name])
                lines += [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}", f"{full}{label_text} {value}"]
    return "\n".join(lines) + "\n"
