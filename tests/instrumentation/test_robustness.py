"""Never break the host call: whatever the bytes, the application sends and reads exactly what it would without us.

Bodies are compared byte for byte with what the fake provider received and sent (``raw_request`` and
``response_body``), through a raw client that reads the undecoded bytes (``iter_raw``).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import openai
import pytest
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokentrail.instrumentation import _call, _foreign, _parsers, instrument, semconv
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import SYSTEM_KEY, TEST_SALT, attrs, only_genai_span, usage_of

CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
STREAM: dict[str, Any] = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
pytestmark = pytest.mark.usefixtures("instrumented")


@pytest.fixture
def known(fake: FakeProvider, instrumented: TracerProvider) -> Iterator[FakeProvider]:
    """The fake named as a provider, so that even requests without a model are LLM calls."""
    instrument(tracer_provider=instrumented, providers={fake.base_url: "openai"}, fingerprint_salt=TEST_SALT)
    yield fake


@contextlib.contextmanager
def caplog_warnings() -> Iterator[list[str]]:
    """The messages the OpenTelemetry SDK logs at WARNING or above meanwhile."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler, sdk = Keep(logging.WARNING), logging.getLogger("opentelemetry")
    sdk.addHandler(handler)
    try:
        yield messages
    finally:
        sdk.removeHandler(handler)


def raw_exchange(
    library: Any, url: str, body: bytes, headers: dict[str, str] | None = None, chunk_size: int | None = None
) -> bytes:
    with library.Client() as client:
        with client.stream("POST", url, content=body, headers=headers or {}) as response:
            return b"".join(response.iter_raw(chunk_size))


LIBRARIES = pytest.mark.parametrize("library", [httpx, httpx2], ids=["httpx", "httpx2"])


