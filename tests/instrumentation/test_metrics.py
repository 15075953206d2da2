"""The GenAI client metrics recorded beside our spans: gen_ai.client.token.usage and gen_ai.client.operation.duration."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tokentrail.instrumentation import _metrics, instrument, semconv, uninstrument
from tokentrail.instrumentation._endpoints import Endpoint
from tokentrail.instrumentation._usage import Usage
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import SYSTEM_KEY, TEST_SALT, genai_spans, usage_of

MESSAGES: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def reader(tracer_provider: TracerProvider, clean_env: pytest.MonkeyPatch) -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, fingerprint_salt=TEST_SALT)
    try:
        yield reader
    finally:
        uninstrument()
        meter_provider.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    if data is None:
        return []
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def by_type(reader: InMemoryMetricReader) -> dict[str, Any]:
    return {point.attributes[semconv.GEN_AI_TOKEN_TYPE]: point for point in points(reader, semconv.METRIC_TOKEN_USAGE)}


def client(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0)


def test_token_usage_is_recorded_per_token_type(fake: FakeProvider, reader: InMemoryMetricReader) -> None:
    client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    usage = usage_of(fake.last_call)
    tokens = by_type(reader)
    assert (tokens["input"].sum, tokens["input"].count) == (usage["prompt_tokens"], 1)
    assert (tokens["output"].sum, tokens["output"].count) == (usage["completion_tokens"], 1)
    attributes = dict(tokens["input"].attributes)
    assert attributes == {
        semconv.GEN_AI_OPERATION_NAME: "chat",
        semconv.GEN_AI_PROVIDER_NAME: "openai",
        semconv.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        semconv.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini",
        semconv.SERVER_ADDRESS: "127.0.0.1",
        semconv.SERVER_PORT: fake.port,
        semconv.GEN_AI_TOKEN_TYPE: "input",
    }


def test_operation_duration_is_recorded_once_per_call_in_seconds(
    fake: FakeProvider, reader: InMemoryMetricReader
) -> None:
    for _ in client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
        pass
    (point,) = points(reader, semconv.METRIC_OPERATION_DURATION)
    assert point.count == 1
    assert 0 < point.sum < 60
    assert semconv.ERROR_TYPE not in point.attributes
    assert by_type(reader) == {}  # the stream carried no usage: no token counts, never zeros


def test_a_failed_call_records_its_duration_with_the_error_type(
    fake: FakeProvider, reader: InMemoryMetricReader
) -> None:
    with pytest.raises(openai.RateLimitError):
        client(fake).chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-fake-fail": "status:429"})
    (point,) = points(reader, semconv.METRIC_OPERATION_DURATION)
    assert point.attributes[semconv.ERROR_TYPE] == "429"


def test_embeddings_record_input_tokens_only(fake: FakeProvider, reader: InMemoryMetricReader) -> None:
    client(fake).embeddings.create(model="text-embedding-3-small", input="hello")
    tokens = by_type(reader)
    assert set(tokens) == {"input"}
    assert tokens["input"].attributes[semconv.GEN_AI_OPERATION_NAME] == "embeddings"


def test_a_call_another_instrumentation_traces_records_no_metrics_of_ours(
    fake: FakeProvider, reader: InMemoryMetricReader, tracer_provider: TracerProvider
) -> None:
    """That instrumentation records its own metrics; recording ours too would count the call twice."""
    tracer = tracer_provider.get_tracer("some.genai.instrumentation")
    with tracer.start_as_current_span("chat", kind=SpanKind.CLIENT, attributes={semconv.GEN_AI_PROVIDER_NAME: "openai"}):
        client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert points(reader, semconv.METRIC_OPERATION_DURATION) == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_suppressed_instrumentation_makes_no_span_and_no_metrics(
    stream: bool, fake: FakeProvider, reader: InMemoryMetricReader, exporter: InMemorySpanExporter
) -> None:
    """OpenTelemetry's suppress_instrumentation() (an exporter's own requests, a health check) is honoured as the
    contrib instrumentations honour it; the call itself goes through untouched."""
    with suppress_instrumentation():
        response: Any = client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=stream)
        if stream:
            assert [chunk.id for chunk in response]
        else:
            assert response.id == fake.last_call.response_id
    assert exporter.get_finished_spans() == ()
    assert points(reader, semconv.METRIC_OPERATION_DURATION) == [] and by_type(reader) == {}
    client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # and on again after it
    assert len(genai_spans(exporter)) == 1 and len(points(reader, semconv.METRIC_OPERATION_DURATION)) == 1


# The metric attribute sets, built once per endpoint and shared ------------------------------------------------------

ENDPOINT = Endpoint(
    api=semconv.API_CHAT_COMPLETIONS,
    provider="openai",
    operation=semconv.GEN_AI_OPERATION_CHAT,
    server_address="api.openai.com",
    server_port=443,
    known_host=True,
)
USAGE = Usage(input_tokens=12, output_tokens=5)


def record_one_call(metrics: _metrics.Metrics, attributes: _metrics.MetricAttributes) -> None:
    metrics.record(attributes, "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.25, USAGE, None)


def test_metrics_reach_a_meter_provider_set_after_instrument() -> None:
    proxy = _ProxyMeterProvider()  # what the API's global provider is until the application sets one
    metrics = _metrics.Metrics(proxy)
    attributes = _metrics.MetricAttributes(ENDPOINT)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        record_one_call(metrics, attributes)  # dropped: no provider yet
        proxy.on_set_meter_provider(provider)
        record_one_call(metrics, attributes)
        (duration,) = points(reader, semconv.METRIC_OPERATION_DURATION)
        assert duration.count == 1 and dict(duration.attributes or {}) == {
            semconv.GEN_AI_OPERATION_NAME: "chat",
            semconv.GEN_AI_PROVIDER_NAME: "openai",
            semconv.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            semconv.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
            semconv.SERVER_ADDRESS: "api.openai.com",
            semconv.SERVER_PORT: 443,
        }
        assert {kind: point.sum for kind, point in by_type(reader).items()} == {"input": 12, "output": 5}
    finally:
        provider.shutdown()


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
        (duration,) = points(reader, semconv.METRIC_OPERATION_DURATION)
        assert duration.count == 3
        assert {kind: point.sum for kind, point in by_type(reader).items()} == {"input": 36, "output": 15}
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
