"""Golden fixtures for the normalizer: OTLP requests stored as files with the usage records they must become.

Each fixture under ``tests/processor/normalize/golden/`` is two files:

* ``<name>.otlp.json``: the ExportTraceServiceRequest in OTLP/JSON (ids in hex), read back with the receiver's own
  OTLP/JSON reader (``otlp.parse_json_request``);
* ``<name>.records.json``: what normalizing it gives: the counts, errors and warnings, and every usage record
  (timestamps in ISO 8601, Decimals as strings).

Where the spans come from:

* the real instrumentations (``dialect_producers.PRODUCERS``: ours, the Anthropic SDK's, openai-v2 in both modes,
  OpenLLMetry for OpenAI and Anthropic, OpenInference, pydantic-ai), each calling the fake provider for real;
* ``vercel-ai-v6``, ``vercel-ai-v7-otel``, ``vercel-ai-v7-enrich``, ``vercel-ai-v7-legacy``: the real Vercel AI SDK
  (JavaScript) run with Node by ``tests.drift.vercel.capture --golden`` (Node is not part of the test run: the
  fixtures are, with the calls behind them in ``<name>.calls.json``);
* ``vercel-ai-handbuilt``: the SDK's older generations (v3-v5), built by hand from their documented attribute
  names;
* ``edge-cases-handbuilt``: realistic spans of every dialect bent the ways bad senders bend them (values of the
  wrong type, out of range, missing, repeated keys, odd names and clocks), from a fixed seed.

Re-capture (only when a change of the numbers is intended, and review the diff)::

    .venv/bin/python -m tests.helpers.golden capture
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import sys
import tempfile
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from tokentrail.processor.normalize.otlp import parse_json_request
from tokentrail.processor.normalize.reader import NormalizeResult, normalize_request
from tokentrail.processor.schema import UsageRecord

from tests.helpers.dialect_producers import produce_all
from tests.helpers.otlp import T0_NS, genai_attributes, key_values, make_request

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "processor" / "normalize" / "golden"
HANDBUILT = ("vercel-ai-handbuilt", "edge-cases-handbuilt")
# Captured from the real Vercel AI SDK with Node (``tests.drift.vercel.capture --golden``), each with a ``.calls.json``.
NODE_CAPTURED = ("vercel-ai-v6", "vercel-ai-v7-otel", "vercel-ai-v7-enrich", "vercel-ai-v7-legacy")


# -- files -----------------------------------------------------------------------------------------------------


def request_to_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """OTLP/JSON: the protobuf JSON mapping with trace and span ids as hex (what ``parse_json_request`` reads)."""
    document = json_format.MessageToDict(request)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return document


def record_to_json(record: UsageRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Decimal):
            value = str(value)
        out[f.name] = value
    return out


def result_to_json(result: NormalizeResult) -> dict[str, Any]:
    return {
        "received": result.received,
        "skipped": result.skipped,
        "rejected": result.rejected,
        "errors": result.errors,
        "warnings": result.warnings,
        "dropped_fields": result.dropped_fields,
        "records": [record_to_json(r) for r in result.records],
    }


def names() -> list[str]:
    return sorted(p.name.removesuffix(".otlp.json") for p in GOLDEN_DIR.glob("*.otlp.json"))


def load(name: str) -> list[tuple[ExportTraceServiceRequest, dict[str, Any]]]:
    """The fixture's requests, each with the result it must normalize to (as ``result_to_json`` writes it)."""
    documents = json.loads((GOLDEN_DIR / f"{name}.otlp.json").read_text())
    expected = json.loads((GOLDEN_DIR / f"{name}.records.json").read_text())
    requests = [parse_json_request(json.dumps(d).encode()) for d in documents]
    assert len(requests) == len(expected), f"{name}: {len(requests)} requests but {len(expected)} results"
    return list(zip(requests, expected))


def _write(name: str, requests: list[ExportTraceServiceRequest], *, compact: bool = False) -> None:
    """One JSON list of requests (one line each when ``compact``) and the list of their results. The results are
    normalized from what is read back, so the two files always agree."""
    documents = [request_to_json(r) for r in requests]
    if compact:
        text = "[\n" + ",\n".join(json.dumps(d, separators=(",", ":")) for d in documents) + "\n]\n"
    else:
        text = json.dumps(documents, indent=1) + "\n"
    (GOLDEN_DIR / f"{name}.otlp.json").write_text(text)
    results = [result_to_json(normalize_request(request)) for request, _ in _read_back(name)]
    (GOLDEN_DIR / f"{name}.records.json").write_text(json.dumps(results, indent=1) + "\n")


