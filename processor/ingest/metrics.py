"""The receiver's own counters: spans received / accepted / rejected / deduplicated / skipped, unpriced records,
dropped fields, metric points and log records acknowledged but not stored, WAL bytes, flush lag, exports and bytes
in flight (``ingest.admission``). Exposed as Prometheus text on ``GET /metrics`` and in the status file
(``ingest.status``) for ``tokentrail status``.

Besides them, what the stored calls cost (``UsageCounters``): cost, market cost, tokens by type, requests and unpriced
requests, labelled only by provider, model, credential type and service, so Grafana users see spend next to the
receiver's health (deploy/grafana/tokentrail.json) without a query engine. Never by user or tag: those are unbounded
and personal, and a time series per user would leak them to every scraper and swamp Prometheus.

Counters are plain integers behind one lock: an Export updates them once per request, not per span.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Final

from tokentrail.processor.schema import UNPRICED, UsageColumns

__all__ = [
    "COUNTERS",
    "GAUGES",
    "MAX_LABEL_SETS",
    "OTHER",
    "TOKEN_TYPES",
    "USAGE_COUNTERS",
    "USAGE_LABELS",
    "Metrics",
    "UsageCounters",
    "render_prometheus",
]

log = logging.getLogger(__name__)

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

USAGE_PREFIX: Final = "tokentrail_"
USAGE_LABELS: Final = ("provider", "model", "credential_type", "service")
# The ``type`` label of tokentrail_tokens_total -> the stored column. Input includes cached and cache creation, output
# includes reasoning (the OTel convention, as stored): sum only input and output for a total.
TOKEN_TYPES: Final[dict[str, str]] = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cached_input": "cached_input_tokens",
    "cache_creation_input": "cache_creation_input_tokens",
    "reasoning": "reasoning_tokens",
}
# name (before ``_total``) -> help, all counters.
USAGE_COUNTERS: Final[dict[str, str]] = {
    "cost_usd": "What the stored calls cost (total_cost, USD; BYOK calls at what the platform pays).",
    "market_cost_usd": "What the stored calls cost at list price (market_cost, USD).",
    "tokens": "Tokens of the stored calls by type (input includes cached_input and cache_creation_input; output "
    "includes reasoning).",
    "requests": "LLM calls stored (each durable record once; duplicates dropped at ingest not counted).",
    "unpriced_requests": "Stored calls with price_status=unpriced (no cost counted for them).",
}
MAX_LABEL_SETS: Final = 1000
OVERFLOW_LABEL_SETS: Final = 100
MAX_LABEL_CHARS: Final = 128
OTHER: Final = "other"
_PICOS: Final = 12
# One slot per label set: [total picos, market picos, the TOKEN_TYPES in order, requests, unpriced].
_SUMMED: Final = ("total_cost", "market_cost", *TOKEN_TYPES.values())
_REQUESTS: Final = len(_SUMMED)
_UNPRICED: Final = _REQUESTS + 1
_SLOT_SIZE: Final = _UNPRICED + 1

_Key = tuple[str, str, str, str]


class UsageCounters:
    """Cost and token totals of the records made durable, per label set (``USAGE_LABELS``).

    Exact: costs are summed as integer pico-dollars (the columns' own unit) and rendered as the exact decimal, so a
    counter equals the sum of the stored records' costs; Prometheus reads it as a float, which is fine for a graph.

    Bounded: every label but credential type comes from the sender, so a flood of invented model names must not grow
    memory. At most ``MAX_LABEL_SETS`` label sets are kept as sent (values cut to ``MAX_LABEL_CHARS``); after that a
    new set is counted under ``model="other"`` (provider, credential type and service kept), up to
    ``OVERFLOW_LABEL_SETS`` more, and past those under all four labels ``"other"``: never more than
    ``MAX_LABEL_SETS + OVERFLOW_LABEL_SETS + 1`` (1,101) series per counter and type, and no call goes uncounted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sets: dict[_Key, list[int]] = {}
        self._folding = False

    def observe(self, columns: UsageColumns) -> None:
        """Counts ``columns`` once: call it with the records of one Export after they are durable, never with
        duplicates dropped at ingest or records replayed at start (a previous process counted those)."""
        n = len(columns)
        if not n:
            return
        labels = [columns[name] for name in USAGE_LABELS]
        summed = [columns[name] for name in _SUMMED]
        status = columns["price_status"]
        first = tuple(column[0] for column in labels)
        if all(column.count(value) == n for column, value in zip(labels, first)):
            # One label set for the whole batch (one service's calls to one model): no per-row grouping.
            groups: dict[tuple[object, ...], Sequence[int] | None] = {first: None}
        else:
            rows: dict[tuple[object, ...], list[int]] = {}
            for i, key in enumerate(zip(*labels)):
                rows.setdefault(key, []).append(i)
            groups = dict(rows)
        batch: list[tuple[tuple[object, ...], list[int]]] = []
        for key, indices in groups.items():
            if indices is None:
                sums = [_total(column) for column in summed]
                sums += [n, status.count(UNPRICED)]
            else:
                sums = [_total([column[i] for i in indices]) for column in summed]
                sums += [len(indices), sum(1 for i in indices if status[i] == UNPRICED)]
            batch.append((key, sums))
        with self._lock:
            for key, sums in batch:
                slot = self._slot(key)
                for i, amount in enumerate(sums):
                    slot[i] += amount

    def _slot(self, raw: tuple[object, ...]) -> list[int]:
        provider, model, credential_type, service = (_label_value(v) for v in raw)
        key: _Key = (provider, model, credential_type, service)
        slot = self._sets.get(key)
        if slot is not None:
            return slot
        if len(self._sets) >= MAX_LABEL_SETS:
            if not self._folding:
                self._folding = True
                log.warning(
                    "more than %d provider/model/credential type/service combinations: new ones are counted "
                    'under model="other" in /metrics',
                    MAX_LABEL_SETS,
                )
            key = (key[0], OTHER, key[2], key[3])
            if key not in self._sets and len(self._sets) >= MAX_LABEL_SETS + OVERFLOW_LABEL_SETS:
                key = (OTHER, OTHER, OTHER, OTHER)
        return self._sets.setdefault(key, [0] * _SLOT_SIZE)

    def snapshot(self) -> dict[_Key, list[int]]:
        with self._lock:
            return {key: list(slot) for key, slot in self._sets.items()}

    def render(self, labels: Mapping[str, str] | None = None) -> str:
        """The counters in Prometheus text (``tokentrail_*_total``), ``labels`` (the receiver id) on every line."""
        sets = sorted(self.snapshot().items())
        extra = dict(labels or {})
        lines: list[str] = []
        for name, help_text in USAGE_COUNTERS.items():
            full = f"{USAGE_PREFIX}{name}_total"
            lines += [f"# HELP {full} {help_text}", f"# TYPE {full} counter"]
            for key, slot in sets:
                series = {**extra, **dict(zip(USAGE_LABELS, key))}
                if name == "tokens":
                    for offset, token_type in enumerate(TOKEN_TYPES, start=2):
                        typed = _label_text({**series, "type": token_type})
                        lines.append(f"{full}{typed} {slot[offset]}")
                    continue
                index, text = _SERIES[name]
                value = text(slot[index])
                lines.append(f"{full}{_label_text(series)} {value}")
        return "\n".join(lines) + "\n"


def _total(values: Sequence[int | None]) -> int:
    """The sum, costs of unpriced records (None) left out."""
    return sum(v for v in values if v is not None)


def _usd(picos: int) -> str:
    """Exact: pico-dollars as the decimal they are (Prometheus parses it as a float)."""
    return format(Decimal(picos).scaleb(-_PICOS), "f")


# counter -> (its slot index, how its value is written); tokens has one series per type instead.
_SERIES: Final[dict[str, tuple[int, Callable[[int], str]]]] = {
    "cost_usd": (0, _usd),
    "market_cost_usd": (1, _usd),
    "requests": (_REQUESTS, str),
    "unpriced_requests": (_UNPRICED, str),
}


def _label_value(value: object) -> str:
    return "" if value is None else str(value)[:MAX_LABEL_CHARS]


class Metrics:
    """Thread-safe counters plus gauge callbacks, and the cost counters (``usage``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._gauges: dict[str, Callable[[], float]] = {}
        self.usage = UsageCounters()
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
        return render_prometheus(self.snapshot(), labels) + self.usage.render(labels)


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
