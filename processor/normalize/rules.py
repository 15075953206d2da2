"""The conventions a dialect table cannot state, as small named functions its rows refer to.

Three hooks, each optional in a ``Dialect`` row:

* ``counted(span, found)``: False when the span is this dialect's but not a call to count (an outer span that
  repeats the totals of the calls under it, a workflow or agent span);
* ``resolve(span, found, usage, provider)``: the last word on the counts, where inclusivity depends on the
  provider or the library's version;
* ``finish(span, found, fields)``: fields hidden elsewhere (a response id at the start of a payload, streaming
  named in the operation id).

``found`` maps each known attribute key the span carries to its decoded value (``UNSET`` for no value).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from tokentrail.processor.normalize.values import is_count, json_object, text

__all__ = [
    "CALL_OPERATIONS",
    "LLM_REQUEST_TYPE",
    "OI_INVOCATION_PARAMETERS",
    "OI_OUTPUT_VALUE",
    "OI_SPAN_KIND",
    "TRACELOOP_SPAN_KIND",
    "VERCEL_CONTEXT_PREFIXES",
    "VERCEL_INPUT_DETAILS",
    "VERCEL_OPERATION_ID",
    "VERCEL_PROVIDER_METADATA",
    "Finish",
    "Found",
    "SpanLike",
    "Usage",
    "openinference_call",
    "openinference_counted",
    "openinference_finish",
    "openllmetry_counted",
    "operation_is_call",
    "pydantic_ai_counted",
    "vercel_counted",
    "vercel_finish",
    "vercel_resolve",
]

Found = Mapping[str, Any]


class SpanLike(Protocol):
    """What the hooks read of a span besides its attributes."""

    @property
    def name(self) -> str: ...


class Finish:
    """The fields a dialect's ``finish`` hook may adjust."""

    __slots__ = ("operation", "response_id", "streamed")

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


# -- calls without usage ------------------------------------------------------------------------------------------

LLM_REQUEST_TYPE: Final = "llm.request.type"  # OpenLLMetry's operation, before it wrote gen_ai.operation.name
# The operations that are one call to a provider, billed whether or not its usage reached the span (the conventions'
# names, and OpenLLMetry's older ones). Agents, tools, workflows and retrieval are not.
CALL_OPERATIONS: Final = frozenset(
    {"chat", "text_completion", "generate_content", "embeddings", "completion", "embedding"}
)


def operation_is_call(span: SpanLike, found: Found) -> bool:
    """The span's operation (``gen_ai.operation.name``, else OpenLLMetry's ``llm.request.type``) is a call."""
    for key in ("gen_ai.operation.name", LLM_REQUEST_TYPE):
        value = text(found.get(key))
        if value is not None:
            return value.strip().lower() in CALL_OPERATIONS
    return False


# -- Vercel AI SDK, legacy spans -------------------------------------------------------------------------------

VERCEL_OPERATION_ID: Final = "ai.operationId"
# Attribution as metadata: v3-v6 `telemetry.metadata`; v7 the call's `runtimeContext` (the keys the call names in
# `telemetry.includeRuntimeContext`), written as `ai.settings.context.*` (its documentation says
# `ai.settings.runtimeContext.*`: both are read).
VERCEL_CONTEXT_PREFIXES: Final = ("ai.telemetry.metadata.", "ai.settings.context.", "ai.settings.runtimeContext.")
VERCEL_PROVIDER_METADATA: Final = "ai.response.providerMetadata"
VERCEL_INPUT_DETAILS: Final = (
    "ai.usage.inputTokenDetails.noCacheTokens",
    "ai.usage.inputTokenDetails.cacheReadTokens",
    "ai.usage.inputTokenDetails.cacheWriteTokens",
)
_VERCEL_CALL_SUFFIXES: Final = (".doGenerate", ".doStream", ".doEmbed")


def _vercel_operation_id(span: SpanLike, found: Found) -> str:
    return text(found.get(VERCEL_OPERATION_ID)) or span.name


def vercel_counted(span: SpanLike, found: Found) -> bool:
    """Only the provider-call spans count (``ai.generateText.doGenerate``, ``ai.streamText.doStream``,
    ``ai.embedMany.doEmbed``...), never the outer ``ai.generateText``-style spans that repeat their totals."""
    return _vercel_operation_id(span, found).endswith(_VERCEL_CALL_SUFFIXES)


