"""The fast normalizer (plans per key set, decoded attribute encodings, row tuples) gives exactly what the
straightforward one gave (``reference_normalize.py``: one ``UsageRecord`` per span from ``AnyValue`` messages): the
same records field by field, the same rejections, warnings and counts, for realistic spans of every dialect bent in
every way a property test can think of, and for arbitrary attribute maps."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from tokentrail.processor.normalize.otlp import as_fast_request
from tokentrail.processor.normalize.reader import DIALECTS, MAX_TOKENS, normalize_bytes, normalize_request

from tests.helpers import reference_normalize
from tests.helpers.otlp import T0_NS, any_value, genai_attributes, make_request


def assert_same(request: ExportTraceServiceRequest) -> None:
    fast = as_fast_request(request)
    before = fast.SerializeToString()
    new = normalize_request(fast)
    assert fast.SerializeToString() == before, "normalizing must not change the request (a map's [] inserts keys)"
    old = reference_normalize.normalize_request(request)
    assert (new.received, new.skipped, new.rejected) == (old.received, old.skipped, old.rejected)
    assert new.errors == old.errors
    assert new.warnings == old.warnings
    assert new.dropped_fields == old.dropped_fields
    new_records, old_records = new.records, old.records
    assert len(new_records) == len(old_records)
    for n, o in zip(new_records, old_records):
        assert n == o, {f: (getattr(n, f), getattr(o, f)) for f in n.__slots__ if getattr(n, f) != getattr(o, f)}  # type: ignore[attr-defined]
    assert_scanned_same(request.SerializeToString(), new)


def assert_scanned_same(data: bytes, expected: Any) -> None:
    """The receiver's C scanner (``normalize_bytes``) gives what the protobuf path gives, to the last field."""
    scanned = normalize_bytes(data)
    assert scanned is not None, "a request protobuf reads without complaint must not need the fallback"
    assert (scanned.received, scanned.skipped, scanned.rejected) == (expected.received, expected.skipped, expected.rejected)
    assert scanned.errors == expected.errors
    assert scanned.warnings == expected.warnings
    assert scanned.dropped_fields == expected.dropped_fields
    assert scanned.rows == expected.rows


def span(attrs: dict[str, Any], name: str = "chat gpt-4o", *, start: int = T0_NS, duration: int = 1_500_000_000,
         error: bool = False, parent: bytes = b"", duplicate_keys: list[tuple[str, Any]] | None = None) -> Span:
    kvs = [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]
    kvs += [KeyValue(key=k, value=any_value(v)) for k, v in duplicate_keys or ()]  # the last one wins
    return Span(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        parent_span_id=parent,
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=max(0, start + duration),
        attributes=kvs,
        status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_UNSET),
    )


# -- realistic spans of every dialect, then bent -----------------------------------------------------------------

TEMPLATES: dict[str, tuple[str, dict[str, Any]]] = {
    "tokentrail": ("chat gpt-4o", genai_attributes()),
    "otel": ("chat gpt-4o-mini", {"gen_ai.system": "openai", "gen_ai.operation.name": "chat",
                                  "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.prompt_tokens": 100,
                                  "gen_ai.usage.completion_tokens": 20, "gen_ai.response.id": "chatcmpl-1"}),
    "anthropic-sdk": ("anthropic.messages.create", {
        "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.response.model": "claude-sonnet-4-5-20250929", "gen_ai.usage.input_tokens": 5000,
        "gen_ai.usage.output_tokens": 300, "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.usage.cache_write.input_tokens": 2000, "anthropic.usage.compaction.input_tokens": 10,
        "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": 500, "gen_ai.response.id": "msg_1"}),
    "vercel": ("ai.generateText.doGenerate", {
        "ai.operationId": "ai.generateText.doGenerate", "ai.model.provider": "anthropic.messages",
        "ai.model.id": "claude-haiku-4-5", "ai.usage.inputTokens": 50, "ai.usage.outputTokens": 7,
        "ai.usage.totalTokens": 57, "ai.response.id": "msg_v1",
        "ai.response.providerMetadata": json.dumps({"anthropic": {"cacheCreationInputTokens": 3},
                                                   "gateway": {"cost": "0.0001"}}),
        "ai.telemetry.metadata.userId": "u-7", "ai.telemetry.metadata.tags": ["a", "b"],
        "ai.telemetry.metadata.team": "growth"}),
    "vercel-embed": ("ai.embedMany.doEmbed", {
        "ai.operationId": "ai.embedMany.doEmbed", "ai.model.provider": "openai.embedding",
        "ai.model.id": "text-embedding-3-small", "ai.usage.tokens": 12}),
    "openinference": ("ChatCompletion", {
        "openinference.span.kind": "LLM", "llm.provider": "openai", "llm.model_name": "gpt-4o",
        "llm.token_count.prompt": 120, "llm.token_count.completion": 30, "llm.token_count.total": 150,
        "llm.token_count.prompt_details.cache_read": 100, "llm.token_count.prompt_details.audio": 20,
        "llm.cost.total": 0.0012, "output.value": '{"id": "chatcmpl-oi", "object": "chat.completion"}',
        "llm.invocation_parameters": '{"stream": true}', "user.id": "u1", "tag.tags": ["x"],
        "metadata": json.dumps({"user_id": "u2", "tags": ["t"], "team": 3})}),
    "pydantic-ai": ("chat gpt-4o", {
        "gen_ai.system": "openai", "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 40, "gen_ai.usage.output_tokens": 9, "logfire.msg": "chat gpt-4o",
        "gen_ai.usage.details.reasoning_tokens": 4, "gen_ai.usage.details.cache_write_tokens": 2}),
    "openllmetry": ("openai.chat", {
        "gen_ai.system": "OpenAI", "llm.request.type": "chat", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.prompt_tokens": 70, "gen_ai.usage.completion_tokens": 11, "llm.usage.total_tokens": 81,
        "gen_ai.is_streaming": True, "traceloop.association.properties.user_id": "u9",
        "traceloop.association.properties.plan": "pro", "gen_ai.openai.response.service_tier": "Default"}),
}

