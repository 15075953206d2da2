"""The benchmarks must keep running (they are how speed is judged); here they run tiny and check correctness only,
never time: timed assertions are flaky."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tokentrail.processor.normalize.reader import normalize_request

from benchmarks import pricing_batch, receiver_normalize, receiver_stages


def test_the_pricing_benchmark_fast_path_agrees_with_the_library_on_its_sample() -> None:
    result = pricing_batch.run(n=600, reference_n=300)
    assert result["mismatches_in_sample"] == 0
    assert result["ratio_vs_calc_price"] > 0


def test_the_receiver_benchmark_normalizes_every_span_it_builds() -> None:
    payload = receiver_normalize.build_request(200)
    result = normalize_request(ExportTraceServiceRequest.FromString(payload))
    assert len(result.records) == 200 and result.rejected == 0
    assert receiver_normalize.run(n_spans=400, batch=200, repeat=1)["ratio_vs_protobuf_parse"] > 0


def test_the_receiver_stage_benchmark_measures_every_stage() -> None:
    result = receiver_stages.run(requests=3, batch=200)
    for name in receiver_stages.STAGES:
        assert result[f"{name}_us_min"] >= 0
    assert result["flush_to_parquet_us"] > 0 and result["ingest_us_min"] > 0
