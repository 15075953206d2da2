"""OpenAI Chat Completions through the real SDK: one span per call, with the exact usage the server sent."""

from __future__ import annotations

import gc
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tokentrail.instrumentation import semconv
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import SYSTEM_KEY, assert_tokens, attrs, genai_spans, only_genai_span, openai_tokens, usage_of

MESSAGES: Any = [{"role": "user", "content": "Say something about foxes."}]
pytestmark = pytest.mark.usefixtures("instrumented")


def client(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0)


def async_client(fake: FakeProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0)


def test_chat_completion_emits_one_client_span_with_exact_usage(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    span = only_genai_span(exporter)
    call = fake.last_call
    assert span.name == "chat gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    assert_tokens(span, openai_tokens(usage_of(call)))
    a = attrs(span)
    assert a[semconv.GEN_AI_OPERATION_NAME] == "chat"
    assert a[semconv.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[semconv.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert a[semconv.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini"
    assert a[semconv.GEN_AI_RESPONSE_ID] == call.response_id
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[semconv.GEN_AI_REQUEST_STREAM] is False
    assert a[semconv.TOKENTRAIL_API] == "chat.completions"
    assert (a[semconv.SERVER_ADDRESS], a[semconv.SERVER_PORT]) == ("127.0.0.1", fake.port)
    assert semconv.TOKENTRAIL_USAGE_MISSING not in a
    assert semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS not in a  # OpenAI reports no cache writes


def test_input_tokens_include_the_cached_tokens(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES * 10)
    a = attrs(only_genai_span(exporter))
    assert a[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] > 0
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(fake.last_call)["prompt_tokens"]


async def test_async_chat_completion_emits_one_span_with_exact_usage(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    async with async_client(fake) as client:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    span = only_genai_span(exporter)
    assert_tokens(span, openai_tokens(usage_of(fake.last_call)))
    assert attrs(span)[semconv.GEN_AI_RESPONSE_ID] == fake.last_call.response_id


def test_stream_with_include_usage_records_the_final_chunk_usage(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    stream = client(fake).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert genai_spans(exporter) == []  # the call is not over until the body is read
    for _ in stream:
        pass
    span = only_genai_span(exporter)
    a = attrs(span)
    assert_tokens(span, openai_tokens(usage_of(fake.last_call)))
    assert a[semconv.GEN_AI_REQUEST_STREAM] is True
    assert a[semconv.GEN_AI_RESPONSE_ID] == fake.last_call.response_id
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert semconv.TOKENTRAIL_STREAM_INCOMPLETE not in a


async def test_async_stream_with_include_usage_records_the_final_chunk_usage(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    async with async_client(fake) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        async for _ in stream:
            pass
    span = only_genai_span(exporter)
    assert_tokens(span, openai_tokens(usage_of(fake.last_call)))
    assert semconv.TOKENTRAIL_STREAM_INCOMPLETE not in attrs(span)


def test_stream_without_include_usage_is_marked_usage_missing_with_no_token_counts(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    for _ in client(fake).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):
        pass
    a = attrs(only_genai_span(exporter))
    assert fake.last_call.usage is None
    assert a[semconv.TOKENTRAIL_USAGE_MISSING] is True
    assert not [name for name in a if name.startswith("gen_ai.usage.")]
    assert semconv.TOKENTRAIL_STREAM_INCOMPLETE not in a  # it was read to [DONE]: complete, just usage-less


def test_early_break_ends_the_span_with_what_was_seen(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with client(fake).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as stream:
        for _ in stream:
            break
    a = attrs(only_genai_span(exporter))
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert a[semconv.GEN_AI_RESPONSE_ID] == fake.last_call.response_id
    assert a[semconv.TOKENTRAIL_USAGE_MISSING] is True  # the usage chunk never arrived: no guessed numbers


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # dropping an open response is the scenario
def test_unconsumed_stream_collected_by_gc_ends_its_span_as_incomplete(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    stream = client(fake).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    del stream
    gc.collect()
    a = attrs(only_genai_span(exporter))
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert a[semconv.TOKENTRAIL_USAGE_MISSING] is True


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # dropping an open response is the scenario
async def test_unconsumed_async_stream_collected_by_gc_ends_its_span_as_incomplete(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    stream = await async_client(fake).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    del stream
    gc.collect()
    assert attrs(only_genai_span(exporter))[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True


def test_stream_cut_by_the_server_records_the_error_and_incompleteness(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    stream = client(fake).chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-fake-fail": "midstream"},
    )
    with pytest.raises(openai.APIConnectionError):
        for _ in stream:
            pass
    span = only_genai_span(exporter)
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert a[semconv.ERROR_TYPE] == "RemoteProtocolError"
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert a[semconv.GEN_AI_RESPONSE_ID] == fake.last_call.response_id


def test_http_error_status_sets_error_type_and_status(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with pytest.raises(openai.RateLimitError):
        client(fake).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-fake-fail": "status:429"}
        )
    span = only_genai_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[semconv.ERROR_TYPE] == "429"
    assert not [name for name in attrs(span) if name.startswith("gen_ai.usage.")]


def test_connection_failure_sets_error_type_and_ends_the_span(exporter: InMemorySpanExporter) -> None:
    dead = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key=SYSTEM_KEY, max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        dead.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    span = only_genai_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[semconv.ERROR_TYPE] == "ConnectError"


def test_each_retry_attempt_gets_its_own_span(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    retrying = openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=1)
    with pytest.raises(openai.InternalServerError):
        retrying.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-fake-fail": "status:500"}
        )
    assert [attrs(span)[semconv.ERROR_TYPE] for span in genai_spans(exporter)] == ["500", "500"]
    assert len(fake.calls) == 2


def test_sdk_results_are_unchanged_by_the_instrumentation(fake: FakeProvider) -> None:
    completion = client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.usage is not None
    assert completion.usage.model_dump(exclude_none=True) == usage_of(fake.last_call)
    chunks = list(
        client(fake).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == completion.choices[0].message.content
