"""Every GenAI span dialect becomes one usage record.

Each dialect is a small table (``Dialect``) naming where it keeps each fact; the code that reads spans is shared.
A span is read once: only the attribute keys some dialect names are kept, so a span that is not about an LLM call
costs one pass of set lookups and no conversions. One bad span is rejected with a message and counted; the rest of
its batch is kept.

Speed (the receiver's ceiling is here, DESIGN section 7). Which key supplies each fact depends only on the dialect
and on which known keys a span carries, so that choice is made once per distinct key set (a ``_Plan``, cached) and
a span costs one lookup per fact it carries. Attribute values are decoded from their ``AnyValue`` encodings by
``otlp.any_value``, which remembers the values that repeat (names, flags, counts). Each record is one tuple in
``schema.FIELD_NAMES`` order; a request's records become ``schema.UsageColumns`` without an object per record
(``NormalizeResult.records`` builds ``UsageRecord`` objects for callers that want them).

Dialects, tried in this order (the first whose markers a span carries wins):

=================  =======================================================================================
``anthropic-sdk``  the Anthropic Python SDK's own ``anthropic.messages.create`` span
``tokentrail``     our instrumentation (``tokentrail.api``)
``vercel-ai``      the Vercel AI SDK's legacy ``ai.*.doGenerate`` / ``doStream`` / ``doEmbed`` spans (never the
                   outer ``ai.generateText``-style spans, which repeat the totals of the calls under them)
``openinference``  Arize OpenInference (``llm.token_count.*``; ``LLM`` and ``EMBEDDING`` span kinds only)
``pydantic-ai``    pydantic-ai / Logfire ``chat`` spans (never the agent run's aggregated usage)
``openllmetry``    Traceloop OpenLLMetry, current and legacy names, ``traceloop.association.properties.*``
``otel-genai``     the OTel GenAI semantic conventions of any version (openai-v2 in both modes, the Vercel AI
                   SDK v7 ``chat {model}`` spans, and anything else that follows them)
=================  =======================================================================================

House rules, whatever the dialect: ``input_tokens`` includes cached input (dialects whose input count excludes
the cache add it, never the others), ``output_tokens`` includes reasoning, and spans that aggregate other calls'
usage (``invoke_agent``, agent runs, outer Vercel spans, a span marked ``tokentrail.duplicate``) are never counted.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import Any, Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from tokentrail.instrumentation import semconv as sc
from tokentrail.processor.normalize.otlp import _MEMO as _VALUES  # any_value's memo, read inline on the hot path
from tokentrail.processor.normalize.otlp import (
    STATUS_CODE_ERROR,
    UNSET,
    BytesValue,
    InvalidValue,
    any_value,
    as_fast_request,
    resource_service_environment,
)
from tokentrail.processor.pricing.catalog import canonical_provider
from tokentrail.processor.schema import (
    COST_PRECISION,
    COST_SCALE,
    CURRENCY,
    FIELD_NAMES,
    NO_USAGE,
    UNPRICED,
    UsageColumns,
    UsageRecord,
    to_picos,
)

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
    "Finish",
    "NormalizeResult",
    "SpanRejected",
    "normalize_bytes",
    "normalize_request",
]

try:
    from tokentrail.processor.normalize._otlpscan import ScanFallback
    from tokentrail.processor.normalize._otlpscan import scan as _scan
except ImportError:  # installed without a C compiler: the protobuf path reads everything, only slower
    _scan = None

    class ScanFallback(Exception):  # type: ignore[no-redef]
        pass


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


Found = Mapping[str, Any]  # a span's known attributes: key -> Python value (``otlp.any_value``), ``UNSET`` for no value


class Finish:
    """The fields a dialect's ``finish`` hook may adjust."""

    __slots__ = ("response_id", "operation", "streamed")

    def __init__(self, response_id: str | None, operation: str | None, streamed: bool) -> None:
        self.response_id = response_id
        self.operation = operation
        self.streamed = streamed


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
    finish: Callable[[Span, Found, Finish], None] | None = None

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
    return _str(found.get(_VERCEL_OPERATION_ID)) or span.name


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


def _vercel_finish(span: Span, found: Found, fields: Finish) -> None:
    operation_id = _vercel_operation_id(span, found)
    fields.streamed = operation_id.endswith(".doStream")
    if fields.operation is None or fields.operation.startswith("ai."):
        fields.operation = "embeddings" if operation_id.endswith(".doEmbed") else "chat"


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
    kind = _str(found.get(_OI_SPAN_KIND))
    return kind is None or kind.upper() in _OI_COUNTED_KINDS


def _openinference_finish(span: Span, found: Found, fields: Finish) -> None:
    if fields.response_id is None:
        value = found.get(_OI_OUTPUT_VALUE)
        if type(value) is str:
            m = _OI_RESPONSE_ID_RE.match(value[:512])
            if m:
                fields.response_id = m.group(1)
    params = found.get(_OI_INVOCATION_PARAMETERS)
    if type(params) is str:
        text = params[:4096]
        fields.streamed = '"stream": true' in text or '"stream":true' in text
    kind = _str(found.get(_OI_SPAN_KIND))
    if fields.operation is None:
        fields.operation = "embeddings" if kind and kind.upper() == "EMBEDDING" else "chat"


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
    kind = _str(found.get(_TRACELOOP_SPAN_KIND))
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
    rows: list[tuple[Any, ...]] = field(default_factory=list)  # one per record, in ``FIELD_NAMES`` order
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    skipped: int = 0  # spans that are not LLM calls (or not counted: aggregates, duplicates)
    received: int = 0  # every span in the request
    dropped_fields: int = 0  # attribution values dropped or truncated (the record is kept)
    warnings: list[str] = field(default_factory=list)

    @property
    def columns(self) -> UsageColumns:
        """The records as columns (timestamps in microseconds, costs in pico-dollars: see ``UsageColumns``)."""
        return UsageColumns.from_rows(self.rows)

    @property
    def records(self) -> list[UsageRecord]:
        return self.columns.to_records()


class _Notes:
    """Warnings about one span's dropped fields, attached to the result only if the span is kept."""

    __slots__ = ("messages",)

    def __init__(self) -> None:
        self.messages: list[str] = []


# -- reading values --------------------------------------------------------------------------------------------
# Values are Python objects (``otlp.any_value``); these helpers give them the meaning the attribute's role needs.

_KIND_NAMES: Final = {
    str: "string", bool: "bool", float: "double", tuple: "array", dict: "kvlist", bytes: "bytes", BytesValue: "bytes",
}


