"""Streams, the hard part: however the application ends a stream, the call's span ends once, with what was seen.

Each way a stream can end is checked on each streaming API: Chat Completions, Responses, Anthropic Messages.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from tokentrail.instrumentation import semconv
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import SYSTEM_KEY, attrs, genai_spans, only_genai_span, usage_of

pytestmark = pytest.mark.usefixtures("instrumented")
MESSAGES: Any = [{"role": "user", "content": "Tell me a story."}]


class AppError(Exception):
    """An exception of the application's own, raised while it reads a stream."""


def chat(fake: FakeProvider, **extra: Any) -> Any:
    c = openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0)
    return c.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}, **extra
    )


def responses(fake: FakeProvider, **extra: Any) -> Any:
    c = openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0)
    return c.responses.create(model="gpt-5", input="Tell me a story.", stream=True, **extra)


def messages(fake: FakeProvider, **extra: Any) -> Any:
    c = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key=SYSTEM_KEY, max_retries=0, open_telemetry=False)
    return c.messages.create(model="claude-x", max_tokens=100, messages=MESSAGES, stream=True, **extra)


STREAMS: dict[str, Callable[..., Any]] = {"chat": chat, "responses": responses, "messages": messages}
# The input tokens each API's usage states (inclusive of cache), for a call the fake recorded.
INPUT = {
    "chat": lambda usage: usage["prompt_tokens"],
    "responses": lambda usage: usage["input_tokens"],
    "messages": lambda usage: usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"],
}


@pytest.fixture(params=list(STREAMS))
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_stream_read_to_the_end_is_complete_with_its_usage(
    api: str, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    for _ in STREAMS[api](fake):
        pass
    a = attrs(only_genai_span(exporter))
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == INPUT[api](usage_of(fake.last_call))
    assert semconv.TOKENTRAIL_STREAM_INCOMPLETE not in a and semconv.TOKENTRAIL_USAGE_MISSING not in a


def test_breaking_out_early_ends_the_span_as_incomplete(
    api: str, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    with STREAMS[api](fake) as stream:
        for index, _ in enumerate(stream):
            if index == 3:
                break
    span = only_genai_span(exporter)
    a = attrs(span)
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert a[semconv.GEN_AI_RESPONSE_ID] == fake.last_call.response_id
    assert span.status.status_code is not StatusCode.ERROR  # stopping early is the application's choice


def test_an_application_exception_mid_stream_ends_the_span_as_incomplete_not_failed(
    api: str, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(AppError):
        with STREAMS[api](fake) as stream:
            for index, _ in enumerate(stream):
                if index == 2:
                    raise AppError("the application's own bug")
    span = only_genai_span(exporter)
    assert attrs(span)[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert semconv.ERROR_TYPE not in attrs(span)  # not the call's error


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # an abandoned response is the scenario
def test_an_exception_that_abandons_an_unclosed_stream_still_ends_the_span(
    api: str, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    def consume() -> None:
        for index, _ in enumerate(STREAMS[api](fake)):
            if index == 2:
                raise AppError("no with-block: nothing closes the stream")

    with pytest.raises(AppError):
        consume()
    gc.collect()
    assert attrs(only_genai_span(exporter))[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True


def test_a_network_error_mid_stream_records_the_error(
    api: str, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    stream = STREAMS[api](fake, extra_headers={"x-fake-fail": "midstream"})
    with pytest.raises(Exception):  # noqa: B017 - the SDKs differ in what they raise; each raises something
        for _ in stream:
            pass
    span = only_genai_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[semconv.ERROR_TYPE] == "RemoteProtocolError"
    assert attrs(span)[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True


def test_a_stream_the_server_ends_early_is_incomplete(
    api: str, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    for _ in STREAMS[api](fake, extra_headers={"x-fake-fail": "truncate"}):
        pass
    span = only_genai_span(exporter)
    assert attrs(span)[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert span.status.status_code is not StatusCode.ERROR


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # dropping an open response is the scenario
def test_a_stream_never_consumed_is_ended_by_the_finalizer(
    api: str, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    stream = STREAMS[api](fake)
    assert genai_spans(exporter) == []
    del stream
    gc.collect()
    a = attrs(only_genai_span(exporter))
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True


async def test_an_async_application_exception_mid_stream_ends_the_span(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    c = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0)
    with pytest.raises(AppError):
        async with await c.responses.create(model="gpt-5", input="hi", stream=True) as stream:
            async for event in stream:
                if event.type == "response.output_text.delta":
                    raise AppError("boom")
    assert attrs(only_genai_span(exporter))[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True


def test_the_application_reads_exactly_what_the_server_sent(fake: FakeProvider) -> None:
    """The stream wrapper yields every chunk unchanged."""
    events: Iterator[Any] = responses(fake)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY).responses.create(model="gpt-5", input="Tell me a story.")
    assert text == final.output_text
