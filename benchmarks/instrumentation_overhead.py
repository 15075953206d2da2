"""Instrumentation overhead: what TokenTrail adds to one LLM call and to one streamed chunk.

Both are measured end to end through a real ``httpx2`` client and its real ``HTTPTransport`` (the class our hook
wraps), with the connection pool replaced by one that answers from memory, so the numbers are ours and not the
network's. For scale, the same comparison is also made against a real loopback server (the fake provider), where
the added cost is a small share of the call's latency.

The yardstick is the cost of one OpenTelemetry span (target: added cost per call <= 3 bare spans), measured the same way as our cost: as what it ADDS to the same uninstrumented call, on a
tracer provider set up exactly like the instrumented run's (a ``BatchSpanProcessor`` in front of the same
discarding exporter; a provider of its own, because TokenTrail's attribution processor cannot be removed from a
provider once added). Two spans are measured:

* a bare span: started before the call and ended after it, no attributes (``bare_span_in_call_us``);
* an attributed span: the same, carrying exactly the attributes of the span TokenTrail emits for the call, given at
  start (the conventions' sampling attributes) and set once before the end (the rest), exactly as TokenTrail sets
  them through the public API (``attributed_span_in_call_us``). What TokenTrail adds beyond this yardstick
  (``beyond_attributed_span_us``) is its own work: recognising the call, reading the bodies, the attribution.

A span timed alone in a tight loop (``bare_span_us``, the yardstick of earlier versions of this benchmark) costs
markedly less than the same span inside a call: in a loop its code and data stay hot in the CPU caches, and the
ended span it leaves in the batch queue does not slow anything down. It is reported for continuity
(``added_per_call_vs_bare_span_hot_loop``) but is not like-for-like with a cost measured inside a call.

Every time is also taken as CPU time of the calling thread (``*_cpu_*``): on a shared machine another process's
work lands in wall-clock time (a preempted batch), never in the thread's own CPU time, so these are the steadier
figures for judging a small difference; they leave out the batch processor's export thread, which the yardstick spans
and ours pay alike.

The GenAI client metrics go to the global meter provider, a no-op here as in a service that sets up no metrics.
With an SDK meter provider (``opentelemetry-instrument`` sets one up by default) recording them costs more than the
span itself; that is reported apart (``sdk_metrics_per_call_us``), on top of ``added_per_call_us``.

Per SSE chunk, the same extra-time-of-a-long-stream measure is also taken through the real OpenAI SDK (its
``httpx2`` client on the same in-memory transport), for TokenTrail and for ``opentelemetry-instrumentation-openai-v2``
(which wraps the SDK's stream) in the same run, in CPU time of the calling thread:
``added_per_sse_chunk_sdk_cpu_us`` against ``openai_v2_per_sse_chunk_sdk_cpu_us`` (floor: ours no more than theirs).

Import cost: ``import tokentrail.instrumentation`` against ``import opentelemetry.sdk.trace``, each timed inside a
fresh interpreter in CPU time (the least of several runs), as ``import_ratio`` (floor: <= 1.5).

Every instrumented run is checked: each call must have produced its span with the right usage.

Counted instructions (``python -m benchmarks.instrumentation_overhead instructions``, a few minutes, needs
``valgrind``): the same non-streamed call, bare-span yardstick and SDK stream, each run in fresh interpreters under
``valgrind --tool=callgrind``, give what a bare span, TokenTrail and openai-v2 add per call and per SSE chunk as
instruction counts, which are the same on every run: the figures that settle a floor a noisy machine's clock cannot.
"""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpcore2
import httpx2
import openai
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind
from tokentrail.instrumentation import instrument, semconv, uninstrument
from tokentrail.processor.demo.fake_provider import FakeProvider

URL = "https://api.openai.com/v1/chat/completions"
KEY = "sk-bench-0123456789abcdef"
REQUEST = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise this paragraph. " * 20}]}
).encode()
# A call later in a conversation: 60 earlier turns (~22 KB) sent again, as chat applications do. What reading its
# few fields costs should not grow with the history (see _jsonbody.pick).
HISTORY_REQUEST = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": ("user", "assistant")[turn % 2], "content": "Lorem ipsum dolor sit amet, consectetur. " * 8}
            for turn in range(60)
        ],
    }
).encode()
STREAM_REQUEST = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()
USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}


