"""Real spans from other GenAI instrumentations, made against the fake provider, as OTLP protobuf bytes.

Run as ``python dialect_producers.py NAME BASE_URL OUT_FILE``: one process per producer, because instrumentors patch
SDKs globally and some read their mode (``OTEL_SEMCONV_STABILITY_OPT_IN``) once per process. The producer makes a few
calls (plain, streamed, with user/tags the library's own way), then writes ``ExportTraceServiceRequest`` bytes, exactly
what its OTLP exporter would send, plus a JSON sidecar of what the fake provider was asked (``OUT_FILE.json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokentrail.processor.demo.fake_provider import FakeCall, FakeProvider

MESSAGES: Any = [  # plain dicts, as a caller writes them (the SDKs type them as TypedDicts)
    {"role": "user", "content": "Say something about foxes."}
]
API_KEY = "sk-dialect-test-0000"


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "dialects", "deployment.environment.name": "test"})
    )
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def _openai_calls(base_url: str, *, user: str | None = None) -> None:
    """A Chat Completion, one streamed with ``stream_options.include_usage``, and one streamed without it: the
    provider sends no usage for that one, and it must still be counted (a ``no_usage`` record), never lost."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)
    extra: dict[str, Any] = {"user": user} if user else {}
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **extra)
    with_usage: dict[str, Any] = {"stream_options": {"include_usage": True}}
    for options in (with_usage, {}):
        for _ in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, **options, **extra):
            pass


def _shim_util_genai_instruments() -> None:
    """openai-v2 2.4b0 imports ``opentelemetry.util.genai.instruments``, which opentelemetry-util-genai 1.x renamed
    to ``_instruments`` (a packaging conflict in the released versions, not ours). Only its two histogram factories
    are needed; everything else openai-v2 runs is the real code."""
    import types

    try:
        import opentelemetry.util.genai.instruments  # noqa: F401

        return
    except ImportError:
        pass
    from opentelemetry.metrics import Histogram, Meter

    module = types.ModuleType("opentelemetry.util.genai.instruments")

    def create_duration_histogram(meter: Meter) -> Histogram:
        return meter.create_histogram("gen_ai.client.operation.duration", unit="s")

    def create_token_histogram(meter: Meter) -> Histogram:
        return meter.create_histogram("gen_ai.client.token.usage", unit="{token}")

    module.create_duration_histogram = create_duration_histogram  # type: ignore[attr-defined]  # a stand-in module made at run time
    module.create_token_histogram = create_token_histogram  # type: ignore[attr-defined]  # a stand-in module made at run time
    sys.modules[module.__name__] = module


def _openai_v2_mode_compat() -> None:
    """util-genai 1.x always answers ``is_experimental_mode() -> True`` and renamed ``start_inference`` to
    ``inference``. Restore what openai-v2 2.4b0 expects: the mode from ``OTEL_SEMCONV_STABILITY_OPT_IN`` (as the
    util-genai it was released with read it) and ``start_inference`` as an alias. The span attributes are then
    written by the real openai-v2 code (default mode) or the real util-genai emitter (latest-experimental mode)."""
    import opentelemetry.instrumentation.openai_v2 as openai_v2_module
    from opentelemetry.util.genai.handler import TelemetryHandler

    experimental = "gen_ai_latest_experimental" in os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    openai_v2_module.is_experimental_mode = lambda: experimental
    if not hasattr(TelemetryHandler, "start_inference"):
        setattr(TelemetryHandler, "start_inference", TelemetryHandler.inference)  # noqa: B010 - a name its stubs lack


def openai_v2(base_url: str, provider: TracerProvider) -> None:
    _shim_util_genai_instruments()
    _openai_v2_mode_compat()
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=provider)
    _openai_calls(base_url)


class _TraceloopAssociationProperties(SpanProcessor):
    """What the Traceloop SDK's span processor does with ``Traceloop.set_association_properties``: copies the
    context's properties onto every span as ``traceloop.association.properties.<name>``. (``traceloop-sdk`` itself
    is not installed; the OpenLLMetry instrumentations are, and they write everything else.)"""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        from opentelemetry import context as context_api

        properties: Any = context_api.get_value("association_properties", parent_context) or {}
        for name, value in properties.items():
            span.set_attribute(f"traceloop.association.properties.{name}", value)


