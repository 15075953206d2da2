"""Setting attributes our own code built on an OpenTelemetry SDK span, without the SDK cleaning each value again.

The SDK cleans every attribute value it is given, one by one: type tests against ``collections.abc`` classes,
recursion into sequences, lists turned into tuples, strings cut to the span's length limit. That is right for values
from anywhere, and it is most of what a GenAI span costs: for the 15-20 attributes of an LLM call span it costs more
than creating and ending the span itself. The attributes this package builds are clean by construction (keys are
our constants; values are ``str``, ``int``, ``float``, ``bool`` or tuples of ``str``), so cleaning them changes
nothing but the time it takes.

``set_clean(span, attributes)`` therefore has exactly the effect of ``span.set_attributes(attributes)``, and on the
SDK's own span class writes the values into the span's attribute map directly, under the SDK's own locks, with the
same order, limits and ended-span rule. It takes that way only when it can prove the result the same:

* once per process, a probe compares both ways on a throwaway span of the installed SDK (order, values, dropped
  count); if this SDK's internals are not what this module expects, every call goes the public way;
* per call: the span is of the probed class with its attribute map of the probed class, not ended, with no value
  length limit, and the attribute count limit leaves room for every new key.

Anything else (another SDK, a non-recording span, a custom span class, a limit in the way) goes to
``span.set_attributes``.

The attributes a span STARTS with cost the most: ``start_span`` cleans them too (5 attributes: ~40k instructions,
more than half an empty span). The conventions ask for the sampling-relevant ones at creation "so that samplers may
use them": ``sampler_reads_attributes(tracer)`` says whether this tracer's sampler may. The SDK's own samplers
(always on/off, trace-id ratio, parent-based and always-record compositions of them, by exact type) decide without
looking at attributes, so with them the attributes are set with the others instead; any other sampler (a custom
one, or one this module cannot see) gets them at creation as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)



# The SDK span class and attribute-map class the direct way writes into; None until the probe accepts this SDK.
_SPAN_CLASS: type | None = None
_MAP_CLASS: type | None = None


def set_clean(span: Any, attributes: Mapping[str, AttributeValue]) -> None:
    """``span.set_attributes(attributes)`` for attributes this package built, which must be clean: non-empty str
    keys; values of type ``str``, ``int``, ``float``, ``bool``, or tuples of ``str`` (see the module docstring).

    It runs for every LLM call, where each Python step costs, so nothing is checked per value: the types are this
    package's promise (tests hold every attribute our spans carry to it), and a span with a value length limit,
    the one thing that could change a clean value, goes the public way.
    """
    if type(span) is _SPAN_CLASS:
        bounded = span._attributes
        if type(bounded) is _MAP_CLASS and bounded.max_value_len is None and not bounded._immutable:
            with span._lock:
                if span._end_time is None:  # else the public way, which warns about it
                    with bounded._lock:
                        stored = bounded._dict
                        maxlen = bounded.maxlen
                        if stored.keys().isdisjoint(attributes):
                            if maxlen is None or len(stored) + len(attributes) <= maxlen:
                                stored.update(attributes)
                                return
                        elif maxlen is None or len(stored.keys() | attributes.keys()) <= maxlen:
                            # A key set again moves to the end, as the SDK's delete-then-insert does.
                            for key, value in attributes.items():
                                stored.pop(key, None)
                                stored[key] = value
                            return
    span.set_attributes(attributes)


def _probe() -> tuple[type | None, type | None]:
    """The SDK span class and attribute-map class ``set_clean`` may write into, or ``(None, None)`` when this SDK
    does not keep attributes the way this module expects (then every call goes the public way)."""
    global _SPAN_CLASS, _MAP_CLASS
    try:
        from opentelemetry.attributes import BoundedAttributes
        from opentelemetry.metrics import NoOpMeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        # A provider of its own that leaves no trace: no exit hook, no SDK self-metrics, and limits of its own (the
        # environment's could send the probe the public way, which would then be compared with itself).
        settings: dict[str, Any] = {
            "resource": Resource.get_empty(),
            "sampler": ALWAYS_ON,
            "shutdown_on_exit": False,
            "span_limits": SpanLimits(max_span_attributes=128, max_span_attribute_length=SpanLimits.UNSET),
        }
        try:
            provider = TracerProvider(**settings, meter_provider=NoOpMeterProvider())
        except TypeError:  # an SDK without self-metrics
            provider = TracerProvider(**settings)
        tracer = provider.get_tracer("tokentrail.probe")
        start: dict[str, AttributeValue] = {"a": "x", "b": 1}
        later: dict[str, AttributeValue] = {"c": True, "d": 2.5, "e": ("p", "q"), "f": 3}
        again: dict[str, AttributeValue] = {"a": "y", "g": "z"}
        public = tracer.start_span("probe", attributes=start)
        public.set_attributes(later)
        public.set_attributes(again)
        direct = tracer.start_span("probe", attributes=start)
        candidate = (type(direct), type(getattr(direct, "_attributes", None)))
        if candidate[1] is not BoundedAttributes:
            return None, None
        # The direct way, tried on the probe span only: set_clean reads the module's classes.
        previous = _SPAN_CLASS, _MAP_CLASS
        _SPAN_CLASS, _MAP_CLASS = candidate
        try:
            set_clean(direct, later)
            set_clean(direct, again)
        finally:
            _SPAN_CLASS, _MAP_CLASS = previous
        same = (
            list(direct.attributes.items()) == list(public.attributes.items())  # type: ignore[union-attr]
            and direct._attributes.dropped == public._attributes.dropped  # type: ignore[attr-defined]
        )
        direct.end()
        public.end()
        return candidate if same else (None, None)
    except Exception:
        log.debug("TokenTrail: this OpenTelemetry SDK's spans take attributes the public way only", exc_info=True)
        return None, None


_SPAN_CLASS, _MAP_CLASS = _probe()


def _sampler_kinds() -> tuple[frozenset[type], frozenset[type], type | None]:
    """The SDK's attribute-blind sampler classes: those that decide alone, those that delegate by parent, and the
    always-record wrapper. Looked up by name: not every SDK version has every one."""
    try:
        from opentelemetry.sdk.trace import sampling
    except ImportError:
        return frozenset(), frozenset(), None

    def classes(*names: str) -> frozenset[type]:
        return frozenset(kind for name in names if isinstance(kind := getattr(sampling, name, None), type))

    return (
        classes("StaticSampler", "_AlwaysOn", "_AlwaysOff", "TraceIdRatioBased"),
        classes("ParentBased", "ParentBasedTraceIdRatio", "_ParentBasedAlwaysOn", "_ParentBasedAlwaysOff"),
        getattr(sampling, "AlwaysRecordSampler", None),
    )


_DECIDING, _DELEGATING, _ALWAYS_RECORD = _sampler_kinds()
try:
    from opentelemetry.sdk.trace import Tracer as _SDK_TRACER
except ImportError:  # pragma: no cover - the SDK is a dependency
    _SDK_TRACER = None  # type: ignore[assignment,misc]
_DELEGATES = (
    "_root", "_remote_parent_sampled", "_remote_parent_not_sampled", "_local_parent_sampled", "_local_parent_not_sampled",
)  # fmt: skip


def _blind(sampler: object) -> bool:
    """Whether ``sampler`` provably decides without reading attributes: the SDK's own classes, exactly (a subclass
    may read them), all the way down."""
    kind = type(sampler)
    if kind in _DECIDING:
        return True
    if kind in _DELEGATING:
        return all(_blind(getattr(sampler, name, None)) for name in _DELEGATES)
    if kind is _ALWAYS_RECORD:
        return _blind(getattr(sampler, "_root", None))
    return False


# Answers per sampler, by id (a sampler need not be hashable), with the sampler kept so that its id is never reused
# for another. A process has one or two.
_READS: dict[int, tuple[object, bool]] = {}


def sampler_reads_attributes(tracer: Any) -> bool:
    """Whether the sampler behind ``tracer`` may read a span's attributes when it starts (when unknown: yes).

    Only the SDK's tracer is asked for its sampler (a proxy tracer of the global provider stands for the SDK tracer
    it holds once there is one); any other tracer gets the attributes at the start."""
    if _SDK_TRACER is None:
        return True
    if type(tracer) is not _SDK_TRACER:
        tracer = getattr(tracer, "_real_tracer", None) if type(tracer).__name__ == "ProxyTracer" else None
        if type(tracer) is not _SDK_TRACER:
            return True
    sampler = tracer.sampler
    known = _READS.get(id(sampler))
    if known is None or known[0] is not sampler:
        if len(_READS) >= 16:
            _READS.clear()
        known = _READS[id(sampler)] = (sampler, not _blind(sampler))
    return known[1]


def fast_way_available() -> bool:
    """Whether this SDK's spans take our attributes the direct way (for tests and benchmarks)."""
    return _SPAN_CLASS is not None
