"""The normalizer as it was before the columnar rewrite (one ``UsageRecord`` per span, ``AnyValue`` attributes),
kept unchanged as the reference that ``test_normalize_equivalence.py`` holds ``processor.normalize`` to: the same
records, rejections, warnings and counts for any span. Not used by the product."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from tokentrail.instrumentation import semconv as sc
from tokentrail.processor.normalize.otlp import (
    STATUS_CODE_ERROR,
    NotAnInteger,
    as_bool,
    as_int,
    as_python,
    as_str,
    as_str_list,
    nanos_to_datetime,
    resource_service_environment,
)
from tokentrail.processor.pricing.catalog import canonical_provider
from tokentrail.processor.schema import COST_PRECISION, COST_SCALE, NO_USAGE, UsageRecord, to_cost


def _any_value_map_class() -> type:
    """ExportTraceServiceRequest with ``Span.attributes`` as ``map<string, AnyValue>`` (the receiver's class then)."""
    if _MAP_CLASS:
        return _MAP_CLASS[0]
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, trace_pb2, trace_service_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        proto.name = "tokentrail_reference/" + proto.name
        proto.dependency[:] = ["tokentrail_reference/" + d for d in proto.dependency]
        proto.ClearField("service")
        proto.options.Clear()
        for message in proto.message_type:
            if message.name != "Span":
                continue
            entry = message.nested_type.add(name="AttributesEntry")
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, label=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
            entry.field.add(
                name="value",
                number=2,
                label=1,
                type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                type_name=".opentelemetry.proto.common.v1.AnyValue",
            )
            for f in message.field:
                if f.name == "attributes":
                    f.type_name = ".opentelemetry.proto.trace.v1.Span.AttributesEntry"
        pool.Add(proto)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(ExportTraceServiceRequest.DESCRIPTOR.full_name))
    _MAP_CLASS.append(cls)
    return cls


_MAP_CLASS: list[type] = []


def as_fast_request(request: ExportTraceServiceRequest) -> object:
    return _any_value_map_class().FromString(request.SerializeToString())

__all__ = [
    "ANTHROPIC_SDK",
    "DIALECTS",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "MAX_TOKENS",
    "MAX_USER_CHARS",
    "OPENINFERENCE",
    "OPENLLMETRY",
    "OTEL_GENAI",
    "PYDANTIC_AI",
    "TOKENTRAIL",
    "VERCEL_AI",
    "Dialect",
    "NormalizeResult",
    "SpanRejected",
    "normalize_request",
    "normalize_span",
]

log = logging.getLogger(__name__)

MAX_TOKENS: Final = 1_000_000_000  # above this a count is a bug or an attack, not a call
MAX_ERRORS: Final = 20  # messages kept per request; every rejection is still counted
DEFAULT_CREDENTIAL_TYPE: Final = "system"  # a key the service was configured with
# Attribution limits, as Vercel AI Gateway's: at most 10 tags of 1-64 characters, a user id of at most 256.
MAX_TAGS: Final = 10
MAX_TAG_CHARS: Final = 64
MAX_USER_CHARS: Final = 256
MAX_NAME_CHARS: Final = 256  # provider, model, ids: longer is not a name
MAX_METADATA_JSON_CHARS: Final = 65_536
# Start times outside [2000-01-01, now + 7 days] are a broken clock or a forged span, never a call to bill.
MIN_START_NANOS: Final = 946_684_800 * 10**9
MAX_FUTURE_NANOS: Final = 7 * 86_400 * 10**9

# Aggregating spans repeat the totals of the calls under them: counting them would bill twice.
AGGREGATE_OPERATIONS: Final = frozenset(
    {"invoke_agent", "create_agent", "execute_tool", "invoke_workflow", "agent_step", "workflow"}
)
ANTHROPIC_MESSAGES_CREATE: Final = "anthropic.messages.create"
TOKENTRAIL_DUPLICATE: Final = "tokentrail.duplicate"  # this call is counted on another (inner) span

# Older OTel GenAI names (semconv <= 1.26) and their cache spellings.
_GEN_AI_PROMPT_TOKENS: Final = "gen_ai.usage.prompt_tokens"
_GEN_AI_COMPLETION_TOKENS: Final = "gen_ai.usage.completion_tokens"
_GEN_AI_CACHE_READ_OLD: Final = "gen_ai.usage.cache_read_input_tokens"
_GEN_AI_CACHE_CREATION_OLD: Final = "gen_ai.usage.cache_creation_input_tokens"

_INPUT: Final = (sc.GEN_AI_USAGE_INPUT_TOKENS, _GEN_AI_PROMPT_TOKENS)
_OUTPUT: Final = (sc.GEN_AI_USAGE_OUTPUT_TOKENS, _GEN_AI_COMPLETION_TOKENS)
_CACHE_READ: Final = (sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, _GEN_AI_CACHE_READ_OLD)
_CACHE_WRITE: Final = (
    sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    _GEN_AI_CACHE_CREATION_OLD,
)
# Parts of the counts above, and facts that change the price or check it (every dialect reads these).
_CACHE_WRITE_1H: Final = (
    sc.TOKENTRAIL_CACHE_CREATION_1H_INPUT_TOKENS,
    "anthropic.usage.cache_creation.ephemeral_1h_input_tokens",  # the Anthropic SDK's own span
)
TOKENTRAIL_INPUT_AUDIO_TOKENS: Final = "tokentrail.usage.input_audio_tokens"
TOKENTRAIL_OUTPUT_AUDIO_TOKENS: Final = "tokentrail.usage.output_audio_tokens"
TOKENTRAIL_REPORTED_COST: Final = "tokentrail.usage.reported_cost"
_SERVICE_TIER: Final = (
    sc.TOKENTRAIL_SERVICE_TIER,
    sc.OPENAI_RESPONSE_SERVICE_TIER,
    "gen_ai.openai.response.service_tier",  # OTel GenAI conventions up to 1.36
)
_REPORTED_COST: Final = (TOKENTRAIL_REPORTED_COST, "gen_ai.usage.cost")
MAX_REPORTED_COST: Final = Decimal(10) ** (COST_PRECISION - COST_SCALE)  # the cost column's limit (exclusive)

