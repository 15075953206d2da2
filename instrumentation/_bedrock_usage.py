"""What an AWS Bedrock response said about itself: usage and response facts, in the OpenTelemetry convention.

Bedrock reports tokens in several dialects, and every one of them counts input WITHOUT the prompt cache: Converse's
``inputTokens`` (reads in ``cacheReadInputTokens``, writes in ``cacheWriteInputTokens``), the Anthropic Messages body
of ``invoke_model`` (``input_tokens``), Amazon Nova's body (``inputTokens`` beside ``cacheReadInputTokenCount`` /
``cacheWriteInputTokenCount``), the ``amazon-bedrock-invocationMetrics`` of a stream's last chunk and the
``x-amzn-bedrock-*-token-count`` headers. The conventions (and every other module) count input WITH the cache, so
each reader here adds reads and writes back in. A count Bedrock did not report stays ``None``, never ``0``.

Bodies are read by their shape, not by the model family the id names: an application inference profile's ARN names
no family, and the shapes do not overlap (Anthropic ``usage.input_tokens``, Nova ``usage.inputTokens``, Llama
``prompt_token_count``, Cohere ``meta.billed_units``, Mistral's chat ``usage.prompt_tokens``, Titan
``inputTextTokenCount``). Mistral's and Cohere's text bodies carry no usage: the headers (``invoke_model``) or the
invocation metrics (streams) do.

Only counts, ids, stop reasons and the service tier are read; the generated text is never kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from ._usage import AnthropicUsage, ResponseFacts, Usage, chat_usage

__all__ = [
    "API_CONVERSE",
    "API_INVOKE_MODEL",
    "MAX_BODY_BYTES",
    "ConverseStreamReader",
    "InvokeBodyReader",
    "InvokeStreamReader",
    "converse_facts",
    "header_usage",
    "operation_of",
    "request_model",
]

# Values of tokentrail.api for Bedrock's two interfaces (suggested for semconv.py's API_* list).
API_CONVERSE: Final = "bedrock.converse"
API_INVOKE_MODEL: Final = "bedrock.invoke_model"

# A whole invoke_model body is kept (to be decoded once it is read) up to this size; a larger one (a big embedding
# batch) is left to the token-count headers.
MAX_BODY_BYTES: Final = 8 << 20

# System-defined ARNs whose resource names a model id the price catalog knows; other ARNs (application inference
# profiles, provisioned, custom and imported models) are opaque ids, kept whole for an overrides alias to price.
_NAMED_ARN: Final = re.compile(r"^arn:aws[a-z-]*:bedrock:[a-z0-9-]*:\d*:(?:foundation-model|inference-profile)/(.+)$")
_REGION_PREFIXES: Final = frozenset({"us", "eu", "apac", "global", "us-gov", "jp", "au", "ca", "regional"})

_TTLS: Final = frozenset({"5m", "1h"})


def request_model(model_id: str) -> str:
    """The model a Bedrock ``modelId`` names, as spans carry it: the id itself, or the resource of a foundation-model
    or inference-profile ARN (``arn:...:inference-profile/us.anthropic.claude-...`` -> ``us.anthropic.claude-...``).

    The cross-region prefix stays: it changes the price (``global.`` profiles cost less than regional ones). The
    ARN's account and region go: reports group one model however the application named it, and the region is the
    span's ``server.address`` already."""
    match = _NAMED_ARN.match(model_id)
    return match.group(1) if match is not None else model_id


def operation_of(model: str) -> str:
    """``embeddings`` for the embedding models (Titan, Cohere Embed), else ``chat``."""
    parts = model.rpartition("/")[2].split(".")
    name = parts[2] if len(parts) > 2 and parts[0] in _REGION_PREFIXES else parts[1] if len(parts) > 1 else parts[0]
    return "embeddings" if "embed" in name else "chat"


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _inclusive(
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read: int | None,
    cache_write: int | None,
    by_ttl: dict[str, int] | None = None,
) -> Usage | None:
    """A usage whose ``input_tokens`` excluded the cache, with the cache added back in; None when it counted nothing."""
    if input_tokens is None and output_tokens is None:
        return None
    total = None if input_tokens is None else input_tokens + (cache_read or 0) + (cache_write or 0)
    return Usage(total, output_tokens, cache_read, cache_write, None, by_ttl)


