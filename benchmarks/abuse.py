"""The fault suite's figures at full size: what the memory attacks and an overload cost a real ``tokentrail serve``
with its default limits (64 MiB messages, 16 exports or 256 MiB in flight, 15 s idle timeout), behind an ingest
token.

* Memory attacks, each on a fresh receiver: 16 x 60 MB OTLP/HTTP bodies without the token, the same with it, 24
  concurrent 60 MB gRPC exports (with it), and 1,000 idle sockets on each port. For each: peak RSS (VmHWM) and its
  rise over the warmed-up receiver, peak threads, and how the attackers were answered.
* Overload: 64 Collector-style gRPC exporters (the fault suite's ``GrpcExporter``: retry with back-off, honouring
  ``RetryInfo``) sending 500-span batches for ~20 s: p50/p99 of an answered attempt (refusals are answered at once),
  of an acknowledged one, and of a batch from first attempt to acknowledgement (back-off included), peak RSS and
  threads, refusals; then, after a clean stop, spans acknowledged vs stored (each exactly once).

The attackers are the fault suite's (``tests/fault/attackers.py``), so these figures come from the same clients the
tests bound. ``python -m benchmarks.abuse`` prints a table and the JSON; ``make bench BENCH=abuse`` the JSON. It
takes about two minutes and needs ~2 GB of memory for the attackers' side.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.fault import attackers
from tests.fault.collector import Batch, GrpcExporter, Ledger, make_batch
from tests.fault.health import MiB, Watch, assert_answering, warm_up
from tests.fault.serve import Serve

__all__ = ["memory_attacks", "overload", "run"]

ON_REQUEST: Final = True
"""Runs only when named: ``make bench`` alone skips it (minutes, ~2 GB; a cost under attack, not a speed)."""
TOKEN: Final = "bench-ingest-token"
BODY: Final = 60_000_000
PROTOBUF: Final = {"Content-Type": "application/x-protobuf"}


def _receiver(data_dir: Path, *extra: str) -> tuple[Serve, Ledger]:
    serve = Serve(data_dir, "--flush-interval", "0.25", *extra, token=TOKEN).start()
    ledger = Ledger()
    warm_up(serve, ledger, TOKEN)
    return serve, ledger


def _attack(name: str, attack: Callable[[Serve], Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tokentrail-abuse-") as tmp:
        serve, ledger = _receiver(Path(tmp))
        try:
            t0 = time.monotonic()
            with Watch(serve) as watch:
                outcome = attack(serve)
            seconds = time.monotonic() - t0
            assert_answering(serve, ledger, TOKEN)  # alive and answering on every port afterwards
            assert watch.before is not None and watch.after is not None
            return {
                "attack": name,
                "peak_rss_mib": round(watch.after.hwm / MiB, 1),
                "rss_rise_mib": round(watch.hwm_growth / MiB, 1),
                "baseline_rss_mib": round(watch.before.rss / MiB, 1),
                "threads_before": watch.before.threads,
                "threads_peak": watch.peak_threads,
                "seconds": round(seconds, 2),
                "answers": outcome,
            }
        finally:
            serve.terminate()


def _statuses(values: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        key = str(getattr(v, "name", v))
        counts[key] = counts.get(key, 0) + 1
    return counts


def memory_attacks(body: int = BODY, idle: int = 1000) -> list[dict[str, Any]]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    return [
        _attack(
            f"16 x {body / 1e6:.0f} MB OTLP/HTTP bodies, no token",
            lambda s: _statuses([b.status for b in attackers.big_bodies(s.ports.http, 16, body, "POST", "/v1/traces", PROTOBUF, 120)]),
        ),
        _attack(
            f"16 x {body / 1e6:.0f} MB OTLP/HTTP bodies, with the token",
            lambda s: _statuses(
                [b.status for b in attackers.big_bodies(s.ports.http, 16, body, "POST", "/v1/traces", {**PROTOBUF, **auth}, 120)]
            ),
        ),
        _attack(
            f"24 x {body / 1e6:.0f} MB gRPC exports, with the token",
            lambda s: _statuses(attackers.grpc_big_messages(s.ports.grpc, 24, body, TOKEN, 120)),
        ),
        _attack(f"{idle} idle sockets on each port", lambda s: _idle(s, idle)),
    ]


def _idle(serve: Serve, n: int) -> dict[str, int]:
    with (
        attackers.idle_sockets(serve.ports.http, n),
        attackers.idle_sockets(serve.ports.api, n),
        attackers.idle_sockets(serve.ports.grpc, n),
    ):
        time.sleep(2)
        return {"threads_while_open": serve.stats().threads}


def _renewed(template: ExportTraceServiceRequest) -> Batch:
    """The template's spans with new ids: a distinct batch in a millisecond (building one span by span takes 100)."""
    request = ExportTraceServiceRequest()
    request.CopyFrom(template)
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                span.trace_id = os.urandom(16)
                span.span_id = os.urandom(8)
    return Batch.of(request)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def overload(exporters: int = 64, seconds: float = 20.0, spans: int = 500) -> dict[str, Any]:
    template = ExportTraceServiceRequest.FromString(make_batch(spans).payload)
    with tempfile.TemporaryDirectory(prefix="tokentrail-abuse-") as tmp:
        data_dir = Path(tmp)
        serve, ledger = _receiver(data_dir)
        per_batch: list[float] = []
        lock = threading.Lock()
        ends: list[float] = []  # set once every exporter is ready: the load lasts ``seconds`` from then
        start = threading.Barrier(exporters, action=lambda: ends.append(time.monotonic() + seconds))

        def exporter(seed: float) -> None:
            client = GrpcExporter(serve.ports.grpc, ledger, token=TOKEN, rng=random.Random(seed))
            start.wait()
            try:
                while time.monotonic() < ends[0]:
                    batch = _renewed(template)
                    t0 = time.monotonic()
                    if client.export(batch):
                        with lock:
                            per_batch.append(time.monotonic() - t0)
            finally:
                client.close()

        before_answers = len(ledger.answers)
        before_latencies = len(ledger.latencies)
        t0 = time.monotonic()
        with Watch(serve) as watch:
            threads = [threading.Thread(target=exporter, args=(random.random(),)) for _ in range(exporters)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        elapsed = time.monotonic() - t0
        alive = serve.alive() and serve.healthz() == 200
        assert serve.terminate() == 0
        acked = ledger.acked_ids()
        stored, distinct, missing = _stored(data_dir, acked)
        answers = ledger.answers[before_answers:]
        latencies = ledger.latencies[before_latencies:]
        return {
            "exporters": exporters,
            "seconds": round(elapsed, 1),
            "batch_spans": spans,
            "answered_attempts": len(answers),
            "busy_refusals": sum(ledger.refusals.values()),
            "refusals_without_retry_delay": sum(ledger.without_delay.values()),
            "attempt_p50_ms": round(1000 * statistics.median(answers), 1),
            "attempt_p99_ms": round(1000 * _percentile(answers, 0.99), 1),
            "acked_attempt_p99_ms": round(1000 * _percentile(latencies, 0.99), 1),
            "batch_to_ack_p50_ms": round(1000 * statistics.median(per_batch), 1),
            "batch_to_ack_p99_ms": round(1000 * _percentile(per_batch, 0.99), 1),
            "acked_spans_per_s": round(len(acked) / elapsed),
            "peak_rss_mib": round(watch.after.hwm / MiB, 1) if watch.after else None,
            "rss_rise_mib": round(watch.hwm_growth / MiB, 1) if watch.after else None,
            "threads_peak": watch.peak_threads,
            "alive_and_answering": alive,
            "spans_acknowledged": len(acked),
            "spans_stored": stored,
            "spans_stored_distinct": distinct,
            "acknowledged_not_stored": missing,
        }


def _stored(data_dir: Path, acked: set[str]) -> tuple[int, int, int]:
    """(rows, distinct span ids, acknowledged span ids missing) in the Parquet dataset."""
    files = [str(p) for p in (data_dir / "usage").glob("date=*/*.parquet")]
    con = duckdb.connect()
    con.register("acked", pa.table({"span_id": sorted(acked)}))
    rows, distinct = con.execute("SELECT count(*), count(DISTINCT span_id) FROM read_parquet(?)", [files]).fetchone()  # type: ignore[misc]
    (missing,) = con.execute(  # type: ignore[misc]
        "SELECT count(*) FROM acked WHERE span_id NOT IN (SELECT span_id FROM read_parquet(?))", [files]
    ).fetchone()
    return int(rows), int(distinct), int(missing)


def run(body: int = BODY, idle: int = 1000, exporters: int = 64, seconds: float = 20.0) -> dict[str, Any]:
    return {"memory_attacks": memory_attacks(body, idle), "overload": overload(exporters, seconds)}


def _print_table(result: dict[str, Any]) -> None:
    print(f"{'attack':48} {'peak RSS':>9} {'rise':>7} {'threads':>9}  answers")
    for a in result["memory_attacks"]:
        print(
            f"{a['attack']:48} {a['peak_rss_mib']:>6.0f} MiB {a['rss_rise_mib']:>+5.0f} {a['threads_before']:>3} ->"
            f"{a['threads_peak']:>3}  {a['answers']}"
        )
    o = result["overload"]
    print(
        f"\noverload: {o['exporters']} exporters x {o['seconds']} s, {o['batch_spans']}-span batches: attempt p50 "
        f"{o['attempt_p50_ms']} ms, p99 {o['attempt_p99_ms']} ms; acknowledged attempt p99 {o['acked_attempt_p99_ms']} "
        f"ms; batch to ack p99 {o['batch_to_ack_p99_ms']} ms; {o['busy_refusals']} busy refusals; peak RSS "
        f"{o['peak_rss_mib']} MiB (+{o['rss_rise_mib']}), threads {o['threads_peak']}; spans acknowledged "
        f"{o['spans_acknowledged']}, stored {o['spans_stored']} ({o['spans_stored_distinct']} distinct, "
        f"{o['acknowledged_not_stored']} acknowledged but missing)"
    )


if __name__ == "__main__":
    figures = run()
    _print_table(figures)
    print(json.dumps({"abuse": figures}, indent=2))
