"""The end-to-end receiver benchmark keeps running (tiny, correctness only: no timed assertion)."""

from __future__ import annotations

from benchmarks import receiver_end_to_end


def test_the_end_to_end_benchmark_runs_both_configurations() -> None:
    result = receiver_end_to_end.run(n_spans=3_000, batch=500, connections=2, spin_loops=100_000)
    assert result["spans"] == 3_000
    for key in (
        "protobuf_parse_spans_per_s",
        "parse_only_grpc_spans_per_s",
        "one_process_spans_per_s",
        "two_processes_spans_per_s",
        "one_process_ratio_vs_parse_only_grpc",
    ):
        assert result[key] > 0
    assert result["one_process_rows"] == result["two_processes_rows"] == 3_000  # every span stored: none deduplicated
    assert result["machine_two_process_scaling"] > 0
