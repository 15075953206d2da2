"""``_sdkspan.set_clean`` has exactly the effect of the SDK's ``set_attributes``, whichever way it takes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext
from tokentrail.instrumentation import _sdkspan

KEYS = st.sampled_from(["a", "b", "c", "gen_ai.usage.input_tokens", "user.id", "tokentrail.tags", "x" * 40])
TEXT = st.text(max_size=12)
CLEAN = st.one_of(
    TEXT,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(TEXT, max_size=4).map(tuple),
)


def _tracer(limits: SpanLimits | None = None) -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.get_empty(), span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def _both_ways(
    limits: SpanLimits | None, start: dict[str, Any], *later: dict[str, Any]
) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]], int, int]:
    """Attributes (in order) and dropped counts of two exported spans: ``later`` set the SDK's way and ours."""
    tracer, exporter = _tracer(limits)
    public = tracer.start_span("call", attributes=start)
    ours = tracer.start_span("call", attributes=start)
    for attributes in later:
        public.set_attributes(attributes)
        _sdkspan.set_clean(ours, attributes)
    public.end()
    ours.end()
    exported_public, exported_ours = exporter.get_finished_spans()
    return (
        list((exported_public.attributes or {}).items()),
        list((exported_ours.attributes or {}).items()),
        exported_public.dropped_attributes,
        exported_ours.dropped_attributes,
    )


def test_the_fast_way_is_taken_on_the_installed_sdk() -> None:
    """The probe accepts the SDK this project is tested with, so the tests below exercise the direct way."""
    assert _sdkspan.fast_way_available()
    tracer, _ = _tracer()
    span = tracer.start_span("call")
    calls: list[object] = []
    original = span.set_attributes
    span.set_attributes = lambda attributes: calls.append(attributes) or original(attributes)  # type: ignore[method-assign]
    _sdkspan.set_clean(span, {"a": "x", "b": 2, "c": ("p",)})
    assert calls == []  # not the public way
    assert dict(span.attributes or {}) == {"a": "x", "b": 2, "c": ("p",)}


@settings(max_examples=300, deadline=None)
@given(
    start=st.dictionaries(KEYS, CLEAN, max_size=4),
    first=st.dictionaries(KEYS, CLEAN, max_size=5),
    second=st.dictionaries(KEYS, CLEAN, max_size=5),
    max_attributes=st.one_of(st.none(), st.integers(min_value=0, max_value=8)),
    max_length=st.one_of(st.none(), st.integers(min_value=0, max_value=6)),
)
def test_same_attributes_as_the_sdk_way(
    start: dict[str, Any],
    first: dict[str, Any],
    second: dict[str, Any],
    max_attributes: int | None,
    max_length: int | None,
) -> None:
    """Same keys, values, order and dropped count, under any attribute count and value length limits, with keys
    set again and limits that cut or drop."""
    limits = SpanLimits(max_span_attributes=max_attributes, max_span_attribute_length=max_length)
    public, ours, public_dropped, ours_dropped = _both_ways(limits, start, first, second)
    assert ours == public
    assert ours_dropped == public_dropped


def test_an_ended_span_is_left_alone_with_the_sdk_warning(caplog: pytest.LogCaptureFixture) -> None:
    tracer, exporter = _tracer()
    span = tracer.start_span("call", attributes={"a": 1})
    span.end()
    with caplog.at_level(logging.WARNING):
        _sdkspan.set_clean(span, {"b": 2})
    assert dict(span.attributes or {}) == {"a": 1}
    assert "ended span" in caplog.text
    assert dict(exporter.get_finished_spans()[0].attributes or {}) == {"a": 1}


def test_spans_of_other_kinds_go_the_public_way() -> None:
    _sdkspan.set_clean(NonRecordingSpan(SpanContext(1, 2, False)), {"a": 1})  # no error, nothing recorded

    class Recording:
        def __init__(self) -> None:
            self.attributes: dict[str, Any] = {}

        def set_attributes(self, attributes: dict[str, Any]) -> None:
            self.attributes.update(attributes)

    span = Recording()
    _sdkspan.set_clean(span, {"a": 1, "b": ("x",)})
    assert span.attributes == {"a": 1, "b": ("x",)}


