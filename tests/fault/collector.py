"""A sender that behaves like the OpenTelemetry Collector's OTLP exporters with ``retry_on_failure``, and the ledger of
what it was told: which batches the receiver acknowledged.

The Collector's rules, kept here (scaled from seconds to tens of milliseconds so a test takes seconds):

* gRPC: CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS are retried, and
  RESOURCE_EXHAUSTED when the status carries a ``RetryInfo``; anything else is a permanent error (the Collector
  drops the batch; here the ledger records it, and a test fails on it). A connection that cannot be made is
  UNAVAILABLE.
* OTLP/HTTP: 429, 502, 503 and 504 are retried (``Retry-After`` honoured); other 4xx/5xx are permanent.
* Back-off: exponential (initial interval, x1.5, capped), each wait randomized by +-50 %, or the server's
  ``RetryInfo`` / ``Retry-After`` delay when that is longer; the batch is given up after ``max_elapsed`` seconds.

A batch is acknowledged only by OK / 200. The oracle (``tests.fault.oracle``) holds the receiver to: every span of an
acknowledged batch is stored exactly once, and no span is stored twice.
"""

from __future__ import annotations

import collections
import http.client
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.helpers.otlp import T0_NS, genai_attributes, make_request, make_span
from tests.helpers.receiver import span_ids

__all__ = [
    "DAY_NS",
    "Backoff",
    "Batch",
    "GrpcExporter",
    "HttpExporter",
    "Ledger",
    "make_batch",
    "send_forever",
]

DAY_NS: Final = 86_400 * 10**9
EXPORT_METHOD: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
RETRYABLE_GRPC: Final = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
RETRYABLE_HTTP: Final = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Batch:
    """One export request, serialized once, with the span ids it carries (hex, as stored)."""

    payload: bytes
    span_ids: frozenset[str]

    @classmethod
    def of(cls, request: ExportTraceServiceRequest) -> Batch:
        return cls(request.SerializeToString(), frozenset(span_ids(request)))

    def __len__(self) -> int:
        return len(self.span_ids)


def make_batch(n: int, days: int = 1, rng: random.Random | None = None) -> Batch:
    """``n`` GenAI spans (the tests' usual OpenAI chat call) with random ids, spread over ``days`` UTC days from
    2025-06-01: compaction and re-pricing then have several days to be killed between."""
    rng = rng or random.Random()
    spans = [
        make_span(
            genai_attributes(),
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            start_ns=T0_NS + rng.randrange(days) * DAY_NS + rng.randrange(6 * 3600) * 10**9,
        )
        for _ in range(n)
    ]
    return Batch.of(make_request(spans))


@dataclass
class Ledger:
    """What the senders were told, shared by all of them (thread-safe)."""

    acked: list[Batch] = field(default_factory=list)
    pending: list[Batch] = field(default_factory=list)  # given up on (max_elapsed): never acknowledged
    permanent: list[str] = field(default_factory=list)  # non-retryable answers: a test fails on any
    refusals: collections.Counter[str] = field(default_factory=collections.Counter)  # retryable answers, by code
    without_delay: collections.Counter[str] = field(default_factory=collections.Counter)  # ... with no RetryInfo /
    # Retry-After (a receiver that refuses for load must say when to come back; a dead one cannot)
    latencies: list[float] = field(default_factory=list)  # seconds per acknowledged attempt
    answers: list[float] = field(default_factory=list)  # seconds per answered attempt, refusals included
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, batch: Batch, latency: float) -> None:
        with self._lock:
            self.acked.append(batch)
            self.latencies.append(latency)
            self.answers.append(latency)

    def give_up(self, batch: Batch) -> None:
        with self._lock:
            self.pending.append(batch)

    def refuse(self, code: str, had_delay: bool, latency: float) -> None:
        with self._lock:
            self.refusals[code] += 1
            self.answers.append(latency)
            if not had_delay:
                self.without_delay[code] += 1

    def fail(self, why: str) -> None:
        with self._lock:
            self.permanent.append(why)

    def take_pending(self) -> list[Batch]:
        with self._lock:
            pending, self.pending = self.pending, []
        return pending

    def acked_ids(self) -> set[str]:
        with self._lock:
            return set().union(*(b.span_ids for b in self.acked))

    @property
    def acked_spans(self) -> int:
        with self._lock:
            return sum(len(b) for b in self.acked)

    @property
    def retries(self) -> int:
        with self._lock:
            return sum(self.refusals.values())


@dataclass(frozen=True)
class Backoff:
    """``retry_on_failure`` in miniature (the Collector's defaults are 5 s, x1.5, 30 s, 300 s)."""

    initial: float = 0.05
    multiplier: float = 1.5
    max_interval: float = 1.0
    max_elapsed: float = 120.0
    randomization: float = 0.5

    def waits(self, rng: random.Random) -> Iterable[float]:
        interval = self.initial
        while True:
            yield interval * (1 + rng.uniform(-self.randomization, self.randomization))
            interval = min(interval * self.multiplier, self.max_interval)


@dataclass(frozen=True)
class _Attempt:
    ok: bool
    retryable: bool
    code: str
    delay: float | None = None  # the server's RetryInfo / Retry-After
    detail: str = ""


