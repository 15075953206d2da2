"""The released GenAI client metrics, recorded when one of our call spans ends.

``gen_ai.client.token.usage`` (a histogram per token type: ``input``, ``output``) and
``gen_ai.client.operation.duration`` (seconds), with the attributes and bucket advice of the OpenTelemetry GenAI
semantic conventions, so dashboards built for any GenAI instrumentation work on ours. Calls another
instrumentation traces (whose span we enrich) are left to that instrumentation's own metrics: recording them here
too would count them twice.

Recording runs at the end of every call, so its attributes are built once per endpoint and (request model, response
model, error type), not per call (``MetricAttributes``). The instruments come from the given or the global meter
provider through the public API: before the application sets a global provider they are the API's proxies, which
drop measurements until it does and forward them after.
"""

from __future__ import annotations

import logging
from typing import Final

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider
from opentelemetry.util.types import AttributeValue

from . import semconv
from ._endpoints import Endpoint
from ._usage import Usage
from .version import __version__

log = logging.getLogger(__name__)

METER_NAME: Final = semconv.INSTRUMENTATION_SCOPE
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


class Metrics:
    """The two instruments, created once per ``instrument()`` from the given or the global meter provider."""

    __slots__ = ("_duration", "_tokens")

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
        self._duration = duration
        self._tokens = tokens

    def record(
        self,
        attributes: MetricAttributes,
        request_model: str | None,
        response_model: str | None,
        seconds: float,
        usage: Usage | None,
        error_type: str | None,
    ) -> None:
        """One finished call to an endpoint (``attributes`` is that endpoint's), its duration and token usage."""
        on_duration, on_input, on_output = attributes.sets(request_model, response_model, error_type)
        self._duration.record(seconds, on_duration)
        if usage is None:
            return
        tokens = self._tokens
        if usage.input_tokens is not None:
            tokens.record(usage.input_tokens, on_input)
        if usage.output_tokens is not None:
            tokens.record(usage.output_tokens, on_output)