def test_without_the_probe_everything_goes_the_public_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """What happens on an SDK whose internals the probe does not recognise."""
    monkeypatch.setattr(_sdkspan, "_SPAN_CLASS", None)
    monkeypatch.setattr(_sdkspan, "_MAP_CLASS", None)
    tracer, _ = _tracer()
    span = tracer.start_span("call")
    seen: list[object] = []
    original = span.set_attributes
    span.set_attributes = lambda attributes: seen.append(dict(attributes)) or original(attributes)  # type: ignore[method-assign]
    _sdkspan.set_clean(span, {"a": "x"})
    assert seen == [{"a": "x"}]
    assert dict(span.attributes or {}) == {"a": "x"}


def test_the_probe_refuses_an_sdk_that_keeps_attributes_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the SDK's attribute map stopped being the class the direct way writes into, the probe says so."""
    import opentelemetry.sdk.trace as sdk_trace

    class Other(dict):  # type: ignore[type-arg]
        pass

    original_init = sdk_trace.Span.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._attributes = Other(self._attributes)

    monkeypatch.setattr(sdk_trace.Span, "__init__", init)
    assert _sdkspan._probe() == (None, None)


# Which samplers get the conventions' attributes at a span's start -----------------------------------------------


def test_the_sdk_samplers_are_known_not_to_read_attributes() -> None:
    from opentelemetry.sdk.trace import sampling

    blind = [
        sampling.ALWAYS_ON,
        sampling.ALWAYS_OFF,
        sampling.DEFAULT_ON,
        sampling.DEFAULT_OFF,
        sampling.TraceIdRatioBased(0.25),
        sampling.ParentBasedTraceIdRatio(0.25),
        sampling.ParentBased(sampling.TraceIdRatioBased(0.5), remote_parent_sampled=sampling.ALWAYS_OFF),
    ]
    if hasattr(sampling, "AlwaysRecordSampler"):
        blind.append(sampling.AlwaysRecordSampler(sampling.ALWAYS_OFF))
    for sampler in blind:
        assert not _sdkspan.sampler_reads_attributes(TracerProvider(sampler=sampler).get_tracer("t")), sampler

    class ByModel(sampling.Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> sampling.SamplingResult:
            return sampling.SamplingResult(sampling.Decision.RECORD_AND_SAMPLE)

        def get_description(self) -> str:
            return "ByModel"

    class Tweaked(sampling.ParentBased):  # a subclass may read them
        pass

    for sampler in (ByModel(), Tweaked(sampling.ALWAYS_ON), sampling.ParentBased(ByModel())):
        assert _sdkspan.sampler_reads_attributes(TracerProvider(sampler=sampler).get_tracer("t")), sampler


def test_a_tracer_whose_sampler_is_unknown_gets_them_at_the_start() -> None:
    from opentelemetry.trace import NoOpTracer, ProxyTracer

    assert _sdkspan.sampler_reads_attributes(NoOpTracer())
    proxy = ProxyTracer("t")
    assert _sdkspan.sampler_reads_attributes(proxy)  # no real tracer behind it yet
    proxy._real_tracer = TracerProvider().get_tracer("t")  # what the proxy holds once the global provider is set
    assert not _sdkspan.sampler_reads_attributes(proxy)


def test_the_probe_takes_the_direct_way_whatever_limits_the_environment_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """With OTEL_* limits set, the probe's own spans would go the public way and prove nothing: it sets its own."""
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "3")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "1")
    seen: list[int] = []
    original = _sdkspan.set_clean

    def counting(span: Any, attributes: Any) -> None:
        before = len(span._attributes._dict)
        original(span, attributes)
        seen.append(len(span._attributes._dict) - before)

    monkeypatch.setattr(_sdkspan, "set_clean", counting)
    assert _sdkspan._probe() != (None, None)
    assert seen and seen[0] == 4  # the probe's four new attributes went in, none cut or dropped