def _cache_by_ttl(details: object) -> dict[str, int] | None:
    """Converse's ``cacheDetails`` (``[{"ttl": "1h", "inputTokens": n}, ...]``) by lifetime."""
    if not isinstance(details, list):
        return None
    by_ttl: dict[str, int] = {}
    for detail in details:
        entry = _dict(detail)
        ttl, tokens = entry.get("ttl"), _int(entry.get("inputTokens"))
        if ttl in _TTLS and tokens is not None:
            by_ttl[ttl] = by_ttl.get(ttl, 0) + tokens
    return by_ttl or None


def converse_usage(usage: Mapping[str, Any]) -> Usage | None:
    """Converse's ``usage`` (``TokenUsage``): ``inputTokens`` excludes cache reads and writes."""
    return _inclusive(
        _int(usage.get("inputTokens")),
        _int(usage.get("outputTokens")),
        _int(usage.get("cacheReadInputTokens")),
        _int(usage.get("cacheWriteInputTokens")),
        _cache_by_ttl(usage.get("cacheDetails")),
    )


def _tier(value: object) -> str | None:
    """Converse's ``serviceTier`` (``{"type": "flex"}``) or invoke_model's header value."""
    return _str(_dict(value).get("type")) if isinstance(value, dict) else _str(value)


def converse_facts(parsed: Mapping[str, Any], request_id: str | None) -> ResponseFacts:
    """A whole Converse response, as botocore parsed it."""
    facts = ResponseFacts(response_id=request_id, terminal=True)
    if (reason := _str(parsed.get("stopReason"))) is not None:
        facts.finish_reasons[0] = reason
    usage = parsed.get("usage")
    if isinstance(usage, dict):
        facts.usage = converse_usage(usage)
    facts.service_tier = _tier(parsed.get("serviceTier"))
    return facts


class ConverseStreamReader:
    """ConverseStream's events as botocore parsed them: the stop reason in ``messageStop``, the usage and service tier
    in ``metadata``, the stream's last event."""

    __slots__ = ("facts",)

    def __init__(self, request_id: str | None) -> None:
        self.facts = ResponseFacts(response_id=request_id)

    def feed(self, event: Mapping[str, Any]) -> None:
        stop = event.get("messageStop")
        if stop is not None:
            if (reason := _str(_dict(stop).get("stopReason"))) is not None:
                self.facts.finish_reasons[0] = reason
            return
        metadata = event.get("metadata")
        if isinstance(metadata, dict):
            usage = metadata.get("usage")
            if isinstance(usage, dict):
                self.facts.usage = converse_usage(usage)
            if (tier := _tier(metadata.get("serviceTier"))) is not None:
                self.facts.service_tier = tier
            self.facts.terminal = True

    def result(self) -> ResponseFacts:
        return self.facts


def header_usage(headers: Mapping[str, Any]) -> Usage | None:
    """The ``x-amzn-bedrock-*-token-count`` headers of an ``invoke_model`` response (lower-cased names), which count
    input without the cache, as the bodies do."""

    def count(name: str) -> int | None:
        value = headers.get(name)
        if isinstance(value, str) and value.isdigit():
            return int(value)
        return None

    return _inclusive(
        count("x-amzn-bedrock-input-token-count"),
        count("x-amzn-bedrock-output-token-count"),
        count("x-amzn-bedrock-cache-read-input-token-count"),
        count("x-amzn-bedrock-cache-write-input-token-count"),
    )


