"""Where a receiver's time goes, per span: the ingest path stage by stage (parse, normalize, columns, dedupe, price,
Arrow, IPC, WAL append) and the flusher's WAL-to-Parquet step, in thread CPU time, on requests the process has never seen
(every response id new, as in a real stream: nothing is served from a memo that a replayed payload would warm).

Each stage's median and minimum over the requests: the minimum is the best estimate of the cost itself on a shared
machine, where other processes only ever add to it. The garbage collector is set as a running receiver sets it.
``protobuf_parse`` is the plain ``ParseFromString`` of the standard message, the baseline of the other receiver
benchmarks, for the ratio (``parse`` is the receiver's own parse, into ``otlp.fast_request_class()``)."""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tokentrail.processor.ingest.gc_tuning import raise_gc_threshold, restore_gc_threshold
from tokentrail.processor.normalize.otlp import parse_export_request
from tokentrail.processor.normalize.reader import normalize_request
from tokentrail.processor.pricing.catalog import Pricer
from tokentrail.processor.storage.dedupe import DedupeWindow, column_keys
from tokentrail.processor.storage.parquet import flush_wal
from tokentrail.processor.storage.wal import WriteAheadLog, encode_table

from benchmarks.receiver_normalize import build_request

STAGES = ("parse", "normalize", "columns", "dedupe", "price", "arrow_table", "ipc", "wal_append")


def run(requests: int = 40, batch: int = 1_000) -> dict[str, float]:
    raise_gc_threshold()
    try:
        return _run(requests, batch)
    finally:
        restore_gc_threshold()


def _run(requests: int, batch: int) -> dict[str, float]:
    warm = [build_request(batch) for _ in range(3)]
    payloads = [build_request(batch) for _ in range(requests)]
    clock = time.thread_time
    per_stage: dict[str, list[float]] = {name: [] for name in STAGES}
    baseline: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tokentrail-stages-") as tmp:
        wal = WriteAheadLog(os.path.join(tmp, "wal"), "stages", max_segment_age=3600)
        window, pricer = DedupeWindow(), Pricer()
        for measured, group in ((False, warm), (True, payloads)):
            for payload in group:
                c0 = clock()
                ExportTraceServiceRequest.FromString(payload)
                c1 = clock()
                request, _ = parse_export_request(payload)  # what the receiver runs
                c2 = clock()
                result = normalize_request(request)
                c3 = clock()
                columns = result.columns
                c4 = clock()
                claim = window.claim_keys(column_keys(columns))
                fresh = columns if len(claim.fresh) == len(columns) else columns.take(claim.fresh)
                c5 = clock()
                pricer.price_columns(fresh)
                c6 = clock()
                table = fresh.to_table()
                c7 = clock()
                frame = encode_table(table)
                c8 = clock()
                wal.append_frame(frame)  # fsync included, but sleeping in it is no CPU time
                claim.commit()
                c9 = clock()
                if measured:
                    baseline.append(c1 - c0)
                    marks = (c1, c2, c3, c4, c5, c6, c7, c8, c9)
                    for name, start, end in zip(STAGES, marks, marks[1:]):
                        per_stage[name].append(end - start)
        wal.rotate()
        c0 = clock()
        flushed = flush_wal(wal, os.path.join(tmp, "usage"))
        flush = (clock() - c0) / flushed.rows

    def us(seconds: float) -> float:
        return round(seconds / batch * 1e6, 3)

    out: dict[str, float] = {"spans_per_request": float(batch), "requests": float(requests)}
    for name, values in per_stage.items():
        out[f"{name}_us_median"] = us(statistics.median(values))
        out[f"{name}_us_min"] = us(min(values))
    out["ingest_us_median"] = round(sum(out[f"{n}_us_median"] for n in STAGES), 3)
    out["ingest_us_min"] = round(sum(out[f"{n}_us_min"] for n in STAGES), 3)
    out["flush_to_parquet_us"] = round(flush * 1e6, 3)
    out["protobuf_parse_us_min"] = us(min(baseline))
    out["ingest_ratio_vs_protobuf_parse"] = round(out["ingest_us_min"] / out["protobuf_parse_us_min"], 2)
    return out
