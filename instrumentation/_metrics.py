"""The released GenAI client metrics, recorded when one of our call spans ends.

``gen_ai.client.token.usage`` (a histogram per token type: ``input``, ``output``) and
``gen_ai.client.operation.duration`` (seconds), with the attributes and bucket advice of the OpenTelemetry GenAI
semantic conventions, so dashboards built for any GenAI instrumentation work on ours. Calls another
instrumentation traces (whose span we enrich) are left to that instrumentation's own metrics: recording them here
too would count them twice.

Recording runs at the end of every call, so its attributes are built once per endpoint and (request model, response
model, error type), not per call (``MetricAttributes``), and a measurement that would be dropped anyway is not
prepared at all: the API's no-op instruments, and the global provider's proxy instruments until an SDK meter provider
is set (they then forward to the real instruments, which we call directly).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider, NoOpHistogram
from opentelemetry.util.types import AttributeValue

from . import semconv
from ._endpoints import Endpoint
from ._usage import Usage
from .version import __version__

try:  # The API's proxy instrument (global provider not set yet): it drops measurements until one is.
    from opentelemetry.metrics._internal.instrument import _ProxyHistogram as _PROXY_HISTOGRAM
except ImportError:  # pragma: no cover - a future API without it: every instrument is then recorded on
    _PROXY_HISTOGRAM = None

log = logging.getLogger(__name__)

METER_NAME: Final = "tokentrail.instrumentation"
# The semantic conventions' advised bucket boundaries.
DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

# The span attributes that metrics carry (low cardinality: no ids, no users): see MetricAttributes.
METRIC_ATTRIBUTES: Final = (
    semconv.GEN_AI_OPERATION_NAME,
    semconv.GEN_AI_PROVIDER_NAME,
    semconv.GEN_AI_REQUEST_MODEL,
    semconv.SERVER_ADDRESS,
    semconv.SERVER_PORT,
)

# How many (request model, response model, error type) attribute sets one endpoint remembers before starting again.
MAX_ATTRIBUTE_SETS: Final = 256

# (duration attributes, input-token attributes, output-token attributes)
AttributeSets = tuple[dict[str, AttributeValue], dict[str, AttributeValue], dict[str, AttributeValue]]


class MetricAttributes:
    """The metric attribute sets of one endpoint, each built once and then shared by every call that has it.

    The SDK copies what it keeps of a measurement's attributes and never changes the mapping it is given, so one
    dictionary per attribute set serves every measurement. Thread-safe as a cache: the worst race builds a set twice.
    """

    __slots__ = ("_endpoint", "_known")

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._known: dict[tuple[object, object, object], AttributeSets] = {}

    def sets(self, request_model: str | None, response_model: str | None, error_type: str | None) -> AttributeSets:
        """The attributes of a call's duration and of its input and output token counts."""
        key = (request_model, response_model, error_type)
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = self._build(request_model, response_model, error_type)
        return found

    def _build(self, request_model: str | None, response_model: str | None, error_type: str | None) -> AttributeSets:
        if len(self._known) >= MAX_ATTRIBUTE_SETS:
            self._known.clear()
        endpoint = self._endpoint
        # METRIC_ATTRIBUTES, in their order, as the span has them; then the response's.
        attributes: dict[str, AttributeValue] = {
            semconv.GEN_AI_OPERATION_NAME: endpoint.operation,
            semconv.GEN_AI_PROVIDER_NAME: endpoint.provider,
        }
        if request_model:
            attributes[semconv.GEN_AI_REQUEST_MODEL] = request_model
        attributes[semconv.SERVER_ADDRESS] = endpoint.server_address
        attributes[semconv.SERVER_PORT] = endpoint.server_port
        if response_model is not None:
            attributes[semconv.GEN_AI_RESPONSE_MODEL] = response_model
        if error_type is not None:
            attributes[semconv.ERROR_TYPE] = error_type
        return (
            attributes,
            {**attributes, semconv.GEN_AI_TOKEN_TYPE: "input"},
            {**attributes, semconv.GEN_AI_TOKEN_TYPE: "output"},
        )


def _target(instrument: Any) -> Any:
    """What a measurement on ``instrument`` reaches: the instrument itself, the real one behind an API proxy, or None
    when it is dropped (a no-op instrument, or a proxy whose global meter provider has not been set yet)."""
    if _PROXY_HISTOGRAM is not None and isinstance(instrument, _PROXY_HISTOGRAM):
        real = getattr(instrument, "_real_instrument", instrument)
        return real if real is None or real is instrument else _target(real)
    if isinstance(instrument, NoOpHistogram):
        return None
    return instrument


def _is_proxy(instrument: object) -> bool:
    return (
        _PROXY_HISTOGRAM is not None
        and isinstance(instrument, _PROXY_HISTOGRAM)
        and hasattr(instrument, "_real_instrument")
    )


class Metrics:
    """The two instruments, created once per ``instrument()`` from the given or the global meter provider."""

    __slots__ = ("_duration", "_tokens", "_proxies")

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = metrics.get_meter(METER_NAME, __version__, meter_provider=meter_provider)
        duration = meter.create_histogram(
            semconv.METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        tokens = meter.create_histogram(
            semconv.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Measures number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )
        # Where measurements go (None: nowhere), and while the global provider is not set, the proxies to watch.
        self._duration: Any = None
        self._tokens: Any = None
        self._proxies: tuple[Any, Any] | None = None
        if _is_proxy(duration) and _is_proxy(tokens):
            self._proxies = (duration, tokens)
            self._resolve()
        else:
            self._duration, self._tokens = _target(duration), _target(tokens)

    def _resolve(self) -> None:
        """Once the global meter provider is set, measurements go straight to the real instruments behind the
        proxies, for good (it can be set only once)."""
        proxies = self._proxies
        if proxies is None:
            return
        duration, tokens = proxies[0]._real_instrument, proxies[1]._real_instrument
        if duration is None or tokens is None:
            return  # not set yet: the proxies would drop the measurements
        self._duration, self._tokens = _target(duration), _target(tokens)
        self._proxies = None

    @property
    def live(self) -> bool:
        """Whether a measurement would be recorded now: not with no-op instruments, nor while the global meter
        provider they come from is not set (its proxy instruments drop measurements until then)."""
        proxies = self._proxies
        if proxies is not None:
            if proxies[0]._real_instrument is None or proxies[1]._real_instrument is None:
                return False
            self._resolve()
        return self._duration is not None or self._tokens is not None

    def record(
        self,
        attributes: MetricAttributes,
        request_model: str | None,
        response_model: str | None,
        seconds: float,
        usage: Usage | None,
        error_type: str | None,
    ) -> None:
        """One finished call to an endpoint (``attributes`` is that endpoint's), its duration and token usage.

        Nothing is prepared for measurements nobody would receive (see ``live``, which callers may ask first).
        """
        if not self.live:
            return
        duration, tokens = self._duration, self._tokens
        on_duration, on_input, on_output = attributes.sets(request_model, response_model, error_type)
        if duration is not None:
            duration.record(seconds, on_duration)
        if usage is None or tokens is None:
            return
        if usage.input_tokens is not None:
            tokens.record(usage.input_tokens, on_input)
        if usage.output_tokens is not None:
            tokens.record(usage.output_tokens, on_output)