def _nova_usage(usage: Mapping[str, Any]) -> Usage | None:
    """Amazon Nova's body ``usage``: ``inputTokens`` without the cache, its reads and writes ``...TokenCount``."""
    return _inclusive(
        _int(usage.get("inputTokens")),
        _int(usage.get("outputTokens")),
        _int(usage.get("cacheReadInputTokenCount", usage.get("cacheReadInputTokens"))),
        _int(usage.get("cacheWriteInputTokenCount", usage.get("cacheWriteInputTokens"))),
    )


def _metrics_usage(metrics: Mapping[str, Any]) -> Usage | None:
    """A stream's ``amazon-bedrock-invocationMetrics``: Bedrock's own (billed) counts, input without the cache."""
    return _inclusive(
        _int(metrics.get("inputTokenCount")),
        _int(metrics.get("outputTokenCount")),
        _int(metrics.get("cacheReadInputTokenCount")),
        _int(metrics.get("cacheWriteInputTokenCount")),
    )


def _stop_reason(data: Mapping[str, Any]) -> str | None:
    """The stop reason of a body or chunk of any family: top level (Anthropic, Llama, Nova, Cohere) or in
    ``outputs`` / ``choices`` / ``generations`` (Mistral, Mistral chat, Cohere Command)."""
    for name in ("stop_reason", "stopReason", "finish_reason"):
        if (reason := _str(data.get(name))) is not None:
            return reason
    for name in ("outputs", "choices", "generations"):
        items = data.get(name)
        if isinstance(items, list) and items:
            first = _dict(items[0])
            for field in ("stop_reason", "finish_reason"):
                if (reason := _str(first.get(field))) is not None:
                    return reason
    stop = data.get("messageStop")
    if isinstance(stop, dict):
        return _str(stop.get("stopReason"))
    return None


def _titan_usage(data: Mapping[str, Any]) -> Usage | None:
    """Titan text and embedding bodies: ``inputTextTokenCount``, and each result's ``tokenCount``."""
    output = None
    results = data.get("results")
    if isinstance(results, list):
        counts = [_int(_dict(result).get("tokenCount")) for result in results]
        output = sum(count for count in counts if count is not None) if any(c is not None for c in counts) else None
    return Usage(_int(data.get("inputTextTokenCount")), output)


def body_usage(data: Mapping[str, Any], anthropic: AnthropicUsage | None = None) -> tuple[Usage | None, str | None]:
    """The usage of a whole ``invoke_model`` body of any family, and the service tier it names, by its shape."""
    usage = data.get("usage")
    if isinstance(usage, dict):
        if "input_tokens" in usage or "output_tokens" in usage:
            anthropic = anthropic or AnthropicUsage()
            anthropic.update(usage)
            return anthropic.to_usage(), anthropic.tier
        if "inputTokens" in usage or "outputTokens" in usage:
            return _nova_usage(usage), None
        if "prompt_tokens" in usage:
            return chat_usage(usage), None  # Mistral's chat format (OpenAI's names; prompt includes any cache)
    if "prompt_token_count" in data or "generation_token_count" in data:
        found = Usage(_int(data.get("prompt_token_count")), _int(data.get("generation_token_count")))
        return (found if found.input_tokens is not None or found.output_tokens is not None else None), None
    billed = _dict(_dict(data.get("meta")).get("billed_units"))
    if billed:
        found = Usage(_int(billed.get("input_tokens")), _int(billed.get("output_tokens")))
        return (found if found.input_tokens is not None or found.output_tokens is not None else None), None
    if "inputTextTokenCount" in data:
        return _titan_usage(data), None
    return None, None


