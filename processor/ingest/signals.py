"""OTLP metrics and logs: acknowledged and counted, never stored.

``opentelemetry-instrument`` exports traces, metrics and logs to one endpoint by default (``OTEL_METRICS_EXPORTER``
and ``OTEL_LOGS_EXPORTER`` default to ``otlp``). TokenTrail bills from spans only, but answering the other two
UNIMPLEMENTED / 404 made every exporter log an error at each interval. So both transports accept them with the
traces' token, size limit and status codes, count what arrived (metric data points, log records: ``GET /metrics``
and ``tokentrail status``) and drop it. Nothing of their contents is stored or logged: log records may carry prompts
and completions (GenAI events).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from tokentrail.processor.ingest.metrics import Metrics
from tokentrail.processor.normalize.otlp import InvalidRequest

__all__ = ["LOGS", "METRICS", "SIGNALS", "Signal"]

# OTLP/JSON writes trace and span ids as hex, which protobuf's JSON mapping would read as base64: they are never read
# here, so they are removed before parsing rather than converted (a malformed id must not refuse a request).
_ID_KEYS: Final = frozenset({"traceId", "spanId", "trace_id", "span_id"})


@dataclass(frozen=True, slots=True)
class Signal:
    """One OTLP signal TokenTrail acknowledges without storing: where it arrives and how its items are counted."""

    name: str
    grpc_service: str
    http_path: str
    request_type: type[Message]
    response_type: type[Message]
    counter: str  # the ``Metrics`` counter its items add to
    count: Callable[[Any], int]

    def acknowledge(self, data: bytes, metrics: Metrics) -> Message:
        """A serialized request (gRPC, OTLP/HTTP protobuf): counted, answered. Raises ``InvalidRequest``."""
        try:
            request = self.request_type.FromString(data)
        except (DecodeError, ValueError, TypeError) as exc:
            raise self._invalid(metrics, f"malformed {self.request_type.__name__}: {exc}") from None
        return self._answer(request, metrics)

    def acknowledge_json(self, body: bytes, metrics: Metrics) -> Message:
        """An OTLP/JSON request: counted, answered. Raises ``InvalidRequest``."""
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise self._invalid(metrics, f"malformed OTLP/JSON: {str(exc)[:300]}") from None
        if not isinstance(document, dict):
            raise self._invalid(metrics, "malformed OTLP/JSON: the body must be a JSON object")
        _drop_ids(document)
        try:
            request = json_format.ParseDict(document, self.request_type(), ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            raise self._invalid(metrics, f"malformed OTLP/JSON: {str(exc)[:300]}") from None
        return self._answer(request, metrics)

    def _answer(self, request: Message, metrics: Metrics) -> Message:
        metrics.add(**{self.counter: self.count(request)}, requests_ok=1)
        return self.response_type()

    def _invalid(self, metrics: Metrics, message: str) -> InvalidRequest:
        metrics.add(requests_invalid=1)
        return InvalidRequest(message)


def _metric_points(request: Any) -> int:
    points = 0
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")  # gauge, sum, histogram, exponential_histogram, summary
                if kind is not None:
                    points += len(getattr(metric, kind).data_points)
    return points


def _log_records(request: Any) -> int:
    return sum(len(scope.log_records) for resource in request.resource_logs for scope in resource.scope_logs)


def _drop_ids(document: dict[str, Any]) -> None:
    """Removes every trace/span id member, at any depth (log records, exemplars); iterative, for deep documents."""
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in _ID_KEYS.intersection(node):
                del node[key]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


METRICS: Final = Signal(
    name="metrics",
    grpc_service="opentelemetry.proto.collector.metrics.v1.MetricsService",
    http_path="/v1/metrics",
    request_type=ExportMetricsServiceRequest,
    response_type=ExportMetricsServiceResponse,
    counter="metric_points_ignored",
    count=_metric_points,
)
LOGS: Final = Signal(
    name="logs",
    grpc_service="opentelemetry.proto.collector.logs.v1.LogsService",
    http_path="/v1/logs",
    request_type=ExportLogsServiceRequest,
    response_type=ExportLogsServiceResponse,
    counter="log_records_ignored",
    count=_log_records,
)
SIGNALS: Final = {signal.http_path: signal for signal in (METRICS, LOGS)}