Found = Mapping[str, AnyValue]  # a span's attributes: the upb map of ``fast_request_class()``, or a dict


@dataclass(slots=True)
class Usage:
    """Token counts as a dialect states them, before the house rules make them one shape."""

    input: int | None
    output: int | None
    cache_read: int
    cache_write: int
    reasoning: int
    input_includes_cache: bool
    cache_write_1h: int = 0
    input_audio: int = 0
    output_audio: int = 0


@dataclass(frozen=True, slots=True)
class Dialect:
    """Where one instrumentation keeps each fact. Keys in a tuple are tried in order; the first present wins."""

    source: str
    # The span is this dialect's when it carries any of these keys, or has one of these names.
    markers: frozenset[str] = frozenset()
    span_names: frozenset[str] = frozenset()
    provider: tuple[str, ...] = (sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_SYSTEM)
    response_model: tuple[str, ...] = (sc.GEN_AI_RESPONSE_MODEL,)
    request_model: tuple[str, ...] = (sc.GEN_AI_REQUEST_MODEL,)
    input_tokens: tuple[str, ...] = _INPUT
    output_tokens: tuple[str, ...] = _OUTPUT
    # A total, to derive whichever of input or output is missing (never used to invent both).
    total_tokens: tuple[str, ...] = ()
    cache_read: tuple[str, ...] = _CACHE_READ
    cache_write: tuple[str, ...] = _CACHE_WRITE
    reasoning: tuple[str, ...] = (sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,)
    # Parts of the cache writes, of the input and of the output: never added to them.
    cache_write_1h: tuple[str, ...] = _CACHE_WRITE_1H
    input_audio: tuple[str, ...] = (TOKENTRAIL_INPUT_AUDIO_TOKENS,)
    output_audio: tuple[str, ...] = (TOKENTRAIL_OUTPUT_AUDIO_TOKENS,)
    service_tier: tuple[str, ...] = _SERVICE_TIER
    # A cost the provider or gateway reported, in USD (stored for comparison, never used as the price).
    reported_cost: tuple[str, ...] = _REPORTED_COST
    # Counts billed on top of the main usage (not overlapping it), summed in.
    extra_input: tuple[str, ...] = ()
    extra_output: tuple[str, ...] = ()
    # False for dialects whose input count excludes cache reads and writes (the Anthropic API's own convention).
    input_includes_cache: bool = True
    response_id: tuple[str, ...] = (sc.GEN_AI_RESPONSE_ID,)
    operation: tuple[str, ...] = (sc.GEN_AI_OPERATION_NAME,)
    streamed: tuple[str, ...] = (sc.GEN_AI_REQUEST_STREAM,)
    user: tuple[str, ...] = (sc.USER_ID,)
    tags: tuple[str, ...] = (sc.TOKENTRAIL_TAGS,)  # every list named is merged
    # Attribution carried as ``<prefix><name>`` attributes or inside a JSON object attribute: ``user_id`` /
    # ``userId`` / ``user`` is the user, ``tags`` adds tags, any other scalar becomes a ``name:value`` tag.
    metadata_prefixes: tuple[str, ...] = ()
    metadata_json: tuple[str, ...] = ()
    # Provider spellings of this dialect, looked up before the shared catalog mapping.
    provider_names: Mapping[str, str] = field(default_factory=dict)
    # The dialect's provider value names an API as well ("openai.chat"): keep the part before the first dot.
    provider_prefix_only: bool = False
    default_api: str | None = None
    default_provider: str | None = None
    default_operation: str | None = None
    # False when the span is this dialect's but not a call to count (an outer span repeating totals).
    counted: Callable[[Span, Found], bool] | None = None
    # Last word on the counts, for conventions a table cannot state (they depend on the provider or version).
    resolve: Callable[[Span, Found, Usage, str], Usage] | None = None
    # Adjusts fields the table cannot (response id hidden in a payload, streaming named in the span name).
    finish: Callable[[Span, Found, UsageRecord], None] | None = None

    def keys(self) -> frozenset[str]:
        return frozenset(
            (
                *self.markers,
                *self.provider,
                *self.response_model,
                *self.request_model,
                *self.usage_keys(),
                *self.response_id,
                *self.operation,
                *self.streamed,
                *self.user,
                *self.tags,
                *self.metadata_json,
                *self.cache_write_1h,
                *self.input_audio,
                *self.output_audio,
                *self.service_tier,
                *self.reported_cost,
            )
        )

    def usage_keys(self) -> frozenset[str]:
        return frozenset(
            (
                *self.input_tokens,
                *self.output_tokens,
                *self.total_tokens,
                *self.cache_read,
                *self.cache_write,
                *self.reasoning,
                *self.extra_input,
                *self.extra_output,
            )
        )


# -- the dialects -----------------------------------------------------------------------------------------------

# (a) OpenTelemetry GenAI semantic conventions, any version: `gen_ai.system` or `gen_ai.provider.name`,
# `prompt_tokens`/`completion_tokens` (<= 1.26) or `input_tokens`/`output_tokens`, `cache_creation` or
# `cache_write`. `gen_ai.usage.input_tokens` is inclusive of cached input. The modality splits of newer versions
# (`gen_ai.usage.text.input_tokens`, ...) are parts of these totals and are never added.
OTEL_GENAI: Final = Dialect(source="otel-genai")

