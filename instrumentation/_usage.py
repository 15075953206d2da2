"""What a response said about itself: usage and response facts, from the JSON objects each API sends.

Token counts are normalised to the OpenTelemetry convention on the way in, so nothing downstream needs to know a
provider's quirks: input INCLUDES cache reads and writes (Anthropic reports them apart, OpenAI inside), output
INCLUDES reasoning. A count the provider did not report stays ``None``, never ``0``: a zero would claim a free
call, a missing value says "unknown".

This module only converts already-decoded JSON objects; ``_parsers`` finds them in bodies and event streams.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, NamedTuple, Protocol

from . import semconv


class Usage(NamedTuple):
    """Token counts in the OpenTelemetry convention (input inclusive of cache, output inclusive of reasoning).

    ``cache_creation_by_ttl`` splits ``cache_creation_input_tokens`` by cache lifetime (``"5m"``, ``"1h"`` for
    Anthropic, ``"30m"``, ``"12h"`` for OpenAI), priced differently; the parts are not additions to the total. The
    audio counts are likewise parts of the input and output (Gemini's AUDIO modality), priced differently.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    reasoning_output_tokens: int | None = None
    cache_creation_by_ttl: dict[str, int] | None = None
    input_audio_tokens: int | None = None
    output_audio_tokens: int | None = None


@dataclass(slots=True)
class ResponseFacts:
    """What a response body told us. ``terminal`` means its final event (or the whole JSON body) was seen."""

    response_id: str | None = None
    response_model: str | None = None
    finish_reasons: dict[int, str] = field(default_factory=dict)
    usage: Usage | None = None
    terminal: bool = False
    error_type: str | None = None
    service_tier: str | None = None


class BodyParser(Protocol):
    """Consumes the (decoded) bytes of one response body and says what they contained."""

    def feed(self, chunk: bytes) -> None: ...

    def result(self) -> ResponseFacts: ...


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


# What _dict gives for anything but an object: shared, and only ever read.
_NOTHING: Final[Mapping[str, Any]] = MappingProxyType({})


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else _NOTHING


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


_OPENAI_TTLS = (("ttl_30m_tokens", "30m"), ("ttl_12h_tokens", "12h"))


def _openai_cache_writes(details: Mapping[str, Any]) -> dict[str, int] | None:
    split = details.get("cache_write_tokens_details")
    if not isinstance(split, dict):
        return None
    by_ttl = {ttl: value for name, ttl in _OPENAI_TTLS if (value := _int(split.get(name))) is not None}
    return by_ttl or None


def chat_usage(usage: Mapping[str, Any]) -> Usage:
    """A Chat Completions, legacy Completions or Embeddings ``usage`` object. ``prompt_tokens`` includes cache."""
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        cached = _int(details.get("cached_tokens"))
        # Cache writes (OpenAI's, OpenRouter's for models that bill them) are inside prompt_tokens, like reads.
        writes = _int(details.get("cache_write_tokens"))
        by_ttl = _openai_cache_writes(details)
    else:
        cached = writes = by_ttl = None
    if cached is None:
        cached = _int(usage.get("prompt_cache_hit_tokens"))  # DeepSeek's name for the same thing
    completion = usage.get("completion_tokens_details")
    reasoning = _int(completion.get("reasoning_tokens")) if isinstance(completion, dict) else None
    return Usage(
        _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), cached, writes, reasoning, by_ttl
    )


def responses_usage(usage: Mapping[str, Any]) -> Usage:
    """A Responses ``usage`` object: ``input_tokens`` includes cache reads and writes, ``output_tokens`` reasoning."""
    input_details = _dict(usage.get("input_tokens_details"))
    return Usage(
        input_tokens=_int(usage.get("input_tokens")),
        output_tokens=_int(usage.get("output_tokens")),
        cache_read_input_tokens=_int(input_details.get("cached_tokens")),
        cache_creation_input_tokens=_int(input_details.get("cache_write_tokens")),
        reasoning_output_tokens=_int(_dict(usage.get("output_tokens_details")).get("reasoning_tokens")),
        cache_creation_by_ttl=_openai_cache_writes(input_details),
    )