class _Counting(SpanExporter):
    """Discards spans, keeping only the last one (to check it) and a count."""

    def __init__(self) -> None:
        self.count = 0
        self.last: ReadableSpan | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        self.last = spans[-1]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _json_body() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "A summary. " * 30}, "finish_reason": "stop"}
            ],
            "usage": USAGE,
            "service_tier": "default",
        }
    ).encode()


def _sse_chunks(n: int) -> list[bytes]:
    """A Chat Completions stream of ``n`` content chunks, one event per network chunk, as providers send them."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini"}

    def event(choices: list[Any], usage: Any = None) -> bytes:
        return b"data: " + json.dumps({**base, "choices": choices, "usage": usage}).encode() + b"\n\n"

    chunks = [event([{"index": 0, "delta": {"content": " word"}, "finish_reason": None}]) for _ in range(n)]
    chunks.append(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    chunks.append(event([], USAGE))
    chunks.append(b"data: [DONE]\n\n")
    return chunks


class _MemoryPool:
    """Stands in for the transport's connection pool: answers every request from memory."""

    def __init__(self, headers: list[tuple[bytes, bytes]], body: Callable[[], bytes | Iterator[bytes]]) -> None:
        self._headers = headers
        self._body = body

    def handle_request(self, request: Any) -> httpcore2.Response:
        for _ in request.stream:
            pass
        return httpcore2.Response(200, headers=self._headers, content=self._body())

    def close(self) -> None:
        pass


def _client(pool: _MemoryPool) -> httpx2.Client:
    transport = httpx2.HTTPTransport()
    transport._pool = pool  # type: ignore[assignment]  # answered from memory: the numbers are ours, not the network's
    return httpx2.Client(transport=transport)