# Our own instrumentation: the same conventions plus `tokentrail.*` attribution.
TOKENTRAIL: Final = Dialect(source="tokentrail", markers=frozenset({sc.TOKENTRAIL_API}))

# (b) The Anthropic Python SDK's `anthropic.messages.create` span. The SDK sets `gen_ai.usage.input_tokens` to
# input + cache reads + cache writes (inclusive), names cache creation `cache_write`, and reports the tokens of
# context compaction apart from the main usage (they are billed too).
ANTHROPIC_SDK: Final = Dialect(
    source="anthropic-sdk",
    span_names=frozenset({ANTHROPIC_MESSAGES_CREATE}),
    cache_write=(sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS),
    extra_input=("anthropic.usage.compaction.input_tokens",),
    extra_output=("anthropic.usage.compaction.output_tokens",),
    default_api=sc.API_ANTHROPIC_MESSAGES,
    default_provider="anthropic",
)

# (c) Vercel AI SDK, legacy spans (v3-v7 `LegacyOpenTelemetry`). Only the provider-call spans count:
# `ai.generateText.doGenerate`, `ai.streamText.doStream`, `ai.generateObject.doGenerate`,
# `ai.streamObject.doStream`, `ai.embed(Many).doEmbed`. Names by generation: `promptTokens`/`completionTokens`
# (v3-v4), `inputTokens`/`outputTokens`/`cachedInputTokens`/`reasoningTokens` (v5+), `inputTokenDetails.*` (v6+).
_VERCEL_CALL_SUFFIXES: Final = (".doGenerate", ".doStream", ".doEmbed")
_VERCEL_OPERATION_ID: Final = "ai.operationId"
_VERCEL_PROVIDER_METADATA: Final = "ai.response.providerMetadata"
_VERCEL_INPUT_DETAILS: Final = (
    "ai.usage.inputTokenDetails.noCacheTokens",
    "ai.usage.inputTokenDetails.cacheReadTokens",
    "ai.usage.inputTokenDetails.cacheWriteTokens",
)


def _vercel_operation_id(span: Span, found: Found) -> str:
    return as_str(found.get(_VERCEL_OPERATION_ID)) or span.name


def _vercel_counted(span: Span, found: Found) -> bool:
    return _vercel_operation_id(span, found).endswith(_VERCEL_CALL_SUFFIXES)


def _vercel_resolve(span: Span, found: Found, usage: Usage, provider: str) -> Usage:
    """Input inclusivity depends on the SDK version for Anthropic: v6+ states an inclusive total (with
    ``inputTokenDetails``); v4-v5 state Anthropic's exclusive count, with cache writes only in the provider
    metadata. Every other provider's prompt count (OpenAI's, Google's) already includes its cached tokens."""
    if provider != "anthropic" or any(k in found for k in _VERCEL_INPUT_DETAILS):
        return usage
    meta = _json_object(found.get(_VERCEL_PROVIDER_METADATA))
    anthropic = meta.get("anthropic") if isinstance(meta, dict) else None
    if isinstance(anthropic, dict):
        raw = anthropic.get("usage")
        if isinstance(raw, dict) and _is_count(raw.get("input_tokens")):
            # The provider's own usage object: exact whatever the SDK version did with it.
            read = raw.get("cache_read_input_tokens")
            write = raw.get("cache_creation_input_tokens")
            usage.cache_read = read if _is_count(read) else usage.cache_read
            usage.cache_write = write if _is_count(write) else usage.cache_write
            usage.input = raw["input_tokens"]
            usage.input_includes_cache = False
            return usage
        write = anthropic.get("cacheCreationInputTokens")
        if _is_count(write) and not usage.cache_write:
            usage.cache_write = write
        read = anthropic.get("cacheReadInputTokens")
        if _is_count(read) and not usage.cache_read:
            usage.cache_read = read
    usage.input_includes_cache = False
    return usage


def _vercel_finish(span: Span, found: Found, record: UsageRecord) -> None:
    operation_id = _vercel_operation_id(span, found)
    record.streamed = operation_id.endswith(".doStream")
    if record.operation is None or record.operation.startswith("ai."):
        record.operation = "embeddings" if operation_id.endswith(".doEmbed") else "chat"


VERCEL_AI: Final = Dialect(
    source="vercel-ai",
    markers=frozenset({_VERCEL_OPERATION_ID, "ai.model.provider", "ai.model.id"}),
    provider=("ai.model.provider", sc.GEN_AI_SYSTEM, sc.GEN_AI_PROVIDER_NAME),
    provider_prefix_only=True,
    provider_names={
        "azure-openai": "azure",
        "amazon-bedrock": "aws",
        "google-vertex": "google",
        "vertex": "google",
        "google": "google",
        "xai": "x-ai",
        "mistral": "mistral",
        "togetherai": "together",
        "gateway": "vercel",
    },
    response_model=("ai.response.model", sc.GEN_AI_RESPONSE_MODEL),
    request_model=("ai.model.id", sc.GEN_AI_REQUEST_MODEL),
    input_tokens=("ai.usage.inputTokens", "ai.usage.promptTokens", *_INPUT, "ai.usage.tokens"),
    output_tokens=("ai.usage.outputTokens", "ai.usage.completionTokens", *_OUTPUT),
    total_tokens=("ai.usage.totalTokens",),
    cache_read=("ai.usage.inputTokenDetails.cacheReadTokens", "ai.usage.cachedInputTokens", *_CACHE_READ),
    cache_write=("ai.usage.inputTokenDetails.cacheWriteTokens", *_CACHE_WRITE),
    reasoning=("ai.usage.outputTokenDetails.reasoningTokens", "ai.usage.reasoningTokens"),
    response_id=("ai.response.id", sc.GEN_AI_RESPONSE_ID),
    operation=(sc.GEN_AI_OPERATION_NAME,),
    streamed=(),
    metadata_prefixes=("ai.telemetry.metadata.",),
    counted=_vercel_counted,
    resolve=_vercel_resolve,
    finish=_vercel_finish,
)