class AnthropicUsage:
    """Anthropic usage assembled from one or more usage objects, each field replaced by its latest value.

    Anthropic's counts are cumulative: ``message_delta`` repeats totals, it never sends increments, so the latest
    value is the truth and summing would double count. ``input_tokens`` EXCLUDES cache reads and writes.
    """

    __slots__ = ("input", "cache_read", "cache_creation", "cache_5m", "cache_1h", "output", "thinking", "tier")

    def __init__(self) -> None:
        self.input: int | None = None
        self.cache_read: int | None = None
        self.cache_creation: int | None = None
        self.cache_5m: int | None = None
        self.cache_1h: int | None = None
        self.output: int | None = None
        self.thinking: int | None = None
        self.tier: str | None = None

    def update(self, usage: Mapping[str, Any], *, output: bool = True) -> None:
        """Take the fields ``usage`` reports. ``output=False`` for message_start, whose output is a placeholder."""
        for name, attribute in (
            ("input_tokens", "input"),
            ("cache_read_input_tokens", "cache_read"),
            ("cache_creation_input_tokens", "cache_creation"),
        ):
            value = _int(usage.get(name))
            if value is not None:
                setattr(self, attribute, value)
        creation = usage.get("cache_creation")
        if isinstance(creation, dict):
            if (value := _int(creation.get("ephemeral_5m_input_tokens"))) is not None:
                self.cache_5m = value
            if (value := _int(creation.get("ephemeral_1h_input_tokens"))) is not None:
                self.cache_1h = value
        if (tier := _str(usage.get("service_tier"))) is not None:
            self.tier = tier
        if output:
            if (value := _int(usage.get("output_tokens"))) is not None:
                self.output = value
            if (value := _int(_dict(usage.get("output_tokens_details")).get("thinking_tokens"))) is not None:
                self.thinking = value

    def to_usage(self) -> Usage | None:
        if self.input is None and self.output is None:
            return None
        inclusive = None if self.input is None else self.input + (self.cache_read or 0) + (self.cache_creation or 0)
        return Usage(
            input_tokens=inclusive,
            output_tokens=self.output,
            cache_read_input_tokens=self.cache_read,
            cache_creation_input_tokens=self.cache_creation,
            reasoning_output_tokens=self.thinking,
            cache_creation_by_ttl={
                ttl: value for ttl, value in (("5m", self.cache_5m), ("1h", self.cache_1h)) if value is not None
            }
            or None,
        )


def error_type(error: object) -> str:
    """A low-cardinality ``error.type`` from a provider's error object."""
    error = _dict(error)
    kind = error.get("type") or error.get("code")
    return str(kind) if kind else "error"


def _finish_reasons(reasons: dict[int, str], choices: object) -> None:
    """The finish reason of each choice in ``choices`` into ``reasons``, by the choice's index (else its position)."""
    if not isinstance(choices, list):
        return
    for position, choice in enumerate(choices):
        if isinstance(choice, dict):
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                index = choice.get("index")
                reasons[index if isinstance(index, int) else position] = reason


def responses_facts(body: Mapping[str, Any], facts: ResponseFacts) -> ResponseFacts:
    """A Responses ``response`` object (a whole body, or the one in a terminal stream event) into ``facts``.

    The finish reason follows the response's status: ``stop`` when completed, the ``incomplete_details.reason``
    (``max_output_tokens``, ``content_filter``) when incomplete, ``error`` when failed.
    """
    if (value := _str(body.get("id"))) is not None:
        facts.response_id = value
    if (value := _str(body.get("model"))) is not None:
        facts.response_model = value
    if (value := _str(body.get("service_tier"))) is not None:
        facts.service_tier = value
    status = body.get("status")
    if status == "completed":
        facts.finish_reasons[0] = "stop"
    elif status == "incomplete":
        facts.finish_reasons[0] = _str(_dict(body.get("incomplete_details")).get("reason")) or "incomplete"
    elif status == "failed":
        facts.finish_reasons[0] = "error"
        facts.error_type = error_type(body.get("error"))
    if isinstance(body.get("usage"), dict):
        facts.usage = responses_usage(body["usage"])
    return facts


def facts_from_json(api: str, data: object) -> ResponseFacts:
    """The facts of a whole (non-streamed) response body of ``api``."""
    facts = ResponseFacts(terminal=True)
    body = _dict(data)
    if api == semconv.API_RESPONSES:
        return responses_facts(body, facts)
    get = body.get
    if get("error"):
        facts.error_type = error_type(body["error"])
        return facts
    value = get("id")
    if isinstance(value, str) and value:
        facts.response_id = value
    value = get("model")
    if isinstance(value, str) and value:
        facts.response_model = value
    if api == semconv.API_ANTHROPIC_MESSAGES:
        if isinstance(body.get("stop_reason"), str):
            facts.finish_reasons[0] = body["stop_reason"]
        anthropic = AnthropicUsage()
        anthropic.update(_dict(body.get("usage")))
        facts.usage = anthropic.to_usage()
        facts.service_tier = anthropic.tier
    else:
        _finish_reasons(facts.finish_reasons, get("choices"))
        value = get("service_tier")
        if isinstance(value, str) and value:
            facts.service_tier = value
        usage = get("usage")
        if isinstance(usage, dict):
            facts.usage = chat_usage(usage)
    return facts


def chunk_facts(chunk: Mapping[str, Any], facts: ResponseFacts) -> None:
    """One Chat Completions (or legacy Completions) stream chunk into ``facts``.

    Usage appears only with ``stream_options.include_usage``, in a final chunk whose ``choices`` is empty (Groq
    nests it under ``x_groq``); a usage chunk also counts as the end, for servers that omit ``[DONE]``.
    """
    if chunk.get("error"):
        facts.error_type = error_type(chunk["error"])
        return
    if facts.response_id is None:
        facts.response_id = _str(chunk.get("id"))
    if facts.response_model is None:
        facts.response_model = _str(chunk.get("model"))
    if facts.service_tier is None:
        facts.service_tier = _str(chunk.get("service_tier"))
    _finish_reasons(facts.finish_reasons, chunk.get("choices"))
    usage = chunk.get("usage")
    if not isinstance(usage, dict):
        usage = _dict(chunk.get("x_groq")).get("usage")
    if isinstance(usage, dict):
        facts.usage = chat_usage(usage)
        facts.terminal = True
