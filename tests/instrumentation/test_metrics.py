"""The GenAI client metrics recorded beside our spans: gen_ai.client.token.usage and gen_ai.client.operation.duration."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from tokentrail.instrumentation import instrument, semconv, uninstrument
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import SYSTEM_KEY, TEST_SALT

MESSAGES = [{"role": "user", "content": "hi"}]


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


def points(reader: InMemoryMetricReader, name: str) -> list[HistogramDataPoint]:
    data = reader.get_metrics_data()
    if data is None:
        return []
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points  # type: ignore[attr-defined]
    ]


def by_type(reader: InMemoryMetricReader) -> dict[str, Any]:
    return {point.attributes[semconv.GEN_AI_TOKEN_TYPE]: point for point in points(reader, semconv.METRIC_TOKEN_USAGE)}


def client(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0)


def test_token_usage_is_recorded_per_token_type(fake: FakeProvider, reader: InMemoryMetricReader) -> None:
    client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    usage = fake.last_call.usage
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
