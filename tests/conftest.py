"""Shared fixtures: a real fake LLM server on loopback, a real SDK tracer provider with an in-memory exporter,
and the instrumentation switched on against them (and off again after each test)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tokentrail.instrumentation import instrument, semconv, uninstrument
from tokentrail.instrumentation._credentials import SYSTEM_KEY_ENV_VARS
from tokentrail.instrumentation._state import INSTRUMENTATION_SCOPE
from tokentrail.processor.fake_provider import FakeProvider

SYSTEM_KEY = "sk-system-test-0123456789abcdef"
CUSTOMER_KEY = "sk-customer-byok-fedcba9876543210"
TEST_SALT = "test-fingerprint-salt"


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeProvider) -> FakeProvider:
    """The session's fake provider, with no calls recorded yet."""
    fake_server.reset()
    return fake_server


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No provider key or TokenTrail setting leaks in from the developer's shell."""
    for name in (
        *SYSTEM_KEY_ENV_VARS,
        semconv.ENV_SYSTEM_KEYS,
        semconv.ENV_FINGERPRINT_SALT,
        semconv.ENV_CREDENTIAL_NAMES,
        semconv.ENV_PROVIDERS,
        semconv.ENV_STREAM_USAGE,
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ANTHROPIC_OPEN_TELEMETRY", raising=False)
    return monkeypatch


def is_clean(value: object) -> bool:
    """A value ``_sdkspan.set_clean`` may store as it is: what the SDK would store for it unchanged."""
    if type(value) is tuple:
        return all(type(item) is str for item in value)
    return type(value) in (str, int, float, bool)


@pytest.fixture
def instrumented(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch
) -> Iterator[TracerProvider]:
    """TokenTrail on, with SYSTEM_KEY as the service's own key and a fixed salt.

    After every test, each span of ours is checked to carry clean attribute values only (the promise that lets
    ``_sdkspan.set_clean`` skip the SDK's cleaning)."""
    instrument(tracer_provider=tracer_provider, system_keys=[SYSTEM_KEY], fingerprint_salt=TEST_SALT)
    try:
        yield tracer_provider
    finally:
        uninstrument()
    for span in exporter.get_finished_spans():
        if span.instrumentation_scope is not None and span.instrumentation_scope.name == INSTRUMENTATION_SCOPE:
            unclean = {name: value for name, value in (span.attributes or {}).items() if not is_clean(value)}
            assert not unclean, (span.name, unclean)


def genai_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """Finished spans that describe an LLM call (ours or an SDK's)."""
    return [
        span
        for span in exporter.get_finished_spans()
        if span.attributes and semconv.GEN_AI_OPERATION_NAME in span.attributes
    ]


def only_genai_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = genai_spans(exporter)
    assert len(spans) == 1, [span.name for span in spans]
    return spans[0]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def openai_tokens(usage: dict[str, Any]) -> dict[str, int]:
    """The span attributes a Chat Completions usage object must produce (OpenAI's input already includes cache)."""
    return {
        semconv.GEN_AI_USAGE_INPUT_TOKENS: usage["prompt_tokens"],
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS: usage["completion_tokens"],
        semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: usage["prompt_tokens_details"]["cached_tokens"],
        semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: usage["completion_tokens_details"]["reasoning_tokens"],
    }


def anthropic_tokens(usage: dict[str, Any]) -> dict[str, int]:
    """The span attributes an Anthropic usage object must produce (its input EXCLUDES cache reads and writes)."""
    read, write = usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]
    return {
        semconv.GEN_AI_USAGE_INPUT_TOKENS: usage["input_tokens"] + read + write,
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS: usage["output_tokens"],
        semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: read,
        semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: write,
    }


def assert_tokens(span: ReadableSpan, expected: dict[str, int]) -> None:
    attributes = attrs(span)
    assert {name: attributes.get(name) for name in expected} == expected
