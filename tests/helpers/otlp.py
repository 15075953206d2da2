"""Building OTLP export requests by hand, for tests that need exact control over what a span carries."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

# 2025-06-01T12:00:00Z
T0_NS = 1_748_779_200_000_000_000
_ids = itertools.count(1)


def any_value(value: Any) -> AnyValue:
    """A Python value as an OTLP ``AnyValue``: None is a value with nothing set, a dict a kvlist."""
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=key_values(value)))
    raise TypeError(f"unsupported attribute value {value!r}")


def key_values(attributes: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def genai_attributes(changes: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """A span as our instrumentation writes it for an OpenAI chat call. ``changes`` (dotted keys) or keyword
    overrides (``__`` for ``.``) replace values; ``None`` removes a key."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.usage.reasoning.output_tokens": 0,
        "user.id": "cust_42",
        "tokentrail.tags": ["plan:pro", "feature:chat"],
        "tokentrail.credential.type": "system",
        "tokentrail.credential.id": "fp_abc123",
        "tokentrail.api": "chat.completions",
        "server.address": "api.openai.com",
    }
    merged = {**(changes or {}), **{k.replace("__", "."): v for k, v in overrides.items()}}
    for key, value in merged.items():
        if value is None:
            attrs.pop(key, None)
        else:
            attrs[key] = value
    return attrs


def make_span(
    attributes: Mapping[str, Any] | None = None,
    *,
    name: str = "chat gpt-4o",
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    start_ns: int = T0_NS,
    duration_ns: int = 1_500_000_000,
    status_code: Status.StatusCode.ValueType = Status.STATUS_CODE_UNSET,
    parent_span_id: bytes = b"",
) -> Span:
    n = next(_ids)
    return Span(
        trace_id=trace_id if trace_id is not None else n.to_bytes(16, "big"),
        span_id=span_id if span_id is not None else (n | 1 << 60).to_bytes(8, "big"),
        parent_span_id=parent_span_id,
        name=name,
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + duration_ns,
        attributes=key_values(attributes or {}),
        status=Status(code=status_code),
    )


def random_span(changes: Mapping[str, Any] | None = None) -> Span:
    """A GenAI span with random ids, so records never collide across tests sharing a dedupe window."""
    return make_span(genai_attributes(changes), trace_id=os.urandom(16), span_id=os.urandom(8))


def make_request(
    spans: Iterable[Span],
    resource: Mapping[str, Any] | None = None,
) -> ExportTraceServiceRequest:
    resource = {"service.name": "checkout", "deployment.environment.name": "prod"} if resource is None else resource
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=key_values(resource)),
                scope_spans=[ScopeSpans(spans=list(spans))],
            )
        ]
    )


def export(port: int, request: ExportTraceServiceRequest, timeout: float = 10.0) -> ExportTraceServiceResponse:
    """One raw OTLP/gRPC Export call, so a test sees the exact status code and partial_success."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        return stub.Export(request, timeout=timeout)


def export_raw(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """Sends arbitrary bytes as an Export request body (for malformed-protobuf tests)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=None,
        )
        return call(payload, timeout=timeout)