# (d) OpenInference (Arize Phoenix): `llm.token_count.prompt` is the total prompt, cache included, with the
# cache read/write and reasoning details beside it. No response id attribute: the non-streamed output payload
# starts with it, so the first bytes are read for it (one call seen by two instrumentations is then one record).
_OI_SPAN_KIND: Final = "openinference.span.kind"
_OI_COUNTED_KINDS: Final = frozenset({"LLM", "EMBEDDING"})
_OI_OUTPUT_VALUE: Final = "output.value"
_OI_INVOCATION_PARAMETERS: Final = "llm.invocation_parameters"
_OI_RESPONSE_ID_RE: Final = re.compile(r'^\s*\{\s*"id"\s*:\s*"([^"\\]{1,256})"')


def _openinference_counted(span: Span, found: Found) -> bool:
    kind = as_str(found.get(_OI_SPAN_KIND))
    return kind is None or kind.upper() in _OI_COUNTED_KINDS


def _openinference_finish(span: Span, found: Found, record: UsageRecord) -> None:
    if record.response_id is None:
        value = found.get(_OI_OUTPUT_VALUE)
        if value is not None and value.WhichOneof("value") == "string_value":
            m = _OI_RESPONSE_ID_RE.match(value.string_value[:512])
            if m:
                record.response_id = m.group(1)
    params = found.get(_OI_INVOCATION_PARAMETERS)
    if params is not None and value_is_text(params):
        text = params.string_value[:4096]
        record.streamed = '"stream": true' in text or '"stream":true' in text
    kind = as_str(found.get(_OI_SPAN_KIND))
    if record.operation is None:
        record.operation = "embeddings" if kind and kind.upper() == "EMBEDDING" else "chat"


def value_is_text(value: AnyValue) -> bool:
    return value.WhichOneof("value") == "string_value"


OPENINFERENCE: Final = Dialect(
    source="openinference",
    markers=frozenset({_OI_SPAN_KIND, "llm.token_count.prompt", "llm.token_count.completion", "llm.token_count.total"}),
    provider=("llm.provider", "llm.system"),
    response_model=("llm.model_name", "embedding.model_name"),
    request_model=("llm.model_name", "embedding.model_name"),
    input_tokens=("llm.token_count.prompt",),
    output_tokens=("llm.token_count.completion",),
    total_tokens=("llm.token_count.total",),
    cache_read=("llm.token_count.prompt_details.cache_read",),
    cache_write=("llm.token_count.prompt_details.cache_write",),
    reasoning=("llm.token_count.completion_details.reasoning",),
    input_audio=(TOKENTRAIL_INPUT_AUDIO_TOKENS, "llm.token_count.prompt_details.audio"),
    output_audio=(TOKENTRAIL_OUTPUT_AUDIO_TOKENS, "llm.token_count.completion_details.audio"),
    reported_cost=(*_REPORTED_COST, "llm.cost.total"),
    response_id=(sc.GEN_AI_RESPONSE_ID,),
    operation=(),
    streamed=(),
    user=(sc.USER_ID,),
    tags=(sc.TOKENTRAIL_TAGS, "tag.tags"),
    metadata_json=("metadata",),
    counted=_openinference_counted,
    finish=_openinference_finish,
)

# (e) pydantic-ai / Logfire: `chat {model}` spans carry the call's usage with pydantic-ai's details
# (`gen_ai.usage.details.reasoning_tokens`, `cache_write_tokens`); the agent run span carries the SUM of its
# calls (`gen_ai.aggregated_usage.*` now, `gen_ai.usage.*` on older versions' "agent run") and is never counted.
def _pydantic_ai_counted(span: Span, found: Found) -> bool:
    return "agent_name" not in found and span.name != "agent run"


PYDANTIC_AI: Final = Dialect(
    source="pydantic-ai",
    markers=frozenset({"logfire.json_schema", "model_request_parameters", "logfire.msg", "agent_name"}),
    cache_read=(*_CACHE_READ, "gen_ai.usage.details.cache_read_tokens"),
    cache_write=(*_CACHE_WRITE, "gen_ai.usage.details.cache_write_tokens"),
    reasoning=(sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, "gen_ai.usage.details.reasoning_tokens"),
    counted=_pydantic_ai_counted,
)

# (f) OpenLLMetry (Traceloop): current names are the OTel ones plus `gen_ai.usage.reasoning_tokens`,
# `gen_ai.usage.total_tokens`, `gen_ai.is_streaming`; legacy ones are `gen_ai.usage.prompt_tokens` /
# `completion_tokens`, `llm.usage.total_tokens`, `llm.usage.reasoning_tokens`, `gen_ai.usage.cache_*_input_tokens`,
# `llm.request.type`. Its input count is inclusive for OpenAI and Anthropic alike. User and tags come from the
# Traceloop SDK's association properties.
_TRACELOOP_SPAN_KIND: Final = "traceloop.span.kind"


def _openllmetry_counted(span: Span, found: Found) -> bool:
    kind = as_str(found.get(_TRACELOOP_SPAN_KIND))
    return kind is None or kind not in ("workflow", "task", "agent", "tool")