def openllmetry_openai(base_url: str, provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    provider.add_span_processor(_TraceloopAssociationProperties())
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    from opentelemetry import context as context_api

    token = context_api.attach(context_api.set_value("association_properties", {"user_id": "cust_ll", "plan": "pro"}))
    try:
        _openai_calls(base_url)
    finally:
        context_api.detach(token)


def openllmetry_anthropic(base_url: str, provider: TracerProvider) -> None:
    import anthropic
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

    os.environ["ANTHROPIC_OPEN_TELEMETRY"] = "false"  # the SDK's own span is a separate dialect
    AnthropicInstrumentor().instrument(tracer_provider=provider)
    client = anthropic.Anthropic(base_url=base_url, api_key=API_KEY, max_retries=0)
    client.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=MESSAGES)
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=16, messages=MESSAGES) as stream:
        for _ in stream:
            pass


def openinference(base_url: str, provider: TracerProvider) -> None:
    from openinference.instrumentation import using_attributes
    from openinference.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=provider)
    with using_attributes(user_id="cust_oi", tags=["plan:pro", "feature:chat"], metadata={"team": "search"}):
        _openai_calls(base_url)


def pydantic_ai(base_url: str, provider: TracerProvider) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url=base_url, api_key=API_KEY))
    settings = InstrumentationSettings(tracer_provider=provider, include_content=False)
    agent = Agent(model)
    agent.instrument = settings
    agent.run_sync("Say something about foxes.")

    async def streamed() -> None:
        async with agent.run_stream("Say something else about foxes.") as result:
            await result.get_output()

    asyncio.run(streamed())


def tokentrail(base_url: str, provider: TracerProvider) -> None:
    """Our own instrumentation (``tokentrail.instrumentation``) over the OpenAI SDK, with attribution."""
    from tokentrail.instrumentation import attribute, instrument

    root = base_url.removesuffix("/v1")
    instrument(tracer_provider=provider, providers={root: "openai"}, fingerprint_salt="golden-salt")
    with attribute(user="cust_tt", tags=["plan:pro", "feature:chat"]):
        _openai_calls(base_url)


def anthropic_sdk(base_url: str, provider: TracerProvider) -> None:
    import anthropic
    from opentelemetry import trace

    os.environ["ANTHROPIC_OPEN_TELEMETRY"] = "true"
    trace.set_tracer_provider(provider)
    client = anthropic.Anthropic(base_url=base_url, api_key=API_KEY, max_retries=0)
    client.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=MESSAGES)
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=16, messages=MESSAGES) as stream:
        for _ in stream:
            pass


PRODUCERS: dict[str, Callable[[str, TracerProvider], None]] = {
    "openai-v2": openai_v2,
    "openai-v2-latest": openai_v2,  # the same calls with OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental
    "openllmetry-openai": openllmetry_openai,
    "openllmetry-anthropic": openllmetry_anthropic,
    "openinference": openinference,
    "pydantic-ai": pydantic_ai,
    "anthropic-sdk": anthropic_sdk,
    "tokentrail": tokentrail,
}
ENVIRONMENT: dict[str, dict[str, str]] = {
    "openai-v2-latest": {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"},
}


def produce_all(out: Path) -> dict[str, tuple[bytes, list[FakeCall]]]:
    """Every producer's ExportTraceServiceRequest bytes and the calls the provider served it, in order. Each
    producer runs in its own process (in parallel) against a fake provider of its own, so every record can be held
    against exactly the calls its producer made."""
    procs: dict[str, subprocess.Popen[str]] = {}
    fakes = {name: FakeProvider().start() for name in PRODUCERS}
    try:
        for name, fake in fakes.items():
            base = fake.anthropic_base_url if "anthropic" in name else fake.openai_base_url
            env = {k: v for k, v in os.environ.items() if k != "OTEL_SEMCONV_STABILITY_OPT_IN"}
            env.update(ENVIRONMENT.get(name, {}))
            procs[name] = subprocess.Popen(
                [sys.executable, __file__, name, base, str(out / f"{name}.pb")], env=env, stderr=subprocess.PIPE, text=True
            )
        failures = {}
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=120)
            if proc.returncode:
                failures[name] = err[-3000:]
        if failures:
            raise RuntimeError(f"producers failed: {failures}")
        return {name: ((out / f"{name}.pb").read_bytes(), list(fakes[name].calls)) for name in PRODUCERS}
    finally:
        for fake in fakes.values():
            fake.stop()


def main(name: str, base_url: str, out: str) -> None:
    provider, memory = _provider()
    PRODUCERS[name](base_url, provider)
    provider.force_flush()
    spans = memory.get_finished_spans()
    with open(out, "wb") as f:
        f.write(encode_spans(spans).SerializeToString())
    with open(out + ".json", "w") as f:
        json.dump([{"name": s.name, "attributes": dict(s.attributes or {})} for s in spans], f, default=list, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
