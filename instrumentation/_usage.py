"""Usage and response facts from LLM response bodies: whole JSON bodies and server-sent events as they pass.

Token counts are normalised to the OpenTelemetry convention on the way in, so nothing downstream needs to know a
provider's quirks: input INCLUDES cache reads and writes (Anthropic reports them apart, OpenAI inside), output
INCLUDES reasoning. A count the provider did not report stays ``None``, never ``0``: a zero would claim a free
call, a missing value says "unknown".

Streams are parsed incrementally without changing or holding the bytes. Only lines that can carry what we need
are decoded (a final usage chunk, a finish reason, Anthropic's message_start/message_delta/message_stop), found by
a regular expression over each block of complete lines, so a long stream of text deltas costs a few ``re.search``
calls and no JSON decoding.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from . import semconv

log = logging.getLogger(__name__)

# A JSON body larger than this is not parsed for usage; no chat response is anywhere near it.
MAX_JSON_BODY: Final = 16 << 20
# An SSE line longer than this without a newline is dropped: a broken stream must not grow our buffer forever.
MAX_SSE_LINE: Final = 4 << 20


@dataclass(slots=True)
class Usage:
    """Token counts in the OpenTelemetry convention (input inclusive of cache, output inclusive of reasoning)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    reasoning_output_tokens: int | None = None


@dataclass(slots=True)
class ResponseFacts:
    """What a response body told us. ``terminal`` means its final event (or the whole JSON body) was seen."""

    response_id: str | None = None
    response_model: str | None = None
    finish_reasons: dict[int, str] = field(default_factory=dict)
    usage: Usage | None = None
    terminal: bool = False
    error_type: str | None = None


class BodyParser(Protocol):
    """Consumes the (decoded) bytes of one response body and says what they contained."""

    def feed(self, chunk: bytes) -> None: ...

    def result(self) -> ResponseFacts: ...


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def chat_usage(usage: dict[str, Any]) -> Usage:
    """A Chat Completions ``usage`` object. ``prompt_tokens`` already includes cached tokens."""
    prompt_details = _dict(usage.get("prompt_tokens_details"))
    cached = _int(prompt_details.get("cached_tokens"))
    if cached is None:
        cached = _int(usage.get("prompt_cache_hit_tokens"))  # DeepSeek's name for the same thing
    return Usage(
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        cache_read_input_tokens=cached,
        # OpenRouter reports cache writes (for models that bill them) inside prompt_tokens, like reads.
        cache_creation_input_tokens=_int(prompt_details.get("cache_write_tokens")),
        reasoning_output_tokens=_int(_dict(usage.get("completion_tokens_details")).get("reasoning_tokens")),
    )


class AnthropicUsage:
    """Anthropic usage assembled from one or more usage objects, each field replaced by its latest value.

    Anthropic's counts are cumulative: ``message_delta`` repeats totals, it never sends increments, so the latest
    value is the truth and summing would double count. ``input_tokens`` EXCLUDES cache reads and writes.
    """

    __slots__ = ("input", "cache_read", "cache_creation", "output", "thinking")

    def __init__(self) -> None:
        self.input: int | None = None
        self.cache_read: int | None = None
        self.cache_creation: int | None = None
        self.output: int | None = None
        self.thinking: int | None = None

    def update(self, usage: dict[str, Any], *, output: bool = True) -> None:
        """Take the fields ``usage`` reports. ``output=False`` for message_start, whose output is a placeholder."""
        for name, attribute in (
            ("input_tokens", "input"),
            ("cache_read_input_tokens", "cache_read"),
            ("cache_creation_input_tokens", "cache_creation"),
        ):
            value = _int(usage.get(name))
            if value is not None:
                setattr(self, attribute, value)
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
        )


def _error_type(error: object) -> str:
    error = _dict(error)
    kind = error.get("type") or error.get("code")
    return str(kind) if kind else "error"


def facts_from_json(api: str, data: object) -> ResponseFacts:
    """The facts of a whole (non-streamed) response body of ``api``."""
    facts = ResponseFacts(terminal=True)
    body = _dict(data)
    if "error" in body and body.get("error"):
        facts.error_type = _error_type(body["error"])
        return facts
    if isinstance(body.get("id"), str):
        facts.response_id = body["id"]
    if isinstance(body.get("model"), str):
        facts.response_model = body["model"]
    if api == semconv.API_ANTHROPIC_MESSAGES:
        if isinstance(body.get("stop_reason"), str):
            facts.finish_reasons[0] = body["stop_reason"]
        usage = AnthropicUsage()
        usage.update(_dict(body.get("usage")))
        facts.usage = usage.to_usage()
    else:
        choices = body.get("choices")
        for position, choice in enumerate(choices if isinstance(choices, list) else ()):
            choice = _dict(choice)
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                index = choice.get("index")
                facts.finish_reasons[index if isinstance(index, int) else position] = reason
        if isinstance(body.get("usage"), dict):
            facts.usage = chat_usage(body["usage"])
    return facts


