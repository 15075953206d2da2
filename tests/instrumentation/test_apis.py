"""Every interface through the real OpenAI SDK: Responses (and Open Responses servers), legacy Completions,
Embeddings; plus what changes a price: the service tier and Anthropic's cache-write lifetimes."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from tokentrail.instrumentation import instrument, semconv
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import SYSTEM_KEY, TEST_SALT, attrs, only_genai_span, usage_of

pytestmark = pytest.mark.usefixtures("instrumented")


def client(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0)


def async_client(fake: FakeProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0)


def responses_tokens(usage: dict[str, Any]) -> dict[str, int]:
    """The span attributes a Responses usage object must produce (its input already includes cache)."""
    return {
        semconv.GEN_AI_USAGE_INPUT_TOKENS: usage["input_tokens"],
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS: usage["output_tokens"],
        semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: usage["input_tokens_details"]["cached_tokens"],
        semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: usage["output_tokens_details"]["reasoning_tokens"],
    }


def tokens_of(span: Any, expected: dict[str, int]) -> dict[str, Any]:
    a = attrs(span)
    return {name: a.get(name) for name in expected}


# Responses ------------------------------------------------------------------------------------------------------


def test_responses_call_has_exact_usage_and_names_its_api(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    client(fake).responses.create(model="gpt-5", input="Tell me about foxes.")
    span = only_genai_span(exporter)
    a = attrs(span)
    expected = responses_tokens(usage_of(fake.last_call))
    assert tokens_of(span, expected) == expected
    assert span.name == "chat gpt-5"
    assert a[semconv.TOKENTRAIL_API] == "responses"
    assert a[semconv.GEN_AI_OPERATION_NAME] == "chat"
    assert a[semconv.GEN_AI_RESPONSE_ID] == fake.last_call.response_id
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)


@pytest.mark.parametrize("helper", [False, True], ids=["create", "stream-helper"])
def test_responses_stream_takes_usage_from_response_completed(
    helper: bool, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    if helper:
        with client(fake).responses.stream(model="gpt-5", input="hi") as stream:
            stream.get_final_response()
    else:
        for _ in client(fake).responses.create(model="gpt-5", input="hi", stream=True):
            pass
    span = only_genai_span(exporter)
    expected = responses_tokens(usage_of(fake.last_call))
    assert tokens_of(span, expected) == expected
    assert attrs(span)[semconv.GEN_AI_REQUEST_STREAM] is True
    assert semconv.TOKENTRAIL_STREAM_INCOMPLETE not in attrs(span)


async def test_async_responses_stream_takes_usage_from_response_completed(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    async with async_client(fake) as c:
        async for _ in await c.responses.create(model="gpt-5", input="hi", stream=True):
            pass
    expected = responses_tokens(usage_of(fake.last_call))
    assert tokens_of(only_genai_span(exporter), expected) == expected


def test_responses_incomplete_is_billed_and_says_why(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    events = list(client(fake).responses.create(model="gpt-5", input="hi", stream=True, max_output_tokens=5))
    assert events[-1].type == "response.incomplete"
    span = only_genai_span(exporter)
    a = attrs(span)
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("max_output_tokens",)
    assert span.status.status_code is not StatusCode.ERROR
    assert semconv.TOKENTRAIL_STREAM_INCOMPLETE not in a  # the stream ended properly; the answer was cut


def test_responses_failed_records_the_error_and_the_usage_so_far(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    events = list(client(fake).responses.create(model="gpt-5", input="hi", stream=True, extra_headers={"x-fake-fail": "failed"}))
    assert events[-1].type == "response.failed"
    span = only_genai_span(exporter)
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert a[semconv.ERROR_TYPE] == "server_error"
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(fake.last_call)["input_tokens"]


def test_a_responses_stream_that_ends_without_its_final_event_is_incomplete(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    for _ in client(fake).responses.create(model="gpt-5", input="hi", stream=True, extra_headers={"x-fake-fail": "truncate"}):
        pass
    a = attrs(only_genai_span(exporter))
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert a[semconv.TOKENTRAIL_USAGE_MISSING] is True
    assert a[semconv.GEN_AI_RESPONSE_ID] == fake.last_call.response_id  # from response.created


def test_an_open_responses_server_on_another_host_is_recognised(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    instrument(tracer_provider=instrumented, providers={fake.openai_base_url: "ollama"}, fingerprint_salt=TEST_SALT)
    client(fake).responses.create(model="llama3.2", input="hi")
    a = attrs(only_genai_span(exporter))
    assert (a[semconv.GEN_AI_PROVIDER_NAME], a[semconv.TOKENTRAIL_API]) == ("ollama", "responses")
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(fake.last_call)["input_tokens"]


# Legacy Completions ---------------------------------------------------------------------------------------------


def test_legacy_completion_is_a_text_completion_with_exact_usage(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    client(fake).completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon a time")
    span = only_genai_span(exporter)
    a = attrs(span)
    usage = usage_of(fake.last_call)
    assert span.name == "text_completion gpt-3.5-turbo-instruct"
    assert (a[semconv.TOKENTRAIL_API], a[semconv.GEN_AI_OPERATION_NAME]) == ("completions", "text_completion")
    assert (a[semconv.GEN_AI_USAGE_INPUT_TOKENS], a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)


def test_legacy_completion_stream_with_include_usage(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    stream = client(fake).completions.create(
        model="gpt-3.5-turbo-instruct", prompt="hi", stream=True, stream_options={"include_usage": True}
    )
    for _ in stream:
        pass
    a = attrs(only_genai_span(exporter))
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(fake.last_call)["prompt_tokens"]
    assert semconv.TOKENTRAIL_STREAM_INCOMPLETE not in a


def test_legacy_completion_stream_without_include_usage_is_usage_missing(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    for _ in client(fake).completions.create(model="gpt-3.5-turbo-instruct", prompt="hi", stream=True):
        pass
    a = attrs(only_genai_span(exporter))
    assert a[semconv.TOKENTRAIL_USAGE_MISSING] is True
    assert not [name for name in a if name.startswith("gen_ai.usage.")]


# Embeddings -----------------------------------------------------------------------------------------------------


def test_embeddings_record_input_tokens_and_no_output(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    result = client(fake).embeddings.create(model="text-embedding-3-small", input=["a fox", "a dog"])
    assert len(result.data) == 2
    span = only_genai_span(exporter)
    a = attrs(span)
    assert span.name == "embeddings text-embedding-3-small"
    assert (a[semconv.TOKENTRAIL_API], a[semconv.GEN_AI_OPERATION_NAME]) == ("embeddings", "embeddings")
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(fake.last_call)["prompt_tokens"]
    assert semconv.GEN_AI_USAGE_OUTPUT_TOKENS not in a
    assert semconv.TOKENTRAIL_USAGE_MISSING not in a


async def test_async_embeddings(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    async with async_client(fake) as c:
        await c.embeddings.create(model="text-embedding-3-large", input="hello", dimensions=4)
    assert attrs(only_genai_span(exporter))[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(fake.last_call)["prompt_tokens"]


def test_a_huge_embeddings_body_is_scanned_not_decoded(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    """Over a megabyte of vectors: usage and model still come from the body's tail."""
    client(fake).embeddings.create(
        model="text-embedding-3-large", input=[f"text {i}" for i in range(300)], dimensions=1024
    )
    assert len(fake.last_call.response_body) > 1 << 20
    a = attrs(only_genai_span(exporter))
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(fake.last_call)["prompt_tokens"]
    assert a[semconv.GEN_AI_RESPONSE_MODEL] == "text-embedding-3-large"