OPENLLMETRY: Final = Dialect(
    source="openllmetry",
    markers=frozenset(
        {
            "llm.usage.total_tokens",
            "gen_ai.usage.total_tokens",
            "llm.request.type",
            "gen_ai.is_streaming",
            "llm.is_streaming",
            "gen_ai.usage.reasoning_tokens",
            "llm.usage.reasoning_tokens",
            "gen_ai.openai.api_base",
            _TRACELOOP_SPAN_KIND,
        }
    ),
    total_tokens=("gen_ai.usage.total_tokens", "llm.usage.total_tokens"),
    reasoning=(
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
        "gen_ai.usage.reasoning_tokens",
        "llm.usage.reasoning_tokens",
    ),
    operation=(sc.GEN_AI_OPERATION_NAME, "llm.request.type"),
    streamed=("gen_ai.is_streaming", "llm.is_streaming", sc.GEN_AI_REQUEST_STREAM),
    user=(sc.USER_ID, "gen_ai.user", "llm.user"),
    metadata_prefixes=("traceloop.association.properties.",),
    counted=_openllmetry_counted,
)

# Tried in order; OTEL_GENAI is the fallback for any span with GenAI usage.
DIALECTS: Final = (ANTHROPIC_SDK, TOKENTRAIL, VERCEL_AI, OPENINFERENCE, PYDANTIC_AI, OPENLLMETRY, OTEL_GENAI)
_MARKED: Final = tuple(d for d in DIALECTS if d.markers)

_ATTRIBUTION_KEYS: Final = frozenset(
    {
        sc.USER_ID,
        sc.TOKENTRAIL_TAGS,
        sc.TOKENTRAIL_CREDENTIAL_TYPE,
        sc.TOKENTRAIL_CREDENTIAL_ID,
        sc.TOKENTRAIL_API,
        sc.TOKENTRAIL_STREAM_INCOMPLETE,
        sc.TOKENTRAIL_USAGE_MISSING,
        TOKENTRAIL_DUPLICATE,
        sc.GEN_AI_OPERATION_NAME,
        sc.GEN_AI_RESPONSE_ID,
        sc.GEN_AI_REQUEST_STREAM,
        sc.ERROR_TYPE,
        _VERCEL_PROVIDER_METADATA,
        _OI_OUTPUT_VALUE,
        _OI_INVOCATION_PARAMETERS,
        *_VERCEL_INPUT_DETAILS,
    }
)
_KEYS: Final = frozenset().union(_ATTRIBUTION_KEYS, *(d.keys() for d in DIALECTS))
# Any of these makes a span a GenAI call (besides the markers and the Anthropic span name).
_USAGE_KEYS: Final = frozenset().union(*(d.usage_keys() for d in DIALECTS))
_USAGE_KEYS_OF: Final = {d.source: d.usage_keys() for d in DIALECTS}
_NEEDS_USAGE: Final = frozenset(d.source for d in DIALECTS if d not in (ANTHROPIC_SDK, TOKENTRAIL))


_EMPTY: Final = frozenset[str]()


class SpanRejected(ValueError):
    """A GenAI span that cannot become a record; the message goes back to the exporter in partial_success."""


@dataclass(slots=True)
class NormalizeResult:
    records: list[UsageRecord] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    skipped: int = 0  # spans that are not LLM calls (or not counted: aggregates, duplicates)
    received: int = 0  # every span in the request
    dropped_fields: int = 0  # attribution values dropped or truncated (the record is kept)
    warnings: list[str] = field(default_factory=list)


class _Notes:
    """Warnings about one span's dropped fields, attached to the result only if the span is kept."""

    __slots__ = ("messages",)

    def __init__(self) -> None:
        self.messages: list[str] = []


# -- reading values --------------------------------------------------------------------------------------------


def _first(found: Found, keys: tuple[str, ...]) -> AnyValue | None:
    for key in keys:
        value = found.get(key)
        if value is not None:
            return value
    return None


