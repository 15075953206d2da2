"""Shared fixtures: a real fake LLM server on loopback, a real SDK tracer provider with an in-memory exporter,
and the instrumentation switched on against them (and off again after each test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokentrail.instrumentation import instrument, semconv, uninstrument
from tokentrail.instrumentation._credentials import SYSTEM_KEY_ENV_VARS
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import SYSTEM_KEY, TEST_SALT

# Property tests judge our code, not the machine: on a loaded CI runner input generation and single examples can be
# slow, which Hypothesis would otherwise report as a failure. Tests that set their own settings inherit this.
settings.register_profile("tokentrail", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tokentrail")

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
        semconv.ENV_UNKNOWN_KEYS,
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ANTHROPIC_OPEN_TELEMETRY", raising=False)
    return monkeypatch


@pytest.fixture
def instrumented(tracer_provider: TracerProvider, clean_env: pytest.MonkeyPatch) -> Iterator[TracerProvider]:
    """TokenTrail on, with SYSTEM_KEY as the service's own key and a fixed salt."""
    instrument(tracer_provider=tracer_provider, system_keys=[SYSTEM_KEY], fingerprint_salt=TEST_SALT)
    try:
        yield tracer_provider
    finally:
        uninstrument()