KNOWN_KEYS = sorted({k for d in DIALECTS for k in d.keys()} | {
    "tokentrail.credential.type", "error.type", "tokentrail.duplicate", "tokentrail.usage.missing",
    "tokentrail.stream.incomplete", "ai.response.providerMetadata", "output.value", "llm.invocation_parameters",
    "ai.usage.inputTokenDetails.cacheWriteTokens", "traceloop.association.properties.tags",
    "ai.telemetry.metadata.user", "ai.telemetry.metadata.x",
})
NAMES = ["chat gpt-4o", "anthropic.messages.create", "ai.generateText.doGenerate", "ai.generateText", "agent run",
         "ai.streamText.doStream", "embeddings text-embedding-3-small", ""]

scalars = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["openai", "anthropic", "OpenAI ", "gpt-4o", "chat", "invoke_agent", "embeddings", "byok",
                     "System", "true", "1", "LLM", "EMBEDDING", "workflow", "flex", "", " ", "x" * 300,
                     '{"stream":true}', '{"id": "r-1"}', "0.0001", "-1", '{"gateway": {"cost": 0.5}}']),
    st.integers(min_value=-5, max_value=3000),
    st.sampled_from([0, 1, MAX_TOKENS, MAX_TOKENS + 1, -(2**63), 2**63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([12.0, 0.5, 1e9, 1e10]),
    st.booleans(),
    st.binary(max_size=6),
    st.none(),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                      max_leaves=15)


@st.composite
def bent_spans(draw: st.DrawFn) -> Span:
    template, base = TEMPLATES[draw(st.sampled_from(sorted(TEMPLATES)))]
    attrs = dict(base)
    for key in draw(st.lists(st.sampled_from(sorted(attrs)), max_size=4)):
        attrs.pop(key, None)
    for key, value in draw(st.dictionaries(st.sampled_from(KNOWN_KEYS), values, max_size=4)).items():
        attrs[key] = value
    name = draw(st.sampled_from([template, template, *NAMES]))
    duplicates = draw(st.lists(st.tuples(st.sampled_from(KNOWN_KEYS), values), max_size=2))
    start = draw(st.sampled_from([T0_NS, T0_NS, 0, 1, 4_102_444_800 * 10**9]))
    return span(attrs, name, start=start, duration=draw(st.sampled_from([1_500_000_000, -5, 0])),
                error=draw(st.booleans()), duplicate_keys=duplicates)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spans=st.lists(bent_spans(), min_size=1, max_size=6))
def test_bent_spans_of_every_dialect_normalize_exactly_as_before(spans: list[Span]) -> None:
    assert_same(make_request(spans))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    maps=st.lists(st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=30), values, max_size=25),
                  min_size=1, max_size=4),
    name=st.sampled_from(NAMES),
)
def test_arbitrary_attribute_maps_normalize_exactly_as_before(maps: list[dict[str, Any]], name: str) -> None:
    assert_same(make_request([span(m, name) for m in maps]))


def test_each_template_as_is_and_the_vercel_embedding_parent_rule() -> None:
    spans = [span(attrs, name) for name, attrs in TEMPLATES.values()]
    parent = span({"gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai",
                   "gen_ai.request.model": "text-embedding-3-small", "gen_ai.usage.input_tokens": 30})
    children = [span({"gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai",
                      "gen_ai.request.model": "text-embedding-3-small", "gen_ai.usage.input_tokens": 15},
                     parent=parent.span_id) for _ in range(2)]
    request = make_request([*spans, parent, *children])
    assert len(normalize_request(request).records) == len(TEMPLATES) + 2
    assert_same(request)


def test_many_spans_sharing_key_sets_reuse_plans_and_stay_exact() -> None:
    spans = [span(genai_attributes({"gen_ai.usage.input_tokens": 1000 + i, "gen_ai.response.id": f"r{i}",
                                    "user.id": f"u{i % 7}", "tokentrail.tags": ["plan:pro", f"f{i % 3}"]}))
             for i in range(300)]
    assert_same(make_request(spans))
