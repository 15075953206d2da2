"""Receiver hot path: OTLP bytes → usage records, as a ratio against plain protobuf parsing of the same bytes.

Protobuf parsing is the floor any receiver pays; the ratio tells how much our normalization adds on top of it,
independent of how fast this machine is today.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from tokentrail.processor.normalize.otlp import parse_export_request
from tokentrail.processor.normalize.reader import normalize_request


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, list):
        return KeyValue(
            key=key, value=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=v) for v in value]))
        )
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


_CALLS = itertools.count()  # response ids are unique across requests, as real ones are (else all but one dedupe)


def build_request(n_spans: int, genai_share: float = 1.0) -> bytes:
    """A realistic batch: GenAI spans with ~20 attributes, optionally mixed with plain HTTP spans. Every call has
    its own response id, across requests too."""
    now = time.time_ns()
    spans = []
    for i in range(n_spans):
        if (i % 100) < genai_share * 100:
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "gen_ai.response.id": f"chatcmpl-{next(_CALLS):012d}",
                "gen_ai.usage.input_tokens": 1000 + i % 977,
                "gen_ai.usage.output_tokens": 200 + i % 131,
                "gen_ai.usage.cache_read.input_tokens": 128,
                "gen_ai.usage.reasoning.output_tokens": 0,
                "gen_ai.request.stream": bool(i % 2),
                "server.address": "api.openai.com",
                "server.port": 443,
                "user.id": f"cust_{i % 5000}",
                "tokentrail.tags": ["plan:pro", f"feature:f{i % 7}"],
                "tokentrail.credential.type": "system" if i % 3 else "byok",
                "tokentrail.credential.id": "a1b2c3d4e5f60718",
                "tokentrail.api": "chat.completions",
                "http.request.method": "POST",
                "url.path": "/v1/chat/completions",
                "gen_ai.response.finish_reasons": ["stop"],
            }
        else:
            attrs = {"http.request.method": "GET", "url.path": "/health", "http.response.status_code": 200}
        spans.append(
            Span(
                trace_id=os.urandom(16),
                span_id=os.urandom(8),
                name="chat gpt-4o-mini",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=now,
                end_time_unix_nano=now + 1_500_000_000,
                attributes=[_kv(k, v) for k, v in attrs.items()],
            )
        )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[_kv("service.name", "bench")]),
                scope_spans=[ScopeSpans(spans=spans)],
            )
        ]
    )
    return request.SerializeToString()


def _best(fn: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(n_spans: int = 5_000, batch: int = 500, repeat: int = 5) -> dict[str, float]:
    payloads = [build_request(batch) for _ in range(n_spans // batch)]

    def parse_only() -> None:
        for p in payloads:
            ExportTraceServiceRequest.FromString(p)

    def parse_and_normalize() -> None:  # what the receiver runs
        for p in payloads:
            normalize_request(parse_export_request(p)[0])

    base = _best(parse_only, repeat)
    ours = _best(parse_and_normalize, repeat)
    return {
        "spans": float(n_spans),
        "protobuf_parse_spans_per_s": n_spans / base,
        "normalize_spans_per_s": n_spans / ours,
        "ratio_vs_protobuf_parse": ours / base,
    }