def _count(found: Found, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = found.get(key)
        if value is not None:
            n = as_int(value, key)
            if n is None:
                continue
            if n < 0 or n > MAX_TOKENS:
                raise SpanRejected(f"{key}={n} is out of range [0, {MAX_TOKENS}]")
            return n
    return None


def _sum(found: Found, keys: tuple[str, ...]) -> int:
    total = 0
    for key in keys:
        n = _count(found, (key,))
        if n:
            total += n
    return total


def _is_count(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_TOKENS


def _json_object(value: AnyValue | None, exact: bool = False) -> object:
    """A JSON object attribute; ``exact`` reads numbers with a fraction as ``Decimal`` (amounts of money)."""
    if value is None or value.WhichOneof("value") != "string_value":
        return None
    text = value.string_value
    if len(text) > MAX_METADATA_JSON_CHARS or not text.lstrip().startswith("{"):
        return None
    try:
        return json.loads(text, parse_float=Decimal) if exact else json.loads(text)
    except (ValueError, RecursionError):
        return None


def _name(found: Found, keys: tuple[str, ...], what: str) -> str | None:
    """A provider or model name: a string of at most MAX_NAME_CHARS, else the span is rejected."""
    value = _first(found, keys)
    text = as_str(value)
    if text is None:
        return None
    text = text.strip()
    if len(text) > MAX_NAME_CHARS:
        raise SpanRejected(f"{what} is {len(text)} characters long (at most {MAX_NAME_CHARS})")
    return text or None


def _optional_name(found: Found, keys: tuple[str, ...], what: str, notes: _Notes) -> str | None:
    """An id or label that the record can live without: dropped, with a warning, when it is not a sane name."""
    text = as_str(_first(found, keys))
    if text is None:
        return None
    if len(text) > MAX_NAME_CHARS:
        notes.messages.append(f"{what} dropped: {len(text)} characters (at most {MAX_NAME_CHARS})")
        return None
    return text


def _service_tier(found: Found, dialect: Dialect, notes: _Notes) -> str | None:
    tier = _optional_name(found, dialect.service_tier, "service tier", notes)
    if tier is None:
        return None
    return tier.strip().lower() or None


def _reported_cost(found: Found, dialect: Dialect, notes: _Notes) -> Decimal | None:
    """A provider- or gateway-reported cost in USD: an attribute (number or decimal text), else the Vercel AI SDK's
    provider metadata (AI Gateway ``gateway.cost``, OpenRouter ``openrouter.usage.cost``). A value that is not a
    finite, non-negative amount the cost column can hold is dropped with a warning."""
    value = _first(found, dialect.reported_cost)
    raw: object = None
    if value is not None:
        raw = as_python(value)
        if raw is None or raw == "":
            return None
    else:
        meta = found.get(_VERCEL_PROVIDER_METADATA)
        if meta is None:
            return None
        obj = _json_object(meta, exact=True)
        if not isinstance(obj, dict):
            return None
        gateway, openrouter = obj.get("gateway"), obj.get("openrouter")
        if isinstance(gateway, dict) and gateway.get("cost") is not None:
            raw = gateway["cost"]
        elif isinstance(openrouter, dict) and isinstance(openrouter.get("usage"), dict):
            raw = openrouter["usage"].get("cost")
        if raw is None:
            return None
    cost = _decimal(raw)
    if cost is None or not (0 <= cost < MAX_REPORTED_COST):
        notes.messages.append(f"reported cost {str(raw)[:40]!r} dropped: not an amount in USD")
        return None
    return to_cost(cost)


def _decimal(raw: object) -> Decimal | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, Decimal)):
        value = Decimal(raw)
    elif isinstance(raw, float):
        value = Decimal(repr(raw))  # the shortest text of the double: what the sender wrote
    elif isinstance(raw, str) and len(raw) <= 64:
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return value if value.is_finite() else None


# -- attribution -----------------------------------------------------------------------------------------------

_USER_NAMES: Final = frozenset({"user", "userid", "user_id", "user.id", "enduser.id", "enduserid"})


def _metadata_items(span: Span, dialect: Dialect, found: Found) -> Iterable[tuple[str, object]]:
    if dialect.metadata_prefixes:
        prefixes = dialect.metadata_prefixes
        attributes = span.attributes  # every attribute, not only the known keys in ``found``
        if isinstance(attributes, Mapping) or hasattr(attributes, "get") and not hasattr(attributes, "add"):
            by_key: dict[str, AnyValue] = {k: attributes.get(k) for k in list(attributes)}
        else:
            by_key = {kv.key: kv.value for kv in attributes}  # the last of a repeated key wins
        for key, value in sorted(by_key.items(), key=lambda item: item[0]):  # in key order, whatever the transport
            for prefix in prefixes:
                if key.startswith(prefix):
                    if value is not None:
                        yield key[len(prefix) :], as_python(value)
                    break
    for key in dialect.metadata_json:
        obj = _json_object(found.get(key))
        if isinstance(obj, dict):
            yield from obj.items()


def _attribution(span: Span, dialect: Dialect, found: Found, notes: _Notes) -> tuple[str | None, list[str]]:
    user = as_str(_first(found, dialect.user))
    tags: list[str] = []
    for key in dialect.tags:
        value = found.get(key)
        if value is not None:
            tags.extend(as_str_list(value))
    if dialect.metadata_prefixes or dialect.metadata_json:
        for name, value in _metadata_items(span, dialect, found):
            normalized = name.strip().lower().replace("-", "_")
            if normalized in _USER_NAMES:
                if user is None and isinstance(value, (str, int)) and not isinstance(value, bool):
                    user = str(value)
            elif normalized == "tags":
                if isinstance(value, str):
                    tags.extend(t for t in value.split(",") if t.strip())
                elif isinstance(value, list):
                    tags.extend(v for v in value if isinstance(v, str))
            elif isinstance(value, (str, int, float, bool)):
                tags.append(f"{name}:{value}")
    if user is not None:
        user = user.strip() or None
        if user is not None and len(user) > MAX_USER_CHARS:
            notes.messages.append(f"user id truncated from {len(user)} to {MAX_USER_CHARS} characters")
            user = user[:MAX_USER_CHARS]
    return user, _limit_tags(tags, notes) if tags else tags


def _limit_tags(tags: list[str], notes: _Notes) -> list[str]:
    """At most MAX_TAGS distinct tags of 1-MAX_TAG_CHARS characters, first ones kept."""
    out: list[str] = []
    seen: set[str] = set()
    truncated = 0
    for tag in tags:
        tag = tag.strip()
        if not tag:
            continue
        if len(tag) > MAX_TAG_CHARS:
            tag = tag[:MAX_TAG_CHARS]
            truncated += 1
        if tag in seen:
            continue
        if len(out) == MAX_TAGS:
            notes.messages.append(f"{len(tags)} tags: only the first {MAX_TAGS} distinct ones kept")
            break
        seen.add(tag)
        out.append(tag)
    if truncated:
        notes.messages.append(f"{truncated} tag(s) truncated to {MAX_TAG_CHARS} characters")
    return out


# -- one span ------------------------------------------------------------------------------------------------