class InvokeBodyReader:
    """A whole ``invoke_model`` body, gathered as the application reads it and decoded once, at its end."""

    __slots__ = ("_chunks", "_size", "_request_id", "_headers", "_tier")

    def __init__(self, request_id: str | None, headers: Mapping[str, Any], tier: str | None) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._request_id = request_id
        self._headers = headers
        self._tier = tier

    def feed(self, chunk: bytes) -> None:
        if self._size <= MAX_BODY_BYTES:
            self._size += len(chunk)
            self._chunks.append(chunk)

    def result(self) -> ResponseFacts:
        """The body's facts; its usage, else the headers' (a body unread, cut, too big, or of a family whose body
        counts nothing)."""
        facts = ResponseFacts(response_id=self._request_id, terminal=True, service_tier=self._tier)
        usage = None
        if self._chunks and self._size <= MAX_BODY_BYTES:
            try:
                data = json.loads(b"".join(self._chunks))
            except ValueError:
                data = None
            if isinstance(data, dict):
                if (value := _str(data.get("id"))) is not None:
                    facts.response_id = value
                if (reason := _stop_reason(data)) is not None:
                    facts.finish_reasons[0] = reason
                usage, tier = body_usage(data)
                facts.service_tier = facts.service_tier or tier
        facts.usage = usage if usage is not None else header_usage(self._headers)
        return facts


class InvokeStreamReader:
    """``invoke_model_with_response_stream``'s chunks (``{"chunk": {"bytes": b"<json>"}}``), one JSON object each.

    Anthropic's usage is cumulative across ``message_start`` and ``message_delta`` (``AnthropicUsage``); Nova's comes
    in a ``metadata`` chunk; Llama's counts ride on its chunks; every family's last chunk carries Bedrock's
    ``amazon-bedrock-invocationMetrics``, which also ends the stream. The body's own counts win (they split cache
    writes by lifetime); the invocation metrics stand in for families whose body counts nothing."""

    __slots__ = ("facts", "_anthropic", "_native", "_metrics", "_prompt", "_generated")

    def __init__(self, request_id: str | None, tier: str | None) -> None:
        self.facts = ResponseFacts(response_id=request_id, service_tier=tier)
        self._anthropic: AnthropicUsage | None = None
        self._native: Usage | None = None
        self._metrics: Usage | None = None
        self._prompt: int | None = None
        self._generated: int | None = None

    def feed(self, event: Mapping[str, Any]) -> None:
        chunk = event.get("chunk")
        if not isinstance(chunk, dict):
            return
        raw = chunk.get("bytes")
        if not isinstance(raw, (bytes, str)):
            return
        data = json.loads(raw)
        if isinstance(data, dict):
            self._chunk(data)

    def _chunk(self, data: Mapping[str, Any]) -> None:
        facts = self.facts
        kind = data.get("type")
        if kind == "message_start":  # Anthropic
            message = _dict(data.get("message"))
            if (value := _str(message.get("id"))) is not None:
                facts.response_id = value
            self._anthropic_update(message.get("usage"), output=False)
        elif kind == "message_delta":
            if (reason := _str(_dict(data.get("delta")).get("stop_reason"))) is not None:
                facts.finish_reasons[0] = reason
            self._anthropic_update(data.get("usage"))
        elif kind is None:
            if (reason := _stop_reason(data)) is not None:
                facts.finish_reasons[0] = reason
            metadata = data.get("metadata")  # Nova
            if isinstance(metadata, dict) and isinstance(metadata.get("usage"), dict):
                self._native = _nova_usage(metadata["usage"])
            # Llama: the prompt's count on the first chunk, the running generation count on each.
            if (count := _int(data.get("prompt_token_count"))) is not None:
                self._prompt = count
            if (count := _int(data.get("generation_token_count"))) is not None:
                self._generated = count
        metrics = data.get("amazon-bedrock-invocationMetrics")
        if isinstance(metrics, dict):
            self._metrics = _metrics_usage(metrics)
            facts.terminal = True

    def _anthropic_update(self, usage: object, *, output: bool = True) -> None:
        if isinstance(usage, dict):
            if self._anthropic is None:
                self._anthropic = AnthropicUsage()
            self._anthropic.update(usage, output=output)

    def result(self) -> ResponseFacts:
        facts = self.facts
        native = self._native
        if self._anthropic is not None:
            native = self._anthropic.to_usage()
            facts.service_tier = facts.service_tier or self._anthropic.tier
        elif native is None and (self._prompt is not None or self._generated is not None):
            native = Usage(self._prompt, self._generated)
        facts.usage = native if native is not None else self._metrics
        return facts
