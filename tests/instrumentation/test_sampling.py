"""Samplers see the GenAI conventions' sampling attributes when our span starts, whenever they may read them; with
the SDK's own (attribute-blind) samplers the same attributes are set when the call ends. Either way the exported
span is the same."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import openai
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes
from tokentrail.instrumentation import instrument, semconv, uninstrument
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import SYSTEM_KEY, TEST_SALT, attrs, genai_spans, usage_of

CHAT: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
# The attributes the GenAI conventions ask for at span creation, in the order our span carries them.
AT_START = [
    semconv.GEN_AI_OPERATION_NAME,
    semconv.GEN_AI_PROVIDER_NAME,
    semconv.SERVER_ADDRESS,
    semconv.SERVER_PORT,
    semconv.GEN_AI_REQUEST_MODEL,
]


class DropsAModel(Sampler):
    """A sampler that reads attributes: drops the calls to one model, remembers what it was shown."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.seen: list[dict[str, Any]] = []

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        shown = dict(attributes or {})
        self.seen.append(shown)
        if shown.get(semconv.GEN_AI_REQUEST_MODEL) == self.model:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return f"DropsAModel({self.model})"


def _instrumented(sampler: Sampler | None, exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider() if sampler is None else TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(tracer_provider=provider, system_keys=[SYSTEM_KEY], fingerprint_salt=TEST_SALT)
    try:
        yield provider
    finally:
        uninstrument()
        provider.shutdown()


@pytest.fixture
def sampled(clean_env: pytest.MonkeyPatch) -> Iterator[tuple[DropsAModel, InMemorySpanExporter]]:
    sampler, exporter = DropsAModel("gpt-4.1"), InMemorySpanExporter()
    for _ in _instrumented(sampler, exporter):
        yield sampler, exporter


def test_a_sampler_that_reads_attributes_sees_the_conventions_ones_at_the_start(
    sampled: tuple[DropsAModel, InMemorySpanExporter], fake: FakeProvider
) -> None:
    sampler, exporter = sampled
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY)
    client.chat.completions.create(model="gpt-4.1", **CHAT)
    client.chat.completions.create(model="gpt-4o-mini", **CHAT)
    shown = [seen for seen in sampler.seen if semconv.GEN_AI_OPERATION_NAME in seen]
    assert [seen[semconv.GEN_AI_REQUEST_MODEL] for seen in shown] == ["gpt-4.1", "gpt-4o-mini"]
    assert all(set(AT_START) <= set(seen) for seen in shown)
    spans = genai_spans(exporter)
    assert [attrs(span)[semconv.GEN_AI_REQUEST_MODEL] for span in spans] == ["gpt-4o-mini"]  # the other was dropped
    assert list(attrs(spans[0]))[: len(AT_START)] == AT_START


def test_the_exported_span_is_the_same_either_way(fake: FakeProvider, clean_env: pytest.MonkeyPatch) -> None:
    """Same attributes in the same order, whether they were given at the start or set at the end."""
    carried: list[dict[str, Any]] = []
    for sampler in (DropsAModel("none"), None):
        exporter = InMemorySpanExporter()
        for _ in _instrumented(sampler, exporter):
            client = openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY)
            client.chat.completions.create(model="gpt-4o-mini", user="u-1", **CHAT)
        (span,) = genai_spans(exporter)
        a = attrs(span)
        assert list(a)[: len(AT_START)] == AT_START
        assert a[semconv.USER_ID] == "u-1"
        assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(fake.last_call)["prompt_tokens"]
        carried.append(a)
    given_at_start, set_at_end = carried
    assert list(given_at_start) == list(set_at_end)
    varying = {semconv.GEN_AI_RESPONSE_ID, semconv.GEN_AI_USAGE_INPUT_TOKENS, semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
               semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS}
    assert {k: v for k, v in given_at_start.items() if k not in varying} == {
        k: v for k, v in set_at_end.items() if k not in varying
    }


class KeepsNothing(Sampler):
    """Reads attributes, returns none (the Python SDK then starts the span with none): and cannot be hashed."""

    __hash__ = None  # type: ignore[assignment]  # unhashable on purpose, as some samplers are

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeepsNothing)

    def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> SamplingResult:
        self.seen.append(dict(kwargs.get("attributes") or (args[1] if len(args) > 1 else None) or {}))
        return SamplingResult(Decision.RECORD_AND_SAMPLE)

    def get_description(self) -> str:
        return "KeepsNothing"


def test_a_sampler_that_keeps_no_attributes_leaves_our_span_complete(
    fake: FakeProvider, clean_env: pytest.MonkeyPatch
) -> None:
    """The SDK starts a span with what its sampler returns: the conventions' attributes a sampler dropped are set
    when the call ends. (Also: a sampler that cannot be hashed is no reason to stop tracing.)"""
    sampler, exporter = KeepsNothing(), InMemorySpanExporter()
    for _ in _instrumented(sampler, exporter):
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY)
        client.chat.completions.create(model="gpt-4o-mini", **CHAT)
    assert any(seen.get(semconv.GEN_AI_REQUEST_MODEL) == "gpt-4o-mini" for seen in sampler.seen)
    (span,) = genai_spans(exporter)
    a = attrs(span)
    assert {name: a[name] for name in AT_START} == {
        semconv.GEN_AI_OPERATION_NAME: "chat",
        semconv.GEN_AI_PROVIDER_NAME: "openai",
        semconv.SERVER_ADDRESS: "127.0.0.1",
        semconv.SERVER_PORT: fake.port,
        semconv.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
    }
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(fake.last_call)["prompt_tokens"]