def _dialect(span: Span, found: Found, present: frozenset[str] | set[str]) -> Dialect | None:
    """Which dialect wrote this span, or None when it is not an LLM call to count (the common, cheap case).
    ``present`` is the set of known keys the span carries."""
    if span.name == ANTHROPIC_MESSAGES_CREATE:
        dialect = ANTHROPIC_SDK
    elif not present:
        return None
    else:
        for candidate in _MARKED:
            if not candidate.markers.isdisjoint(present):
                dialect = candidate
                break
        else:
            if _USAGE_KEYS.isdisjoint(present):
                return None
            dialect = OTEL_GENAI
    if dialect.counted is not None and not dialect.counted(span, found):
        return None
    if sc.GEN_AI_OPERATION_NAME in present and as_str(found.get(sc.GEN_AI_OPERATION_NAME)) in AGGREGATE_OPERATIONS:
        return None
    if TOKENTRAIL_DUPLICATE in present and as_bool(found.get(TOKENTRAIL_DUPLICATE)):
        return None
    if dialect.source in _NEEDS_USAGE and _USAGE_KEYS_OF[dialect.source].isdisjoint(present):
        return None  # marked by a dialect but without usage: a workflow, tool or retrieval span
    return dialect


def _provider(found: Found, dialect: Dialect) -> str | None:
    name = _name(found, dialect.provider, "provider")
    if name is None:
        return dialect.default_provider
    if dialect.provider_prefix_only:
        name = name.split(".", 1)[0]
    key = name.lower()
    return dialect.provider_names.get(key, key)


def normalize_span(
    span: Span,
    found: Found,
    dialect: Dialect,
    service: str | None,
    environment: str | None,
    *,
    notes: _Notes | None = None,
    now_nanos: int | None = None,
) -> UsageRecord:
    """One record from one span already known to be a GenAI call; raises ``SpanRejected`` with the reason."""
    notes = notes if notes is not None else _Notes()
    provider_name = _provider(found, dialect)
    request_model = _name(found, dialect.request_model, "request model")
    model = _name(found, dialect.response_model, "model") or request_model
    if not provider_name or not model:
        missing = " and ".join(n for n, v in (("provider", provider_name), ("model", model)) if not v)
        raise SpanRejected(f"span {span.name[:100]!r} has GenAI usage but no {missing}")
    if len(span.trace_id) != 16 or len(span.span_id) != 8 or not any(span.trace_id) or not any(span.span_id):
        raise SpanRejected(f"span {span.name[:100]!r} has no valid trace or span id")
    start = span.start_time_unix_nano
    now = now_nanos if now_nanos is not None else time.time_ns()
    if start < MIN_START_NANOS or start > now + MAX_FUTURE_NANOS:
        when = "no start time" if not start else f"start time {_iso(start)} outside [2000-01-01, now + 7 days]"
        raise SpanRejected(f"span {span.name[:100]!r} has {when}")

    provider = canonical_provider(provider_name)
    try:
        usage = Usage(
            input=_count(found, dialect.input_tokens),
            output=_count(found, dialect.output_tokens),
            cache_read=_count(found, dialect.cache_read) or 0,
            cache_write=_count(found, dialect.cache_write) or 0,
            reasoning=_count(found, dialect.reasoning) or 0,
            input_includes_cache=dialect.input_includes_cache,
            cache_write_1h=_count(found, dialect.cache_write_1h) or 0,
            input_audio=_count(found, dialect.input_audio) or 0,
            output_audio=_count(found, dialect.output_audio) or 0,
        )
        if dialect.total_tokens and (usage.input is None) != (usage.output is None):
            total = _count(found, dialect.total_tokens)
            if total is not None:
                known = usage.input if usage.input is not None else usage.output
                assert known is not None
                if total >= known:
                    if usage.input is None:
                        usage.input = total - known
                    else:
                        usage.output = total - known
        extra_input = _sum(found, dialect.extra_input)
        extra_output = _sum(found, dialect.extra_output)
    except NotAnInteger as exc:
        raise SpanRejected(str(exc)) from None
    if dialect.resolve is not None:
        usage = dialect.resolve(span, found, usage, provider)

    usage_missing = as_bool(found.get(sc.TOKENTRAIL_USAGE_MISSING))
    error_type = _optional_name(found, (sc.ERROR_TYPE,), "error.type", notes)
    is_error = error_type is not None or span.status.code == STATUS_CODE_ERROR
    if usage.input is None and usage.output is None and not is_error:
        # A successful call that reported no usage was still billed: never price it as $0.
        usage_missing = True

    inclusive_input = usage.input or 0
    if not usage.input_includes_cache:
        inclusive_input += usage.cache_read + usage.cache_write
    # House rule: cached tokens are part of an inclusive input count, never added on top of it.
    inclusive_input += extra_input
    output_tokens = (usage.output or 0) + extra_output
    if inclusive_input > MAX_TOKENS or output_tokens > MAX_TOKENS:
        raise SpanRejected(f"token counts add up to more than {MAX_TOKENS}")
    cache_read, cache_write, reasoning = usage.cache_read, usage.cache_write, usage.reasoning
    if cache_read + cache_write > inclusive_input:
        notes.messages.append(
            f"cached input ({cache_read} read + {cache_write} written) exceeds input {inclusive_input}: capped"
        )
        cache_read = min(cache_read, inclusive_input)
        cache_write = min(cache_write, inclusive_input - cache_read)
    if reasoning > output_tokens:
        notes.messages.append(f"reasoning tokens {reasoning} exceed output {output_tokens}: capped")
        reasoning = output_tokens
    write_1h, audio_in, audio_out = usage.cache_write_1h, usage.input_audio, usage.output_audio
    if write_1h > cache_write:
        notes.messages.append(f"1-hour cache writes {write_1h} exceed cache writes {cache_write}: capped")
        write_1h = cache_write
    if audio_in > inclusive_input:
        notes.messages.append(f"audio input tokens {audio_in} exceed input {inclusive_input}: capped")
        audio_in = inclusive_input
    if audio_out > output_tokens:
        notes.messages.append(f"audio output tokens {audio_out} exceed output {output_tokens}: capped")
        audio_out = output_tokens

    if is_error:
        status = "error"
    elif as_bool(found.get(sc.TOKENTRAIL_STREAM_INCOMPLETE)):
        status = "incomplete"
    else:
        status = "ok"

    credential_type = (as_str(found.get(sc.TOKENTRAIL_CREDENTIAL_TYPE)) or "").strip().lower()
    if credential_type not in sc.CREDENTIAL_TYPES:
        credential_type = DEFAULT_CREDENTIAL_TYPE
    user, tags = _attribution(span, dialect, found, notes)
    streamed = False
    for key in dialect.streamed:
        value = found.get(key)
        if value is not None:
            streamed = as_bool(value)
            break

    end = span.end_time_unix_nano
    record = UsageRecord(
        timestamp=nanos_to_datetime(start),
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        response_id=_optional_name(found, dialect.response_id, "response id", notes),
        service=service,
        environment=environment,
        source=dialect.source,
        api=as_str(found.get(sc.TOKENTRAIL_API)) or dialect.default_api,
        operation=_optional_name(found, dialect.operation, "operation", notes) or dialect.default_operation,
        provider=provider,
        model=model,
        request_model=request_model,
        user_id=user,
        tags=tags,
        credential_type=credential_type,
        credential_id=_optional_name(found, (sc.TOKENTRAIL_CREDENTIAL_ID,), "credential id", notes),
        input_tokens=inclusive_input,
        output_tokens=output_tokens,
        cached_input_tokens=cache_read,
        cache_creation_input_tokens=cache_write,
        reasoning_tokens=reasoning,
        cache_creation_1h_input_tokens=write_1h,
        input_audio_tokens=audio_in,
        output_audio_tokens=audio_out,
        service_tier=_service_tier(found, dialect, notes),
        reported_cost=_reported_cost(found, dialect, notes),
        duration_ms=(end - start) / 1e6 if end >= start else None,
        streamed=streamed,
        status=status,
        error_type=error_type,
    )
    if dialect.finish is not None:
        dialect.finish(span, found, record)
    if usage_missing:
        record.price_status = NO_USAGE  # never priced (zero tokens would be a silent $0 for a billed call)
    return record


