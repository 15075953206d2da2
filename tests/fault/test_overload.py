"""Overload: many more concurrent exporters than the receiver admits (``--max-concurrent-exports``,
``--max-inflight-bytes``). Those past the bound are refused at once and retryably, each refusal saying when to come
back (gRPC UNAVAILABLE with ``RetryInfo``, OTLP/HTTP 503 with ``Retry-After``); the exporters' Collector-style
resends get every span stored exactly once; threads stay within what the bounds allow and memory near the bytes
admitted, while the receiver keeps answering.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Final

import pytest

from tests.fault.collector import Batch, GrpcExporter, HttpExporter, Ledger, make_batch
from tests.fault.health import MiB, Watch, assert_answering, thread_bound, warm_up
from tests.fault.oracle import assert_exactly_once
from tests.fault.serve import Serve
from tests.fault.sizes import Size

MAX_EXPORTS: Final = 2
MAX_INFLIGHT: Final = 4 * MiB
SPANS: Final = 200  # per batch: about 120 KB of protobuf
WORKING_SET: Final = 128 * MiB
PER_SPAN: Final = 256
"""A ceiling on what the receiver's peak memory may grow by here: ``WORKING_SET`` plus ``PER_SPAN`` bytes a span
ingested. Ingesting these spans one batch at a time already raises it by about 40 MiB for the CI run's 14,400
(measured: Arrow's memory pool, the flusher's tables) and the dedupe window keeps ~150 bytes an identity; admission
adds at most ``MAX_INFLIGHT`` of requests in their parsed form. At these batch sizes a receiver holding every
refused export would not pass it: ``benchmarks/abuse.py`` measures overload memory at scale."""


@pytest.mark.parametrize("transport", ["grpc", "otlp_http"])
def test_exporters_beyond_admission_are_refused_retryably_and_every_span_is_stored_once(
    transport: str, tmp_path: Path, rng: random.Random, size: Size
) -> None:
    serve = Serve(
        tmp_path,
        "--max-concurrent-exports", str(MAX_EXPORTS),
        "--max-inflight-bytes", str(MAX_INFLIGHT),
        "--flush-interval", "0.2",
    ).start()
    ledger = Ledger()
    baseline = warm_up(serve, ledger)
    batches = [[make_batch(SPANS) for _ in range(size.overload_batches)] for _ in range(size.overload_exporters)]
    start = threading.Barrier(size.overload_exporters)

    def exporter(mine: list[Batch], seed: float) -> None:
        kind = GrpcExporter if transport == "grpc" else HttpExporter
        client = kind(serve.ports.grpc if transport == "grpc" else serve.ports.http, ledger, rng=random.Random(seed))
        start.wait()
        try:
            for batch in mine:
                client.export(batch)
        finally:
            client.close()

    with Watch(serve) as watch:
        threads = [threading.Thread(target=exporter, args=(b, rng.random())) for b in batches]
        for t in threads:
            t.start()
        assert_answering(serve, ledger)  # in the middle of it
        for t in threads:
            t.join(300)
    busy = "grpc:UNAVAILABLE" if transport == "grpc" else "http:503"
    assert ledger.refusals[busy] > 0, f"no export was refused: the receiver admitted them all {ledger.refusals}"
    assert set(ledger.refusals) <= {"grpc:UNAVAILABLE", "http:503"}, ledger.refusals  # the check mid-run met it too
    assert not ledger.without_delay, f"refusals that did not say when to retry: {ledger.without_delay}"
    assert serve.metrics()["requests_busy"] >= ledger.retries
    assert watch.peak_threads <= thread_bound(baseline, MAX_EXPORTS), watch.summary()
    spans = size.overload_exporters * size.overload_batches * SPANS
    assert watch.hwm_growth <= WORKING_SET + PER_SPAN * spans, watch.summary()
    assert_answering(serve, ledger)
    assert serve.terminate() == 0
    stored = assert_exactly_once(tmp_path, ledger)
    assert len(stored.counts) >= spans
    print(f"overload ({transport}): {size.overload_exporters} exporters, {ledger.refusals[busy]} busy refusals, "
          f"{watch.summary()}")
