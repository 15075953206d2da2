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

The same figures for Google's SDK (``gemini_*``): ``google-genai``'s ``generate_content`` and
``generate_content_stream`` to the Gemini Developer API, through the SDK's own ``httpx2`` client on the same
in-memory transport (``HttpOptions(httpx_client=...)``), against a bare and an attributed span (the attributes of the
span TokenTrail emits for the Gemini call) around the same SDK call, and per SSE chunk of its stream (each chunk
carrying the running ``usageMetadata``, as Google's do). There is no openai-v2 counterpart installed to compare
chunks with.

And for AWS Bedrock (``bedrock_*``), which boto3 sends through botocore's own HTTP stack and TokenTrail observes
through botocore's events, not through httpx: ``converse`` and ``converse_stream`` through a real boto3
``bedrock-runtime`` client to the fake Bedrock server on loopback (its streams in AWS's binary event-stream
encoding), against a bare and an attributed span around the same boto3 call, and per event of its stream
(``bedrock_added_per_stream_event_cpu_us``: a stream of the most content events the fake sends against one of the
fewest, the difference counted on the server). These calls are real network round trips (about a millisecond each,
the server's work in the same process), so their figures are noisier than the in-memory ones; the CPU-time ones
leave the server's threads out. Our hook registers on a botocore client when it is created, so the instrumented side
calls through a client made after each ``instrument()``, the uninstrumented side through one made before anything
was instrumented, never observed; both live at once, so the four sides are interleaved in small batches, round after
round, which the swings of a millisecond call on a busy machine need (one batch per side per repeat, as above, gave
yardsticks below zero).

Import cost: ``import tokentrail.instrumentation`` against ``import opentelemetry.sdk.trace``, each timed inside a
fresh interpreter in CPU time (the least of several runs), as ``import_ratio`` (floor: <= 1.5).

Every instrumented run is checked: each call must have produced its span (exactly one) with the right usage (for
Bedrock, the usage the server reported), and the uninstrumented ones none.

Counted instructions (``python -m benchmarks.instrumentation_overhead instructions``, a few minutes, needs
``valgrind``): the same non-streamed call, bare-span yardstick and SDK stream, each run in fresh interpreters under
``valgrind --tool=callgrind``, give what a bare span, TokenTrail and openai-v2 add per call and per SSE chunk as
instruction counts (and a bare span and TokenTrail for the same through google-genai), which are the same on every run: the figures that settle a floor a noisy machine's clock cannot.
Bedrock is not counted: its server's threads would be counted with the calls, and their share varies with the
threads' scheduling, so the counts would not repeat.
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

import boto3  # type: ignore[import-untyped]  # botocore and boto3 ship no types
import httpcore2
import httpx2
import openai
from botocore.config import Config  # type: ignore[import-untyped]
from google import genai
from google.genai import types as genai_types
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind
from tokentrail.instrumentation import instrument, semconv, uninstrument
from tokentrail.processor.demo.fake_bedrock import FakeBedrock
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


GEMINI_MODEL = "gemini-2.5-flash"
GEMINI_KEY = "AIza-bench-0123456789abcdef"
GEMINI_USAGE = {
    "promptTokenCount": 1200,
    "candidatesTokenCount": 300,
    "thoughtsTokenCount": 150,
    "cachedContentTokenCount": 1024,
    "totalTokenCount": 1650,
}


def _gemini_response(text: str, usage: dict[str, int], finished: bool) -> dict[str, Any]:
    """One ``generateContent`` answer (or one streamed chunk of it), shaped as the Gemini Developer API sends it."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if finished:
        candidate["finishReason"] = "STOP"
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": GEMINI_MODEL, "responseId": "bench"}


def _gemini_json_body() -> bytes:
    return json.dumps(_gemini_response("A summary. " * 30, GEMINI_USAGE, True)).encode()


def _gemini_sse_chunks(n: int) -> list[bytes]:
    """A ``streamGenerateContent?alt=sse`` stream of ``n`` content chunks and a last one that finishes it. Every
    chunk carries the running usage, as Google's do (the prompt count from the first)."""
    running = {"promptTokenCount": GEMINI_USAGE["promptTokenCount"], "totalTokenCount": GEMINI_USAGE["promptTokenCount"]}
    chunks = [
        b"data: " + json.dumps(_gemini_response(" word", running, False)).encode() + b"\r\n\r\n" for _ in range(n)
    ]
    chunks.append(b"data: " + json.dumps(_gemini_response(".", GEMINI_USAGE, True)).encode() + b"\r\n\r\n")
    return chunks


BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
BEDROCK_KEY_ID = "AKIAFAKEBENCH0000000"  # a dummy access key id: the fake does not check signatures
BEDROCK_MESSAGES: Any = [{"role": "user", "content": [{"text": "Summarise this paragraph. " * 20}]}]
# The fake streams one content event per output token, at most 16: a long stream is the most it sends, a short one
# the least; the extra events of the long one are counted on the server (``_BedrockCalls.stream_events``).
BEDROCK_LONG_TOKENS = 16
BEDROCK_SHORT_TOKENS = 1


class _BedrockCalls:
    """``bedrock-runtime`` calls through real boto3 clients to the fake Bedrock on loopback. TokenTrail observes a
    botocore client only when it is made while instrumented (it wraps client creation, and removes its handlers from
    every client it registered on when uninstrumented). So the uninstrumented calls go through one client made
    before anything was instrumented, never observed, and the instrumented ones through a client made after each
    ``instrument()`` (``instrumented``), warmed up before it is timed, as an application's would have been. The two
    live side by side, which lets the benchmark interleave them finely (see ``_run``)."""

    def __init__(self, fake: FakeBedrock) -> None:
        self.fake = fake
        self._plain = self._new_client()
        self._traced: Any = None
        self.stream_events: dict[int, int] = {}  # output tokens -> events the server sent in such a stream
        for tokens in (BEDROCK_LONG_TOKENS, BEDROCK_SHORT_TOKENS):
            self._stream(self._plain, tokens)
            self.stream_events[tokens] = len(fake.last_call.events)
        fake.reset()

    def _new_client(self) -> Any:
        return boto3.client(
            "bedrock-runtime",
            endpoint_url=self.fake.base_url,
            region_name="us-east-1",
            aws_access_key_id=BEDROCK_KEY_ID,
            aws_secret_access_key="bench/Secret+Key0123456789abcdefghijklmno",
            config=Config(retries={"total_max_attempts": 1}),
        )

    def instrumented(self, warm_up: int = 20) -> None:
        """A client made now, after ``instrument()``: observed."""
        self._traced = self._new_client()
        for _ in range(warm_up):
            for call in self.calls(traced=True).values():
                call()
        self.fake.reset()

    def uninstrumented(self) -> None:
        """The instrumented client is dropped with the instrumentation (it would no longer be observed)."""
        self._traced = None

    @staticmethod
    def _converse(client: Any) -> None:
        client.converse(modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES)

    @staticmethod
    def _stream(client: Any, tokens: int) -> None:
        config = {"maxTokens": tokens}
        response = client.converse_stream(modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES, inferenceConfig=config)
        for _ in response["stream"]:
            pass

    def calls(self, traced: bool) -> dict[str, Callable[[], None]]:
        """The non-streamed call and the long and short streams, through the instrumented client or the other."""
        client = self._traced if traced else self._plain
        assert client is not None, "no instrumented client: instrumented() makes it"
        return {
            "bedrock_json": lambda: self._converse(client),
            "bedrock_long": lambda: self._stream(client, BEDROCK_LONG_TOKENS),
            "bedrock_short": lambda: self._stream(client, BEDROCK_SHORT_TOKENS),
        }

    def extra_stream_events(self) -> int:
        """Events a long stream has beyond a short one."""
        return self.stream_events[BEDROCK_LONG_TOKENS] - self.stream_events[BEDROCK_SHORT_TOKENS]

    def check(self, span: ReadableSpan | None) -> None:
        """``span`` (the last of a batch) has the usage the server reported for the last call, as TokenTrail's
        input counts it (Bedrock's excludes the cache reads and writes; the span's includes them)."""
        assert span is not None
        usage = self.fake.last_call.usage
        assert usage is not None
        attributes = span.attributes or {}
        assert attributes[semconv.GEN_AI_PROVIDER_NAME] == "aws.bedrock"
        assert attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == (
            usage["inputTokens"] + usage["cacheReadInputTokens"] + usage["cacheWriteInputTokens"]
        )
        assert attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == usage["outputTokens"]
        assert attributes[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == usage["cacheReadInputTokens"]
        assert attributes[semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == usage["cacheWriteInputTokens"]
        self.fake.reset()  # the fake records every call: only the last is needed


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
        return _timed(operation, n)
    finally:
        gc.enable()


def _timed(operation: Callable[[], None], n: int) -> tuple[float, float]:
    """``_per_op`` without its garbage collection, for batches too small to pay a full collection each."""
    start, cpu_start = time.perf_counter(), time.thread_time()
    for _ in range(n):
        operation()
    return (time.perf_counter() - start) / n, (time.thread_time() - cpu_start) / n


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
    with FakeBedrock() as fake_bedrock:
        return _run(fake_bedrock, n, repeat, chunks, loopback_calls, import_runs)


def _run(
    fake_bedrock: FakeBedrock, n: int, repeat: int, chunks: int, loopback_calls: int, import_runs: int
) -> dict[str, float]:
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
        "gemini_json": _gemini_caller(json_body=True),
        "gemini_long": _gemini_caller(chunks=chunks),
        "gemini_short": _gemini_caller(chunks=0),  # last: the usage of its span is checked after every run
    }
    # Timed apart (see sample_bedrock), through a client made before anything is instrumented and one made after.
    bedrock = _BedrockCalls(fake_bedrock)
    plain_bedrock = bedrock.calls(traced=False)
    every_call = {**calls, **plain_bedrock}
    sizes = {
        "json": n,
        "history": max(n // 4, 5),
        "long": max(n // 40, 5),
        "short": max(n // 40, 5),
        "sdk_long": max(n // 40, 3),
        "sdk_short": max(n // 40, 3),
        "gemini_json": max(n // 4, 5),
        "gemini_long": max(n // 40, 3),
        "gemini_short": max(n // 40, 3),
        # Small batches, many times (see sample_bedrock): a boto3 call to the loopback server takes about a
        # millisecond (its long stream, two).
        "bedrock_json": max(n // 200, 2),
        "bedrock_long": max(n // 400, 2),
        "bedrock_short": max(n // 400, 2),
    }
    bedrock_rounds = max(n // 100, 2)  # per repeat
    openai_v2 = OpenAIInstrumentor()

    def warm_up() -> None:
        for call in every_call.values():
            for _ in range(20):
                call()  # warm up every path

    def traced(meter_provider: MeterProvider | None = None) -> None:
        instrument(
            tracer_provider=provider, system_keys=[KEY], fingerprint_salt="bench-salt", meter_provider=meter_provider
        )
        bedrock.instrumented()  # a client made now, so observed (its warm-up's spans are flushed before counting)

    def untraced() -> None:
        uninstrument()
        bedrock.uninstrumented()

    # The GenAI metrics go to the global meter provider unless told otherwise, a no-op one here (as in a service
    # that configures no metrics): their price with an SDK meter provider is measured apart.
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    # The span TokenTrail emits for each non-streamed call (OpenAI's, Gemini's), for the yardstick spans.
    emitted: dict[str, ReadableSpan] = {}
    try:
        traced()
        warm_up()
        emitting = {**calls, "bedrock_json": bedrock.calls(traced=True)["bedrock_json"]}
        for name in ("json", "gemini_json", "bedrock_json"):
            emitting[name]()
            processor.force_flush()
            assert exporter.last is not None
            emitted[name] = exporter.last
    finally:
        untraced()
    warm_up()

    json_call = calls["json"]
    span_name = emitted["json"].name

    def bare_span() -> None:
        tracer.start_span(span_name).end()

    baselines: dict[str, Callable[[], None]] = {
        "bare_span": bare_span,
        "call_with_bare_span": _with_bare_span(tracer, emitted["json"], json_call),
        "call_with_attributed_span": _with_attributed_span(tracer, emitted["json"], json_call),
        "gemini_call_with_bare_span": _with_bare_span(tracer, emitted["gemini_json"], calls["gemini_json"]),
        "gemini_call_with_attributed_span": _with_attributed_span(
            tracer, emitted["gemini_json"], calls["gemini_json"]
        ),
    }
    baseline_sizes = {name: sizes["gemini_json"] if name.startswith("gemini") else n for name in baselines}
    bedrock_baselines: dict[str, Callable[[], None]] = {
        "bedrock_call_with_bare_span": _with_bare_span(tracer, emitted["bedrock_json"], plain_bedrock["bedrock_json"]),
        "bedrock_call_with_attributed_span": _with_attributed_span(
            tracer, emitted["bedrock_json"], plain_bedrock["bedrock_json"]
        ),
    }
    baseline_samples: dict[str, list[tuple[float, float]]] = {name: [] for name in {**baselines, **bedrock_baselines}}
    plain_samples: dict[str, list[tuple[float, float]]] = {name: [] for name in every_call}
    traced_samples: dict[str, list[tuple[float, float]]] = {name: [] for name in every_call}
    metered_samples: list[tuple[float, float]] = []

    def sample_bedrock() -> None:
        """The Bedrock sides, while instrumented (the uninstrumented client is never observed): interleaved in small
        batches, round after round, so that a slow spell of the shared machine, or of the loopback server's
        threads, hits every side alike. A call takes a millisecond; what a span adds is a few percent of it, less
        than the swings of a batch on a busy machine. Each instrumented batch must have made a span per call, with
        the server's usage on the last; the other sides none."""
        traced_bedrock = bedrock.calls(traced=True)
        processor.force_flush()
        first = exporter.count
        gc.collect()
        gc.disable()
        try:
            for _ in range(bedrock_rounds):
                for name, plain_call in plain_bedrock.items():
                    plain_samples[name].append(_timed(plain_call, sizes[name]))
                    if name == "bedrock_json":
                        for baseline, operation in bedrock_baselines.items():
                            baseline_samples[baseline].append(_timed(operation, sizes[name]))
                            baseline_processor.force_flush()
                    processor.force_flush()
                    before = exporter.count
                    traced_samples[name].append(_timed(traced_bedrock[name], sizes[name]))
                    processor.force_flush()
                    assert exporter.count - before == sizes[name], (name, exporter.count - before)  # a span per call
                    bedrock.check(exporter.last)
        finally:
            gc.enable()
        assert exporter.count - first == bedrock_rounds * sum(sizes[name] for name in traced_bedrock)
    openai_v2_samples: dict[str, list[tuple[float, float]]] = {"sdk_long": [], "sdk_short": []}
    try:
        # Interleaved, so that a slow spell of a shared machine hits every side alike.
        for _ in range(repeat):
            processor.force_flush()
            before_plain = exporter.count
            for name, operation in baselines.items():
                baseline_samples[name].append(_per_op(operation, baseline_sizes[name]))
                baseline_processor.force_flush()
            for name, call in calls.items():
                plain_samples[name].append(_per_op(call, sizes[name]))
            processor.force_flush()
            assert exporter.count == before_plain, "an uninstrumented call made a span"
            traced()
            processor.force_flush()
            before = exporter.count
            for name, call in calls.items():
                traced_samples[name].append(_per_op(call, sizes[name]))
            processor.force_flush()
            assert exporter.count - before == sum(sizes[name] for name in calls) and exporter.last is not None
            last = exporter.last.attributes or {}  # a Gemini stream's: its usage is its last chunk's
            assert last[semconv.GEN_AI_USAGE_INPUT_TOKENS] == GEMINI_USAGE["promptTokenCount"]
            assert last[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == (
                GEMINI_USAGE["candidatesTokenCount"] + GEMINI_USAGE["thoughtsTokenCount"]
            )
            sample_bedrock()
            traced(meter_provider)
            metered_samples.append(_per_op(json_call, n))
            processor.force_flush()
            untraced()
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
        untraced()
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
    gemini = _sdk_figures("gemini", "sse_chunk_sdk", baseline_samples, plain_samples, traced_samples, bare_hot, chunks)
    events = bedrock.extra_stream_events()
    bedrock_figures = _sdk_figures(
        "bedrock", "stream_event", baseline_samples, plain_samples, traced_samples, bare_hot, events
    )
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
        **gemini,
        **bedrock_figures,
        **import_costs(import_runs),
    }


def _gemini_caller(json_body: bool = False, chunks: int = 0) -> Callable[[], None]:
    """A ``google-genai`` call (the Gemini Developer API) through the real SDK and its ``httpx2`` client, on the
    in-memory transport: ``generate_content`` when ``json_body``, else ``generate_content_stream`` of ``chunks``
    content chunks, read to its end."""
    if json_body:
        pool = _MemoryPool([(b"content-type", b"application/json")], _gemini_json_body)
    else:
        pool = _MemoryPool([(b"content-type", b"text/event-stream")], lambda: iter(_gemini_sse_chunks(chunks)))
    options = genai_types.HttpOptions(httpx_client=_client(pool))
    # Kept by the closure: a collected genai.Client closes the HTTP client its models still use.
    client = genai.Client(api_key=GEMINI_KEY, http_options=options)
    prompt = "Summarise this paragraph. " * 20

    if json_body:

        def call() -> None:
            client.models.generate_content(model=GEMINI_MODEL, contents=prompt)

    else:

        def call() -> None:
            for _ in client.models.generate_content_stream(model=GEMINI_MODEL, contents=prompt):
                pass

    return call


def _with_bare_span(tracer: Any, emitted: ReadableSpan, call: Callable[[], None]) -> Callable[[], None]:
    """``call`` inside one empty span named as TokenTrail names the call's span."""
    name = emitted.name

    def operation() -> None:
        span = tracer.start_span(name)
        call()
        span.end()

    return operation


def _with_attributed_span(tracer: Any, emitted: ReadableSpan, call: Callable[[], None]) -> Callable[[], None]:
    """``call`` inside one span carrying exactly the attributes of the span TokenTrail emits for it, set as
    TokenTrail sets them through the public API."""
    name = emitted.name
    at_start, at_end = _split_attributes(emitted)

    def operation() -> None:
        span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=at_start)
        call()
        span.set_attributes(at_end)
        span.end()

    return operation


def _sdk_figures(
    prefix: str,
    unit: str,
    baseline_samples: dict[str, list[tuple[float, float]]],
    plain_samples: dict[str, list[tuple[float, float]]],
    traced_samples: dict[str, list[tuple[float, float]]],
    bare_hot: float,
    units: int,
) -> dict[str, float]:
    """The OpenAI call's figures for another SDK's calls (``prefix``: ``gemini`` through google-genai, ``bedrock``
    through boto3): the non-streamed call against the same yardsticks (a bare and an attributed span around the same
    SDK call), and per ``unit`` of its stream (``units`` more in a long stream than in a short one)."""

    def fastest(samples: dict[str, list[tuple[float, float]]], name: str, clock: int = 0) -> float:
        return _fastest(samples[f"{prefix}_{name}"], clock)

    plain = fastest(plain_samples, "json")
    bare = fastest(baseline_samples, "call_with_bare_span") - plain
    attributed = fastest(baseline_samples, "call_with_attributed_span") - plain
    added = fastest(traced_samples, "json") - plain
    plain_cpu = fastest(plain_samples, "json", 1)
    bare_cpu = fastest(baseline_samples, "call_with_bare_span", 1) - plain_cpu
    added_cpu = fastest(traced_samples, "json", 1) - plain_cpu

    def per_stream(samples: dict[str, list[tuple[float, float]]], clock: int) -> float:
        return fastest(samples, "long", clock) - fastest(samples, "short", clock)

    added_per_unit = (per_stream(traced_samples, 0) - per_stream(plain_samples, 0)) / units
    added_per_unit_cpu = (per_stream(traced_samples, 1) - per_stream(plain_samples, 1)) / units
    return {
        f"{prefix}_uninstrumented_call_us": round(plain * 1e6, 2),
        f"{prefix}_bare_span_in_call_us": round(bare * 1e6, 2),
        f"{prefix}_attributed_span_in_call_us": round(attributed * 1e6, 2),
        f"{prefix}_added_per_call_us": round(added * 1e6, 2),
        f"{prefix}_added_per_call_vs_bare_span": _ratio(added, bare),  # target <= 3, as OpenAI's
        f"{prefix}_added_per_call_vs_attributed_span": _ratio(added, attributed),
        f"{prefix}_added_per_call_vs_bare_span_hot_loop": _ratio(added, bare_hot),
        f"{prefix}_beyond_attributed_span_us": round((added - attributed) * 1e6, 2),
        f"{prefix}_bare_span_in_call_cpu_us": round(bare_cpu * 1e6, 2),
        f"{prefix}_added_per_call_cpu_us": round(added_cpu * 1e6, 2),
        f"{prefix}_added_per_call_vs_bare_span_cpu": _ratio(added_cpu, bare_cpu),
        f"{prefix}_added_per_{unit}_us": round(added_per_unit * 1e6, 3),
        f"{prefix}_added_per_{unit}_cpu_us": round(added_per_unit_cpu * 1e6, 3),
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
    if workload == "gemini_json":
        call = _gemini_caller(json_body=True)
    elif workload in ("gemini_long", "gemini_short"):
        call = _gemini_caller(chunks=chunks if workload == "gemini_long" else 0)
    elif workload == "json":
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

        name = f"generate_content {GEMINI_MODEL}" if workload.startswith("gemini") else "chat gpt-4o-mini"

        def operation() -> None:
            span = tracer.start_span(name)
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
        **{(side, "gemini_json", n): (side, "gemini_json", n, 0) for side in ("plain", "bare", "ours") for n in (0, calls)},
        **{
            (side, workload, stream_calls): (side, workload, stream_calls, chunks)
            for side in ("plain", "ours")
            for workload in ("gemini_long", "gemini_short")
        },
    }  # fmt: skip
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(instructions, *job) for key, job in jobs.items()}
        counted = {key: future.result() for key, future in futures.items()}

    def per_call(side: str, workload: str) -> float:
        return (counted[(side, workload, calls)] - counted[(side, workload, 0)]) / calls

    def per_chunk(side: str, sdk: str = "sdk") -> float:
        long, short = counted[(side, f"{sdk}_long", stream_calls)], counted[(side, f"{sdk}_short", stream_calls)]
        return (long - short) / ((_WARM_UP + stream_calls) * chunks)  # the warm-up's streams are long too

    bare = per_call("bare", "json") - per_call("plain", "json")
    ours = per_call("ours", "json") - per_call("plain", "json")
    gemini_bare = per_call("bare", "gemini_json") - per_call("plain", "gemini_json")
    gemini_ours = per_call("ours", "gemini_json") - per_call("plain", "gemini_json")
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
        # The same through google-genai (the Gemini Developer API): a call against a bare span in it, and per chunk.
        "gemini_instructions_per_call_uninstrumented": round(per_call("plain", "gemini_json")),
        "gemini_instructions_added_per_call_bare_span": round(gemini_bare),
        "gemini_instructions_added_per_call": round(gemini_ours),
        "gemini_instructions_added_per_call_vs_bare_span": _ratio(gemini_ours, gemini_bare),
        "gemini_instructions_added_per_sse_chunk_sdk": round(per_chunk("ours", "gemini") - per_chunk("plain", "gemini")),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        side, workload, calls, chunks = sys.argv[2:6]
        _instruction_worker(side, workload, int(calls), int(chunks))
    elif sys.argv[1:2] == ["instructions"]:
        print(json.dumps(instruction_counts(), indent=2))
    else:
        print(json.dumps(run(), indent=2))