def _iso(nanos: int) -> str:
    try:
        return datetime.fromtimestamp(nanos / 1e9, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{nanos} ns"


def _iter_spans(request: ExportTraceServiceRequest) -> Iterable[tuple[Span, str | None, str | None]]:
    for resource_spans in request.resource_spans:
        service, environment = resource_service_environment(resource_spans.resource)
        if service is not None and len(service) > MAX_NAME_CHARS:
            service = service[:MAX_NAME_CHARS]
        if environment is not None and len(environment) > MAX_NAME_CHARS:
            environment = environment[:MAX_NAME_CHARS]
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield span, service, environment


def normalize_request(request: ExportTraceServiceRequest) -> NormalizeResult:
    """All usage records in one OTLP export (the standard message, or the faster ``otlp.fast_request_class()`` one
    the receiver parses into). Never raises for a bad span: it is rejected, counted and explained."""
    result = NormalizeResult()
    records = result.records
    keys = _KEYS
    now = time.time_ns()
    embedding_parents: dict[bytes, int] | None = None  # v7 Vercel embeddings: an outer span over inner ones
    for span, service, environment in _iter_spans(as_fast_request(request)):
        result.received += 1
        attributes = span.attributes  # a upb map: lookups by key stay in C
        present = keys.intersection(attributes) if attributes else _EMPTY
        # Only the known keys, as a plain dict: every later lookup (and every miss) is a dict lookup.
        found = {key: attributes.get(key) for key in present}
        dialect = _dialect(span, found, present)
        if dialect is None:
            result.skipped += 1
            continue
        notes = _Notes()
        try:
            record = normalize_span(span, found, dialect, service, environment, notes=notes, now_nanos=now)
        except SpanRejected as exc:
            _reject(result, span, str(exc))
            continue
        except Exception as exc:  # a bug must cost one span, not the batch
            log.exception("normalizing span %r failed", span.name[:100])
            _reject(result, span, f"span {span.name[:100]!r} could not be read: {type(exc).__name__}")
            continue
        records.append(record)
        if notes.messages:
            result.dropped_fields += len(notes.messages)
            if len(result.warnings) < MAX_ERRORS:
                result.warnings.append(f"span {span.name[:100]!r}: " + "; ".join(notes.messages))
        if record.operation == "embeddings" and span.parent_span_id:
            if embedding_parents is None:
                embedding_parents = {}
            embedding_parents[span.parent_span_id] = embedding_parents.get(span.parent_span_id, 0) + 1
    if embedding_parents:
        _drop_outer_embedding_spans(result, embedding_parents)
    return result


def _drop_outer_embedding_spans(result: NormalizeResult, parents: dict[bytes, int]) -> None:
    """An embeddings span whose children in the same export are embeddings spans repeats their total (the Vercel
    AI SDK v7 ``embeddings {model}`` root over its per-call spans): only the children count."""
    outer = {p.hex() for p in parents}
    kept = [r for r in result.records if not (r.operation == "embeddings" and r.span_id in outer)]
    result.skipped += len(result.records) - len(kept)
    result.records = kept


def _reject(result: NormalizeResult, span: Span, message: str) -> None:
    result.rejected += 1
    if len(result.errors) < MAX_ERRORS:
        result.errors.append(message)