def write_fixture(name: str, documents: list[dict[str, Any]]) -> None:
    """A fixture from OTLP/JSON requests captured outside Python (the Vercel AI SDK's, see ``tests.drift.vercel``)."""
    _write(name, [parse_json_request(json.dumps(d).encode()) for d in documents])


def _read_back(name: str) -> list[tuple[ExportTraceServiceRequest, None]]:
    documents = json.loads((GOLDEN_DIR / f"{name}.otlp.json").read_text())
    return [(parse_json_request(json.dumps(d).encode()), None) for d in documents]


# -- hand-built spans ------------------------------------------------------------------------------------------


class _Ids:
    """Fixed ids, so that a re-capture of the hand-built fixtures gives the same files."""

    def __init__(self) -> None:
        self.n = 0

    def span(
        self,
        name: str,
        attributes: dict[str, Any],
        *,
        start: int = T0_NS,
        duration: int = 1_500_000_000,
        error: bool = False,
        parent: bytes = b"",
        duplicates: list[tuple[str, Any]] | None = None,
    ) -> Span:
        self.n += 1
        kvs = key_values(attributes)
        for key, value in duplicates or ():
            kvs += key_values({key: value})  # a repeated key: the last one wins
        return Span(
            trace_id=(0xAB << 120 | self.n).to_bytes(16, "big"),
            span_id=(0xCD << 56 | self.n).to_bytes(8, "big"),
            parent_span_id=parent,
            name=name,
            kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=start,
            end_time_unix_nano=max(0, start + duration),
            attributes=kvs,
            status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_UNSET),
        )


_VERCEL_BASE = {
    "ai.model.provider": "openai.chat",
    "ai.model.id": "gpt-4o-mini",
    "ai.telemetry.functionId": "support-reply",
    "ai.telemetry.metadata.userId": "cust_v",
    "ai.telemetry.metadata.plan": "pro",
    "ai.telemetry.metadata.tags": ["feature:support"],
}


