"""The per-call fast paths of the instrumentation: what they remember, when they forget it, and that each gives exactly
what the general way gives.

Every LLM call goes through them, so they remember what depends only on the configuration (metric attribute sets per
endpoint, a key's fingerprint, type and name, how a content type is read) and skip work whose result nobody would
receive (metrics with no meter provider). These tests pin the equivalences and the invalidation on re-configuration;
the overhead benchmark measures the speed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from opentelemetry import context as otel_context
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokentrail.instrumentation import (
    _call,
    _context,
    _credentials,
    _metrics,
    _parsers,
    _spans,
    _state,
    _usage,
    instrument,
    semconv,
    uninstrument,
)
from tokentrail.instrumentation._endpoints import Endpoint
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import CUSTOMER_KEY, SYSTEM_KEY, TEST_SALT, attrs, genai_spans, only_genai_span

MESSAGES = [{"role": "user", "content": "hi"}]
ENDPOINT = Endpoint(
    api=semconv.API_CHAT_COMPLETIONS,
    provider="openai",
    operation=semconv.GEN_AI_OPERATION_CHAT,
    server_address="api.openai.com",
    server_port=443,
    known_host=True,
)
USAGE = _usage.Usage(input_tokens=12, output_tokens=5)


def points(reader: InMemoryMetricReader) -> dict[str, list[HistogramDataPoint]]:
    data = reader.get_metrics_data()
    found: dict[str, list[HistogramDataPoint]] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)  # type: ignore[attr-defined]
    return found


def record_one_call(metrics: _metrics.Metrics, attributes: _metrics.MetricAttributes) -> None:
    metrics.record(attributes, "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.25, USAGE, None)


# Metrics ------------------------------------------------------------------------------------------------------------


class CountingAttributes(_metrics.MetricAttributes):
    """Counts how often the attribute sets are asked for: preparing a measurement asks once."""

    __slots__ = ("asked",)

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.asked = 0

    def sets(self, *key: Any) -> _metrics.AttributeSets:
        self.asked += 1
        return super().sets(*key)


def test_nothing_is_prepared_for_metrics_while_the_global_meter_provider_is_unset() -> None:
    proxy = _ProxyMeterProvider()  # what the API's global provider is until the application sets one
    metrics = _metrics.Metrics(proxy)
    attributes = CountingAttributes(ENDPOINT)
    record_one_call(metrics, attributes)
    assert not metrics.live and attributes.asked == 0


def test_metrics_reach_a_meter_provider_set_after_instrument() -> None:
    """Skipping is honest: once the global provider is set, the proxies forward, and so do we (straight to it)."""
    proxy = _ProxyMeterProvider()
    metrics = _metrics.Metrics(proxy)
    attributes = CountingAttributes(ENDPOINT)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        proxy.on_set_meter_provider(provider)
        record_one_call(metrics, attributes)
        assert metrics.live and attributes.asked == 1
        found = points(reader)
        (duration,) = found[semconv.METRIC_OPERATION_DURATION]
        assert duration.count == 1 and dict(duration.attributes) == {
            semconv.GEN_AI_OPERATION_NAME: "chat",
            semconv.GEN_AI_PROVIDER_NAME: "openai",
            semconv.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            semconv.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
            semconv.SERVER_ADDRESS: "api.openai.com",
            semconv.SERVER_PORT: 443,
        }
        tokens = {point.attributes[semconv.GEN_AI_TOKEN_TYPE]: point.sum for point in found[semconv.METRIC_TOKEN_USAGE]}
        assert tokens == {"input": 12, "output": 5}
    finally:
        provider.shutdown()


def test_a_no_op_meter_provider_records_nothing_and_prepares_nothing() -> None:
    metrics = _metrics.Metrics(NoOpMeterProvider())
    attributes = CountingAttributes(ENDPOINT)
    record_one_call(metrics, attributes)
    assert not metrics.live and attributes.asked == 0


def test_an_sdk_meter_provider_gets_every_measurement_with_attribute_sets_built_once() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        metrics = _metrics.Metrics(provider)
        attributes = _metrics.MetricAttributes(ENDPOINT)
        for _ in range(3):
            record_one_call(metrics, attributes)
        first = attributes.sets("gpt-4o-mini", "gpt-4o-mini-2024-07-18", None)
        assert attributes.sets("gpt-4o-mini", "gpt-4o-mini-2024-07-18", None) is first  # remembered, not rebuilt
        failed = attributes.sets("gpt-4o-mini", None, "429")
        assert failed[0][semconv.ERROR_TYPE] == "429" and semconv.GEN_AI_RESPONSE_MODEL not in failed[0]
        found = points(reader)
        (duration,) = found[semconv.METRIC_OPERATION_DURATION]
        assert duration.count == 3
        assert {point.attributes[semconv.GEN_AI_TOKEN_TYPE]: point.sum for point in found[semconv.METRIC_TOKEN_USAGE]} == {
            "input": 36,
            "output": 15,
        }
    finally:
        provider.shutdown()


def test_the_metric_attribute_sets_are_shared_but_never_changed_by_a_measurement() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        metrics = _metrics.Metrics(provider)
        attributes = _metrics.MetricAttributes(ENDPOINT)
        before = [dict(attribute_set) for attribute_set in attributes.sets("m", "m-1", None)]
        metrics.record(attributes, "m", "m-1", 0.1, USAGE, None)
        assert [dict(attribute_set) for attribute_set in attributes.sets("m", "m-1", None)] == before
    finally:
        provider.shutdown()


def test_an_endpoint_remembers_a_bounded_number_of_attribute_sets() -> None:
    attributes = _metrics.MetricAttributes(ENDPOINT)
    for index in range(_metrics.MAX_ATTRIBUTE_SETS * 2 + 1):
        attributes.sets(f"model-{index}", None, None)
    assert len(attributes._known) <= _metrics.MAX_ATTRIBUTE_SETS
    assert attributes.sets("model-0", None, None)[0][semconv.GEN_AI_REQUEST_MODEL] == "model-0"  # rebuilt when asked


# Credentials: what a key's fingerprint, type and name are follows the configuration in force -------------------------


@pytest.fixture
def reconfigurable(tracer_provider: TracerProvider, clean_env: pytest.MonkeyPatch) -> Iterator[TracerProvider]:
    """A tracer provider to instrument() with, as often as a test likes; uninstrumented after it."""
    try:
        yield tracer_provider
    finally:
        uninstrument()


def chat(fake: FakeProvider, key: str) -> None:
    openai.OpenAI(base_url=fake.openai_base_url, api_key=key, max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )


def credential_of_last_call(exporter: InMemorySpanExporter) -> tuple[object, object, object]:
    a = attrs(genai_spans(exporter)[-1])
    return (
        a.get(semconv.TOKENTRAIL_CREDENTIAL_TYPE),
        a.get(semconv.TOKENTRAIL_CREDENTIAL_ID),
        a.get(semconv.TOKENTRAIL_CREDENTIAL_NAME),
    )


def test_a_remembered_key_follows_new_names_salt_and_system_keys(
    fake: FakeProvider, exporter: InMemorySpanExporter, reconfigurable: TracerProvider
) -> None:
    provider = reconfigurable
    instrument(tracer_provider=provider, system_keys=[SYSTEM_KEY], fingerprint_salt=TEST_SALT, credential_names={SYSTEM_KEY: "a"})
    chat(fake, SYSTEM_KEY)
    chat(fake, SYSTEM_KEY)  # now from the memory
    assert credential_of_last_call(exporter) == ("system", _credentials.fingerprint(SYSTEM_KEY, TEST_SALT.encode()), "a")

    instrument(tracer_provider=provider, system_keys=[SYSTEM_KEY], fingerprint_salt=TEST_SALT, credential_names={SYSTEM_KEY: "b"})
    chat(fake, SYSTEM_KEY)
    assert credential_of_last_call(exporter)[2] == "b"

    instrument(tracer_provider=provider, system_keys=[SYSTEM_KEY], fingerprint_salt="another-salt")
    chat(fake, SYSTEM_KEY)
    assert credential_of_last_call(exporter) == ("system", _credentials.fingerprint(SYSTEM_KEY, b"another-salt"), None)

    instrument(tracer_provider=provider, system_keys=[CUSTOMER_KEY], fingerprint_salt=TEST_SALT)
    chat(fake, SYSTEM_KEY)
    assert credential_of_last_call(exporter)[0] == "byok"  # no longer one of the service's keys


def test_the_fingerprinter_classifies_as_classify_does() -> None:
    salt = b"s"
    system = frozenset({_credentials.fingerprint(SYSTEM_KEY, salt)})
    names = {_credentials.fingerprint(CUSTOMER_KEY, salt): "acme"}
    fingerprinter = _credentials.Fingerprinter(salt, system, names)
    cases = [
        (f"Bearer {SYSTEM_KEY}".encode(), None, None),
        (f"Bearer {CUSTOMER_KEY}".encode(), None, None),
        (None, CUSTOMER_KEY.encode(), None),
        (None, None, SYSTEM_KEY.encode()),
        (b"Basic abc", None, None),
        (None, None, None),
    ]
    for explicit in (None, "byok", "system"):
        for headers in cases * 2:  # the second time from the memory
            text = [value.decode() if value else None for value in headers]
            key = _credentials.key_of(*text)
            kind, key_id = _credentials.classify(key, salt, system, explicit)
            assert fingerprinter.classify(*headers, explicit) == (kind, key_id, names.get(key_id) if key_id else None)
            assert fingerprinter.of_headers(*headers) == key_id
    assert SYSTEM_KEY not in repr(fingerprinter)


# Whole Chat Completions bodies: read in one pass, exactly as the general way reads them ------------------------------

CHAT_BODIES: list[dict[str, Any]] = [
    {
        "id": "chatcmpl-1",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "service_tier": "Default",
    },
    {"id": "c2", "model": "m", "choices": [{"index": 1, "finish_reason": "length"}, {"index": 0, "finish_reason": "stop"}]},
    {"id": "c3", "model": "m", "choices": [{"index": 0, "finish_reason": None}], "usage": None},
    {"id": "", "model": 5, "choices": [{"index": True, "finish_reason": "stop"}], "usage": {"prompt_tokens": -1}},
    {"choices": ["not an object"], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "prompt_cache_hit_tokens": 2}},
    {
        "id": "c5",
        "choices": [{"finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 2,
            "prompt_tokens_details": {
                "cached_tokens": 1,
                "cache_write_tokens": 6,
                "cache_write_tokens_details": {"ttl_30m_tokens": 4, "ttl_12h_tokens": 2},
            },
        },
    },
    {"object": "list", "data": [{"embedding": [0.1]}], "model": "text-embedding-3-small", "usage": {"prompt_tokens": 7, "total_tokens": 7}},
    {"id": "cmpl-1", "choices": [{"text": "hi", "index": 0, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
    {"error": {"type": "invalid_request_error", "message": "no"}},
    {"id": "c9", "choices": "not a list", "service_tier": "", "usage": {"prompt_tokens": 1.5, "completion_tokens": True}},
    {},
]


@pytest.mark.parametrize("body", CHAT_BODIES)
@pytest.mark.parametrize("api", [semconv.API_CHAT_COMPLETIONS, semconv.API_COMPLETIONS, semconv.API_EMBEDDINGS])
def test_a_whole_chat_body_gives_the_facts_and_attributes_of_the_general_way(api: str, body: dict[str, Any]) -> None:
    expected = _usage.facts_from_json(api, body)
    expected_attributes = _spans.response_attributes(expected)
    parser = _parsers.JsonBodyParser(api)
    parser.feed(json.dumps(body).encode())
    facts = parser.result()
    assert facts == expected
    assert _spans.response_attributes(facts) == expected_attributes


def reference_chat_usage(usage: dict[str, Any]) -> _usage.Usage:
    """chat_usage as it was written before its fast paths: the specification they are held to."""
    int_ = _usage._int
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        cached = int_(details.get("cached_tokens"))
        writes = int_(details.get("cache_write_tokens"))
        by_ttl = _usage._openai_cache_writes(details)
    else:
        cached = writes = by_ttl = None
    if cached is None:
        cached = int_(usage.get("prompt_cache_hit_tokens"))
    completion = usage.get("completion_tokens_details")
    reasoning = int_(completion.get("reasoning_tokens")) if isinstance(completion, dict) else None
    return _usage.Usage(
        int_(usage.get("prompt_tokens")), int_(usage.get("completion_tokens")), cached, writes, reasoning, by_ttl
    )


USAGE_OBJECTS: list[dict[str, Any]] = [
    {},
    {"prompt_tokens": 5, "completion_tokens": 7},
    {"prompt_tokens": -1, "completion_tokens": True, "prompt_tokens_details": None},
    {"prompt_tokens": 5.0, "completion_tokens": "7", "completion_tokens_details": {"reasoning_tokens": -3}},
    {"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": None}, "prompt_cache_hit_tokens": 4},
    {"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 0}, "prompt_cache_hit_tokens": 4},
    {"prompt_tokens": 9, "prompt_tokens_details": {"cache_write_tokens": 3, "cache_write_tokens_details": {"ttl_30m_tokens": 3}}},
    {"prompt_tokens": 9, "prompt_tokens_details": {"cache_write_tokens": False, "cache_write_tokens_details": []}},
    {"prompt_tokens": 2, "completion_tokens_details": {"reasoning_tokens": 1}, "prompt_tokens_details": "x"},
    {"prompt_tokens": 2, "completion_tokens_details": [], "prompt_cache_hit_tokens": -5},
]


@pytest.mark.parametrize("usage", USAGE_OBJECTS)
def test_chat_usage_reads_as_it_always_did(usage: dict[str, Any]) -> None:
    assert _usage.chat_usage(usage) == reference_chat_usage(usage)


def test_attributes_built_along_the_way_are_handed_over_once() -> None:
    facts = _spans.chat_response_facts(CHAT_BODIES[0])
    first = _spans.response_attributes(facts)
    assert first[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 1200 and facts.attributes is None
    assert _spans.response_attributes(facts) == first and _spans.response_attributes(facts) is not first


# Response media types --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type, kind",
    [
        (b"application/json", False),
        (b"application/json; charset=utf-8", False),
        (b"Application/Problem+JSON", False),
        (b"text/event-stream", True),
        (b" TEXT/EVENT-STREAM ;charset=utf-8", True),
        (b"text/plain", None),
        (b"", None),
        ("application/jsön".encode("latin-1"), None),
    ],
)
def test_a_content_type_is_read_the_same_first_and_from_memory(content_type: bytes, kind: bool | None) -> None:
    headers = httpx2.Headers([(b"content-type", content_type)])
    _call._MEDIA_KINDS.pop(content_type, None)
    assert _call._media_kind_of(content_type, headers) is kind
    assert _call._MEDIA_KINDS.get(content_type, kind) is kind
    assert (content_type in _call._MEDIA_KINDS) == content_type.isascii()  # only ASCII decodes alike in any encoding


def test_the_memory_of_content_types_is_bounded() -> None:
    for index in range(_call._MAX_MEDIA_KINDS * 2):
        _call._media_kind_of(f"application/x-{index}+json".encode(), httpx2.Headers())
    assert len(_call._MEDIA_KINDS) <= _call._MAX_MEDIA_KINDS


# The OTel context: read and set through the runtime's own variable ------------------------------------------------


def test_our_context_shortcuts_are_the_apis_own_operations() -> None:
    key = otel_context.create_key("fast-path-test")
    ctx = otel_context.set_value(key, "v")
    token = _context.attach(ctx)
    try:
        assert otel_context.get_current() is ctx and _context.get_current() is ctx
    finally:
        _context.detach(token)
    assert otel_context.get_value(key) is None


def test_another_runtime_context_is_used_through_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", object())
    assert _context._runtime_variable() is None


# Streams and spans --------------------------------------------------------------------------------------------------


def test_a_json_parser_that_fails_on_a_chunk_leaves_the_call_working(
    fake: FakeProvider, instrumented: TracerProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, chunk: bytes) -> None:
        raise RuntimeError("bug in TokenTrail")

    monkeypatch.setattr(_parsers.JsonBodyParser, "feed", broken)
    completion = openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert completion.id == fake.last_call.response_id
    a = attrs(only_genai_span(exporter))
    assert a[semconv.TOKENTRAIL_USAGE_MISSING] is True  # never a guess from a body we stopped reading


def test_our_own_spans_are_recognised_by_their_tracers_scope(instrumented: TracerProvider) -> None:
    settings = _state.current()
    assert settings is not None and settings.scope is not None
    span = settings.tracer.start_span("chat m")
    try:
        assert span.instrumentation_scope is settings.scope  # type: ignore[attr-defined]
    finally:
        span.end()
