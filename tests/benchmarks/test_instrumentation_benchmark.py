"""The instrumentation benchmark keeps running (it is how the overhead is judged): here it runs tiny and is checked
for what it reports and for the spans it produces, never for its timings (timed assertions are flaky)."""

from __future__ import annotations

import pytest
from tokentrail.instrumentation import instrument, semconv, uninstrument
from tokentrail.processor.demo.fake_bedrock import FakeBedrock

from benchmarks import instrumentation_overhead


def test_the_overhead_benchmark_runs_and_reports_its_ratios() -> None:
    result = instrumentation_overhead.run(n=40, repeat=1, chunks=20, loopback_calls=3, import_runs=1)
    assert set(result) == {
        "bare_span_us",
        "bare_span_in_call_us",
        "attributed_span_in_call_us",
        "added_per_call_us",
        "added_per_call_vs_bare_span",
        "added_per_call_vs_attributed_span",
        "added_per_call_vs_bare_span_hot_loop",
        "beyond_attributed_span_us",
        "added_per_sse_chunk_us",
        "added_per_sse_chunk_sdk_cpu_us",
        "openai_v2_per_sse_chunk_sdk_cpu_us",
        "added_per_call_with_history_us",
        "added_per_call_with_history_vs_bare_span",
        "sdk_metrics_per_call_us",
        "bare_span_in_call_cpu_us",
        "added_per_call_cpu_us",
        "added_per_call_vs_bare_span_cpu",
        "uninstrumented_call_us",
        "loopback_call_instrumented_vs_not",
        "import_instrumentation_ms",
        "import_sdk_trace_ms",
        "import_ratio",
        # The same figures for a Gemini call through google-genai (generate_content, generate_content_stream).
        "gemini_uninstrumented_call_us",
        "gemini_bare_span_in_call_us",
        "gemini_attributed_span_in_call_us",
        "gemini_added_per_call_us",
        "gemini_added_per_call_vs_bare_span",
        "gemini_added_per_call_vs_attributed_span",
        "gemini_added_per_call_vs_bare_span_hot_loop",
        "gemini_beyond_attributed_span_us",
        "gemini_bare_span_in_call_cpu_us",
        "gemini_added_per_call_cpu_us",
        "gemini_added_per_call_vs_bare_span_cpu",
        "gemini_added_per_sse_chunk_sdk_us",
        "gemini_added_per_sse_chunk_sdk_cpu_us",
        # And for AWS Bedrock through a real boto3 client (converse, converse_stream) to the fake Bedrock on loopback.
        "bedrock_uninstrumented_call_us",
        "bedrock_bare_span_in_call_us",
        "bedrock_attributed_span_in_call_us",
        "bedrock_added_per_call_us",
        "bedrock_added_per_call_vs_bare_span",
        "bedrock_added_per_call_vs_attributed_span",
        "bedrock_added_per_call_vs_bare_span_hot_loop",
        "bedrock_beyond_attributed_span_us",
        "bedrock_bare_span_in_call_cpu_us",
        "bedrock_added_per_call_cpu_us",
        "bedrock_added_per_call_vs_bare_span_cpu",
        "bedrock_added_per_stream_event_us",
        "bedrock_added_per_stream_event_cpu_us",
    }
    assert result["bare_span_us"] > 0 and result["uninstrumented_call_us"] > 0
    assert result["gemini_uninstrumented_call_us"] > 0
    assert result["bedrock_uninstrumented_call_us"] > 0


def test_the_bedrock_calls_are_traced_only_through_a_client_made_while_instrumented() -> None:
    """How the benchmark turns Bedrock's instrumentation on and off: the client made before ``instrument()`` never
    makes a span, not even while instrumented (the uninstrumented side, interleaved with the instrumented one), and
    the client made after each ``instrument()`` makes exactly one per call, with the server's usage."""
    provider, processor, exporter = instrumentation_overhead._provider()
    with FakeBedrock() as fake:
        bedrock = instrumentation_overhead._BedrockCalls(fake)
        # The fake sends one content event per output token: the long stream has the extra ones.
        assert bedrock.extra_stream_events() == (
            instrumentation_overhead.BEDROCK_LONG_TOKENS - instrumentation_overhead.BEDROCK_SHORT_TOKENS
        )

        def spans_of(traced: bool, calls: int = 2) -> int:
            processor.force_flush()
            before = exporter.count
            for call in bedrock.calls(traced).values():
                for _ in range(calls):
                    call()
            processor.force_flush()
            return exporter.count - before

        assert spans_of(traced=False) == 0
        for _ in range(2):  # on, off, on again: each instrument() gets a client of its own
            instrument(tracer_provider=provider, system_keys=[], fingerprint_salt="bench-salt")
            try:
                bedrock.instrumented(warm_up=1)
                assert spans_of(traced=True) == 2 * 3
                bedrock.check(exporter.last)  # the short stream's: 1 output token
                assert (exporter.last.attributes or {})[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 1  # type: ignore[union-attr]
                assert spans_of(traced=False) == 0
            finally:
                uninstrument()
                bedrock.uninstrumented()
            assert spans_of(traced=False) == 0
            with pytest.raises(AssertionError):
                bedrock.calls(traced=True)
    provider.shutdown()


def test_the_import_costs_are_measured_in_fresh_interpreters() -> None:
    """Each side is timed in its own new interpreter: nothing imported by the benchmark itself can make it cheaper."""
    costs = instrumentation_overhead.import_costs(runs=1)
    assert costs["import_instrumentation_ms"] > 0 and costs["import_sdk_trace_ms"] > 0
    assert costs["import_ratio"] > 0


@pytest.mark.parametrize(
    "side, workload",
    [(side, "json") for side in ("plain", "bare", "ours")]
    + [(side, workload) for side in ("plain", "ours", "openai_v2") for workload in ("sdk_json", "sdk_long", "sdk_short")]
    + [(side, "gemini_json") for side in ("plain", "bare", "ours")]
    + [(side, workload) for side in ("plain", "ours") for workload in ("gemini_long", "gemini_short")],
)
def test_what_the_instruction_count_runs_traces_every_call(side: str, workload: str) -> None:
    """The callgrind worker, run here without callgrind: each side traces each of its calls (it checks the span
    count itself), so the counted instructions are those of the side named."""
    instrumentation_overhead._instruction_worker(side, workload, calls=3, chunks=5, warm_up=2)


@pytest.mark.slow
def test_counted_instructions_grow_with_the_calls_and_repeat_exactly() -> None:
    """The deterministic figure: the same run counts the same instructions, and more calls count more."""
    none = instrumentation_overhead.instructions("ours", "json", 0)
    assert instrumentation_overhead.instructions("ours", "json", 0) == none
    assert instrumentation_overhead.instructions("ours", "json", 5) > none