def vercel_resolve(span: SpanLike, found: Found, usage: Usage, provider: str) -> Usage:
    """Input inclusivity depends on the SDK version for Anthropic: v6+ states an inclusive total (with
    ``inputTokenDetails``); v4-v5 state Anthropic's exclusive count, with cache writes only in the provider
    metadata. Every other provider's prompt count (OpenAI's, Google's) already includes its cached tokens."""
    if provider != "anthropic" or any(k in found for k in VERCEL_INPUT_DETAILS):
        return usage
    meta = json_object(found.get(VERCEL_PROVIDER_METADATA))
    anthropic = meta.get("anthropic") if isinstance(meta, dict) else None
    if isinstance(anthropic, dict):
        raw = anthropic.get("usage")
        if isinstance(raw, dict) and is_count(raw.get("input_tokens")):
            # The provider's own usage object: exact whatever the SDK version did with it.
            read = raw.get("cache_read_input_tokens")
            write = raw.get("cache_creation_input_tokens")
            usage.cache_read = read if is_count(read) else usage.cache_read
            usage.cache_write = write if is_count(write) else usage.cache_write
            usage.input = raw["input_tokens"]
            usage.input_includes_cache = False
            return usage
        write = anthropic.get("cacheCreationInputTokens")
        if is_count(write) and not usage.cache_write:
            usage.cache_write = write
        read = anthropic.get("cacheReadInputTokens")
        if is_count(read) and not usage.cache_read:
            usage.cache_read = read
    usage.input_includes_cache = False
    return usage


def vercel_finish(span: SpanLike, found: Found, fields: Finish) -> None:
    """Streaming and the operation are named in the operation id."""
    operation_id = _vercel_operation_id(span, found)
    fields.streamed = operation_id.endswith(".doStream")
    if fields.operation is None or fields.operation.startswith("ai."):
        fields.operation = "embeddings" if operation_id.endswith(".doEmbed") else "chat"


# -- OpenInference -----------------------------------------------------------------------------------------------

OI_SPAN_KIND: Final = "openinference.span.kind"
OI_OUTPUT_VALUE: Final = "output.value"
OI_INVOCATION_PARAMETERS: Final = "llm.invocation_parameters"
_OI_COUNTED_KINDS: Final = frozenset({"LLM", "EMBEDDING"})
_OI_RESPONSE_ID: Final = re.compile(r'^\s*\{\s*"id"\s*:\s*"([^"\\]{1,256})"')


def openinference_counted(span: SpanLike, found: Found) -> bool:
    """LLM and EMBEDDING spans are calls; CHAIN, AGENT, TOOL... spans sum or wrap them."""
    kind = text(found.get(OI_SPAN_KIND))
    return kind is None or kind.upper() in _OI_COUNTED_KINDS


def openinference_call(span: SpanLike, found: Found) -> bool:
    """Without usage, only a span that says it is an LLM or EMBEDDING call is one."""
    kind = text(found.get(OI_SPAN_KIND))
    return kind is not None and kind.upper() in _OI_COUNTED_KINDS


def openinference_finish(span: SpanLike, found: Found, fields: Finish) -> None:
    """No response id attribute: the non-streamed output payload starts with it (read from its first bytes, so one
    call seen by two instrumentations is one record). Streaming is an invocation parameter."""
    if fields.response_id is None:
        value = found.get(OI_OUTPUT_VALUE)
        if isinstance(value, str):
            m = _OI_RESPONSE_ID.match(value[:512])
            if m:
                fields.response_id = m.group(1)
    params = found.get(OI_INVOCATION_PARAMETERS)
    if isinstance(params, str):
        head = params[:4096]
        fields.streamed = '"stream": true' in head or '"stream":true' in head
    kind = text(found.get(OI_SPAN_KIND))
    if fields.operation is None:
        fields.operation = "embeddings" if kind and kind.upper() == "EMBEDDING" else "chat"


# -- pydantic-ai, OpenLLMetry ------------------------------------------------------------------------------------


def pydantic_ai_counted(span: SpanLike, found: Found) -> bool:
    """The agent run span carries the SUM of its calls (``gen_ai.aggregated_usage.*`` now, ``gen_ai.usage.*`` on
    older versions' "agent run"): never counted."""
    return "agent_name" not in found and span.name != "agent run"


TRACELOOP_SPAN_KIND: Final = "traceloop.span.kind"


def openllmetry_counted(span: SpanLike, found: Found) -> bool:
    """Traceloop's workflow, task, agent and tool spans wrap calls; they are not calls."""
    kind = text(found.get(TRACELOOP_SPAN_KIND))
    return kind is None or kind not in ("workflow", "task", "agent", "tool")