@LIBRARIES
@pytest.mark.parametrize(
    "body",
    [b'{"model": "m", "messages": [', b"\xff\xfe\x00 not json", b"[1, 2, 3]", b""],
    ids=["malformed-json", "non-utf8", "json-array", "empty"],
)
def test_odd_request_bodies_reach_the_provider_unchanged(
    library: Any, body: bytes, known: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    raw_exchange(library, known.openai_base_url + "/chat/completions", body)
    assert known.last_call.raw_request == body
    assert attrs(only_genai_span(exporter))[semconv.GEN_AI_PROVIDER_NAME] == "openai"


@LIBRARIES
@pytest.mark.parametrize("failure", ["malformed", "non-utf8"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_odd_response_bodies_reach_the_application_unchanged(
    library: Any, failure: str, stream: bool, known: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    body = json.dumps(STREAM if stream else CHAT).encode()
    received = raw_exchange(library, known.openai_base_url + "/chat/completions", body, {"x-fake-fail": failure}, 7)
    assert received == known.last_call.response_body
    a = attrs(only_genai_span(exporter))
    if stream:
        # One bad line costs that line only: the usage chunk is still read.
        assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(known.last_call)["prompt_tokens"]
    else:
        assert a[semconv.TOKENTRAIL_USAGE_MISSING] is True


@LIBRARIES
@pytest.mark.parametrize("path", ["/chat/completions", "/responses", "/v1/messages"])
def test_a_truncated_stream_reaches_the_application_unchanged_and_is_incomplete(
    library: Any, path: str, known: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    base = known.base_url if path.startswith("/v1/") else known.openai_base_url
    body = json.dumps({**STREAM, "input": "hi", "max_tokens": 50}).encode()
    received = raw_exchange(library, base + path, body, {"x-fake-fail": "truncate"}, 5)
    assert received == known.last_call.response_body
    assert attrs(only_genai_span(exporter))[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True


def decoded(library: Any, encoding: str, data: bytes) -> bytes:
    """``data`` decoded as the library's own Response decodes a body of that Content-Encoding."""
    response = library.Response(200, headers={"content-encoding": encoding}, content=data)
    return response.read()


ENCODINGS = pytest.mark.parametrize("encoding", ["gzip", "br", "zstd", "gzip, br"])


@LIBRARIES
@ENCODINGS
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_compressed_bodies_pass_compressed_and_their_usage_is_read(
    library: Any, encoding: str, stream: bool, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    """gzip with zlib; br, zstd and stacked codings with the HTTP library's own decoders (see _decoding)."""
    body = json.dumps(STREAM if stream else CHAT).encode()
    headers = {"x-fake-encoding": encoding, "accept-encoding": encoding}
    received = raw_exchange(library, fake.openai_base_url + "/chat/completions", body, headers, 11)
    assert received == fake.last_call.response_body  # still compressed: the application's client decodes it, not us
    text = decoded(library, encoding, received)
    if encoding == "gzip":
        assert received[:2] == b"\x1f\x8b" and text == gzip.decompress(received)
    if stream:
        assert b"[DONE]" in text
    else:
        assert json.loads(text)["usage"] == usage_of(fake.last_call)
    a = attrs(only_genai_span(exporter))
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(fake.last_call)["prompt_tokens"]
    assert semconv.TOKENTRAIL_USAGE_MISSING not in a


@ENCODINGS
def test_the_sdk_reads_a_compressed_stream_through_us(
    encoding: str, fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY)
    chunks = list(
        client.chat.completions.create(**STREAM, extra_headers={"x-fake-encoding": encoding})
    )
    assert chunks[-1].usage.prompt_tokens == usage_of(fake.last_call)["prompt_tokens"]
    assert attrs(only_genai_span(exporter))[semconv.GEN_AI_USAGE_INPUT_TOKENS] == chunks[-1].usage.prompt_tokens


@pytest.mark.parametrize(
    "target, name",
    [(_call, "response_attributes"), (_foreign, "call_span_for"), (_call, "body_parser")],
)
def test_a_bug_in_any_step_of_ours_leaves_the_call_working(
    target: object, name: str, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug in TokenTrail")

    monkeypatch.setattr(target, name, broken)
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0)
    completion = client.chat.completions.create(**CHAT)
    assert completion.id == fake.last_call.response_id
    chunks = list(client.chat.completions.create(**STREAM))
    assert chunks[-1].usage is not None


def test_our_span_still_ends_when_finishing_it_fails(
    fake: FakeProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug in TokenTrail")

    monkeypatch.setattr(_call, "response_attributes", broken)
    with caplog_warnings() as warnings:
        for _ in openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY).chat.completions.create(**STREAM):
            pass
    span = only_genai_span(exporter)  # found by the request's attributes, which it still carries
    assert span.end_time is not None
    assert attrs(span)[semconv.GEN_AI_REQUEST_MODEL] == STREAM["model"]
    assert not [w for w in warnings if "ended span" in w]  # ended once, not set or ended again


class _Counting(SpanProcessor):
    def __init__(self) -> None:
        self.started = self.ended = 0

    def on_start(self, span: object, parent_context: object = None) -> None:
        self.started += 1

    def on_end(self, span: object) -> None:
        self.ended += 1


def _broken(*args: object, **kwargs: object) -> None:
    raise RuntimeError("bug in TokenTrail")


def _with_a_bug_in(
    target: object, name: str, fake: FakeProvider, provider: TracerProvider, monkeypatch: pytest.MonkeyPatch
) -> tuple[_Counting, openai.OpenAI]:
    """``target.name`` broken, a span counter on ``provider``, and a client of the fake that does not retry."""
    counting = _Counting()
    provider.add_span_processor(counting)
    monkeypatch.setattr(target, name, _broken)
    return counting, openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0)


@pytest.mark.parametrize("status", [None, "status:500"], ids=["ok", "http-500"])
def test_our_span_ends_even_if_setting_its_attributes_fails(
    status: str | None, fake: FakeProvider, instrumented: TracerProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting, client = _with_a_bug_in(sdk_trace.Span, "set_attributes", fake, instrumented, monkeypatch)
    headers = {"x-fake-fail": status} if status else {}
    try:
        client.chat.completions.create(**CHAT, extra_headers=headers)
    except openai.APIStatusError:
        assert status is not None
    assert counting.started == counting.ended == 1


def test_a_failure_while_starting_leaves_no_span_open(
    fake: FakeProvider, instrumented: TracerProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything that can fail is done before our span starts: a bug there sends the request untraced, and leaves
    no started span that nothing will end."""
    counting, client = _with_a_bug_in(_call, "attribution_attributes", fake, instrumented, monkeypatch)
    assert client.chat.completions.create(**CHAT).id == fake.last_call.response_id
    assert counting.started == counting.ended


def test_a_json_parser_that_fails_on_a_chunk_leaves_the_call_working(
    fake: FakeProvider, instrumented: TracerProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_parsers.JsonBodyParser, "feed", _broken)
    completion = openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0).chat.completions.create(
        **CHAT
    )
    assert completion.id == fake.last_call.response_id
    assert attrs(only_genai_span(exporter))[semconv.TOKENTRAIL_USAGE_MISSING] is True  # never a guess
