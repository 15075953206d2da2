"""Google's own SDK (``google-genai``) through our instrumentation: the Gemini Developer API and Vertex AI, sync and
async, streamed and not, embeddings and chats, each against the fake provider on loopback (``HttpOptions(base_url=)``,
so the calls are recognised by their path shape, not by Google's host names).

Every expected count is read from what the fake ANSWERED (the bytes it sent), then put under the house rules: input =
``promptTokenCount`` (already inclusive of ``cachedContentTokenCount``) + ``toolUsePromptTokenCount``, output =
``candidatesTokenCount`` + ``thoughtsTokenCount``, reasoning = ``thoughtsTokenCount``; a stream's usage is its last
chunk's, never the sum of its chunks.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
from genai_prices import Usage, calc_price
from google import genai
from google.genai import errors, types
from google.oauth2.credentials import Credentials
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from tokentrail.instrumentation import attribute, semconv
from tokentrail.instrumentation._credentials import fingerprint
from tokentrail.instrumentation._gemini import google_call
from tokentrail.instrumentation._parsers import body_parser
from tokentrail.processor.demo.fake_provider import FakeCall, FakeProvider
from tokentrail.processor.normalize.reader import normalize_request
from tokentrail.processor.pricing.catalog import Pricer
from tokentrail.processor.pricing.overrides import NO_OVERRIDES

from tests.helpers.spans import SYSTEM_KEY, TEST_SALT, attrs, genai_spans, only_genai_span, usage_of

pytestmark = pytest.mark.usefixtures("instrumented")

MODEL = "gemini-2.5-flash"  # a thinking model: its answers carry thoughtsTokenCount
PLAIN_MODEL = "gemini-2.0-flash"  # no thinking
OAUTH_TOKEN = "ya29.a0-short-lived-oauth-access-token"
PROMPT = "Tell me about the lazy dog, at some length please."
BACKENDS = ("gemini", "vertex")


# A genai.Client closes its HTTP clients when it is collected, even while its .models are in use: the test's
# clients live until the test ends.
_alive: list[genai.Client] = []


@pytest.fixture(autouse=True)
def _keep_clients() -> Iterator[None]:
    yield
    _alive.clear()


def client(fake: FakeProvider, backend: str, api_key: str = SYSTEM_KEY) -> genai.Client:
    options = types.HttpOptions(base_url=fake.gemini_base_url)
    if backend == "vertex":
        made = genai.Client(
            vertexai=True,
            project="tokentrail-test",
            location="us-central1",
            credentials=Credentials(token=OAUTH_TOKEN),
            http_options=options,
        )
    else:
        made = genai.Client(api_key=api_key, http_options=options)
    _alive.append(made)
    return made


def failing(mode: str) -> types.HttpOptions:
    """Per-call HTTP options that make the fake fail the call the way ``mode`` says."""
    return types.HttpOptions(headers={"x-fake-fail": mode})


# What the fake answered --------------------------------------------------------------------------------------


def answered_chunks(call: FakeCall) -> list[dict[str, Any]]:
    """The response objects the fake sent: the whole body, or each SSE chunk of a stream, in order."""
    body = call.response_body
    if not call.stream:
        return [json.loads(body)]
    return [json.loads(line[5:]) for line in body.split(b"\r\n") if line.startswith(b"data:")]


def house_tokens(metadata: dict[str, Any]) -> dict[str, Any]:
    """A ``usageMetadata`` under the house rules (proto3 JSON leaves zero counts out)."""
    expected: dict[str, Any] = {
        semconv.GEN_AI_USAGE_INPUT_TOKENS: metadata["promptTokenCount"] + metadata.get("toolUsePromptTokenCount", 0),
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS: metadata.get("candidatesTokenCount", 0)
        + metadata.get("thoughtsTokenCount", 0),
        semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: metadata.get("cachedContentTokenCount"),
        semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: metadata.get("thoughtsTokenCount"),
    }
    for name, details in (
        (semconv.TOKENTRAIL_INPUT_AUDIO_TOKENS, "promptTokensDetails"),
        (semconv.TOKENTRAIL_OUTPUT_AUDIO_TOKENS, "candidatesTokensDetails"),
    ):
        audio = [entry["tokenCount"] for entry in metadata.get(details, []) if entry["modality"] == "AUDIO"]
        expected[name] = sum(audio) if audio else None
    return expected


def answered_tokens(call: FakeCall) -> dict[str, Any]:
    """The span attributes the fake's answer must produce: the LAST chunk's usage, under the house rules."""
    return house_tokens(answered_chunks(call)[-1]["usageMetadata"])


def assert_tokens(span: ReadableSpan, expected: dict[str, Any]) -> None:
    attributes = attrs(span)
    assert {name: attributes.get(name) for name in expected} == expected


def assert_call_span(span: ReadableSpan, call: FakeCall, backend: str, *, stream: bool, model: str = MODEL) -> None:
    a = attrs(span)
    last = answered_chunks(call)[-1]
    assert span.name == f"generate_content {model}"
    assert span.status.status_code is StatusCode.UNSET
    assert a[semconv.GEN_AI_OPERATION_NAME] == "generate_content"
    assert a[semconv.GEN_AI_PROVIDER_NAME] == ("gcp.vertex_ai" if backend == "vertex" else "gcp.gemini")
    assert a[semconv.TOKENTRAIL_API] == "gemini.generate_content"
    assert a[semconv.GEN_AI_REQUEST_MODEL] == model
    assert a[semconv.GEN_AI_RESPONSE_MODEL] == last["modelVersion"]
    assert a[semconv.GEN_AI_RESPONSE_ID] == call.response_id == last["responseId"]
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == (last["candidates"][0]["finishReason"].lower(),)
    assert a[semconv.GEN_AI_REQUEST_STREAM] is stream
    assert a[semconv.SERVER_ADDRESS] == "127.0.0.1"
    assert semconv.TOKENTRAIL_STREAM_INCOMPLETE not in a
    assert semconv.TOKENTRAIL_USAGE_MISSING not in a
    assert_tokens(span, answered_tokens(call))
    if backend == "vertex":
        # An OAuth access token is no key identity: the service's own, and never fingerprinted.
        assert a[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "system"
        assert semconv.TOKENTRAIL_CREDENTIAL_ID not in a
    else:
        assert a[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "system"
        assert a[semconv.TOKENTRAIL_CREDENTIAL_ID] == fingerprint(SYSTEM_KEY, TEST_SALT.encode())


def ended_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    """The one GenAI span, once a dropped stream's finalizer has ended it. The SDK's generators leave the response in
    reference cycles, and the collector may be freeing them in another thread (the fake server's), where a
    ``gc.collect()`` here does not wait for it: so wait, for liveness only."""
    deadline = time.monotonic() + 10
    while not genai_spans(exporter) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    return only_genai_span(exporter)


async def async_ended_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    """As ``ended_span``, letting the event loop run: a dropped async generator is closed by a task the loop runs."""
    deadline = time.monotonic() + 10
    while not genai_spans(exporter) and time.monotonic() < deadline:
        gc.collect()
        await asyncio.sleep(0.01)
    return only_genai_span(exporter)


def drain(stream: Iterator[Any]) -> None:
    for _ in stream:
        pass


async def adrain(stream: AsyncIterator[Any]) -> None:
    async for _ in stream:
        pass


# generate_content and generate_content_stream, sync and async, both backends ----------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_generate_content(fake: FakeProvider, exporter: InMemorySpanExporter, backend: str) -> None:
    response = client(fake, backend).models.generate_content(model=MODEL, contents=PROMPT)
    call = fake.last_call
    assert call.path.endswith(f"/models/{MODEL}:generateContent")
    assert ("/projects/" in call.path) is (backend == "vertex")
    assert response.usage_metadata is not None and response.usage_metadata.thoughts_token_count
    assert_call_span(only_genai_span(exporter), call, backend, stream=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_generate_content_stream_takes_the_last_chunk_not_the_sum(
    fake: FakeProvider, exporter: InMemorySpanExporter, backend: str
) -> None:
    drain(client(fake, backend).models.generate_content_stream(model=MODEL, contents=PROMPT))
    call = fake.last_call
    assert call.path.endswith(":streamGenerateContent")
    span = only_genai_span(exporter)
    assert_call_span(span, call, backend, stream=True)
    # The chunks carry running totals: a sum of them would be far larger than what the call cost.
    chunks = answered_chunks(call)
    assert len(chunks) > 1
    summed = sum(house_tokens(chunk["usageMetadata"])[semconv.GEN_AI_USAGE_INPUT_TOKENS] for chunk in chunks)
    assert attrs(span)[semconv.GEN_AI_USAGE_INPUT_TOKENS] < summed


@pytest.mark.parametrize("backend", BACKENDS)
async def test_async_generate_content(fake: FakeProvider, exporter: InMemorySpanExporter, backend: str) -> None:
    await client(fake, backend).aio.models.generate_content(model=MODEL, contents=PROMPT)
    assert_call_span(only_genai_span(exporter), fake.last_call, backend, stream=False)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_async_generate_content_stream(fake: FakeProvider, exporter: InMemorySpanExporter, backend: str) -> None:
    await adrain(await client(fake, backend).aio.models.generate_content_stream(model=MODEL, contents=PROMPT))
    assert_call_span(only_genai_span(exporter), fake.last_call, backend, stream=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cached_content_and_tool_use_prompt_count_as_input(
    fake: FakeProvider, exporter: InMemorySpanExporter, backend: str
) -> None:
    config = types.GenerateContentConfig(
        cached_content="cachedContents/long-document",
        tools=[types.Tool(google_search=types.GoogleSearch())],
        max_output_tokens=10,
    )
    client(fake, backend).models.generate_content(model=MODEL, contents=PROMPT, config=config)
    metadata = answered_chunks(fake.last_call)[-1]["usageMetadata"]
    assert metadata["cachedContentTokenCount"] > 0 and metadata["toolUsePromptTokenCount"] > 0
    span = only_genai_span(exporter)
    assert_call_span(span, fake.last_call, backend, stream=False)
    a = attrs(span)
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == metadata["promptTokenCount"] + metadata["toolUsePromptTokenCount"]
    assert a[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == metadata["cachedContentTokenCount"]
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("max_tokens",)


def test_audio_parts_of_input_and_output(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    model = "gemini-2.5-flash-preview-tts"
    contents = [PROMPT, types.Part.from_bytes(data=b"RIFF\x00\x00\x00\x00WAVEfmt ", mime_type="audio/wav")]
    config = types.GenerateContentConfig(response_modalities=["AUDIO"])
    client(fake, "gemini").models.generate_content(model=model, contents=contents, config=config)
    span = only_genai_span(exporter)
    assert_call_span(span, fake.last_call, "gemini", stream=False, model=model)
    a = attrs(span)
    assert 0 < a[semconv.TOKENTRAIL_INPUT_AUDIO_TOKENS] < a[semconv.GEN_AI_USAGE_INPUT_TOKENS]
    assert 0 < a[semconv.TOKENTRAIL_OUTPUT_AUDIO_TOKENS] <= a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]


def test_a_model_that_does_not_think_reports_no_reasoning(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    client(fake, "gemini").models.generate_content(model=PLAIN_MODEL, contents=PROMPT)
    span = only_genai_span(exporter)
    assert_call_span(span, fake.last_call, "gemini", stream=False, model=PLAIN_MODEL)
    assert semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS not in attrs(span)


async def test_async_client_given_an_httpx_transport(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    """The configuration the instrumentation recommends where aiohttp is installed (which google-genai's async client
    would otherwise send through): an httpx2 transport of the client's own."""
    options = types.HttpOptions(
        base_url=fake.gemini_base_url, async_client_args={"transport": httpx2.AsyncHTTPTransport()}
    )
    gemini = genai.Client(api_key=SYSTEM_KEY, http_options=options)
    _alive.append(gemini)
    await gemini.aio.models.generate_content(model=MODEL, contents=PROMPT)
    assert_call_span(only_genai_span(exporter), fake.last_call, "gemini", stream=False)


# Chats: one span per turn --------------------------------------------------------------------------------------


def assert_turns(exporter: InMemorySpanExporter, fake: FakeProvider, backend: str, *, stream: bool) -> None:
    spans = sorted(genai_spans(exporter), key=lambda span: span.start_time or 0)
    assert len(spans) == len(fake.calls) == 2
    for span, call in zip(spans, fake.calls, strict=True):
        assert_call_span(span, call, backend, stream=stream)
    # The second turn sends the first turn's history: a larger prompt, counted as such.
    first, second = (attrs(span)[semconv.GEN_AI_USAGE_INPUT_TOKENS] for span in spans)
    assert second > first


@pytest.mark.parametrize("backend", BACKENDS)
def test_chat_send_message(fake: FakeProvider, exporter: InMemorySpanExporter, backend: str) -> None:
    chat = client(fake, backend).chats.create(model=MODEL)
    chat.send_message(PROMPT)
    chat.send_message("And the fox?")
    assert_turns(exporter, fake, backend, stream=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chat_send_message_stream(fake: FakeProvider, exporter: InMemorySpanExporter, backend: str) -> None:
    chat = client(fake, backend).chats.create(model=MODEL)
    drain(chat.send_message_stream(PROMPT))
    drain(chat.send_message_stream("And the fox?"))
    assert_turns(exporter, fake, backend, stream=True)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_async_chat_send_message(fake: FakeProvider, exporter: InMemorySpanExporter, backend: str) -> None:
    chat = client(fake, backend).aio.chats.create(model=MODEL)
    await chat.send_message(PROMPT)
    await chat.send_message("And the fox?")
    assert_turns(exporter, fake, backend, stream=False)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_async_chat_send_message_stream(fake: FakeProvider, exporter: InMemorySpanExporter, backend: str) -> None:
    chat = client(fake, backend).aio.chats.create(model=MODEL)
    await adrain(await chat.send_message_stream(PROMPT))
    await adrain(await chat.send_message_stream("And the fox?"))
    assert_turns(exporter, fake, backend, stream=True)


# Embeddings ----------------------------------------------------------------------------------------------------


def assert_embeddings_span(span: ReadableSpan, model: str, provider: str, api: str) -> dict[str, Any]:
    a = attrs(span)
    assert span.name == f"embeddings {model}"
    assert span.status.status_code is StatusCode.UNSET
    assert a[semconv.GEN_AI_OPERATION_NAME] == "embeddings"
    assert a[semconv.GEN_AI_PROVIDER_NAME] == provider
    assert a[semconv.GEN_AI_REQUEST_MODEL] == model
    assert a[semconv.TOKENTRAIL_API] == api
    assert semconv.GEN_AI_USAGE_OUTPUT_TOKENS not in a
    return a


@pytest.mark.parametrize("run_async", [False, True])
async def test_gemini_embeddings_without_usage_are_marked_missing(
    fake: FakeProvider, exporter: InMemorySpanExporter, run_async: bool
) -> None:
    model = "gemini-embedding-001"
    gemini = client(fake, "gemini")
    if run_async:
        await gemini.aio.models.embed_content(model=model, contents=["first text", "second text"])
    else:
        gemini.models.embed_content(model=model, contents=["first text", "second text"])
    call = fake.last_call
    assert call.path.endswith(":batchEmbedContents")
    assert "usageMetadata" not in json.loads(call.response_body)  # the Developer API states no usage
    a = assert_embeddings_span(only_genai_span(exporter), model, "gcp.gemini", "gemini.embed_content")
    # Missing, never zero: the record is a loud no_usage one, not a free call.
    assert a[semconv.TOKENTRAIL_USAGE_MISSING] is True
    assert semconv.GEN_AI_USAGE_INPUT_TOKENS not in a


@pytest.mark.parametrize("run_async", [False, True])
async def test_vertex_predict_embeddings_sum_each_statistics_token_count(
    fake: FakeProvider, exporter: InMemorySpanExporter, run_async: bool
) -> None:
    model = "text-embedding-005"
    vertex = client(fake, "vertex")
    texts = ["a short one", "a somewhat longer text to embed", "third"]
    if run_async:
        await vertex.aio.models.embed_content(model=model, contents=texts)
    else:
        vertex.models.embed_content(model=model, contents=texts)
    call = fake.last_call
    assert call.path.endswith(f"/models/{model}:predict")
    counts = [p["embeddings"]["statistics"]["token_count"] for p in json.loads(call.response_body)["predictions"]]
    assert len(counts) == len(texts)
    a = assert_embeddings_span(only_genai_span(exporter), model, "gcp.vertex_ai", "vertex.predict")
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == sum(counts)
    assert semconv.TOKENTRAIL_USAGE_MISSING not in a


@pytest.mark.parametrize("texts", [["one text"], ["one text", "and another"]])
def test_vertex_gemini_embeddings_read_usage_metadata(
    fake: FakeProvider, exporter: InMemorySpanExporter, texts: list[str]
) -> None:
    model = "gemini-embedding-001"
    client(fake, "vertex").models.embed_content(model=model, contents=texts)
    call = fake.last_call
    assert call.path.endswith(":embedContent" if len(texts) == 1 else ":batchEmbedContents")
    a = assert_embeddings_span(only_genai_span(exporter), model, "gcp.vertex_ai", "gemini.embed_content")
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == json.loads(call.response_body)["usageMetadata"]["promptTokenCount"]


# Attribution and credentials -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_attribution_reaches_the_span(fake: FakeProvider, exporter: InMemorySpanExporter, backend: str) -> None:
    with attribute(user="cust_42", tags=["plan:pro", "feature:summary"]):
        drain(client(fake, backend).models.generate_content_stream(model=MODEL, contents=PROMPT))
    a = attrs(only_genai_span(exporter))
    assert a[semconv.USER_ID] == "cust_42"
    assert a[semconv.TOKENTRAIL_TAGS] == ("plan:pro", "feature:summary")
    # Neither the prompt nor the answer is kept, nor the key itself.
    values = json.dumps([str(value) for value in a.values()])
    assert "lazy dog" not in values and "quick" not in values
    assert SYSTEM_KEY not in values and OAUTH_TOKEN not in values


@pytest.mark.parametrize("backend", BACKENDS)
def test_byok_by_attribute(fake: FakeProvider, exporter: InMemorySpanExporter, backend: str) -> None:
    with attribute(credential="byok"):
        client(fake, backend).models.generate_content(model=MODEL, contents=PROMPT)
    assert attrs(only_genai_span(exporter))[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "byok"


def test_an_unlisted_gemini_key_is_fingerprinted(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    other_key = "AIzaSy-another-key-of-the-service-000"
    client(fake, "gemini", api_key=other_key).models.generate_content(model=MODEL, contents=PROMPT)
    assert fake.last_call.headers["x-goog-api-key"] == other_key
    a = attrs(only_genai_span(exporter))
    assert a[semconv.TOKENTRAIL_CREDENTIAL_ID] == fingerprint(other_key, TEST_SALT.encode())
    assert a[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "system"


def test_a_key_in_the_query_string_is_fingerprinted(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    """Clients other than google-genai (curl, REST examples) pass the key as ``?key=``."""
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
    url = f"{fake.base_url}/v1beta/models/{MODEL}:generateContent"
    with httpx2.Client() as http:
        http.post(url, params={"key": SYSTEM_KEY}, json=body).raise_for_status()
    a = attrs(only_genai_span(exporter))
    assert a[semconv.TOKENTRAIL_CREDENTIAL_ID] == fingerprint(SYSTEM_KEY, TEST_SALT.encode())
    assert_tokens(only_genai_span(exporter), answered_tokens(fake.last_call))


# Streams that do not end well, and errors ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stream_left_early_ends_its_span(fake: FakeProvider, exporter: InMemorySpanExporter, backend: str) -> None:
    stream = client(fake, backend).models.generate_content_stream(model=MODEL, contents=PROMPT)
    assert isinstance(stream, Generator)
    next(stream)
    stream.close()
    del stream
    span = ended_span(exporter)
    a = attrs(span)
    assert span.status.status_code is StatusCode.UNSET  # the application stopped: not a failed call
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    first = house_tokens(answered_chunks(fake.last_call)[0]["usageMetadata"])
    # The prompt was read whole; only the output so far is known.
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == first[semconv.GEN_AI_USAGE_INPUT_TOKENS]
    # (What the whole call would have generated: the fake's usage, not its chunks sent so far.)
    whole = house_tokens(usage_of(fake.last_call))
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] < whole[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]


def test_an_abandoned_stream_ends_its_span(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    def read_one() -> None:
        for _ in client(fake, "gemini").models.generate_content_stream(model=MODEL, contents=PROMPT):
            break  # the generator is dropped unread and unclosed

    read_one()
    a = attrs(ended_span(exporter))
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == answered_tokens(fake.last_call)[semconv.GEN_AI_USAGE_INPUT_TOKENS]


async def test_an_async_stream_left_early_ends_its_span(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    stream = await client(fake, "vertex").aio.models.generate_content_stream(model=MODEL, contents=PROMPT)
    assert isinstance(stream, AsyncGenerator)
    async for _ in stream:
        break
    await stream.aclose()
    del stream
    a = attrs(await async_ended_span(exporter))
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == answered_tokens(fake.last_call)[semconv.GEN_AI_USAGE_INPUT_TOKENS]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stream_cut_by_the_server_ends_its_span_with_an_error(
    fake: FakeProvider, exporter: InMemorySpanExporter, backend: str
) -> None:
    config = types.GenerateContentConfig(http_options=failing("midstream"))
    with pytest.raises(httpx2.HTTPError):
        drain(client(fake, backend).models.generate_content_stream(model=MODEL, contents=PROMPT, config=config))
    span = only_genai_span(exporter)
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert a[semconv.ERROR_TYPE]
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == answered_tokens(fake.last_call)[semconv.GEN_AI_USAGE_INPUT_TOKENS]


async def test_an_async_stream_cut_by_the_server_ends_its_span_with_an_error(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    config = types.GenerateContentConfig(http_options=failing("midstream"))
    with pytest.raises(httpx2.HTTPError):
        gemini = client(fake, "gemini").aio.models
        await adrain(await gemini.generate_content_stream(model=MODEL, contents=PROMPT, config=config))
    span = only_genai_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True


def test_a_stream_that_ends_without_its_last_chunk_is_incomplete(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    config = types.GenerateContentConfig(http_options=failing("truncate"))
    drain(client(fake, "gemini").models.generate_content_stream(model=MODEL, contents=PROMPT, config=config))
    span = only_genai_span(exporter)
    a = attrs(span)
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert semconv.GEN_AI_RESPONSE_FINISH_REASONS not in a
    # What the one chunk sent said, running totals as they stood.
    assert_tokens(span, answered_tokens(fake.last_call))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("status", [429, 500])
@pytest.mark.parametrize("method", ["generate", "stream", "embed"])
def test_an_error_status_is_an_error_span(
    fake: FakeProvider, exporter: InMemorySpanExporter, backend: str, status: int, method: str
) -> None:
    models = client(fake, backend).models
    with pytest.raises(errors.APIError) as raised:
        if method == "embed":
            config = types.EmbedContentConfig(http_options=failing(f"status:{status}"))
            models.embed_content(model="gemini-embedding-001", contents=["x"], config=config)
        else:
            generate = types.GenerateContentConfig(http_options=failing(f"status:{status}"))
            if method == "stream":
                drain(models.generate_content_stream(model=MODEL, contents=PROMPT, config=generate))
            else:
                models.generate_content(model=MODEL, contents=PROMPT, config=generate)
    assert raised.value.code == status
    span = only_genai_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[semconv.ERROR_TYPE] == str(status)


async def test_an_async_error_status_is_an_error_span(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    config = types.GenerateContentConfig(http_options=failing("status:503"))
    with pytest.raises(errors.ServerError):
        await client(fake, "vertex").aio.models.generate_content(model=MODEL, contents=PROMPT, config=config)
    span = only_genai_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[semconv.ERROR_TYPE] == "503"


# Recognition by path shape -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1beta/models/gemini-2.5-flash:generateContent", ("gcp.gemini", "gemini-2.5-flash", False)),
        ("/v1/models/gemini-2.5-flash:streamGenerateContent", ("gcp.gemini", "gemini-2.5-flash", True)),
        ("/v1beta/tunedModels/my-tuned:generateContent", ("gcp.gemini", "my-tuned", False)),
        ("/proxy/v1beta/models/gemini-embedding-001:batchEmbedContents", ("gcp.gemini", "gemini-embedding-001", False)),
        (
            "/v1/projects/p/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent",
            ("gcp.vertex_ai", "gemini-2.5-pro", False),
        ),
        (
            "/v1beta1/publishers/google/models/gemini-2.5-flash:streamGenerateContent",
            ("gcp.vertex_ai", "gemini-2.5-flash", True),
        ),
        ("/v1/projects/p/locations/l/endpoints/1234:generateContent", ("gcp.vertex_ai", None, False)),
        (
            "/v1/projects/p/locations/l/publishers/google/models/text-embedding-005:predict",
            ("gcp.vertex_ai", "text-embedding-005", False),
        ),
        # Not calls we count: token counting, image models' :predict, other colon methods and shapes.
        ("/v1beta/models/gemini-2.5-flash:countTokens", None),
        ("/v1/projects/p/locations/l/publishers/google/models/imagen-4.0-generate-001:predict", None),
        ("/v1beta/models/gemini-embedding-001:predict", None),
        ("/v1/files/abc:download", None),
        ("/v1/generateContent", None),
        ("/api/items/x:generateContent", None),
        ("/v1/chat/completions", None),
    ],
)
def test_google_paths_are_recognised_by_shape(path: str, expected: tuple[str, str | None, bool] | None) -> None:
    found = google_call(path)
    assert (None if found is None else (found.provider, found.model, found.stream)) == expected


def test_other_colon_methods_on_the_same_host_make_no_span(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with httpx2.Client() as http:
        http.post(f"{fake.base_url}/v1beta/models/{MODEL}:countTokens", json={"contents": []})
    assert genai_spans(exporter) == []


# Zero code: opentelemetry-instrument ------------------------------------------------------------------------------

ZERO_CODE_APP = """
import sys
from google import genai
from google.genai import types
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = trace.get_tracer_provider()
if not isinstance(provider, TracerProvider):
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
provider.add_span_processor(SimpleSpanProcessor(exporter))
client = genai.Client(api_key="AIza-app-key", http_options=types.HttpOptions(base_url=sys.argv[1]))
client.models.generate_content(model="gemini-2.5-flash", contents="hi")
for _ in client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"):
    pass
print([
    (span.name, span.attributes.get("gen_ai.provider.name"), span.attributes.get("gen_ai.usage.input_tokens"))
    for span in exporter.get_finished_spans()
])
"""


def test_opentelemetry_instrument_traces_google_genai_with_no_code_change(fake: FakeProvider, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(ZERO_CODE_APP)
    cli = Path(sys.executable).with_name("opentelemetry-instrument")
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai,anthropic",
    }
    result = subprocess.run(
        [str(cli), sys.executable, str(script), fake.gemini_base_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    prompt = answered_tokens(fake.last_call)[semconv.GEN_AI_USAGE_INPUT_TOKENS]
    name = f"generate_content {MODEL}"
    assert ast.literal_eval(result.stdout.strip()) == [(name, "gcp.gemini", prompt), (name, "gcp.gemini", prompt)]


# End to end: the processor's reader and the price catalog ---------------------------------------------------------


def test_spans_normalize_and_price_exactly(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    config = types.GenerateContentConfig(cached_content="cachedContents/long-document")
    client(fake, "gemini").models.generate_content(model=MODEL, contents=PROMPT, config=config)
    generate = fake.last_call
    drain(client(fake, "vertex").models.generate_content_stream(model=MODEL, contents=PROMPT))
    streamed = fake.last_call
    audio = [PROMPT, types.Part.from_bytes(data=b"RIFF\x00\x00\x00\x00WAVEfmt ", mime_type="audio/wav")]
    client(fake, "gemini").models.generate_content(model=MODEL, contents=audio)
    spoken = fake.last_call
    client(fake, "gemini").models.embed_content(model="gemini-embedding-001", contents=["x"])

    result = normalize_request(encode_spans(exporter.get_finished_spans()))
    assert result.rejected == 0, result.errors
    records = sorted(result.records, key=lambda record: record.timestamp)
    assert len(records) == 4
    pricer = Pricer(overrides=NO_OVERRIDES, auto_update=False)
    for record, call in zip(records[:3], (generate, streamed, spoken), strict=True):
        metadata = answered_chunks(call)[-1]["usageMetadata"]
        heard = [entry["tokenCount"] for entry in metadata["promptTokensDetails"] if entry["modality"] == "AUDIO"]
        assert record.provider == "google" and record.model == MODEL  # gcp.gemini and gcp.vertex_ai, canonical
        assert record.input_tokens == metadata["promptTokenCount"]
        assert record.cached_input_tokens == metadata.get("cachedContentTokenCount", 0)
        assert record.output_tokens == metadata["candidatesTokenCount"] + metadata["thoughtsTokenCount"]
        assert record.reasoning_tokens == metadata["thoughtsTokenCount"]
        assert record.input_audio_tokens == sum(heard)
        assert pricer.price(record)
        assert record.price_status == "priced"
        expected = calc_price(
            Usage(
                input_tokens=record.input_tokens,
                cache_read_tokens=record.cached_input_tokens,
                input_audio_tokens=record.input_audio_tokens,
                output_tokens=record.output_tokens,
            ),
            MODEL,
            provider_id="google",
            genai_request_timestamp=record.timestamp or datetime.now(UTC),
        ).total_price
        assert isinstance(record.market_cost, Decimal)
        assert record.market_cost == expected > 0
        assert record.total_cost == record.market_cost  # the service's own credential
    assert records[2].input_audio_tokens > 0  # audio is priced at its own (higher) rate
    embedding = records[3]
    assert embedding.operation == "embeddings" and embedding.provider == "google"
    assert not pricer.price(embedding)
    assert embedding.price_status == "no_usage"
    assert embedding.market_cost is None and embedding.total_cost is None


# The body parsers on their own: shapes the SDK does not send but other clients and large answers do ----------------


def test_a_json_array_stream_reads_the_last_element_usage() -> None:
    """``streamGenerateContent`` without ``alt=sse`` answers one JSON array of the same chunks."""
    chunks = [
        {"responseId": "r-1", "modelVersion": MODEL, "usageMetadata": {"promptTokenCount": 40, "totalTokenCount": 40}},
        {
            "candidates": [{"finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 9, "thoughtsTokenCount": 3},
        },
    ]
    parser = body_parser(semconv.API_GEMINI_GENERATE_CONTENT, streamed=False)
    parser.feed(json.dumps(chunks).encode())
    facts = parser.result()
    assert (facts.response_id, facts.response_model, facts.finish_reasons) == ("r-1", MODEL, {0: "stop"})
    assert facts.usage is not None
    assert (facts.usage.input_tokens, facts.usage.output_tokens, facts.usage.reasoning_output_tokens) == (40, 12, 3)


@pytest.mark.parametrize("api", [semconv.API_GEMINI_GENERATE_CONTENT, semconv.API_GEMINI_EMBED_CONTENT])
def test_a_body_too_large_to_decode_is_read_from_its_tail(api: str) -> None:
    """An image answer or a large batch of embeddings: Google writes the usage after the bulk."""
    bulk = [{"values": [0.125] * 1000} for _ in range(200)]  # about 1.2 MB of floats
    usage = {"promptTokenCount": 777, "candidatesTokenCount": 5}
    body = json.dumps({"embeddings": bulk, "usageMetadata": usage, "modelVersion": "m-1", "responseId": "r-2"}).encode()
    parser = body_parser(api, streamed=False)
    for start in range(0, len(body), 65536):
        parser.feed(body[start : start + 65536])
    facts = parser.result()
    assert (facts.response_id, facts.response_model) == ("r-2", "m-1")
    assert facts.usage is not None
    assert (facts.usage.input_tokens, facts.usage.output_tokens) == (777, 5)


@pytest.mark.parametrize("step", [1, 7, 64, 1 << 20])
def test_predict_token_counts_are_summed_across_any_chunk_boundary(step: int) -> None:
    counts = [3, 1234, 56, 7]
    predictions = [
        {"embeddings": {"statistics": {"truncated": False, "token_count": float(count) if i % 2 else count}}}
        for i, count in enumerate(counts)
    ]
    body = json.dumps({"predictions": predictions, "metadata": {"billableCharacterCount": 99}}).encode()
    parser = body_parser(semconv.API_VERTEX_PREDICT, streamed=False)
    for start in range(0, len(body), step):
        parser.feed(body[start : start + step])
    facts = parser.result()
    assert facts.usage is not None and facts.usage.input_tokens == sum(counts)


@pytest.mark.parametrize("step", [1, 13, 1 << 20])
def test_a_gemini_stream_fed_in_any_pieces_keeps_the_last_running_totals(step: int) -> None:
    events = []
    for count in range(1, 6):
        chunk: dict[str, Any] = {
            "candidates": [{"content": {"parts": [{"text": " word"}]}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": count, "cachedContentTokenCount": 8},
            "modelVersion": MODEL,
            "responseId": "r-3",
        }
        if count == 5:
            chunk["candidates"][0]["finishReason"] = "MAX_TOKENS"
        events.append(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
    stream = b"".join(events)
    parser = body_parser(semconv.API_GEMINI_GENERATE_CONTENT, streamed=True)
    for start in range(0, len(stream), step):
        parser.feed(stream[start : start + step])
    facts = parser.result()
    assert facts.terminal and facts.finish_reasons == {0: "max_tokens"} and facts.response_id == "r-3"
    assert facts.usage is not None
    assert (facts.usage.input_tokens, facts.usage.output_tokens, facts.usage.cache_read_input_tokens) == (30, 5, 8)
