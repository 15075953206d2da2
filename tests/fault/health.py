"""Is the receiver still well: alive, answering on every port, and within its bounds of threads and memory?

Bounds are relative to the receiver's own reading after a warm-up (one export on each transport, one report query:
every pool has started and the price catalog is loaded), so they hold on any machine:

* Threads may grow by what the configuration allows and no more: the OTLP/HTTP export pool (``max_exports``), the
  gRPC pool (``max_exports`` + ``SPARE_WORKERS``) and its per-export message watchdogs (``max_exports``), the
  report API's query pool, DuckDB's scheduler (a thread per core), and a few for Python's and gRPC's own. A server
  spending a thread per connection would pass the bound by the hundreds of connections every abuse test opens.
* Memory bounds are stated per attack, from what the limits let in (see each test).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final

from tokentrail.processor.api.http import DEFAULT_MAX_CONCURRENT_QUERIES
from tokentrail.processor.ingest.grpc import SPARE_WORKERS

from tests.fault.collector import Backoff, GrpcExporter, HttpExporter, Ledger, make_batch
from tests.fault.serve import ProcStats, Serve, http_get

__all__ = ["MiB", "Watch", "assert_answering", "thread_bound", "warm_up"]

MiB: Final = 1 << 20
_OWN_THREADS: Final = 4  # asyncio's and gRPC core's helpers that come and go


def thread_bound(baseline: ProcStats, max_exports: int) -> int:
    return (
        baseline.threads
        + max_exports  # OTLP/HTTP export pool
        + max_exports + SPARE_WORKERS  # gRPC pool
        + max_exports  # gRPC message watchdogs, one per admitted export
        + DEFAULT_MAX_CONCURRENT_QUERIES  # report API query pool
        + (os.cpu_count() or 1)  # DuckDB
        + _OWN_THREADS
    )


@dataclass
class Watch:
    """Samples the receiver's threads and RSS every few milliseconds while the block runs; ``peak_hwm`` is the
    kernel's high-water mark at the end (it misses nothing between samples)."""

    serve: Serve
    interval: float = 0.02
    before: ProcStats | None = None
    peak_threads: int = 0
    peak_rss: int = 0
    after: ProcStats | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Watch:
        self.before = self.serve.stats()
        self.peak_threads, self.peak_rss = self.before.threads, self.before.rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                stats = self.serve.stats()
            except (FileNotFoundError, ProcessLookupError):
                return
            self.peak_threads = max(self.peak_threads, stats.threads)
            self.peak_rss = max(self.peak_rss, stats.rss)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.serve.alive():
            self.after = self.serve.stats()
            self.peak_threads = max(self.peak_threads, self.after.threads)

    @property
    def hwm_growth(self) -> int:
        """Bytes the peak RSS rose during the block."""
        assert self.before is not None and self.after is not None
        return self.after.hwm - self.before.hwm

    def summary(self) -> str:
        assert self.before is not None and self.after is not None
        return (
            f"threads {self.before.threads} -> peak {self.peak_threads}; RSS {self.before.rss / MiB:.0f} MiB, peak "
            f"{self.after.hwm / MiB:.0f} MiB (+{self.hwm_growth / MiB:.0f})"
        )


def warm_up(serve: Serve, ledger: Ledger, token: str | None = None, api_token: str | None = None) -> ProcStats:
    """One export on each transport and one report query (every pool started, the catalog loaded), then the
    receiver's reading: the baseline its bounds are relative to."""
    assert_answering(serve, ledger, token, api_token)
    return serve.stats()


def assert_answering(serve: Serve, ledger: Ledger, token: str | None = None, api_token: str | None = None) -> None:
    """Alive, and every port answers: the report API's health check and a query, an acknowledged gRPC export and an
    acknowledged OTLP/HTTP export (both in ``ledger``, so the oracle checks they are stored)."""
    assert serve.alive(), f"the receiver died:\n{serve.tail()}"
    assert serve.healthz() == 200
    headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
    status, _, body = http_get(serve.ports.api, "/v1/report?start_date=2025-06-01&end_date=2025-06-01", headers)
    assert status == 200, (status, body[:200])
    backoff = Backoff(max_elapsed=20)  # a busy receiver says when to come back; one that never takes it is dead
    for exporter in (
        GrpcExporter(serve.ports.grpc, ledger, token=token, backoff=backoff),
        HttpExporter(serve.ports.http, ledger, token=token, backoff=backoff),
    ):
        try:
            assert exporter.export(make_batch(5)), f"an export was never acknowledged: {ledger.permanent[-1:]}"
        finally:
            exporter.close()