def _per_op(operation: Callable[[], None], n: int) -> tuple[float, float]:
    """Mean seconds per operation over one batch of ``n``, with the garbage collector paused: wall-clock time, and the
    calling thread's CPU time (which other processes on a shared machine do not disturb)."""
    gc.collect()
    gc.disable()
    try:
        start, cpu_start = time.perf_counter(), time.thread_time()
        for _ in range(n):
            operation()
        return (time.perf_counter() - start) / n, (time.thread_time() - cpu_start) / n
    finally:
        gc.enable()


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or NaN when a tiny, noisy run measured a yardstick of no cost at all."""
    return round(numerator / denominator, 2) if denominator > 0 else float("nan")


def _fastest(samples: list[tuple[float, float]], clock: int = 0) -> float:
    """The least-disturbed batch by ``clock`` (0: wall, 1: CPU): on a shared machine, noise only ever adds time."""
    return min(sample[clock] for sample in samples)


def _provider(schedule_delay_millis: int = 60_000) -> tuple[TracerProvider, BatchSpanProcessor, _Counting]:
    """A tracer provider as in production: a batch processor, whose cost on the caller is a queue append."""
    exporter = _Counting()
    provider = TracerProvider()
    processor = BatchSpanProcessor(exporter, max_queue_size=1 << 16, schedule_delay_millis=schedule_delay_millis)
    provider.add_span_processor(processor)
    return provider, processor, exporter


# Attributes TokenTrail can only know once the response is read; the others are known when the request is sent.
_RESPONSE_PREFIXES = ("gen_ai.response.", "gen_ai.usage.", "tokentrail.usage.", "tokentrail.service_tier", "error.")


def _split_attributes(span: ReadableSpan) -> tuple[dict[str, Any], dict[str, Any]]:
    """The attributes of ``span`` as known at its start (the request's) and at its end (the response's)."""
    at_start: dict[str, Any] = {}
    at_end: dict[str, Any] = {}
    for name, value in (span.attributes or {}).items():
        (at_end if name.startswith(_RESPONSE_PREFIXES) else at_start)[name] = value
    return at_start, at_end


# Timed inside a fresh interpreter: only the import itself, not the interpreter's start, in the process's CPU time
# (another process's work on a shared machine lands in wall-clock time, never in this).
_IMPORT_PROBE = "import time; start = time.process_time(); import {module}; print(time.process_time() - start)"


def import_seconds(module: str, runs: int) -> float:
    """The least-disturbed time of ``import module`` in ``runs`` fresh interpreters."""
    probe = _IMPORT_PROBE.format(module=module)
    return min(
        float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
        for _ in range(runs)
    )


def import_costs(runs: int = 7) -> dict[str, float]:
    """``import tokentrail.instrumentation`` against ``import opentelemetry.sdk.trace``, interleaved."""
    ours: list[float] = []
    sdk: list[float] = []
    for _ in range(runs):
        ours.append(import_seconds("tokentrail.instrumentation", 1))
        sdk.append(import_seconds("opentelemetry.sdk.trace", 1))
    return {
        "import_instrumentation_ms": round(min(ours) * 1e3, 2),
        "import_sdk_trace_ms": round(min(sdk) * 1e3, 2),
        "import_ratio": _ratio(min(ours), min(sdk)),  # target <= 1.5
    }


def run(
    n: int = 2000, repeat: int = 7, chunks: int = 400, loopback_calls: int = 200, import_runs: int = 7
) -> dict[str, float]:
    """Measure; return microseconds and ratios (printed by ``python -m benchmarks``)."""
    provider, processor, exporter = _provider()
    # The yardstick spans go to a provider set up the same way, without TokenTrail's processor on it.
    baseline_provider, baseline_processor, baseline_exporter = _provider()
    tracer = baseline_provider.get_tracer("bench")

    json_pool = _MemoryPool([(b"content-type", b"application/json")], _json_body)
    sse_pool = _MemoryPool([(b"content-type", b"text/event-stream")], lambda: iter(_sse_chunks(chunks)))
    short_sse_pool = _MemoryPool([(b"content-type", b"text/event-stream")], lambda: iter(_sse_chunks(0)))
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}

    def caller(pool: _MemoryPool, body: bytes) -> Callable[[], None]:
        client = _client(pool)

        def call() -> None:
            with client.stream("POST", URL, content=body, headers=headers) as response:
                for _ in response.iter_raw():
                    pass

        return call

    def sdk_caller(pool: _MemoryPool) -> Callable[[], None]:
        client = openai.OpenAI(api_key=KEY, http_client=_client(pool), max_retries=0)

        def call() -> None:
            stream = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Tell me a story."}],
                stream=True,
                stream_options={"include_usage": True},
            )
            for _ in stream:
                pass

        return call

    calls = {
        "sdk_long": sdk_caller(sse_pool),
        "sdk_short": sdk_caller(short_sse_pool),
        "json": caller(json_pool, REQUEST),
        "history": caller(json_pool, HISTORY_REQUEST),
        "long": caller(sse_pool, STREAM_REQUEST),
        "short": caller(short_sse_pool, STREAM_REQUEST),
    }
    sizes = {
        "json": n,
        "history": max(n // 4, 5),
        "long": max(n // 40, 5),
        "short": max(n // 40, 5),
        "sdk_long": max(n // 40, 3),
        "sdk_short": max(n // 40, 3),
    }
    openai_v2 = OpenAIInstrumentor()

    def warm_up() -> None:
        for call in calls.values():
            for _ in range(20):
                call()  # warm up every path

    def traced(meter_provider: MeterProvider | None = None) -> None:
        instrument(
            tracer_provider=provider, system_keys=[KEY], fingerprint_salt="bench-salt", meter_provider=meter_provider
        )

    # The GenAI metrics go to the global meter provider unless told otherwise, a no-op one here (as in a service
    # that configures no metrics): their price with an SDK meter provider is measured apart.
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    # The attributes of the span TokenTrail emits for the non-streamed call, for the attributed yardstick span.
    try:
        traced()
        warm_up()
        calls["json"]()
        processor.force_flush()
        assert exporter.last is not None
        span_name = exporter.last.name
        at_start, at_end = _split_attributes(exporter.last)
    finally:
        uninstrument()
    warm_up()

    json_call = calls["json"]

    def bare_span() -> None:
        tracer.start_span(span_name).end()

    def call_with_bare_span() -> None:
        span = tracer.start_span(span_name)
        json_call()
        span.end()

    def call_with_attributed_span() -> None:
        span = tracer.start_span(span_name, kind=SpanKind.CLIENT, attributes=at_start)
        json_call()
        span.set_attributes(at_end)
        span.end()

    baselines: dict[str, Callable[[], None]] = {
        "bare_span": bare_span,
        "call_with_bare_span": call_with_bare_span,
        "call_with_attributed_span": call_with_attributed_span,
    }
    baseline_samples: dict[str, list[tuple[float, float]]] = {name: [] for name in baselines}
    plain_samples: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    traced_samples: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    metered_samples: list[tuple[float, float]] = []
    openai_v2_samples: dict[str, list[tuple[float, float]]] = {"sdk_long": [], "sdk_short": []}
    try:
        # Interleaved, so that a slow spell of a shared machine hits every side alike.
        for _ in range(repeat):
            for name, operation in baselines.items():
                baseline_samples[name].append(_per_op(operation, n))
                baseline_processor.force_flush()
            for name, call in calls.items():
                plain_samples[name].append(_per_op(call, sizes[name]))
            traced()
            processor.force_flush()
            before = exporter.count
            for name, call in calls.items():
                traced_samples[name].append(_per_op(call, sizes[name]))
            processor.force_flush()
            assert exporter.count > before and exporter.last is not None
            assert (exporter.last.attributes or {})[semconv.GEN_AI_USAGE_INPUT_TOKENS] == USAGE["prompt_tokens"]
            traced(meter_provider)
            metered_samples.append(_per_op(json_call, n))
            processor.force_flush()
            uninstrument()
            # openai-v2 on the yardstick provider: each of its calls must have produced its span.
            baseline_processor.force_flush()
            before = baseline_exporter.count
            openai_v2.instrument(tracer_provider=baseline_provider)
            try:
                for name in openai_v2_samples:
                    openai_v2_samples[name].append(_per_op(calls[name], sizes[name]))
            finally:
                openai_v2.uninstrument()
            baseline_processor.force_flush()
            assert baseline_exporter.count - before >= sum(sizes[name] for name in openai_v2_samples)
        uninstrumented_loopback = _loopback(loopback_calls)
        traced()
        loopback = _loopback(loopback_calls)
    finally:
        uninstrument()
        provider.shutdown()
        baseline_provider.shutdown()
        meter_provider.shutdown()
    baseline = {name: _fastest(samples) for name, samples in baseline_samples.items()}
    plain = {name: _fastest(samples) for name, samples in plain_samples.items()}
    traced_time = {name: _fastest(samples) for name, samples in traced_samples.items()}

    # The same in CPU time of the calling thread: steadier on a shared machine, and blind to the batch processor's
    # export thread, which both sides pay alike (one span per call each).
    bare_cpu = _fastest(baseline_samples["call_with_bare_span"], 1) - _fastest(plain_samples["json"], 1)
    added_per_call_cpu = _fastest(traced_samples["json"], 1) - _fastest(plain_samples["json"], 1)
    bare_hot = baseline["bare_span"]
    bare = baseline["call_with_bare_span"] - plain["json"]
    attributed = baseline["call_with_attributed_span"] - plain["json"]
    added_per_call = traced_time["json"] - plain["json"]
    metrics_cost = _fastest(metered_samples) - traced_time["json"]
    # Per chunk: the extra time of a long stream over a short one, instrumented minus uninstrumented.
    added_per_chunk = ((traced_time["long"] - traced_time["short"]) - (plain["long"] - plain["short"])) / chunks
    # Through the SDK, in CPU time of the calling thread (where both instrumentations do their per-chunk work): a
    # long SDK stream takes milliseconds, long enough for another process's work to swamp a wall-clock difference.
    def sdk_chunks_cpu(samples: dict[str, list[tuple[float, float]]]) -> float:
        return _fastest(samples["sdk_long"], 1) - _fastest(samples["sdk_short"], 1)

    plain_sdk_chunks = sdk_chunks_cpu(plain_samples)
    added_per_sdk_chunk = (sdk_chunks_cpu(traced_samples) - plain_sdk_chunks) / chunks
    openai_v2_per_sdk_chunk = (sdk_chunks_cpu(openai_v2_samples) - plain_sdk_chunks) / chunks
    return {
        "bare_span_us": round(bare_hot * 1e6, 2),  # alone, in a tight loop
        "bare_span_in_call_us": round(bare * 1e6, 2),  # what one empty span adds to the call
        "attributed_span_in_call_us": round(attributed * 1e6, 2),  # ... one span with our span's attributes
        "added_per_call_us": round(added_per_call * 1e6, 2),
        "added_per_call_vs_bare_span": _ratio(added_per_call, bare),  # target <= 3
        "added_per_call_vs_attributed_span": _ratio(added_per_call, attributed),
        "added_per_call_vs_bare_span_hot_loop": _ratio(added_per_call, bare_hot),
        "beyond_attributed_span_us": round((added_per_call - attributed) * 1e6, 2),  # ours, beyond the conventions
        "added_per_sse_chunk_us": round(added_per_chunk * 1e6, 3),
        # Per chunk through the real OpenAI SDK: ours, and openai-v2's in the same run (target: ours <= theirs).
        "added_per_sse_chunk_sdk_cpu_us": round(added_per_sdk_chunk * 1e6, 3),
        "openai_v2_per_sse_chunk_sdk_cpu_us": round(openai_v2_per_sdk_chunk * 1e6, 3),
        # The same call with a 22 KB chat history in its request.
        "added_per_call_with_history_us": round((traced_time["history"] - plain["history"]) * 1e6, 2),
        "added_per_call_with_history_vs_bare_span": _ratio(traced_time["history"] - plain["history"], bare),
        # Not in the above: what the two GenAI client metrics add when an SDK meter provider records them.
        "sdk_metrics_per_call_us": round(metrics_cost * 1e6, 2),
        "bare_span_in_call_cpu_us": round(bare_cpu * 1e6, 2),
        "added_per_call_cpu_us": round(added_per_call_cpu * 1e6, 2),
        "added_per_call_vs_bare_span_cpu": _ratio(added_per_call_cpu, bare_cpu),
        "uninstrumented_call_us": round(plain["json"] * 1e6, 2),
        "loopback_call_instrumented_vs_not": round(loopback / uninstrumented_loopback, 3),
        **import_costs(import_runs),
    }


def _loopback(calls: int) -> float:
    """Median seconds per non-streamed call to the fake provider over real loopback HTTP."""
    with FakeProvider() as fake, httpx2.Client() as client:
        url = fake.openai_base_url + "/chat/completions"
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

        def call() -> None:
            client.post(url, json=body, headers={"authorization": f"Bearer {KEY}"}).raise_for_status()

        for _ in range(10):
            call()
        return _fastest([_per_op(call, calls) for _ in range(3)])


# Counted instructions ---------------------------------------------------------------------------------------------
#
# Time on a shared machine cannot resolve a few microseconds; instructions counted by ``valgrind --tool=callgrind``
# can, and they are the same on every run. Each figure is a difference of two runs of a fresh interpreter that do the
# same thing but for the number of calls (or of chunks), so the interpreter's start, the imports and the warm-up
# cancel out. ``python -m benchmarks.instrumentation_overhead instructions`` prints them (about a minute).

# Calls made before counting starts, in every run: they are in the count too, hence in a long stream's chunks.
_WARM_UP = 50


def _instruction_worker(side: str, workload: str, calls: int, chunks: int, warm_up: int = _WARM_UP) -> None:
    """Run inside callgrind: set ``side`` up (no instrumentation, one bare span around each call, TokenTrail, or
    openai-v2), warm up, then make ``calls`` calls of ``workload`` with the garbage collector off."""
    # Exported only by the force_flush at the end, whatever the time callgrind takes: the same work every run.
    provider, _, exporter = _provider(schedule_delay_millis=24 * 3_600_000)
    tracer = provider.get_tracer("bench")
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    json_pool = _MemoryPool([(b"content-type", b"application/json")], _json_body)
    stream_chunks = chunks if workload == "sdk_long" else 0
    sse_pool = _MemoryPool([(b"content-type", b"text/event-stream")], lambda: iter(_sse_chunks(stream_chunks)))
    if workload == "json":
        client = _client(json_pool)

        def call() -> None:
            with client.stream("POST", URL, content=REQUEST, headers=headers) as response:
                for _ in response.iter_raw():
                    pass

    else:
        sdk = openai.OpenAI(api_key=KEY, http_client=_client(sse_pool if workload != "sdk_json" else json_pool))
        messages: Any = [{"role": "user", "content": "Summarise this paragraph. " * 20}]
        if workload == "sdk_json":

            def call() -> None:
                sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)

        else:

            def call() -> None:
                for _ in sdk.chat.completions.create(
                    model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
                ):
                    pass

    operation = call
    openai_v2 = OpenAIInstrumentor()
    if side == "ours":
        instrument(tracer_provider=provider, system_keys=[KEY], fingerprint_salt="bench-salt")
    elif side == "openai_v2":
        openai_v2.instrument(tracer_provider=provider)
    elif side == "bare":

        def operation() -> None:
            span = tracer.start_span("chat gpt-4o-mini")
            call()
            span.end()

    try:
        for _ in range(warm_up):
            operation()
        gc.collect()
        gc.disable()
        for _ in range(calls):
            operation()
        gc.enable()
        provider.force_flush()
        # Every call of a traced side made its span (the warm-up's included): it really traced what it counts.
        assert exporter.count == (0 if side == "plain" else warm_up + calls), (side, exporter.count)
    finally:
        if side == "ours":
            uninstrument()
        elif side == "openai_v2":
            openai_v2.uninstrument()
        provider.shutdown()


def instructions(side: str, workload: str, calls: int, chunks: int = 0) -> int:
    """Instructions counted by callgrind in a fresh interpreter running ``_instruction_worker``."""
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--dump-instr=no",
        sys.executable, "-m", "benchmarks.instrumentation_overhead", "worker", side, workload, str(calls), str(chunks),
    ]  # fmt: skip
    # The same hash seed every run: dict and set layouts, hence instruction counts, do not vary between runs.
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=True)
    counted = re.search(r"Collected : (\d+)", done.stderr)
    if counted is None:
        raise RuntimeError(f"callgrind reported no instruction count: {done.stderr[-500:]}")
    return int(counted.group(1))


def instruction_counts(calls: int = 200, chunks: int = 200, stream_calls: int = 10) -> dict[str, float]:
    """Instructions added per call and per SSE chunk, by a bare span, TokenTrail and openai-v2 (two cores, in
    parallel: the counts do not depend on the timing)."""
    jobs = {
        **{(side, "json", n): (side, "json", n, 0) for side in ("plain", "bare", "ours") for n in (0, calls)},
        **{(side, "sdk_json", n): (side, "sdk_json", n, 0) for side in ("plain", "ours", "openai_v2") for n in (0, calls)},
        **{
            (side, workload, stream_calls): (side, workload, stream_calls, chunks)
            for side in ("plain", "ours", "openai_v2")
            for workload in ("sdk_long", "sdk_short")
        },
    }  # fmt: skip
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(instructions, *job) for key, job in jobs.items()}
        counted = {key: future.result() for key, future in futures.items()}

    def per_call(side: str, workload: str) -> float:
        return (counted[(side, workload, calls)] - counted[(side, workload, 0)]) / calls

    def per_chunk(side: str) -> float:
        long, short = counted[(side, "sdk_long", stream_calls)], counted[(side, "sdk_short", stream_calls)]
        return (long - short) / ((_WARM_UP + stream_calls) * chunks)  # the warm-up's streams are long too

    bare = per_call("bare", "json") - per_call("plain", "json")
    ours = per_call("ours", "json") - per_call("plain", "json")
    return {
        "instructions_per_call_uninstrumented": round(per_call("plain", "json")),
        "instructions_added_per_call_bare_span": round(bare),
        "instructions_added_per_call": round(ours),
        "instructions_added_per_call_vs_bare_span": _ratio(ours, bare),
        # Through the real OpenAI SDK, non-streamed: ours and openai-v2's (which wraps the SDK, not the transport).
        "instructions_added_per_sdk_call": round(per_call("ours", "sdk_json") - per_call("plain", "sdk_json")),
        "openai_v2_instructions_added_per_sdk_call": round(
            per_call("openai_v2", "sdk_json") - per_call("plain", "sdk_json")
        ),
        # Per SSE chunk through the real OpenAI SDK (target: ours <= openai-v2's).
        "instructions_added_per_sse_chunk_sdk": round(per_chunk("ours") - per_chunk("plain")),
        "openai_v2_instructions_added_per_sse_chunk_sdk": round(per_chunk("openai_v2") - per_chunk("plain")),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        side, workload, calls, chunks = sys.argv[2:6]
        _instruction_worker(side, workload, int(calls), int(chunks))
    elif sys.argv[1:2] == ["instructions"]:
        print(json.dumps(instruction_counts(), indent=2))
    else:
        print(json.dumps(run(), indent=2))