def vercel_request() -> ExportTraceServiceRequest:
    """The Vercel AI SDK's spans, hand-built (the SDK is JavaScript): legacy ``ai.*`` spans of v4 to v6 with their
    outer spans (never counted), Anthropic's cache conventions, embeddings, provider spellings, and the v7 GenAI
    spans (an ``invoke_agent`` root and an embeddings root over their calls)."""
    ids = _Ids()

    def outer(operation: str, **usage: Any) -> Span:
        return ids.span(operation, {**_VERCEL_BASE, "ai.operationId": operation, "operation.name": operation, **usage})

    def call(operation: str, **attrs: Any) -> Span:
        return ids.span(
            operation,
            {
                **_VERCEL_BASE,
                "ai.operationId": operation,
                "operation.name": f"{operation} support-reply",
                "gen_ai.system": _VERCEL_BASE["ai.model.provider"],
                "gen_ai.request.model": "gpt-4o-mini",
                **attrs,
            },
        )

    spans = [
        outer("ai.generateText", **{"ai.usage.promptTokens": 1200, "ai.usage.completionTokens": 80}),
        call(
            "ai.generateText.doGenerate",
            **{
                "ai.usage.promptTokens": 1200,
                "ai.usage.completionTokens": 80,
                "gen_ai.usage.prompt_tokens": 1200,
                "gen_ai.usage.completion_tokens": 80,
                "ai.response.id": "chatcmpl-v4",
                "ai.response.model": "gpt-4o-mini-2024-07-18",
            },
        ),
        ids.span("ai.toolCall", {"ai.operationId": "ai.toolCall", "ai.toolCall.name": "lookup"}),
        outer("ai.streamText", **{"ai.usage.inputTokens": 5000, "ai.usage.outputTokens": 900}),
        call(
            "ai.streamText.doStream",
            **{
                "ai.usage.inputTokens": 5000,
                "ai.usage.outputTokens": 900,
                "ai.usage.totalTokens": 5900,
                "ai.usage.cachedInputTokens": 4096,
                "ai.usage.reasoningTokens": 512,
                "ai.response.id": "resp_v5",
            },
        ),
        call(
            "ai.generateText.doGenerate",
            **{
                "ai.model.provider": "anthropic.messages",
                "gen_ai.system": "anthropic.messages",
                "ai.model.id": "claude-sonnet-4-5",
                "ai.usage.inputTokens": 2100,
                "ai.usage.inputTokenDetails.noCacheTokens": 100,
                "ai.usage.inputTokenDetails.cacheReadTokens": 1500,
                "ai.usage.inputTokenDetails.cacheWriteTokens": 500,
                "ai.usage.outputTokens": 40,
                "ai.usage.outputTokenDetails.reasoningTokens": 10,
            },
        ),
        call(
            "ai.generateText.doGenerate",
            **{
                "ai.model.provider": "anthropic.messages",
                "ai.model.id": "claude-3-5-sonnet-latest",
                "ai.usage.promptTokens": 100,
                "ai.usage.completionTokens": 20,
                "ai.response.providerMetadata": json.dumps(
                    {"anthropic": {"cacheCreationInputTokens": 500, "cacheReadInputTokens": 1500}}
                ),
            },
        ),
        call(
            "ai.generateText.doGenerate",
            **{
                "ai.model.provider": "anthropic.messages",
                "ai.model.id": "claude-sonnet-4-5",
                "ai.usage.inputTokens": 100,
                "ai.usage.cachedInputTokens": 1500,
                "ai.usage.outputTokens": 20,
                "ai.response.providerMetadata": json.dumps(
                    {
                        "anthropic": {
                            "usage": {
                                "input_tokens": 100,
                                "cache_read_input_tokens": 1500,
                                "cache_creation_input_tokens": 500,
                                "output_tokens": 20,
                            }
                        }
                    }
                ),
            },
        ),
        call(
            "ai.generateText.doGenerate",
            **{
                "ai.model.provider": "gateway",
                "ai.model.id": "anthropic/claude-haiku-4-5",
                "ai.usage.inputTokens": 50,
                "ai.usage.outputTokens": 7,
                "ai.response.providerMetadata": json.dumps({"gateway": {"cost": "0.0001"}}),
            },
        ),
        call(
            "ai.generateText.doGenerate",
            **{
                "ai.model.provider": "openrouter.chat",
                "ai.model.id": "openai/gpt-4o",
                "ai.usage.inputTokens": 50,
                "ai.usage.outputTokens": 7,
                "ai.response.providerMetadata": json.dumps({"openrouter": {"usage": {"cost": 0.00042}}}),
            },
        ),
        outer("ai.embedMany", **{"ai.usage.tokens": 300, "ai.model.id": "text-embedding-3-small"}),
        *(
            call("ai.embedMany.doEmbed", **{"ai.usage.tokens": 100, "ai.model.id": "text-embedding-3-small"})
            for _ in range(3)
        ),
        *(
            call("ai.generateText.doGenerate", **{"ai.model.provider": given, "ai.usage.inputTokens": 1})
            for given in (
                "azure-openai.chat",
                "google.generative-ai",
                "amazon-bedrock",
                "xai.chat",
                "mistral.chat",
                "groq.chat",
                "togetherai.chat",
                "google-vertex.chat",
            )
        ),
    ]
    # v7 (@ai-sdk/otel): GenAI conventions, an aggregating root, and an embeddings root over its calls.
    spans.append(
        ids.span(
            "invoke_agent gpt-4o",
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 3000,
                "gen_ai.usage.output_tokens": 300,
            },
        )
    )
    spans.append(ids.span("step 1", {"gen_ai.operation.name": "agent_step"}))
    spans += [
        ids.span(
            "chat gpt-4o",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.id": f"chatcmpl-{i}",
                "gen_ai.usage.input_tokens": 1500,
                "gen_ai.usage.output_tokens": 150,
                "gen_ai.usage.cache_read.input_tokens": 1024,
            },
        )
        for i in range(2)
    ]
    embedding = {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "text-embedding-3-small",
    }
    root = ids.span("embeddings text-embedding-3-small", {**embedding, "gen_ai.usage.input_tokens": 200})
    spans += [
        ids.span(
            "embeddings text-embedding-3-small", {**embedding, "gen_ai.usage.input_tokens": 100}, parent=root.span_id
        )
        for _ in range(2)
    ]
    spans.append(root)
    return make_request(spans, {"service.name": "vercel-app", "deployment.environment": "preview"})


