"""What instrumentation tests read off finished spans, and the keys and salt the ``instrumented`` fixture uses."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokentrail.instrumentation import semconv

SYSTEM_KEY = "sk-system-test-0123456789abcdef"
CUSTOMER_KEY = "sk-customer-byok-fedcba9876543210"
TEST_SALT = "test-fingerprint-salt"


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


def cache_exclusive_tokens(input_tokens: int, output_tokens: int, read: int, write: int) -> dict[str, int]:
    """The span attributes of counts whose input EXCLUDES cache reads and writes (Anthropic's, Bedrock's): the
    span's input includes them, so that is where a provider that leaves the cache out must be added back."""
    return {
        semconv.GEN_AI_USAGE_INPUT_TOKENS: input_tokens + read + write,
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS: output_tokens,
        semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: read,
        semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: write,
    }


def anthropic_tokens(usage: dict[str, Any]) -> dict[str, int]:
    """The span attributes an Anthropic usage object must produce."""
    return cache_exclusive_tokens(
        usage["input_tokens"], usage["output_tokens"], usage["cache_read_input_tokens"],
        usage["cache_creation_input_tokens"],
    )  # fmt: skip


def assert_tokens(span: ReadableSpan, expected: dict[str, int]) -> None:
    attributes = attrs(span)
    assert {name: attributes.get(name) for name in expected} == expected


def usage_of(call: Any) -> dict[str, Any]:
    """The usage object a fake provider's call answered with (every call the tests read it of has one)."""
    usage: dict[str, Any] | None = call.usage
    assert usage is not None
    return usage
