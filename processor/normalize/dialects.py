"""Every GenAI span dialect as one row of a table: where it keeps each fact, how to tell a span is its, and whether
a span of it counts. The reader (``reader.py``) applies a row to a span; nothing here reads spans.

A row names, for each fact of the usage record, the attribute keys that state it, tried in order (the first one
present with a value wins). A row states only what differs from the OTel GenAI conventions (the defaults).
Conventions no table can state (they depend on values, the provider or the library's version) are small named
functions in ``rules.py`` that a row refers to.

Adding a dialect = a row here (placed in ``DIALECTS`` by precedence) and a golden fixture
(``tests/processor/normalize/golden``). Adding a usage fact = a field of ``Dialect`` with its default keys, listed in
``KEY_FACTS``, and the line of the reader that puts it into the record.

Rows, tried in this order (the first whose markers a span carries wins):

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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from tokentrail.instrumentation import semconv as sc
from tokentrail.processor.normalize.rules import (
    LLM_REQUEST_TYPE,
    OI_INVOCATION_PARAMETERS,
    OI_OUTPUT_VALUE,
    OI_SPAN_KIND,
    TRACELOOP_SPAN_KIND,
    VERCEL_CONTEXT_PREFIXES,
    VERCEL_INPUT_DETAILS,
    VERCEL_OPERATION_ID,
    VERCEL_PROVIDER_METADATA,
    Finish,
    Found,
    SpanLike,
    Usage,
    openinference_call,
    openinference_counted,
    openinference_finish,
    openllmetry_counted,
    operation_is_call,
    pydantic_ai_counted,
    vercel_counted,
    vercel_finish,
    vercel_resolve,
)

__all__ = [
    "AGGREGATE_OPERATIONS",
    "ANTHROPIC_MESSAGES_CREATE",
    "ANTHROPIC_SDK",
    "DIALECTS",
    "KEYS",
    "KEY_FACTS",
    "OPENINFERENCE",
    "OPENLLMETRY",
    "OTEL_GENAI",
    "PYDANTIC_AI",
    "TOKENTRAIL",
    "TOKENTRAIL_DUPLICATE",
    "VERCEL_AI",
    "Dialect",
    "dialect_of",
    "usage_free",
]

# Aggregating spans repeat the totals of the calls under them: counting them would bill twice.
AGGREGATE_OPERATIONS: Final = frozenset(
    {"invoke_agent", "create_agent", "execute_tool", "invoke_workflow", "agent_step", "workflow"}
)
ANTHROPIC_MESSAGES_CREATE: Final = "anthropic.messages.create"
TOKENTRAIL_DUPLICATE: Final = "tokentrail.duplicate"  # this call is counted on another (inner) span
TOKENTRAIL_INPUT_AUDIO_TOKENS: Final = sc.TOKENTRAIL_INPUT_AUDIO_TOKENS
TOKENTRAIL_OUTPUT_AUDIO_TOKENS: Final = sc.TOKENTRAIL_OUTPUT_AUDIO_TOKENS
TOKENTRAIL_REPORTED_COST: Final = "tokentrail.usage.reported_cost"

# OTel GenAI names of every version: semconv <= 1.26 said prompt/completion, and spelled the caches differently.
_INPUT: Final = (sc.GEN_AI_USAGE_INPUT_TOKENS, "gen_ai.usage.prompt_tokens")
_OUTPUT: Final = (sc.GEN_AI_USAGE_OUTPUT_TOKENS, "gen_ai.usage.completion_tokens")
# `gen_ai.usage.input_cached_tokens`: LiveKit's (and others') name for the cached part of the input.
_CACHE_READ: Final = (
    sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    "gen_ai.usage.cache_read_input_tokens",
    "gen_ai.usage.input_cached_tokens",
)
_CACHE_WRITE: Final = (
    sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    "gen_ai.usage.cache_creation_input_tokens",
)
_REPORTED_COST: Final = (TOKENTRAIL_REPORTED_COST, "gen_ai.usage.cost")
_TIME_TO_FIRST_CHUNK: Final = ("gen_ai.client.operation.time_to_first_chunk", "gen_ai.response.time_to_first_chunk")
_CONVERSATION: Final = (sc.GEN_AI_CONVERSATION_ID, "session.id", "langfuse.session.id")
# The Vercel AI SDK's reasoning count (v6+ legacy spans; v7 GenAI spans with `usage: true`).
_VERCEL_REASONING: Final = "ai.usage.outputTokenDetails.reasoningTokens"


@dataclass(frozen=True, slots=True)
class Dialect:
    """Where one instrumentation keeps each fact. Keys in a tuple are tried in order; the first present wins."""

    source: str  # the record's ``source``
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
    cache_write_1h: tuple[str, ...] = (
        sc.TOKENTRAIL_CACHE_CREATION_1H_INPUT_TOKENS,
        "anthropic.usage.cache_creation.ephemeral_1h_input_tokens",  # the Anthropic SDK's own span
    )
    input_audio: tuple[str, ...] = (TOKENTRAIL_INPUT_AUDIO_TOKENS,)
    output_audio: tuple[str, ...] = (TOKENTRAIL_OUTPUT_AUDIO_TOKENS,)
    service_tier: tuple[str, ...] = (
        sc.TOKENTRAIL_SERVICE_TIER,
        sc.OPENAI_RESPONSE_SERVICE_TIER,
        "gen_ai.openai.response.service_tier",  # OTel GenAI conventions up to 1.36
    )
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
    # Keys whose mere presence says the call was streamed (a time to the first chunk: the Vercel AI SDK v7 and
    # pydantic-ai state streaming no other way).
    stream_markers: tuple[str, ...] = _TIME_TO_FIRST_CHUNK
    user: tuple[str, ...] = (sc.USER_ID,)
    tags: tuple[str, ...] = (sc.TOKENTRAIL_TAGS,)  # every list named is merged
    # The conversation (session, thread) of the call. ``session.id`` is OTel's general session attribute, which
    # Langfuse and OpenInference use for chat sessions; ``langfuse.session.id`` is Langfuse's own.
    conversation: tuple[str, ...] = _CONVERSATION
    # Attribution carried as ``<prefix><name>`` attributes or inside a JSON object attribute (``attribution.py``).
    metadata_prefixes: tuple[str, ...] = ()
    metadata_json: tuple[str, ...] = ()
    # Provider spellings of this dialect, looked up before the shared catalog mapping.
    provider_names: Mapping[str, str] = field(default_factory=dict)
    # The dialect's provider value names an API as well ("openai.chat"): keep the part before the first dot.
    provider_prefix_only: bool = False
    default_api: str | None = None
    default_provider: str | None = None
    default_operation: str | None = None
    # The usage keys without which a span marked as this dialect's is not a call (a workflow, tool or retrieval
    # span): False for dialects whose every marked span is a call.
    needs_usage: bool = True
    # A span of this dialect with no usage key at all is still a call (a stream whose usage was never asked for or
    # never arrived) when it carries one of ``call_keys``, a provider and a model, and ``call`` says its values make
    # it one: it becomes a ``no_usage`` record, counted and visible, never a silent $0.
    call_keys: tuple[str, ...] = ()
    call: Callable[[SpanLike, Found], bool] | None = None  # rules.py
    counted: Callable[[SpanLike, Found], bool] | None = None  # rules.py
    resolve: Callable[[SpanLike, Found, Usage, str], Usage] | None = None  # rules.py
    finish: Callable[[SpanLike, Found, Finish], None] | None = None  # rules.py

    def keys(self) -> frozenset[str]:
        """Every attribute key this dialect reads."""
        return frozenset((*self.markers, *(k for fact in KEY_FACTS for k in getattr(self, fact))))

    def identity_keys(self) -> tuple[frozenset[str], frozenset[str]]:
        """The keys that name a provider, and those that name a model."""
        return frozenset(self.provider), frozenset((*self.request_model, *self.response_model))

    def usage_keys(self) -> frozenset[str]:
        """The keys that state usage: one of them makes a span a call."""
        return frozenset(k for fact in USAGE_FACTS for k in getattr(self, fact))


# The facts a row names keys for (``Dialect`` fields holding key tuples), and those that are usage counts.
USAGE_FACTS: Final = (
    "input_tokens", "output_tokens", "total_tokens", "cache_read", "cache_write", "reasoning", "extra_input",
    "extra_output",
)
KEY_FACTS: Final = (
    "provider", "response_model", "request_model", *USAGE_FACTS, "cache_write_1h", "input_audio", "output_audio",
    "service_tier", "reported_cost", "response_id", "operation", "streamed", "stream_markers", "user", "tags",
    "conversation", "metadata_json", "call_keys",
)


# -- the rows --------------------------------------------------------------------------------------------------

# OpenTelemetry GenAI semantic conventions, any version. `gen_ai.usage.input_tokens` is inclusive of cached input.
# The modality splits of newer versions (`gen_ai.usage.text.input_tokens`, ...) are parts of these totals and are
# never added.
# The Vercel AI SDK v7 `chat {model}` spans follow them too, with the reasoning count (`usage: true`) under the SDK's
# own name.
OTEL_GENAI: Final = Dialect(
    source="otel-genai",
    reasoning=(sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, _VERCEL_REASONING),
    call_keys=(sc.GEN_AI_OPERATION_NAME,),
    call=operation_is_call,
)

# Our own instrumentation: the same conventions plus `tokentrail.*` attribution.
TOKENTRAIL: Final = Dialect(source="tokentrail", markers=frozenset({sc.TOKENTRAIL_API}), needs_usage=False)

# The Anthropic Python SDK's `anthropic.messages.create` span. The SDK sets `gen_ai.usage.input_tokens` to input +
# cache reads + cache writes (inclusive), names cache creation `cache_write`, and reports the tokens of context
# compaction apart from the main usage (they are billed too).
ANTHROPIC_SDK: Final = Dialect(
    source="anthropic-sdk",
    span_names=frozenset({ANTHROPIC_MESSAGES_CREATE}),
    cache_write=(sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS),
    extra_input=("anthropic.usage.compaction.input_tokens",),
    extra_output=("anthropic.usage.compaction.output_tokens",),
    default_api=sc.API_ANTHROPIC_MESSAGES,
    default_provider="anthropic",
    needs_usage=False,
)

# Vercel AI SDK, legacy spans (v3-v7 `LegacyOpenTelemetry`). Names by generation: `promptTokens`/`completionTokens`
# (v3-v4), `inputTokens`/`outputTokens`/`cachedInputTokens`/`reasoningTokens` (v5+), `inputTokenDetails.*` (v6+).
# Attribution: `ai.telemetry.metadata.*` (v3-v6 `metadata`), `ai.settings.context.*` (v7 `runtimeContext` with
# `includeRuntimeContext`; v7 removed `metadata`).
VERCEL_AI: Final = Dialect(
    source="vercel-ai",
    markers=frozenset({VERCEL_OPERATION_ID, "ai.model.provider", "ai.model.id"}),
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
    reasoning=(_VERCEL_REASONING, "ai.usage.reasoningTokens"),
    response_id=("ai.response.id", sc.GEN_AI_RESPONSE_ID),
    operation=(sc.GEN_AI_OPERATION_NAME,),
    streamed=(),
    metadata_prefixes=VERCEL_CONTEXT_PREFIXES,
    call_keys=(VERCEL_OPERATION_ID, "ai.model.id"),
    call=vercel_counted,
    counted=vercel_counted,
    resolve=vercel_resolve,
    finish=vercel_finish,
)

# OpenInference (Arize Phoenix): `llm.token_count.prompt` is the total prompt, cache included, with the cache
# read/write and reasoning details beside it.
OPENINFERENCE: Final = Dialect(
    source="openinference",
    markers=frozenset({OI_SPAN_KIND, "llm.token_count.prompt", "llm.token_count.completion", "llm.token_count.total"}),
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
    call_keys=(OI_SPAN_KIND,),
    call=openinference_call,
    counted=openinference_counted,
    finish=openinference_finish,
)

# pydantic-ai / Logfire: `chat {model}` spans carry the call's usage with pydantic-ai's details
# (`gen_ai.usage.details.reasoning_tokens`, `cache_write_tokens`).
PYDANTIC_AI: Final = Dialect(
    source="pydantic-ai",
    markers=frozenset({"logfire.json_schema", "model_request_parameters", "logfire.msg", "agent_name"}),
    cache_read=(*_CACHE_READ, "gen_ai.usage.details.cache_read_tokens"),
    cache_write=(*_CACHE_WRITE, "gen_ai.usage.details.cache_write_tokens"),
    reasoning=(sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, "gen_ai.usage.details.reasoning_tokens"),
    call_keys=(sc.GEN_AI_OPERATION_NAME,),
    call=operation_is_call,
    counted=pydantic_ai_counted,
)

# OpenLLMetry (Traceloop): current names are the OTel ones plus `gen_ai.usage.reasoning_tokens`,
# `gen_ai.usage.total_tokens`, `gen_ai.is_streaming`; legacy ones are `gen_ai.usage.prompt_tokens` /
# `completion_tokens`, `llm.usage.total_tokens`, `llm.usage.reasoning_tokens`, `gen_ai.usage.cache_*_input_tokens`,
# `llm.request.type`. Its input count is inclusive for OpenAI and Anthropic alike. User and tags come from the
# Traceloop SDK's association properties.
OPENLLMETRY: Final = Dialect(
    source="openllmetry",
    markers=frozenset(
        {
            "llm.usage.total_tokens",
            "gen_ai.usage.total_tokens",
            LLM_REQUEST_TYPE,
            "gen_ai.is_streaming",
            "llm.is_streaming",
            "gen_ai.usage.reasoning_tokens",
            "llm.usage.reasoning_tokens",
            "gen_ai.openai.api_base",
            TRACELOOP_SPAN_KIND,
        }
    ),
    total_tokens=("gen_ai.usage.total_tokens", "llm.usage.total_tokens"),
    reasoning=(
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
        "gen_ai.usage.reasoning_tokens",
        "llm.usage.reasoning_tokens",
    ),
    operation=(sc.GEN_AI_OPERATION_NAME, LLM_REQUEST_TYPE),
    streamed=("gen_ai.is_streaming", "llm.is_streaming", sc.GEN_AI_REQUEST_STREAM),
    user=(sc.USER_ID, "gen_ai.user", "llm.user"),
    metadata_prefixes=("traceloop.association.properties.",),
    call_keys=(sc.GEN_AI_OPERATION_NAME, LLM_REQUEST_TYPE),
    call=operation_is_call,
    counted=openllmetry_counted,
)

# Tried in order; OTEL_GENAI is the fallback for any span with GenAI usage.
DIALECTS: Final = (ANTHROPIC_SDK, TOKENTRAIL, VERCEL_AI, OPENINFERENCE, PYDANTIC_AI, OPENLLMETRY, OTEL_GENAI)
_MARKED: Final = tuple(d for d in DIALECTS if d.markers)

# Keys every dialect reads besides its own facts: attribution, status, and what the rules read.
COMMON_KEYS: Final = frozenset(
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
        VERCEL_PROVIDER_METADATA,
        OI_OUTPUT_VALUE,
        OI_INVOCATION_PARAMETERS,
        *VERCEL_INPUT_DETAILS,
    }
)
# Every key the reader keeps from a span; the rest are never decoded.
KEYS: Final = frozenset().union(COMMON_KEYS, *(d.keys() for d in DIALECTS))
# Keys whose values are labels that records are grouped and filtered by: their control characters are removed when
# the value is decoded (``reader._Entries``), so a clean value met again costs nothing. Response ids are not among
# them: new on every call (never remembered), they would cost a scan a span, and they are matched, never shown.
LABEL_FACTS: Final = (
    "provider", "response_model", "request_model", "service_tier", "operation", "user", "tags", "conversation"
)
LABEL_KEYS: Final = frozenset(
    {sc.TOKENTRAIL_API, sc.TOKENTRAIL_CREDENTIAL_ID, sc.ERROR_TYPE}.union(
        *(getattr(d, fact) for d in DIALECTS for fact in LABEL_FACTS)
    )
)
# Any of these makes a span a GenAI call (besides the markers and the Anthropic span name).
_USAGE_KEYS: Final = frozenset().union(*(d.usage_keys() for d in DIALECTS))
_USAGE_KEYS_OF: Final = {d.source: d.usage_keys() for d in DIALECTS}
_IDENTITY_KEYS: Final = {d.source: d.identity_keys() for d in DIALECTS}


def dialect_of(present: frozenset[str], span_name: str) -> Dialect | None:
    """The dialect of a span carrying exactly these known keys, or None when no span with them is a call to count.
    Values can still rule a span out (``Dialect.counted``, aggregates, duplicates)."""
    for dialect in DIALECTS:
        if span_name in dialect.span_names:
            return dialect
    if not present:
        return None
    for candidate in _MARKED:
        if not candidate.markers.isdisjoint(present):
            dialect = candidate
            break
    else:
        if _USAGE_KEYS.isdisjoint(present):
            # No dialect's marker and no usage: a call of the conventions whose usage never came, or nothing.
            return OTEL_GENAI if _may_be_call(OTEL_GENAI, present) else None
        dialect = OTEL_GENAI
    if dialect.needs_usage and _USAGE_KEYS_OF[dialect.source].isdisjoint(present):
        # Marked by a dialect but without usage: a workflow, tool or retrieval span, or a call whose usage never
        # came (``Dialect.call`` tells them apart by value).
        return dialect if _may_be_call(dialect, present) else None
    return dialect


def usage_free(dialect: Dialect, present: frozenset[str]) -> bool:
    """Whether a span of ``dialect`` with these keys states no usage at all: a call only if ``Dialect.call`` says
    so (``reader._skip``)."""
    return dialect.needs_usage and _USAGE_KEYS_OF[dialect.source].isdisjoint(present)


def _may_be_call(dialect: Dialect, present: frozenset[str]) -> bool:
    """A span without usage may be one of ``dialect``'s calls: it carries a key that says what it is, a provider
    (or the dialect names one) and a model."""
    if dialect.call is None or present.isdisjoint(dialect.call_keys):
        return False
    providers, models = _IDENTITY_KEYS[dialect.source]
    has_provider = dialect.default_provider is not None or not providers.isdisjoint(present)
    return has_provider and not models.isdisjoint(present)