# Realistic spans of every dialect, the starting points the edge cases bend.
TEMPLATES: dict[str, tuple[str, dict[str, Any]]] = {
    "tokentrail": ("chat gpt-4o", genai_attributes()),
    "otel": (
        "chat gpt-4o-mini",
        {
            "gen_ai.system": "openai",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.prompt_tokens": 100,
            "gen_ai.usage.completion_tokens": 20,
            "gen_ai.response.id": "chatcmpl-1",
        },
    ),
    "anthropic-sdk": (
        "anthropic.messages.create",
        {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.response.model": "claude-sonnet-4-5-20250929",
            "gen_ai.usage.input_tokens": 5000,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.cache_write.input_tokens": 2000,
            "anthropic.usage.compaction.input_tokens": 10,
            "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": 500,
            "gen_ai.response.id": "msg_1",
        },
    ),
    "vercel": (
        "ai.generateText.doGenerate",
        {
            "ai.operationId": "ai.generateText.doGenerate",
            "ai.model.provider": "anthropic.messages",
            "ai.model.id": "claude-haiku-4-5",
            "ai.usage.inputTokens": 50,
            "ai.usage.outputTokens": 7,
            "ai.usage.totalTokens": 57,
            "ai.response.id": "msg_v1",
            "ai.response.providerMetadata": json.dumps(
                {"anthropic": {"cacheCreationInputTokens": 3}, "gateway": {"cost": "0.0001"}}
            ),
            "ai.telemetry.metadata.userId": "u-7",
            "ai.telemetry.metadata.tags": ["a", "b"],
            "ai.telemetry.metadata.team": "growth",
        },
    ),
    "vercel-embed": (
        "ai.embedMany.doEmbed",
        {
            "ai.operationId": "ai.embedMany.doEmbed",
            "ai.model.provider": "openai.embedding",
            "ai.model.id": "text-embedding-3-small",
            "ai.usage.tokens": 12,
        },
    ),
    "openinference": (
        "ChatCompletion",
        {
            "openinference.span.kind": "LLM",
            "llm.provider": "openai",
            "llm.model_name": "gpt-4o",
            "llm.token_count.prompt": 120,
            "llm.token_count.completion": 30,
            "llm.token_count.total": 150,
            "llm.token_count.prompt_details.cache_read": 100,
            "llm.token_count.prompt_details.audio": 20,
            "llm.cost.total": 0.0012,
            "output.value": '{"id": "chatcmpl-oi", "object": "chat.completion"}',
            "llm.invocation_parameters": '{"stream": true}',
            "user.id": "u1",
            "tag.tags": ["x"],
            "metadata": json.dumps({"user_id": "u2", "tags": ["t"], "team": 3}),
        },
    ),
    "pydantic-ai": (
        "chat gpt-4o",
        {
            "gen_ai.system": "openai",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 40,
            "gen_ai.usage.output_tokens": 9,
            "logfire.msg": "chat gpt-4o",
            "gen_ai.usage.details.reasoning_tokens": 4,
            "gen_ai.usage.details.cache_write_tokens": 2,
        },
    ),
    "openllmetry": (
        "openai.chat",
        {
            "gen_ai.system": "OpenAI",
            "llm.request.type": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.prompt_tokens": 70,
            "gen_ai.usage.completion_tokens": 11,
            "llm.usage.total_tokens": 81,
            "gen_ai.is_streaming": True,
            "traceloop.association.properties.user_id": "u9",
            "traceloop.association.properties.plan": "pro",
            "gen_ai.openai.response.service_tier": "Default",
        },
    ),
}