class JsonBodyParser:
    """Collects a JSON body and parses it once, at the end. Keeps references to the chunks, not a second copy."""

    def __init__(self, api: str) -> None:
        self._api = api
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        if self._size <= MAX_JSON_BODY:
            self._chunks.append(chunk)
            self._size += len(chunk)

    def result(self) -> ResponseFacts:
        if self._size > MAX_JSON_BODY or not self._chunks:
            return ResponseFacts()
        try:
            data = json.loads(b"".join(self._chunks))
        except ValueError:
            return ResponseFacts()
        finally:
            self._chunks = []
        return facts_from_json(self._api, data)


class SseParser:
    """Splits a server-sent-event stream into ``data:`` payloads and hands the interesting ones to ``on_data``.

    Subclasses say what is interesting with ``PREFILTER``, a bytes regex run over each block of complete lines
    before any line is split out. A line that spans chunks is kept in a tail until its newline arrives.
    """

    PREFILTER: re.Pattern[bytes]

    def __init__(self) -> None:
        self.facts = ResponseFacts()
        self._tail = b""

    def wants_everything(self) -> bool:
        """True while every data line must be parsed (before the first chunk gave us the id and model)."""
        return False

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk if self._tail else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._tail = data if len(data) <= MAX_SSE_LINE else b""
            return
        self._tail = data[cut + 1 :]
        self._block(data[:cut])

    def _block(self, block: bytes) -> None:
        everything = self.wants_everything()
        if not everything and self.PREFILTER.search(block) is None:
            return
        for line in block.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if everything or self.PREFILTER.search(payload) is not None:
                try:
                    self.on_data(payload)
                except Exception:
                    log.debug("Could not parse an SSE data line for usage", exc_info=True)
                everything = self.wants_everything()

    def on_data(self, payload: bytes) -> None:
        raise NotImplementedError

    def result(self) -> ResponseFacts:
        if self._tail:
            # A final line without a trailing newline still counts (some servers end the body without one).
            tail, self._tail = self._tail, b""
            self._block(tail)
        return self.facts


class ChatStreamParser(SseParser):
    """Chat Completions chunks: id and model from the first, finish reasons as they come, usage from the last.

    Usage appears only with ``stream_options.include_usage``, in a final chunk whose ``choices`` is empty (Groq
    nests it under ``x_groq``). ``[DONE]`` ends the stream; a usage chunk also counts as the end, for servers that
    omit ``[DONE]``.
    """

    # Factored on the leading quote: sre then tries the alternatives only where a quote is.
    PREFILTER = re.compile(rb'"(?:usage"\s*:\s*\{|finish_reason"\s*:\s*"|error"\s*:\s*\{)|\[DONE\]')

    def __init__(self) -> None:
        super().__init__()
        self._first = True

    def wants_everything(self) -> bool:
        return self._first

    def on_data(self, payload: bytes) -> None:
        facts = self.facts
        if payload == b"[DONE]":
            facts.terminal = True
            return
        chunk = json.loads(payload)
        if not isinstance(chunk, dict):
            return
        self._first = False
        if chunk.get("error"):
            facts.error_type = _error_type(chunk["error"])
            return
        if facts.response_id is None and isinstance(chunk.get("id"), str):
            facts.response_id = chunk["id"]
        if facts.response_model is None and isinstance(chunk.get("model"), str):
            facts.response_model = chunk["model"]
        choices = chunk.get("choices")
        for position, choice in enumerate(choices if isinstance(choices, list) else ()):
            choice = _dict(choice)
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                index = choice.get("index")
                facts.finish_reasons[index if isinstance(index, int) else position] = reason
        usage = chunk.get("usage")
        if not isinstance(usage, dict):
            usage = _dict(chunk.get("x_groq")).get("usage")
        if isinstance(usage, dict):
            facts.usage = chat_usage(usage)
            facts.terminal = True


class MessagesStreamParser(SseParser):
    """Anthropic Messages events: input usage from message_start, output from the LAST message_delta.

    message_start's ``output_tokens`` is a placeholder (usually 1), so a stream cut before any message_delta
    reports its input and cache tokens but no output count rather than a wrong one.
    """

    PREFILTER = re.compile(rb'"type"\s*:\s*"(?:message_start|message_delta|message_stop|error)"')

    def __init__(self) -> None:
        super().__init__()
        self._usage = AnthropicUsage()

    def on_data(self, payload: bytes) -> None:
        event = json.loads(payload)
        if not isinstance(event, dict):
            return
        facts = self.facts
        kind = event.get("type")
        if kind == "message_start":
            message = _dict(event.get("message"))
            if isinstance(message.get("id"), str):
                facts.response_id = message["id"]
            if isinstance(message.get("model"), str):
                facts.response_model = message["model"]
            self._usage.update(_dict(message.get("usage")), output=False)
        elif kind == "message_delta":
            reason = _dict(event.get("delta")).get("stop_reason")
            if isinstance(reason, str):
                facts.finish_reasons[0] = reason
            self._usage.update(_dict(event.get("usage")))
        elif kind == "message_stop":
            facts.terminal = True
        elif kind == "error":
            facts.error_type = _error_type(event.get("error"))
        facts.usage = self._usage.to_usage()


def body_parser(api: str, streamed: bool) -> BodyParser:
    """The parser for a response body of ``api``: SSE when the response is an event stream, else JSON."""
    if not streamed:
        return JsonBodyParser(api)
    if api == semconv.API_ANTHROPIC_MESSAGES:
        return MessagesStreamParser()
    return ChatStreamParser()