class _Exporter:
    def __init__(self, ledger: Ledger, backoff: Backoff, rng: random.Random | None) -> None:
        self.ledger = ledger
        self.backoff = backoff
        self.rng = rng or random.Random()

    def _attempt(self, batch: Batch) -> _Attempt:
        raise NotImplementedError

    def export(self, batch: Batch, stop: threading.Event | None = None) -> bool:
        """Sends ``batch`` until acknowledged (True), refused permanently, or ``max_elapsed`` passes (False: the
        batch goes to ``ledger.pending``). ``stop`` cuts the waiting short the same way."""
        started = time.monotonic()
        waits = iter(self.backoff.waits(self.rng))
        while True:
            t0 = time.monotonic()
            attempt = self._attempt(batch)
            if attempt.ok:
                self.ledger.ack(batch, time.monotonic() - t0)
                return True
            if not attempt.retryable:
                self.ledger.fail(f"{attempt.code} {attempt.detail}".strip())
                self.ledger.give_up(batch)
                return False
            self.ledger.refuse(attempt.code, attempt.delay is not None, time.monotonic() - t0)
            wait = next(waits)
            if attempt.delay is not None:  # the Collector's throttle: never sooner than the server asked
                wait = max(wait, attempt.delay)
            if time.monotonic() + wait - started > self.backoff.max_elapsed or (stop is not None and stop.wait(wait)):
                self.ledger.give_up(batch)
                return False
            if stop is None:
                time.sleep(wait)

    def close(self) -> None:
        pass


def _retry_delay(error: grpc.RpcError) -> float | None:
    """The ``RetryInfo`` delay in a gRPC status's details (``grpc-status-details-bin``), if any."""
    for key, value in getattr(error, "trailing_metadata", lambda: None)() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                delay: Duration = info.retry_delay
                return delay.seconds + delay.nanos / 1e9
    return None


class GrpcExporter(_Exporter):
    """OTLP/gRPC, one channel (HTTP/2 connection) per exporter, as the Collector's exporter keeps one."""

    def __init__(
        self,
        port: int,
        ledger: Ledger,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(ledger, backoff, rng)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.timeout = timeout
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[
                # A restarted receiver is found again within a back-off, not gRPC's default of up to 120 s.
                ("grpc.initial_reconnect_backoff_ms", 50),
                ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", 500),
                ("grpc.max_send_message_length", 256 << 20),
                ("grpc.use_local_subchannel_pool", 1),  # a connection of its own, not one shared by all exporters
            ],
        )
        self.call = self.channel.unary_unary(
            EXPORT_METHOD, request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString
        )

    def _attempt(self, batch: Batch) -> _Attempt:
        try:
            response = self.call(batch.payload, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            code = error.code()
            delay = _retry_delay(error)
            retryable = code in RETRYABLE_GRPC or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None)
            return _Attempt(False, retryable, f"grpc:{code.name}", delay, (error.details() or "")[:200])
        if response.partial_success.rejected_spans:
            return _Attempt(False, False, f"rejected {response.partial_success.rejected_spans} span(s)")
        return _Attempt(True, False, "OK")

    def close(self) -> None:
        self.channel.close()


class HttpExporter(_Exporter):
    """OTLP/HTTP protobuf, one keep-alive connection, reopened after any error (as Go's client does)."""

    def __init__(
        self,
        port: int,
        ledger: Ledger,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(ledger, backoff, rng)
        self.port = port
        self.timeout = timeout
        self.headers = {"Content-Type": "application/x-protobuf"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.conn: http.client.HTTPConnection | None = None

    def _attempt(self, batch: Batch) -> _Attempt:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request("POST", "/v1/traces", body=batch.payload, headers=self.headers)
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.conn = None
            return _Attempt(False, True, f"http:{type(exc).__name__}")
        if response.will_close:
            self.conn.close()
            self.conn = None
        if response.status == 200:
            parsed = ExportTraceServiceResponse.FromString(body)
            if parsed.partial_success.rejected_spans:
                return _Attempt(False, False, f"rejected {parsed.partial_success.rejected_spans} span(s)")
            return _Attempt(True, False, "OK")
        retry_after = response.getheader("Retry-After")
        delay = float(retry_after) if retry_after and retry_after.strip().isdigit() else None
        retryable = response.status in RETRYABLE_HTTP
        return _Attempt(False, retryable, f"http:{response.status}", delay, body[:200].decode(errors="replace"))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def send_forever(
    exporter: _Exporter,
    stop: threading.Event,
    make: Callable[[], Batch],
    abort: threading.Event | None = None,
    pace: float = 0.0,
) -> None:
    """A pipeline feeding one exporter until ``stop``: each batch is retried until acknowledged (or given up); the
    batch being retried when ``stop`` comes is finished first, within ``max_elapsed``, as a Collector drains its
    queue at shutdown. ``abort`` gives up at once (a failing test must not wait out the back-off); ``pace`` seconds
    pass between batches (a steady trickle rather than as fast as the receiver answers)."""
    try:
        while not stop.is_set():
            exporter.export(make(), abort)
            if pace:
                stop.wait(pace)
    finally:
        exporter.close()