# Keys the edge cases put wrong values under: every key some dialect reads, and a few of the special ones.
EDGE_KEYS = sorted(
    {key for _, attrs in TEMPLATES.values() for key in attrs}
    | {
        "gen_ai.provider.name",
        "gen_ai.system",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.response.id",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.request.stream",
        "gen_ai.operation.name",
        "tokentrail.credential.type",
        "tokentrail.credential.id",
        "tokentrail.api",
        "tokentrail.tags",
        "tokentrail.service_tier",
        "tokentrail.usage.reported_cost",
        "gen_ai.usage.cost",
        "tokentrail.usage.input_audio_tokens",
        "tokentrail.usage.output_audio_tokens",
        "tokentrail.usage.cache_creation_1h.input_tokens",
        "openai.response.service_tier",
        "user.id",
        "error.type",
        "tokentrail.duplicate",
        "tokentrail.usage.missing",
        "tokentrail.stream.incomplete",
        "ai.response.providerMetadata",
        "output.value",
        "llm.invocation_parameters",
        "llm.token_count.total",
        "ai.usage.inputTokenDetails.cacheWriteTokens",
        "traceloop.association.properties.tags",
        "ai.telemetry.metadata.user",
        "ai.telemetry.metadata.x",
        "agent_name",
        "traceloop.span.kind",
        "openinference.span.kind",
        "gen_ai.usage.total_tokens",
        "llm.usage.total_tokens",
        "metadata",
    }
)
EDGE_NAMES = [
    "chat gpt-4o",
    "anthropic.messages.create",
    "ai.generateText.doGenerate",
    "ai.generateText",
    "agent run",
    "ai.streamText.doStream",
    "embeddings text-embedding-3-small",
    "",
]
_SCALARS: list[Any] = [
    "openai",
    "anthropic",
    "OpenAI ",
    "gpt-4o",
    "chat",
    "invoke_agent",
    "embeddings",
    "byok",
    "System",
    "true",
    "1",
    "LLM",
    "EMBEDDING",
    "workflow",
    "flex",
    "",
    " ",
    "x" * 300,
    '{"stream":true}',
    '{"id": "r-1"}',
    "0.0001",
    "-1",
    '{"gateway": {"cost": 0.5}}',
    '{"anthropic": {"usage": {"input_tokens": 7}}}',
    "caf\u00e9 \U0001f98a",
    0,
    1,
    7,
    2999,
    -5,
    1_000_000_000,
    1_000_000_001,
    -(2**63),
    2**63 - 1,
    12.0,
    0.5,
    1e9,
    1e10,
    -0.0,
    float("inf"),
    float("nan"),
    1e300,
    True,
    False,
    b"\x00\xff",
    b"",
    None,
]


def _edge_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 2 and roll < 0.12:
        return [_edge_value(rng, depth + 1) for _ in range(rng.randint(0, 12 if depth == 0 else 3))]
    if depth < 2 and roll < 0.16:
        return {rng.choice(["a", "user", "tags", "k"]): _edge_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if roll < 0.25:
        return "".join(rng.choice("ab :-_\u00e9") for _ in range(rng.randint(0, 20)))
    return rng.choice(_SCALARS)


def edge_requests(seed: int = 10, spans: int = 300, per_request: int = 10) -> list[ExportTraceServiceRequest]:
    """Realistic spans bent at random (seeded): keys removed, wrong values put under known keys, repeated keys, other
    span names, start times of a broken clock, error statuses; and a share of arbitrary attribute maps. Small
    requests, so that every rejection's message is kept (a result keeps the first ``MAX_ERRORS``)."""
    rng = random.Random(seed)
    ids = _Ids()
    out = []
    for i in range(spans):
        if i % 5 == 4:  # an arbitrary attribute map
            attrs = {
                rng.choice([*EDGE_KEYS, "x.y", "http.method", ""]): _edge_value(rng) for _ in range(rng.randint(0, 12))
            }
            out.append(ids.span(rng.choice(EDGE_NAMES), attrs))
            continue
        template = rng.choice(sorted(TEMPLATES))
        name, base = TEMPLATES[template]
        attrs = dict(base)
        for key in rng.sample(sorted(attrs), rng.choice([0, 0, 1, 2, 3])):
            attrs.pop(key, None)
        for _ in range(rng.randint(0, 4)):
            attrs[rng.choice(EDGE_KEYS)] = _edge_value(rng)
        duplicates = [(rng.choice(EDGE_KEYS), _edge_value(rng)) for _ in range(rng.choice([0, 0, 0, 1, 2]))]
        out.append(
            ids.span(
                rng.choice([name, name, name, *EDGE_NAMES]),
                attrs,
                start=rng.choice([T0_NS] * 10 + [0, 1, 4_102_444_800 * 10**9]),
                duration=rng.choice([1_500_000_000, 1_500_000_000, -5, 0]),
                error=rng.random() < 0.2,
                duplicates=duplicates,
            )
        )
    return [make_request(out[i : i + per_request]) for i in range(0, len(out), per_request)]


# -- capture ---------------------------------------------------------------------------------------------------


def capture() -> None:
    """Runs every real producer against the fake provider and writes every fixture, hand-built ones included."""
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        produced = produce_all(Path(tmp))
    for name, (data, _calls) in produced.items():
        _write(name, [ExportTraceServiceRequest.FromString(data)])
    _write("vercel-ai-handbuilt", [vercel_request()])
    _write("edge-cases-handbuilt", edge_requests(), compact=True)
    print(f"wrote {len(produced) + 2} fixtures to {GOLDEN_DIR}")


if __name__ == "__main__":
    if sys.argv[1:] != ["capture"]:
        sys.exit("usage: python -m tests.helpers.golden capture")
    capture()