def _str(value: object) -> str | None:
    """A string attribute; numbers are accepted as their text because some SDKs send ids as numbers."""
    kind = type(value)
    if kind is str:
        return value or None  # type: ignore[return-value]
    if kind is int:
        return str(value)
    if kind is float and math.isfinite(value):  # type: ignore[arg-type]
        return repr(value)
    return None


def _int(value: object, key: str) -> int | None:
    """A count. Integral doubles are accepted because JavaScript SDKs may export whole numbers as doubles; no value
    is None; anything else raises ``SpanRejected`` rather than pricing from a guess."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[return-value]
    if value is UNSET:
        return None
    if kind is float and math.isfinite(value) and value.is_integer():  # type: ignore[arg-type, union-attr]
        return int(value)  # type: ignore[arg-type]
    raise SpanRejected(f"{key} must be an integer, got {_KIND_NAMES.get(kind, kind.__name__)}")


def _bool(value: object) -> bool:
    """A flag; the strings "true"/"1" count because baggage-derived attributes arrive as text."""
    kind = type(value)
    if kind is bool:
        return value  # type: ignore[return-value]
    if kind is str:
        return value.strip().lower() in ("true", "1", "yes")  # type: ignore[union-attr]
    if kind is int:
        return value != 0
    return False


def _str_list(value: object) -> list[str]:
    """A string array; a lone string becomes a one-item list and non-string items are dropped."""
    kind = type(value)
    if kind is tuple:
        return [v for v in value if type(v) is str]  # type: ignore[union-attr]
    if kind is str:
        return [value] if value else []  # type: ignore[list-item]
    return []


def _python(value: object) -> object:
    return None if value is UNSET else value


def _count(found: Found, keys: tuple[str, ...]) -> int | None:
    """The first of ``keys`` (present keys, in the dialect's order) that states a count."""
    for key in keys:
        n = _int(found[key], key)
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
    return type(value) is int and 0 <= value <= MAX_TOKENS  # type: ignore[operator]


def _json_object(value: object, exact: bool = False) -> object:
    """A JSON object attribute; ``exact`` reads numbers with a fraction as ``Decimal`` (amounts of money)."""
    if type(value) is not str:
        return None
    text: str = value  # type: ignore[assignment]
    if len(text) > MAX_METADATA_JSON_CHARS or not text.lstrip().startswith("{"):
        return None
    try:
        return json.loads(text, parse_float=Decimal) if exact else json.loads(text)
    except (ValueError, RecursionError):
        return None


def _name(value: object, what: str) -> str | None:
    """A provider or model name: a string of at most MAX_NAME_CHARS, else the span is rejected."""
    text = _str(value)
    if text is None:
        return None
    stripped = text.strip()
    if len(stripped) > MAX_NAME_CHARS:
        raise SpanRejected(f"{what} is {len(stripped)} characters long (at most {MAX_NAME_CHARS})")
    if stripped is value and stripped and len(_CLEAN_NAMES) < 4096:
        _CLEAN_NAMES[stripped] = None  # ``_fast_row`` takes it as it is
    return stripped or None


def _optional_name(value: object, what: str, notes: _Notes) -> str | None:
    """An id or label that the record can live without: dropped, with a warning, when it is not a sane name."""
    text = _str(value)
    if text is None:
        return None
    if len(text) > MAX_NAME_CHARS:
        notes.messages.append(f"{what} dropped: {len(text)} characters (at most {MAX_NAME_CHARS})")
        return None
    return text


def _reported_cost(found: Found, plan: _Plan, notes: _Notes) -> int | None:
    """A provider- or gateway-reported cost in USD, as pico-dollars: an attribute (number or decimal text), else the
    Vercel AI SDK's provider metadata (AI Gateway ``gateway.cost``, OpenRouter ``openrouter.usage.cost``). A value
    that is not a finite, non-negative amount the cost column can hold is dropped with a warning."""
    raw: object = None
    if plan.reported_cost is not None:
        raw = _python(found[plan.reported_cost])
        if raw is None or raw == "":
            return None
    else:
        obj = _json_object(found[_VERCEL_PROVIDER_METADATA], exact=True)
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
        notes.messages.append(f"reported cost {str(_as_lists(raw))[:40]!r} dropped: not an amount in USD")
        return None
    return to_picos(cost)


def _as_lists(value: object) -> object:
    if isinstance(value, tuple):
        return [_as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


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


class _BadAttribute(Exception):
    """An attribute whose value cannot be decoded: the span is read again without it."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason


def _metadata_items(span: Span, dialect: Dialect, found: Found) -> Iterable[tuple[str, object]]:
    if dialect.metadata_prefixes:
        prefixes = dialect.metadata_prefixes
        attributes = span.attributes  # every attribute, not only the known keys in ``found``
        for key in sorted(attributes):  # key order: a upb map iterates in hash order, the scanner in wire order
            for prefix in prefixes:
                if key.startswith(prefix):
                    try:
                        value = _decoded(attributes[key])
                    except InvalidValue as exc:
                        raise _BadAttribute(key, str(exc)) from None
                    yield key[len(prefix) :], _python(value)
                    break
    for key in dialect.metadata_json:
        obj = _json_object(found.get(key))
        if isinstance(obj, dict):
            yield from obj.items()


def _attribution(
    span: Span, dialect: Dialect, plan: _Plan, found: Found, notes: _Notes
) -> tuple[str | None, list[str]]:
    user = _str(found[plan.user]) if plan.user is not None else None
    tags: list[str] = []
    for key in plan.tags:
        tags.extend(_str_list(found[key]))
    if dialect.metadata_prefixes or plan.metadata_json:
        for name, value in _metadata_items(span, dialect, found):
            normalized = name.strip().lower().replace("-", "_")
            if normalized in _USER_NAMES:
                if user is None and isinstance(value, (str, int)) and not isinstance(value, bool):
                    user = str(value)
            elif normalized == "tags":
                if isinstance(value, str):
                    tags.extend(t for t in value.split(",") if t.strip())
                elif isinstance(value, (list, tuple)):
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


# -- plans: which key supplies each fact, per set of known keys ------------------------------------------------

# What the general path learnt about values, so the fast path can take them as they are. Filled value by value as the
# general path meets them (bounded: values come from spans), never emptied (the generated functions hold them).
_CLEAN_NAMES: dict[str, None] = {}  # model names already clean: 1-MAX_NAME_CHARS characters, nothing to strip
_CREDENTIAL_TYPES: dict[object, str] = {}  # credential type attribute -> the record's credential type
_TAG_LISTS: dict[object, tuple[str, ...]] = {}  # a tags value -> its tags, when limiting them said nothing



def _present(keys: tuple[str, ...], present: frozenset[str]) -> tuple[str, ...]:
    return tuple(k for k in keys if k in present)


def _first_present(keys: tuple[str, ...], present: frozenset[str]) -> str | None:
    for key in keys:
        if key in present:
            return key
    return None


class _Plan:
    """For one set of known keys a span carries: its dialect (None: not a call to count, whatever the values) and,
    for each fact, the keys that state it, in the dialect's order (a tuple where the first with a value wins, a key
    where the first present one is the answer)."""

    __slots__ = (
        "present", "dialect", "anthropic", "provider", "provider_names", "request_model", "response_model", "input",
        "output", "total", "cache_read", "cache_write", "reasoning", "cache_write_1h", "input_audio", "output_audio",
        "extra_input", "extra_output", "details", "response_id", "operation", "streamed", "user", "tags",
        "metadata_json", "attribution", "service_tier", "reported_cost", "cost_metadata", "aggregate",
        "duplicate", "usage_missing", "incomplete", "error_type", "credential_type", "credential_id", "api", "order",
        "fast", "fast_source",
    )

    def __init__(self, present: frozenset[str], dialect: Dialect | None) -> None:
        self.present = present
        self.dialect = dialect
        self.anthropic: _Plan | None = None
        self.order = tuple(sorted(present))
        self.fast: Callable[..., tuple[Any, ...]] | None = None
        self.fast_source: str | None = None
        if dialect is None:
            return
        d, p = dialect, present
        self.provider = _first_present(d.provider, p)
        self.provider_names: dict[str, str] = {}  # raw provider value -> canonical provider, for this dialect
        self.request_model = _first_present(d.request_model, p)
        self.response_model = _first_present(d.response_model, p)
        self.input = _present(d.input_tokens, p)
        self.output = _present(d.output_tokens, p)
        self.total = _present(d.total_tokens, p)
        self.cache_read = _present(d.cache_read, p)
        self.cache_write = _present(d.cache_write, p)
        self.reasoning = _present(d.reasoning, p)
        self.cache_write_1h = _present(d.cache_write_1h, p)
        self.input_audio = _present(d.input_audio, p)
        self.output_audio = _present(d.output_audio, p)
        self.extra_input = _present(d.extra_input, p)
        self.extra_output = _present(d.extra_output, p)
        # Any count beyond the main ones: the slower general path reads them.
        self.details = bool(
            self.total or self.cache_write_1h or self.input_audio or self.output_audio or self.extra_input
            or self.extra_output or d.resolve is not None or not d.input_includes_cache
        )
        self.response_id = _first_present(d.response_id, p)
        self.operation = _first_present(d.operation, p)
        self.streamed = _first_present(d.streamed, p)
        self.user = _first_present(d.user, p)
        self.tags = _present(d.tags, p)
        self.metadata_json = _present(d.metadata_json, p)
        self.attribution = bool(d.metadata_prefixes or self.metadata_json)
        self.service_tier = _first_present(d.service_tier, p)
        self.reported_cost = _first_present(d.reported_cost, p)
        self.cost_metadata = self.reported_cost is None and _VERCEL_PROVIDER_METADATA in p
        self.aggregate = sc.GEN_AI_OPERATION_NAME in p
        self.duplicate = TOKENTRAIL_DUPLICATE in p
        self.usage_missing = sc.TOKENTRAIL_USAGE_MISSING in p
        self.incomplete = sc.TOKENTRAIL_STREAM_INCOMPLETE in p
        self.error_type = sc.ERROR_TYPE in p
        self.credential_type = sc.TOKENTRAIL_CREDENTIAL_TYPE in p
        self.credential_id = sc.TOKENTRAIL_CREDENTIAL_ID in p
        self.api = sc.TOKENTRAIL_API in p
        self.order = tuple(sorted(p))  # the known keys in the order ``_Shape.getter`` returns their values
        self.fast, self.fast_source = _compile_fast(self)

    def for_anthropic_span(self) -> _Plan:
        """The plan for a span named ``anthropic.messages.create`` carrying these keys (always that SDK's)."""
        plan = self.anthropic
        if plan is None:
            plan = self.anthropic = _Plan(self.present, ANTHROPIC_SDK)
        return plan

    def canonical_provider(self, raw: object) -> str | None:
        """The record's provider from the provider attribute's value (remembered per value)."""
        if type(raw) is str:
            cached = self.provider_names.get(raw)  # type: ignore[arg-type]
            if cached is not None:
                return cached
        assert self.dialect is not None
        name = _name(raw, "provider")
        if name is None:
            return None
        if self.dialect.provider_prefix_only:
            name = name.split(".", 1)[0]
        key = name.lower()
        provider = canonical_provider(self.dialect.provider_names.get(key, key))
        if len(self.provider_names) < 256 and type(raw) is str:
            self.provider_names[raw] = provider  # type: ignore[index]
        return provider


def _plan_dialect(present: frozenset[str]) -> Dialect | None:
    """The dialect of a span (not named ``anthropic.messages.create``) carrying exactly these known keys, or None when
    no span with them is a call to count. Values can still rule a span out (``_skip``)."""
    if not present:
        return None
    for candidate in _MARKED:
        if not candidate.markers.isdisjoint(present):
            dialect = candidate
            break
    else:
        if _USAGE_KEYS.isdisjoint(present):
            return None
        dialect = OTEL_GENAI
    if dialect.source in _NEEDS_USAGE and _USAGE_KEYS_OF[dialect.source].isdisjoint(present):
        return None  # marked by a dialect but without usage: a workflow, tool or retrieval span
    return dialect


_PLANS: dict[frozenset[str], _Plan] = {}
_MAX_PLANS: Final = 4096  # key sets come from spans: bound what a stream of odd spans can take


def _plan(present: frozenset[str]) -> _Plan:
    plan = _PLANS.get(present)
    if plan is None:
        plan = _Plan(present, _plan_dialect(present))
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[present] = plan
    return plan


def _skip(span: Span, dialect: Dialect, plan: _Plan, found: Found) -> bool:
    """True when the values say this span is not a call to count (an outer span, an aggregate, a duplicate)."""
    if dialect.counted is not None and not dialect.counted(span, found):
        return True
    if plan.aggregate and _str(found[sc.GEN_AI_OPERATION_NAME]) in AGGREGATE_OPERATIONS:
        return True
    return plan.duplicate and _bool(found[TOKENTRAIL_DUPLICATE])


# -- one span ------------------------------------------------------------------------------------------------


def _row(
    span: Span,
    found: Found,
    plan: _Plan,
    service: str | None,
    environment: str | None,
    notes: _Notes,
    now: int,
) -> tuple[Any, ...]:
    """One record (a ``FIELD_NAMES``-ordered tuple) from one span known to be a GenAI call; raises ``SpanRejected``."""
    dialect: Dialect = plan.dialect  # type: ignore[assignment]
    provider = plan.canonical_provider(found[plan.provider]) if plan.provider is not None else None
    if provider is None and dialect.default_provider is not None:
        provider = canonical_provider(dialect.default_provider)
    request_model = _name(found[plan.request_model], "request model") if plan.request_model is not None else None
    model = (_name(found[plan.response_model], "model") if plan.response_model is not None else None) or request_model
    if not provider or not model:
        missing = " and ".join(n for n, v in (("provider", provider), ("model", model)) if not v)
        raise SpanRejected(f"span {span.name[:100]!r} has GenAI usage but no {missing}")
    trace_id, span_id = span.trace_id, span.span_id
    if len(trace_id) != 16 or len(span_id) != 8 or not any(trace_id) or not any(span_id):
        raise SpanRejected(f"span {span.name[:100]!r} has no valid trace or span id")
    start = span.start_time_unix_nano
    if start < MIN_START_NANOS or start > now + MAX_FUTURE_NANOS:
        when = "no start time" if not start else f"start time {_iso(start)} outside [2000-01-01, now + 7 days]"
        raise SpanRejected(f"span {span.name[:100]!r} has {when}")

    # (read before the counts only so that its note comes first; a span rejected for its counts drops it anyway)
    error_type = _optional_name(found[sc.ERROR_TYPE], "error.type", notes) if plan.error_type else None
    inclusive_input: int
    output_tokens: int
    write_1h = audio_in = audio_out = 0
    if plan.details:
        inclusive_input, output_tokens, cache_read, cache_write, reasoning, write_1h, audio_in, audio_out, counted = (
            _usage(span, found, plan, provider, notes)
        )
    else:  # the common case: the main counts, an inclusive input
        inp = _count(found, plan.input) if plan.input else None
        out = _count(found, plan.output) if plan.output else None
        cache_read = (_count(found, plan.cache_read) or 0) if plan.cache_read else 0
        cache_write = (_count(found, plan.cache_write) or 0) if plan.cache_write else 0
        reasoning = (_count(found, plan.reasoning) or 0) if plan.reasoning else 0
        counted = inp is not None or out is not None
        inclusive_input = inp or 0
        output_tokens = out or 0
        if cache_read + cache_write > inclusive_input:
            notes.messages.append(
                f"cached input ({cache_read} read + {cache_write} written) exceeds input {inclusive_input}: capped"
            )
            cache_read = min(cache_read, inclusive_input)
            cache_write = min(cache_write, inclusive_input - cache_read)
        if reasoning > output_tokens:
            notes.messages.append(f"reasoning tokens {reasoning} exceed output {output_tokens}: capped")
            reasoning = output_tokens

    usage_missing = plan.usage_missing and _bool(found[sc.TOKENTRAIL_USAGE_MISSING])
    is_error = error_type is not None or span.status.code == STATUS_CODE_ERROR
    if not counted and not is_error:
        # A successful call that reported no usage was still billed: never price it as $0.
        usage_missing = True
    if is_error:
        status = "error"
    elif plan.incomplete and _bool(found[sc.TOKENTRAIL_STREAM_INCOMPLETE]):
        status = "incomplete"
    else:
        status = "ok"

    credential_type = DEFAULT_CREDENTIAL_TYPE
    if plan.credential_type:
        credential_type = _credential_type(found[sc.TOKENTRAIL_CREDENTIAL_TYPE])
    if plan.attribution:
        user, tags = _attribution(span, dialect, plan, found, notes)
    else:
        user = _user(found[plan.user], notes) if plan.user is not None else None
        tags = _tags(found, plan.tags, notes) if plan.tags else []
    streamed = _bool(found[plan.streamed]) if plan.streamed is not None else False
    response_id = _optional_name(found[plan.response_id], "response id", notes) if plan.response_id else None
    operation = (
        _optional_name(found[plan.operation], "operation", notes) if plan.operation is not None else None
    ) or dialect.default_operation
    if dialect.finish is not None:
        fields = Finish(response_id, operation, streamed)
        dialect.finish(span, found, fields)
        response_id, operation, streamed = fields.response_id, fields.operation, fields.streamed
    api = (_str(found[sc.TOKENTRAIL_API]) if plan.api else None) or dialect.default_api
    credential_id = (
        _optional_name(found[sc.TOKENTRAIL_CREDENTIAL_ID], "credential id", notes) if plan.credential_id else None
    )
    service_tier = None
    if plan.service_tier is not None:
        service_tier = _optional_name(found[plan.service_tier], "service tier", notes)
        if service_tier is not None:
            service_tier = service_tier.strip().lower() or None
    reported_cost = _reported_cost(found, plan, notes) if plan.reported_cost or plan.cost_metadata else None
    end = span.end_time_unix_nano
    return (
        start // 1000,  # timestamp (µs)
        trace_id.hex(),
        span_id.hex(),
        response_id,
        service,
        environment,
        dialect.source,
        api,
        operation,
        provider,
        model,
        request_model,
        user,
        tags,
        credential_type,
        credential_id,
        inclusive_input,
        output_tokens,
        cache_read,
        cache_write,
        reasoning,
        write_1h,
        audio_in,
        audio_out,
        service_tier,
        None,  # total_cost
        None,  # market_cost
        reported_cost,
        CURRENCY,
        NO_USAGE if usage_missing else UNPRICED,  # price_status (the pricer decides the rest)
        None,  # price_version
        (end - start) / 1e6 if end >= start else None,  # duration_ms
        streamed,
        status,
        error_type,
    )


class _Fallback(Exception):
    """The span needs the general path (a value to clean, cap, warn about or reject)."""


_SKIP: Final = ()  # a fast function's answer for a span that is not a call to count


def _compile_fast(plan: _Plan) -> tuple[Callable[..., tuple[Any, ...]] | None, str | None]:
    """The fast path for spans with this plan: a function ``fast(span, values, service, environment, now)`` written
    for exactly the keys the plan has (``values``: their decoded values, in ``plan.order``), so a span costs one
    check per fact it carries and nothing for the facts it lacks. It returns the record (``_row``'s tuple) or
    ``_SKIP``, and raises ``_Fallback`` whenever a value needs anything done to it (cleaning, capping, a warning,
    a rejection): the general path (``_row``) then decides everything again, so this path only ever takes spans
    whose record is obvious. Plans whose dialect needs hooks, attribution by prefix or JSON, or counts beyond the
    main ones get no fast path. Returns (function, its source) or (None, None).

    The source holds nothing from a span: keys become positions in ``values``, and names and limits come from the
    namespace below. ``tests/test_normalize_equivalence.py`` holds the two paths to the same records."""
    d = plan.dialect
    if (
        d is None
        or d.counted is not None
        or d.finish is not None
        or plan.details
        or plan.attribution
        or plan.error_type
        or plan.reported_cost is not None
        or plan.cost_metadata
        or len(plan.tags) > 1
        or plan.provider is None
        or (plan.request_model is None and plan.response_model is None)
    ):
        return None, None
    index = {key: i for i, key in enumerate(plan.order)}
    lines = ["def fast(span, values, service, environment, now):"]
    add = lines.append
    loaded: dict[str, str] = {}

    def v(key: str, text: bool = False) -> str:
        """A local holding the key's decoded value (``values`` holds the memo's value, or the raw encoding when
        the memo does not know it: ``bytes``, which no decoded value is). ``text``: a value that is usually unique
        (an id), decoded here when it is one plain string field, and never remembered."""
        name = loaded.get(key)
        if name is None:
            name = loaded[key] = f"v{index[key]}"
            add(f"    {name} = values[{index[key]}]")
            if text:
                add(
                    f"    if type({name}) is bytes: {name} = ({name}[2:].decode() if {name}[0] == 10 and {name}[1] < 128"
                    f" and {name}[1] + 2 == len({name}) else any_value({name}))"
                )
            else:
                add(f"    if type({name}) is bytes: {name} = any_value({name})")
        return name

    def first(keys: tuple[str, ...]) -> str | None:
        return keys[0] if keys else None

    operation_key = plan.operation
    if plan.aggregate:
        add(f"    operation = {v(sc.GEN_AI_OPERATION_NAME)}")
        add("    if type(operation) is not str or len(operation) > MAX_NAME_CHARS: raise _Fallback")
        add("    if operation in AGGREGATE_OPERATIONS: return _SKIP")
    if plan.duplicate:
        add(f"    if _bool({v(TOKENTRAIL_DUPLICATE)}): return _SKIP")
    add(f"    provider = {v(plan.provider)}")
    add("    if type(provider) is not str: raise _Fallback")
    add("    provider = provider_names.get(provider)")
    add("    if provider is None: raise _Fallback")
    if plan.request_model is not None:
        add(f"    request_model = {v(plan.request_model)}")
        add("    if type(request_model) is not str or request_model not in _CLEAN_NAMES: raise _Fallback")
    else:
        add("    request_model = None")
    if plan.response_model is not None:
        add(f"    model = {v(plan.response_model)}")
        add("    if type(model) is not str or model not in _CLEAN_NAMES: raise _Fallback")
    else:
        add("    model = request_model")
    add("    trace_id = span.trace_id")
    add("    span_id = span.span_id")
    add("    start = span.start_time_unix_nano")
    add("    if (len(trace_id) != 16 or len(span_id) != 8 or trace_id == _NO_TRACE_ID or span_id == _NO_SPAN_ID")
    add("            or start < MIN_START_NANOS or start > now + MAX_FUTURE_NANOS): raise _Fallback")
    counts = {}
    for name, keys, limit in (
        ("input", plan.input, True),
        ("output", plan.output, True),
        ("read", plan.cache_read, False),
        ("write", plan.cache_write, False),
        ("reasoning", plan.reasoning, False),
    ):
        key = first(keys)
        if key is None:
            continue
        counts[name] = name
        add(f"    {name} = {v(key)}")
        bound = " or input > MAX_TOKENS" if limit and name == "input" else (" or output > MAX_TOKENS" if limit else "")
        add(f"    if type({name}) is not int or {name} < 0{bound}: raise _Fallback")
    # Capping is the general path's (it warns): only spans that need none come this way.
    read_write = " + ".join(n for n in ("read", "write") if n in counts)
    if read_write:
        add(f"    if {read_write} > {'input' if 'input' in counts else '0'}: raise _Fallback")
    if "reasoning" in counts:
        add(f"    if reasoning > {'output' if 'output' in counts else '0'}: raise _Fallback")
    counted = "input" in counts or "output" in counts
    add("    is_error = span.status.code == STATUS_CODE_ERROR")
    missing = f"_bool({v(sc.TOKENTRAIL_USAGE_MISSING)})" if plan.usage_missing else "False"
    add(f"    usage_missing = {missing}" if counted else f"    usage_missing = not is_error or {missing}")
    if plan.incomplete:
        incomplete = v(sc.TOKENTRAIL_STREAM_INCOMPLETE)
        add(f"    status = 'error' if is_error else ('incomplete' if _bool({incomplete}) else 'ok')")
    else:
        add("    status = 'error' if is_error else 'ok'")
    if plan.credential_type:
        add(f"    credential_type = {v(sc.TOKENTRAIL_CREDENTIAL_TYPE)}")
        add("    credential_type = _CREDENTIAL_TYPES.get(credential_type) if type(credential_type) is str else None")
        add("    if credential_type is None: raise _Fallback")
    else:
        add("    credential_type = DEFAULT_CREDENTIAL_TYPE")
    if plan.user is not None:
        add(f"    user = {v(plan.user)}")
        add("    if type(user) is not str: raise _Fallback")
        add("    user = user.strip()")
        add("    if not user or len(user) > MAX_USER_CHARS: raise _Fallback")
    else:
        add("    user = None")
    if plan.tags:
        add(f"    tags = {v(plan.tags[0])}")
        add("    tags = _TAG_LISTS.get(tags) if type(tags) is tuple else None")
        add("    if tags is None: raise _Fallback")
        add("    tags = list(tags)")
    else:
        add("    tags = []")
    if plan.streamed is not None:
        add(f"    streamed = {v(plan.streamed)}")
        add("    if type(streamed) is not bool: streamed = _bool(streamed)")
    else:
        add("    streamed = False")
    for name, key in (
        ("response_id", plan.response_id),
        ("credential_id", sc.TOKENTRAIL_CREDENTIAL_ID if plan.credential_id else None),
    ):
        if key is None:
            add(f"    {name} = None")
            continue
        add(f"    {name} = {v(key, text=True)}")
        add(f"    if type({name}) is not str or len({name}) > MAX_NAME_CHARS: raise _Fallback")
        add(f"    {name} = {name} or None")
    if operation_key is not None and not (plan.aggregate and operation_key == sc.GEN_AI_OPERATION_NAME):
        add(f"    operation = {v(operation_key)}")
        add("    if type(operation) is not str or len(operation) > MAX_NAME_CHARS: raise _Fallback")
    elif operation_key is None:
        add("    operation = None")
    add("    operation = operation or DEFAULT_OPERATION")
    if plan.api:
        add(f"    api = {v(sc.TOKENTRAIL_API)}")
        add("    if type(api) is not str: raise _Fallback")
        add("    api = api or DEFAULT_API")
    else:
        add("    api = DEFAULT_API")
    if plan.service_tier is not None:
        add(f"    tier = {v(plan.service_tier)}")
        add("    if type(tier) is not str or len(tier) > MAX_NAME_CHARS: raise _Fallback")
        add("    tier = tier.strip().lower() or None")
    else:
        add("    tier = None")
    add("    end = span.end_time_unix_nano")
    add(
        "    return (start // 1000, trace_id.hex(), span_id.hex(), response_id, service, environment, SOURCE, api,"
        " operation, provider, model, request_model, user, tags, credential_type, credential_id,"
        f" {'input' if 'input' in counts else '0'}, {'output' if 'output' in counts else '0'},"
        f" {'read' if 'read' in counts else '0'}, {'write' if 'write' in counts else '0'},"
        f" {'reasoning' if 'reasoning' in counts else '0'}, 0, 0, 0, tier, None, None, None, CURRENCY,"
        " NO_USAGE if usage_missing else UNPRICED, None, (end - start) / 1e6 if end >= start else None, streamed,"
        " status, None)"
    )
    source = "\n".join(lines) + "\n"
    namespace: dict[str, Any] = {
        "_Fallback": _Fallback,
        "_SKIP": _SKIP,
        "any_value": any_value,
        "_NO_TRACE_ID": bytes(16),
        "_NO_SPAN_ID": bytes(8),
        "_bool": _bool,
        "_CLEAN_NAMES": _CLEAN_NAMES,
        "_CREDENTIAL_TYPES": _CREDENTIAL_TYPES,
        "_TAG_LISTS": _TAG_LISTS,
        "AGGREGATE_OPERATIONS": AGGREGATE_OPERATIONS,
        "MAX_NAME_CHARS": MAX_NAME_CHARS,
        "MAX_USER_CHARS": MAX_USER_CHARS,
        "MAX_TOKENS": MAX_TOKENS,
        "MIN_START_NANOS": MIN_START_NANOS,
        "MAX_FUTURE_NANOS": MAX_FUTURE_NANOS,
        "STATUS_CODE_ERROR": STATUS_CODE_ERROR,
        "DEFAULT_CREDENTIAL_TYPE": DEFAULT_CREDENTIAL_TYPE,
        "CURRENCY": CURRENCY,
        "NO_USAGE": NO_USAGE,
        "UNPRICED": UNPRICED,
        "SOURCE": d.source,
        "DEFAULT_API": d.default_api,
        "DEFAULT_OPERATION": d.default_operation,
        "provider_names": plan.provider_names,  # filled by the general path, value by value
    }
    exec(compile(source, f"<normalize fast path: {d.source}>", "exec"), namespace)  # noqa: S102
    return namespace["fast"], source


# The order ``_row`` builds its tuple in.
_ROW_FIELDS: Final = (
    "timestamp", "trace_id", "span_id", "response_id", "service", "environment", "source", "api", "operation",
    "provider", "model", "request_model", "user_id", "tags", "credential_type", "credential_id", "input_tokens",
    "output_tokens", "cached_input_tokens", "cache_creation_input_tokens", "reasoning_tokens",
    "cache_creation_1h_input_tokens", "input_audio_tokens", "output_audio_tokens", "service_tier", "total_cost",
    "market_cost", "reported_cost", "currency", "price_status", "price_version", "duration_ms", "streamed", "status",
    "error_type",
)
assert _ROW_FIELDS == FIELD_NAMES, "normalize._row must build its tuple in schema.FIELD_NAMES order"
_OPERATION_COLUMN: Final = FIELD_NAMES.index("operation")
_SPAN_ID_COLUMN: Final = FIELD_NAMES.index("span_id")


def _usage(
    span: Span, found: Found, plan: _Plan, provider: str, notes: _Notes
) -> tuple[int, int, int, int, int, int, int, int, bool]:
    """The counts under every house rule, for spans with more than the main counts (totals, parts, extras, dialect
    conventions): (input, output, cache read, cache write, reasoning, 1-hour writes, audio in, audio out, whether
    the span stated input or output)."""
    dialect: Dialect = plan.dialect  # type: ignore[assignment]
    usage = Usage(
        input=_count(found, plan.input),
        output=_count(found, plan.output),
        cache_read=_count(found, plan.cache_read) or 0,
        cache_write=_count(found, plan.cache_write) or 0,
        reasoning=_count(found, plan.reasoning) or 0,
        input_includes_cache=dialect.input_includes_cache,
        cache_write_1h=_count(found, plan.cache_write_1h) or 0,
        input_audio=_count(found, plan.input_audio) or 0,
        output_audio=_count(found, plan.output_audio) or 0,
    )
    if plan.total and (usage.input is None) != (usage.output is None):
        total = _count(found, plan.total)
        if total is not None:
            known = usage.input if usage.input is not None else usage.output
            assert known is not None
            if total >= known:
                if usage.input is None:
                    usage.input = total - known
                else:
                    usage.output = total - known
    extra_input = _sum(found, plan.extra_input)
    extra_output = _sum(found, plan.extra_output)
    if dialect.resolve is not None:
        usage = dialect.resolve(span, found, usage, provider)
    counted = usage.input is not None or usage.output is not None

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
    return inclusive_input, output_tokens, cache_read, cache_write, reasoning, write_1h, audio_in, audio_out, counted


def _credential_type(value: object) -> str:
    cached = _CREDENTIAL_TYPES.get(value) if type(value) is str else None
    if cached is None:
        cached = (_str(value) or "").strip().lower()
        if cached not in sc.CREDENTIAL_TYPES:
            cached = DEFAULT_CREDENTIAL_TYPE
        if len(_CREDENTIAL_TYPES) < 64 and type(value) is str:
            _CREDENTIAL_TYPES[value] = cached
    return cached


def _user(value: object, notes: _Notes) -> str | None:
    user = _str(value)
    if user is not None:
        user = user.strip() or None
        if user is not None and len(user) > MAX_USER_CHARS:
            notes.messages.append(f"user id truncated from {len(user)} to {MAX_USER_CHARS} characters")
            user = user[:MAX_USER_CHARS]
    return user


def _tags(found: Found, keys: tuple[str, ...], notes: _Notes) -> list[str]:
    if len(keys) == 1:
        value = found[keys[0]]
        cached = _TAG_LISTS.get(value) if type(value) is tuple and _all_text(value) else None  # type: ignore[arg-type]
        if cached is not None:
            return list(cached)
        tags = _str_list(value)
        if not tags:
            return tags
        own = _Notes()
        limited = _limit_tags(tags, own)
        if own.messages:
            notes.messages.extend(own.messages)
        elif type(value) is tuple and len(_TAG_LISTS) < 4096 and _all_text(value):  # type: ignore[arg-type]
            _TAG_LISTS[value] = tuple(limited)
        return limited
    tags = []
    for key in keys:
        tags.extend(_str_list(found[key]))
    return _limit_tags(tags, notes) if tags else tags


def _all_text(values: tuple[object, ...]) -> bool:
    return all(type(v) is str for v in values)


def _iso(nanos: int) -> str:
    try:
        return datetime.fromtimestamp(nanos / 1e9, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{nanos} ns"


# -- a request ---------------------------------------------------------------------------------------------------


def _decoded(value: object) -> object:
    """An attribute value as a Python value. A span's attributes hold encodings (``bytes``: the upb path always,
    the scanner for uncommon encodings) or values the scanner decoded; ``bytes`` is never a decoded value."""
    return any_value(value) if type(value) is bytes else value  # type: ignore[arg-type]


def _resources(request: Any) -> Iterable[tuple[Any, str | None, str | None]]:
    for resource_spans in request.resource_spans:
        service, environment = _service_environment(resource_spans.resource)
        for scope_spans in resource_spans.scope_spans:
            yield scope_spans.spans, service, environment


def _scanned_resources(scanned: list[tuple[bytes | None, list[Any]]]) -> Iterable[tuple[Any, str | None, str | None]]:
    for resource, spans in scanned:
        service, environment = _service_environment(Resource.FromString(resource)) if resource else (None, None)
        yield spans, service, environment


def _service_environment(resource: Any) -> tuple[str | None, str | None]:
    service, environment = resource_service_environment(resource)
    if service is not None and len(service) > MAX_NAME_CHARS:
        service = service[:MAX_NAME_CHARS]
    if environment is not None and len(environment) > MAX_NAME_CHARS:
        environment = environment[:MAX_NAME_CHARS]
    return service, environment


class _Shape:
    """One full set of attribute keys (known and unknown) spans arrive with, and its plan. A span has this shape when
    it has as many attributes and every one of the shape's keys (membership tests: ~45 ns a key, half the cost of
    hashing every key of every span into a set). ``getter`` then fetches the values of the known keys, in
    ``plan.order``; it is only ever called on a span known to have them all, because a protobuf map's ``[]``
    inserts a missing key rather than raising."""

    __slots__ = ("size", "keys", "getter", "plan")

    def __init__(self, size: int, plan: _Plan, others: tuple[str, ...]) -> None:
        self.size = size
        self.plan = plan
        self.keys = (*plan.order, *others)
        order = plan.order
        if not order:
            self.getter: Callable[[Any], tuple[bytes, ...]] = lambda attributes: ()
        elif len(order) == 1:
            self.getter = lambda attributes, key=order[0]: (attributes[key],)
        else:
            self.getter = itemgetter(*order)


_SHAPES: dict[int, list[_Shape]] = {}  # by number of attributes
_MAX_SHAPES: Final = 1024


class _KeyShape:
    """A scanned span's attribute keys in wire order (repeats included), its plan, and how to pick the plan's values
    from the span's values tuple: by position, the last of a repeated key winning (as in a dict of the attributes)."""

    __slots__ = ("plan", "getter")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.plan = plan = _plan(frozenset(_KEYS.intersection(keys)))
        position = {key: i for i, key in enumerate(keys)}  # the last index of a repeated key
        order = tuple(position[key] for key in plan.order)
        if not order:
            self.getter: Callable[[tuple[Any, ...]], tuple[Any, ...]] = lambda values: ()
        elif len(order) == 1:
            self.getter = lambda values, i=order[0]: (values[i],)
        else:
            self.getter = itemgetter(*order)


_KEY_SHAPES: dict[tuple[str, ...], _KeyShape] = {}


def _key_shape(keys: tuple[str, ...]) -> _KeyShape:
    if len(_KEY_SHAPES) >= _MAX_SHAPES:
        _KEY_SHAPES.clear()  # key sets come from spans: bound what a stream of odd spans can take
    shape = _KEY_SHAPES[keys] = _KeyShape(keys)
    return shape


def _shape_of(attributes: Any) -> tuple[_Shape, tuple[bytes, ...]]:
    """The span's shape and the encodings of its known keys' values."""
    size = len(attributes)
    candidates = _SHAPES.get(size)
    if candidates:
        contains = attributes.__contains__
        for shape in candidates:
            if all(map(contains, shape.keys)):
                return shape, shape.getter(attributes)
    keys = list(attributes)
    present = _KEYS.intersection(keys)
    shape = _Shape(size, _plan(frozenset(present)), tuple(k for k in keys if k not in present))
    if sum(len(c) for c in _SHAPES.values()) >= _MAX_SHAPES:
        _SHAPES.clear()  # key sets come from spans: bound what a stream of odd spans can take
    _SHAPES.setdefault(size, []).append(shape)
    return shape, shape.getter(attributes)


def normalize_request(request: ExportTraceServiceRequest) -> NormalizeResult:
    """All usage records in one OTLP export (the standard message, or the faster ``otlp.fast_request_class()`` one
    the receiver parses into). Never raises for a bad span: it is rejected, counted and explained."""
    return _normalize(_resources(as_fast_request(request)))


def normalize_bytes(data: bytes) -> NormalizeResult | None:
    """All usage records in one serialized ExportTraceServiceRequest, read by the C scanner (``_otlpscan.c``): the
    same result as ``normalize_request(parse_export_request(data)[0])``, several times faster. None when the scanner
    is not built or leaves the request to protobuf (malformed, invalid UTF-8, unusual encodings): the caller then
    takes the protobuf path, which decides and explains."""
    if _scan is None:
        return None
    try:
        scanned = _scan(data)
    except ScanFallback:
        return None
    return _normalize(_scanned_resources(scanned), decoded=True)


def _normalize(resources: Iterable[tuple[Any, str | None, str | None]], *, decoded: bool = False) -> NormalizeResult:
    """``decoded``: the spans come from the scanner, which decoded the common values already; the memo is then
    not worth a lookup per value before the fast function (it still decodes any ``bytes`` left, memo first)."""
    result = NormalizeResult()
    append = result.rows.append
    memo_get = _VALUES.get
    now = time.time_ns()
    embedding_parents: dict[bytes, int] | None = None  # v7 Vercel embeddings: an outer span over inner ones
    shape: _Shape | None = None
    key_shapes_get = _KEY_SHAPES.get
    for spans, service, environment in resources:
        result.received += len(spans)
        for span in spans:
            if decoded:
                # The scanner's span: its keys (a tuple of the same interned strs span after span) find the shape
                # in one dict lookup, and the values are picked by position; no dict per span.
                keys = span.keys
                key_shape = key_shapes_get(keys) or _key_shape(keys)
                plan = key_shape.plan
                raws = key_shape.getter(span.values)
            else:
                # key -> AnyValue encoding, a upb map: lookups by key stay in C. Spans of one request mostly share
                # one shape: try the last one before looking it up.
                attributes = span.attributes
                if (
                    shape is not None
                    and len(attributes) == shape.size
                    and all(map(attributes.__contains__, shape.keys))
                ):
                    raws = shape.getter(attributes)
                else:
                    shape, raws = _shape_of(attributes)
                plan = shape.plan
            row: tuple[Any, ...] | None = None
            if span.name == ANTHROPIC_MESSAGES_CREATE:
                pass  # always the Anthropic SDK's: the general path
            elif plan.fast is not None:
                try:
                    # A value the memo does not know stays its raw encoding: the fast function decodes the ones
                    # it reads (``bytes`` is never a decoded value: see ``otlp.any_value``).
                    values = raws if decoded else tuple(map(memo_get, raws, raws))
                    row = plan.fast(span, values, service, environment, now)
                except Exception:  # _Fallback, a value that does not decode, anything: the general path decides
                    row = None
                else:
                    if row is _SKIP:
                        result.skipped += 1
                        continue
            elif plan.dialect is None:
                result.skipped += 1  # not an LLM call: the common, cheap case
                continue
            if row is None:
                row = _general(result, span, span.attributes, plan.present, service, environment, now)
                if row is None:
                    continue
            append(row)
            if row[_OPERATION_COLUMN] == "embeddings" and span.parent_span_id:
                if embedding_parents is None:
                    embedding_parents = {}
                embedding_parents[span.parent_span_id] = embedding_parents.get(span.parent_span_id, 0) + 1
    if embedding_parents:
        _drop_outer_embedding_spans(result, embedding_parents)
    return result


def _general(
    result: NormalizeResult,
    span: Span,
    attributes: Any,
    present: frozenset[str],
    service: str | None,
    environment: str | None,
    now: int,
) -> tuple[Any, ...] | None:
    """Every span the fast path does not take: the record, or None when the span is skipped or rejected (counted
    and explained in ``result``)."""
    memo = _VALUES
    found: dict[str, Any] = {}
    try:
        for key in present:
            raw = attributes[key]
            if type(raw) is bytes:
                value = memo.get(raw)
                found[key] = value if value is not None else any_value(raw)
            else:
                found[key] = raw  # decoded by the scanner
    except InvalidValue:
        present, found = _drop_bad_values(result, attributes, present)
    plan = _PLANS.get(present) or _plan(present)
    if span.name == ANTHROPIC_MESSAGES_CREATE:
        plan = plan.for_anthropic_span()
    dialect = plan.dialect
    notes = _Notes()
    try:
        if dialect is None or _skip(span, dialect, plan, found):
            result.skipped += 1
            return None
        row = _row(span, found, plan, service, environment, notes, now)
    except _BadAttribute as bad:
        try:
            return _again_without(result, span, bad, service, environment, now)
        except Exception as exc:
            log.exception("normalizing span %r failed", span.name[:100])
            _reject(result, span, f"span {span.name[:100]!r} could not be read: {type(exc).__name__}")
            return None
    except SpanRejected as exc:
        _reject(result, span, str(exc))
        return None
    except Exception as exc:  # a bug must cost one span, not the batch
        log.exception("normalizing span %r failed", span.name[:100])
        _reject(result, span, f"span {span.name[:100]!r} could not be read: {type(exc).__name__}")
        return None
    if notes.messages:
        result.dropped_fields += len(notes.messages)
        if len(result.warnings) < MAX_ERRORS:
            result.warnings.append(f"span {span.name[:100]!r}: " + "; ".join(notes.messages))
    return row


def _drop_bad_values(
    result: NormalizeResult, attributes: Any, present: frozenset[str]
) -> tuple[frozenset[str], dict[str, Any]]:
    """A span with known attributes whose values cannot be decoded: they are removed (as if never sent), with a
    warning each, and the span is read without them."""
    found: dict[str, Any] = {}
    for key in sorted(present):
        try:
            found[key] = _decoded(attributes[key])
        except InvalidValue as exc:
            _bad_attribute_warning(result, key, str(exc))
            del attributes[key]
    return frozenset(found), found


def _bad_attribute_warning(result: NormalizeResult, key: str, reason: str) -> None:
    result.dropped_fields += 1
    if len(result.warnings) < MAX_ERRORS:
        result.warnings.append(f"attribute {key[:100]!r} dropped: {reason}")


def _again_without(
    result: NormalizeResult, span: Span, bad: _BadAttribute, service: str | None, environment: str | None, now: int
) -> tuple[Any, ...] | None:
    """Reads ``span`` again without attributes that cannot be decoded (met outside the known keys, in attribution
    by prefix). Returns the record, or None when the span is skipped or rejected (counted here)."""
    attributes = span.attributes
    for _ in range(len(attributes) + 1):
        _bad_attribute_warning(result, bad.key, bad.reason)
        del attributes[bad.key]
        present = _KEYS.intersection(attributes)
        found = {key: _decoded(attributes[key]) for key in present}  # the known keys decoded fine before
        plan = _plan(present)
        if span.name == ANTHROPIC_MESSAGES_CREATE:
            plan = plan.for_anthropic_span()
        dialect = plan.dialect
        if dialect is None or _skip(span, dialect, plan, found):
            result.skipped += 1
            return None
        notes = _Notes()
        try:
            row = _row(span, found, plan, service, environment, notes, now)
        except _BadAttribute as again:
            bad = again
            continue
        except SpanRejected as exc:
            _reject(result, span, str(exc))
            return None
        if notes.messages:
            result.dropped_fields += len(notes.messages)
            if len(result.warnings) < MAX_ERRORS:
                result.warnings.append(f"span {span.name[:100]!r}: " + "; ".join(notes.messages))
        return row
    raise AssertionError("unreachable: every attribute can be removed only once")


def _drop_outer_embedding_spans(result: NormalizeResult, parents: dict[bytes, int]) -> None:
    """An embeddings span whose children in the same export are embeddings spans repeats their total (the Vercel
    AI SDK v7 ``embeddings {model}`` root over its per-call spans): only the children count."""
    outer = {p.hex() for p in parents}
    op, sid = _OPERATION_COLUMN, _SPAN_ID_COLUMN
    kept = [r for r in result.rows if not (r[op] == "embeddings" and r[sid] in outer)]
    result.skipped += len(result.rows) - len(kept)
    result.rows = kept


def _reject(result: NormalizeResult, span: Span, message: str) -> None:
    result.rejected += 1
    if len(result.errors) < MAX_ERRORS:
        result.errors.append(message)
