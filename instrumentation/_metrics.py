"""The released GenAI client metrics, recorded when one of our call spans ends.

``gen_ai.client.token.usage`` (a histogram per token type: ``input``, ``output``) and
``gen_ai.client.operation.duration`` (seconds), with the attributes and bucket advice of the OpenTelemetry GenAI
semantic conventions, so dashboards built for any GenAI instrumentation work on ours. Calls another
instrumentation traces (whose span we enrich) are left to that instrumentation's own metrics: recording them here
too would count them twice.
"""

from __future__ import annotations

import logging
from typing import Final

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider
from opentelemetry.util.types import AttributeValue

from . import semconv
from ._usage import Usage
from .version import __version__

log = logging.getLogger(__name__)

METER_NAME: Final = "tokentrail.instrumentation"
# The semantic conventions' advised bucket boundaries.
DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

# The span attributes that metrics carry (low cardinality: no ids, no users).
METRIC_ATTRIBUTES: Final = (
    semconv.GEN_AI_OPERATION_NAME,
    semconv.GEN_AI_PROVIDER_NAME,
    semconv.GEN_AI_REQUEST_MODEL,
    semconv.SERVER_ADDRESS,
    semconv.SERVER_PORT,
)


class Metrics:
    """The two instruments, created once per ``instrument()`` from the given or the global meter provider."""

    __slots__ = ("_duration", "_tokens")

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = metrics.get_meter(METER_NAME, __version__, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            semconv.METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self._tokens = meter.create_histogram(
            semconv.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Measures number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )

    def record(
        self,
        request: dict[str, AttributeValue],
        response_model: str | None,
        seconds: float,
        usage: Usage | None,
        error_type: str | None,
    ) -> None:
        """One finished call. ``request`` holds (at least) the ``METRIC_ATTRIBUTES`` of its span."""
        attributes: dict[str, AttributeValue] = {}
        for name in METRIC_ATTRIBUTES:  # a loop, not a comprehension: one function call less on every call
            if name in request:
                attributes[name] = request[name]
        if response_model is not None:
            attributes[semconv.GEN_AI_RESPONSE_MODEL] = response_model
        if error_type is not None:
            attributes[semconv.ERROR_TYPE] = error_type
        self._duration.record(seconds, attributes)
        if usage is None:
            return
        if usage.input_tokens is not None:
            self._tokens.record(usage.input_tokens, {**attributes, semconv.GEN_AI_TOKEN_TYPE: "input"})
        if usage.output_tokens is not None:
            self._tokens.record(usage.output_tokens, {**attributes, semconv.GEN_AI_TOKEN_TYPE: "output"})
