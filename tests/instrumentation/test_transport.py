"""The transport hooks: any httpx/httpx2 client is covered, other traffic is untouched, the host call never breaks."""

from __future__ import annotations

from typing import Any

import httpx
import httpx2
import openai
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokentrail.instrumentation import _call, _parsers, instrument, semconv, uninstrument
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import (
    SYSTEM_KEY,
    TEST_SALT,
    assert_tokens,
    attrs,
    genai_spans,
    only_genai_span,
    openai_tokens,
    usage_of,
)

CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
STREAM: dict[str, Any] = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
MESSAGES: dict[str, Any] = {"model": "claude-x", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": f"Bearer {SYSTEM_KEY}"}

pytestmark = pytest.mark.usefixtures("instrumented")


@pytest.mark.parametrize("library", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_raw_client_post_gets_a_span_with_exact_usage(
    library: Any, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    with library.Client() as client:
        client.post(fake.openai_base_url + "/chat/completions", json=CHAT, headers=AUTH).raise_for_status()
    span = only_genai_span(exporter)
    assert_tokens(span, openai_tokens(usage_of(fake.last_call)))
    assert attrs(span)[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "system"


@pytest.mark.parametrize("library", [httpx, httpx2], ids=["httpx", "httpx2"])
async def test_raw_async_client_stream_gets_a_span_with_exact_usage(
    library: Any, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    async with library.AsyncClient() as client:
        async with client.stream("POST", fake.openai_base_url + "/chat/completions", json=STREAM) as response:
            async for _ in response.aiter_lines():
                pass
    assert_tokens(only_genai_span(exporter), openai_tokens(usage_of(fake.last_call)))


@pytest.mark.parametrize("library", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_raw_sync_stream_of_anthropic_events_gets_inclusive_input(
    library: Any, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    with library.Client() as client:
        with client.stream("POST", fake.base_url + "/v1/messages", json={**MESSAGES, "stream": True}) as response:
            for _ in response.iter_bytes(chunk_size=7):  # tiny chunks split lines anywhere
                pass
    usage = usage_of(fake.last_call)
    a = attrs(only_genai_span(exporter))
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == (
        usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
    )
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == usage["output_tokens"]


def test_non_llm_urls_produce_no_span(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with httpx2.Client() as client:
        assert client.get(fake.base_url + "/health").status_code == 200
        client.post(fake.base_url + "/v1/nothing", json=CHAT)
        client.get(fake.openai_base_url + "/chat/completions")  # the right path, but not a POST
    assert exporter.get_finished_spans() == ()


def test_a_bare_messages_path_on_an_unknown_host_is_not_an_llm_call(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    with httpx2.Client() as client:
        client.post(fake.base_url + "/api/messages", json=MESSAGES)
    assert exporter.get_finished_spans() == ()


def test_an_llm_path_on_an_unknown_host_needs_a_model_in_the_body(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    with httpx2.Client() as client:
        client.post(fake.base_url + "/v1/messages", json={"text": "not an LLM request"})
    assert exporter.get_finished_spans() == ()


def test_configured_base_url_names_the_provider(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    instrument(tracer_provider=instrumented, providers={fake.openai_base_url: "groq"}, fingerprint_salt=TEST_SALT)
    openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY).chat.completions.create(**CHAT)
    assert attrs(only_genai_span(exporter))[semconv.GEN_AI_PROVIDER_NAME] == "groq"


def test_instrument_twice_still_gives_one_span_per_call(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    instrument(tracer_provider=instrumented, system_keys=[SYSTEM_KEY], fingerprint_salt=TEST_SALT)
    openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY).chat.completions.create(**CHAT)
    assert len(genai_spans(exporter)) == 1


def test_uninstrument_stops_all_spans(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    uninstrument()
    openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY).chat.completions.create(**CHAT)
    assert exporter.get_finished_spans() == ()
    assert not hasattr(httpx2.HTTPTransport.handle_request, "__wrapped__")
    assert not hasattr(httpx.AsyncHTTPTransport.handle_async_request, "__wrapped__")


def test_instrument_wraps_both_libraries_sync_and_async() -> None:
    for library in (httpx, httpx2):
        assert hasattr(library.HTTPTransport.handle_request, "__wrapped__")
        assert hasattr(library.AsyncHTTPTransport.handle_async_request, "__wrapped__")


def test_a_failing_hook_never_breaks_the_host_call(
    fake: FakeProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug in TokenTrail")

    monkeypatch.setattr(_call, "begin", broken)
    completion = openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY).chat.completions.create(**CHAT)
    assert completion.id == fake.last_call.response_id
    assert exporter.get_finished_spans() == ()


def test_a_failing_parser_never_breaks_the_stream(
    fake: FakeProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, chunk: bytes) -> None:
        raise RuntimeError("bug in TokenTrail")

    monkeypatch.setattr(_parsers.SseParser, "feed", broken)
    chunks = list(
        openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY).chat.completions.create(**STREAM)
    )
    assert chunks[-1].usage is not None
    a = attrs(only_genai_span(exporter))
    assert a[semconv.TOKENTRAIL_USAGE_MISSING] is True  # we learned nothing, and say so


def test_our_span_is_current_while_the_request_is_sent(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    """So HTTP-level spans (opentelemetry-instrumentation-httpx) and trace headers nest under the LLM call."""
    seen: list[str] = []
    transport = httpx2.HTTPTransport()
    pool = transport._pool

    class Spy:
        def handle_request(self, request: Any) -> Any:
            seen.append(getattr(trace.get_current_span(), "name", ""))
            return pool.handle_request(request)

        def close(self) -> None:
            pool.close()

    transport._pool = Spy()  # type: ignore[assignment]  # a stand-in pool that sees the current span
    client = httpx2.Client(transport=transport)
    client.post(fake.openai_base_url + "/chat/completions", json=CHAT)
    client.close()
    assert seen == ["chat gpt-4o-mini"]
    assert trace.get_current_span() is trace.INVALID_SPAN  # and the context is restored afterwards