# Service tier ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_the_service_tier_the_response_states_is_recorded(
    api: str, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    if api == "chat":
        client(fake).chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}], service_tier="priority")
    else:
        client(fake).responses.create(model="gpt-5", input="hi", service_tier="flex")
    a = attrs(only_genai_span(exporter))
    expected = "priority" if api == "chat" else "flex"
    assert a[semconv.TOKENTRAIL_SERVICE_TIER] == expected


def test_a_chat_stream_records_the_service_tier(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    for _ in client(fake).chat.completions.create(
        model="gpt-5", messages=[{"role": "user", "content": "hi"}], stream=True, service_tier="flex"
    ):
        pass
    assert attrs(only_genai_span(exporter))[semconv.TOKENTRAIL_SERVICE_TIER] == "flex"


def test_the_anthropic_service_tier_is_recorded(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key=SYSTEM_KEY, open_telemetry=False).messages.create(
        model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    a = attrs(only_genai_span(exporter))
    assert a[semconv.TOKENTRAIL_SERVICE_TIER] == "standard"


# Anthropic cache writes by lifetime -----------------------------------------------------------------------------

LONG_SYSTEM = "You are a very careful assistant. " * 40


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("ttl", ["5m", "1h"])
def test_anthropic_cache_writes_are_split_by_lifetime(
    ttl: str, stream: bool, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral", "ttl": ttl}}]
    with httpx2.Client() as http:
        body = {"model": "claude-x", "max_tokens": 10, "system": system, "messages": [{"role": "user", "content": "hi"}]}
        with http.stream("POST", fake.base_url + "/v1/messages", json={**body, "stream": stream}) as response:
            response.read()
    usage = usage_of(fake.last_call)
    a = attrs(only_genai_span(exporter))
    split = usage["cache_creation"]
    assert a[semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == usage["cache_creation_input_tokens"]
    assert a[semconv.TOKENTRAIL_CACHE_CREATION_5M_INPUT_TOKENS] == split["ephemeral_5m_input_tokens"]
    assert a[semconv.TOKENTRAIL_CACHE_CREATION_1H_INPUT_TOKENS] == split["ephemeral_1h_input_tokens"]
    assert (split["ephemeral_1h_input_tokens"] > 0) is (ttl == "1h")
    # Parts of the total, not additions to it.
    assert split["ephemeral_5m_input_tokens"] + split["ephemeral_1h_input_tokens"] == usage["cache_creation_input_tokens"]


# TOKENTRAIL_STREAM_USAGE=inject --------------------------------------------------------------------------------


def test_stream_usage_is_not_requested_by_default(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    for _ in client(fake).chat.completions.create(model="m", messages=[], stream=True):
        pass
    assert fake.last_call.include_usage is False
    assert attrs(only_genai_span(exporter))[semconv.TOKENTRAIL_USAGE_MISSING] is True


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_inject_mode_asks_streams_for_their_usage(
    api: str, fake: FakeProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch, instrumented: TracerProvider
) -> None:
    clean_env.setenv(semconv.ENV_STREAM_USAGE, "inject")
    instrument(tracer_provider=instrumented, system_keys=[SYSTEM_KEY], fingerprint_salt=TEST_SALT)
    chunks: list[Any]
    if api == "chat":
        chunks = list(client(fake).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True, user="u1"))
    else:
        chunks = list(client(fake).completions.create(model="m", prompt="x", stream=True))
    assert fake.last_call.include_usage is True
    assert chunks[-1].usage is not None and chunks[-1].choices == []  # the extra chunk apps must tolerate
    sent = json.loads(fake.last_call.raw_request)
    assert sent["stream_options"] == {"include_usage": True}
    assert sent.get("user", "u1") == "u1"  # every other field kept
    a = attrs(only_genai_span(exporter))
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(fake.last_call)["prompt_tokens"]


def test_inject_mode_leaves_other_requests_byte_for_byte(
    fake: FakeProvider, clean_env: pytest.MonkeyPatch, instrumented: TracerProvider
) -> None:
    instrument(tracer_provider=instrumented, fingerprint_salt=TEST_SALT, stream_usage="inject")
    bodies = [
        b'{"model": "m", "messages": [], "stream": false}',
        b'{"model": "m", "messages": [], "stream": true, "stream_options": {"include_usage": false}}',
    ]
    with httpx2.Client() as http:
        for body in bodies:
            with http.stream("POST", fake.openai_base_url + "/chat/completions", content=body) as response:
                response.read()
            assert fake.last_call.raw_request == body
