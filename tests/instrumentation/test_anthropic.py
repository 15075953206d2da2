"""Anthropic Messages through the real SDK, with its own span (we enrich it) and without (we make ours)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from tokentrail.instrumentation import attribute, semconv
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import SYSTEM_KEY, anthropic_tokens, assert_tokens, attrs, only_genai_span, usage_of

MESSAGES: Any = [{"role": "user", "content": "Tell me about the lazy dog, at some length please."}]
MODEL = "claude-haiku-4-5"
pytestmark = pytest.mark.usefixtures("instrumented")


def native(fake: FakeProvider, provider: TracerProvider) -> dict[str, Any]:
    """Client options with the SDK's own spans on, going to the test's tracer provider."""
    return {
        "base_url": fake.anthropic_base_url,
        "api_key": SYSTEM_KEY,
        "max_retries": 0,
        "open_telemetry": {"tracer_provider": provider},
    }


def plain(fake: FakeProvider) -> dict[str, Any]:
    """Client options with the SDK's own spans off."""
    return {"base_url": fake.anthropic_base_url, "api_key": SYSTEM_KEY, "max_retries": 0, "open_telemetry": False}


def create(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 100, "messages": MESSAGES, **extra}


def assert_enriched_native_span(exporter: InMemorySpanExporter, fake: FakeProvider) -> None:
    span = only_genai_span(exporter)
    a = attrs(span)
    assert span.name == "anthropic.messages.create"
    assert a[semconv.TOKENTRAIL_API] == "anthropic.messages"
    assert a[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "system"
    assert a[semconv.GEN_AI_RESPONSE_ID] == fake.last_call.response_id
    # The SDK's span carries the usage itself, input inclusive of cache (it uses the cache_write name).
    usage = usage_of(fake.last_call)
    expected = anthropic_tokens(usage)
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == expected[semconv.GEN_AI_USAGE_INPUT_TOKENS]
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == usage["output_tokens"]
    assert a[semconv.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == usage["cache_creation_input_tokens"]


def assert_own_span(exporter: InMemorySpanExporter, fake: FakeProvider, *, stream: bool) -> None:
    span = only_genai_span(exporter)
    a = attrs(span)
    assert span.name == f"chat {MODEL}"
    assert a[semconv.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert a[semconv.TOKENTRAIL_API] == "anthropic.messages"
    assert a[semconv.GEN_AI_REQUEST_STREAM] is stream
    assert a[semconv.GEN_AI_RESPONSE_ID] == fake.last_call.response_id
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    assert_tokens(span, anthropic_tokens(usage_of(fake.last_call)))
    assert semconv.TOKENTRAIL_STREAM_INCOMPLETE not in a


# With the SDK's own span: exactly one GenAI span, the SDK's, enriched. ------------------------------------------


def test_native_span_is_enriched_not_duplicated(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    anthropic.Anthropic(**native(fake, instrumented)).messages.create(**create())
    assert_enriched_native_span(exporter, fake)


def test_native_stream_span_is_enriched_not_duplicated(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    for _ in anthropic.Anthropic(**native(fake, instrumented)).messages.create(**create(stream=True)):
        pass
    assert_enriched_native_span(exporter, fake)


async def test_async_native_span_is_enriched_not_duplicated(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    async with anthropic.AsyncAnthropic(**native(fake, instrumented)) as client:
        await client.messages.create(**create())
    assert_enriched_native_span(exporter, fake)


async def test_async_native_stream_span_is_enriched_not_duplicated(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    async with anthropic.AsyncAnthropic(**native(fake, instrumented)) as client:
        async for _ in await client.messages.create(**create(stream=True)):
            pass
    assert_enriched_native_span(exporter, fake)


def test_native_span_gets_the_attribution_context(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    with attribute(user="cust_1", tags=["plan:pro"], credential="byok"):
        anthropic.Anthropic(**native(fake, instrumented)).messages.create(**create())
    a = attrs(only_genai_span(exporter))
    assert a[semconv.USER_ID] == "cust_1"
    assert a[semconv.TOKENTRAIL_TAGS] == ("plan:pro",)
    assert a[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "byok"


def test_native_span_gets_the_metadata_user_id(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    anthropic.Anthropic(**native(fake, instrumented)).messages.create(**create(metadata={"user_id": "u-77"}))
    assert attrs(only_genai_span(exporter))[semconv.USER_ID] == "u-77"


# Without the SDK's span: our own span, with input tokens made inclusive. --------------------------------------


def test_own_span_when_native_spans_are_disabled(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    anthropic.Anthropic(**plain(fake)).messages.create(**create())
    assert_own_span(exporter, fake, stream=False)


def test_own_span_for_a_stream_takes_output_from_the_last_message_delta(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    for _ in anthropic.Anthropic(**plain(fake)).messages.create(**create(stream=True)):
        pass
    assert_own_span(exporter, fake, stream=True)


async def test_async_own_span_when_native_spans_are_disabled(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    async with anthropic.AsyncAnthropic(**plain(fake)) as client:
        await client.messages.create(**create())
    assert_own_span(exporter, fake, stream=False)


async def test_async_own_span_for_a_stream(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    async with anthropic.AsyncAnthropic(**plain(fake)) as client:
        async for _ in await client.messages.create(**create(stream=True)):
            pass
    assert_own_span(exporter, fake, stream=True)


def test_own_span_for_the_stream_helper(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with anthropic.Anthropic(**plain(fake)).messages.stream(**create()) as stream:
        stream.get_final_message()
    assert_own_span(exporter, fake, stream=True)


def test_own_span_when_the_environment_disables_native_spans(
    fake: FakeProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, instrumented: TracerProvider
) -> None:
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "false")
    options: dict[str, Any] = {"base_url": fake.anthropic_base_url, "api_key": SYSTEM_KEY, "max_retries": 0}
    anthropic.Anthropic(**options).messages.create(**create())
    assert_own_span(exporter, fake, stream=False)


def test_early_break_keeps_the_input_usage_and_marks_the_stream_incomplete(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    with anthropic.Anthropic(**plain(fake)).messages.create(**create(stream=True)) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                break
    a = attrs(only_genai_span(exporter))
    expected = anthropic_tokens(usage_of(fake.last_call))
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == expected[semconv.GEN_AI_USAGE_INPUT_TOKENS]
    assert a[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == expected[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS]
    # message_start's output_tokens is a placeholder, not a count: no output is reported rather than a wrong one.
    assert semconv.GEN_AI_USAGE_OUTPUT_TOKENS not in a


def test_stream_cut_by_the_server_keeps_input_usage_and_records_the_error(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    stream = anthropic.Anthropic(**plain(fake)).messages.create(
        **create(stream=True), extra_headers={"x-fake-fail": "midstream"}
    )
    # anthropic < 2.17 lets the transport's error through; 2.17 wraps it in APIConnectionError
    with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)):
        for _ in stream:
            pass
    span = only_genai_span(exporter)
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == anthropic_tokens(usage_of(fake.last_call))[semconv.GEN_AI_USAGE_INPUT_TOKENS]


def test_own_span_records_metadata_user_id(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    anthropic.Anthropic(**plain(fake)).messages.create(**create(metadata={"user_id": "u-88"}))
    assert attrs(only_genai_span(exporter))[semconv.USER_ID] == "u-88"
