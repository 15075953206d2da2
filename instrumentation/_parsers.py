"""Parsers that find the response facts in bodies as they pass: whole JSON bodies and server-sent events.

Streams are parsed incrementally without changing or holding the bytes. Only lines that can carry what we need are
decoded (a final usage chunk, a finish reason, Anthropic's message_start/message_delta/message_stop, the Responses
API's created/completed/incomplete/failed events), found by a regular expression over each block of complete lines,
so a long stream of text deltas costs a few ``re.search`` calls and no JSON decoding. Google's streams (Gemini and
Vertex AI, ``alt=sse``) carry running usage totals in every chunk: each chunk is decoded, for its declared fields only.

A JSON body is parsed once, at its end, with ``_jsonbody.pick``: only the fields its API's shape declares are
decoded, so an embeddings body's floats or a long answer cost a walk over their bytes, not Python objects. A very
large one (a batch of embeddings can be tens of megabytes) is not decoded at all: its head and tail, where every API
puts its id, model and usage, are kept and scanned instead. Vertex AI's ``:predict`` embeddings state a token count
per embedding, spread through the body: those are summed as the chunks pass, and the body is never kept.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Final

from . import semconv
from ._gemini_usage import gemini_chunk, gemini_facts, predict_usage
from ._jsonbody import ChatResponse, GeminiResponse, Message, MessageEvent, Response, ResponseEvent, pick
from ._usage import (
    AnthropicUsage,
    BodyParser,
    ResponseFacts,
    chunk_facts,
    error_type,
    facts_from_json,
    responses_facts,
)

log = logging.getLogger(__name__)

# The shape of a whole JSON response body, by API (see _jsonbody); an API not named reads as Chat Completions.
RESPONSE_SHAPES: Final[dict[str, type[Any]]] = {
    semconv.API_CHAT_COMPLETIONS: ChatResponse,
    semconv.API_COMPLETIONS: ChatResponse,
    semconv.API_EMBEDDINGS: ChatResponse,
    semconv.API_RESPONSES: Response,
    semconv.API_ANTHROPIC_MESSAGES: Message,
    semconv.API_GEMINI_GENERATE_CONTENT: GeminiResponse,
    semconv.API_GEMINI_EMBED_CONTENT: GeminiResponse,
}
# Google's APIs, whose bodies read through _gemini_usage; embeddings generate no output.
_GOOGLE_JSON: Final = frozenset({semconv.API_GEMINI_GENERATE_CONTENT, semconv.API_GEMINI_EMBED_CONTENT})
# A JSON body up to this size is decoded whole; beyond it only its head and tail are kept and scanned.
FULL_JSON_BODY: Final = 1 << 20
SCAN_HEAD: Final = 8 << 10
SCAN_TAIL: Final = 32 << 10
# An SSE line longer than this without a newline is dropped: a broken stream must not grow our buffer forever.
MAX_SSE_LINE: Final = 4 << 20

_ID: Final = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.)*)"')
_MODEL: Final = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.)*)"')
_USAGE_START: Final = re.compile(rb'"usage"\s*:\s*\{')
_RESPONSE_ID: Final = re.compile(rb'"responseId"\s*:\s*"((?:[^"\\]|\\.)*)"')
_MODEL_VERSION: Final = re.compile(rb'"modelVersion"\s*:\s*"((?:[^"\\]|\\.)*)"')
_USAGE_METADATA_START: Final = re.compile(rb'"usageMetadata"\s*:\s*\{')


def _balanced_object(data: bytes, start: int) -> bytes | None:
    """The JSON object that opens at ``data[start]`` (a ``{``), or None if it does not close within ``data``."""
    depth = 0
    in_string = False
    escaped = False
    for position in range(start, len(data)):
        byte = data[position]
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte == 0x7B:  # {
            depth += 1
        elif byte == 0x7D:  # }
            depth -= 1
            if depth == 0:
                return data[start : position + 1]
    return None


def _scan_string(pattern: re.Pattern[bytes], *parts: bytes) -> str | None:
    for part in parts:
        match = pattern.search(part)
        if match is not None:
            value = json.loads(b'"' + match.group(1) + b'"')
            return value if isinstance(value, str) else None
    return None


def scan_large_json(api: str, head: bytes, tail: bytes) -> ResponseFacts:
    """The facts of a JSON body too large to decode, from its head and tail: id, model and the last usage object."""
    if api in _GOOGLE_JSON:
        return _scan_large_google(api, head, tail)
    skeleton: dict[str, Any] = {}
    if (value := _scan_string(_ID, head)) is not None:
        skeleton["id"] = value
    if (value := _scan_string(_MODEL, head, tail)) is not None:
        skeleton["model"] = value
    starts = [match.end() - 1 for match in _USAGE_START.finditer(tail)]
    if starts:
        text = _balanced_object(tail, starts[-1])
        if text is not None:
            skeleton["usage"] = json.loads(text)
    facts = facts_from_json(api, skeleton)
    facts.finish_reasons.clear()  # a scan cannot tell the finish reasons apart from prompt text
    return facts


def _scan_large_google(api: str, head: bytes, tail: bytes) -> ResponseFacts:
    """As ``scan_large_json``, for Google's bodies (an image or a batch of embeddings): Google writes
    ``usageMetadata``, ``modelVersion`` and ``responseId`` after the candidates or vectors, at the tail."""
    skeleton: dict[str, Any] = {}
    if (value := _scan_string(_RESPONSE_ID, tail, head)) is not None:
        skeleton["responseId"] = value
    if (value := _scan_string(_MODEL_VERSION, tail, head)) is not None:
        skeleton["modelVersion"] = value
    starts = [match.end() - 1 for match in _USAGE_METADATA_START.finditer(tail)]
    if starts:
        text = _balanced_object(tail, starts[-1])
        if text is not None:
            skeleton["usageMetadata"] = json.loads(text)
    return gemini_facts(skeleton, api == semconv.API_GEMINI_GENERATE_CONTENT)


class JsonBodyParser:
    """Collects a JSON body and parses it once, at the end. Keeps references to the chunks, not a second copy."""

    __slots__ = ("_api", "_chunks", "_size", "_head", "_tail")

    def __init__(self, api: str) -> None:
        self._api = api
        self._chunks: list[bytes] = []
        self._size = 0
        # _head and _tail are set when the body turns out too large to decode (see feed).

    def feed(self, chunk: bytes) -> None:
        size = self._size
        if size <= FULL_JSON_BODY:
            self._chunks.append(chunk)
            self._size = size = size + len(chunk)
            if size > FULL_JSON_BODY:
                # Too large to decode: from now on keep only its ends.
                whole = b"".join(self._chunks)
                self._chunks = []
                self._head = whole[:SCAN_HEAD]
                self._tail = whole[-SCAN_TAIL:]
            return
        self._size = size + len(chunk)
        self._tail = chunk[-SCAN_TAIL:] if len(chunk) >= SCAN_TAIL else (self._tail + chunk)[-SCAN_TAIL:]

    def result(self) -> ResponseFacts:
        """The facts of the body, once, at its end."""
        try:
            if self._size > FULL_JSON_BODY:
                return scan_large_json(self._api, self._head, self._tail)
            chunks = self._chunks
            if not chunks:
                return ResponseFacts()
            # Most bodies arrive in one chunk: parsed as it is, not copied by a join.
            body = chunks[0] if len(chunks) == 1 and type(chunks[0]) is bytes else b"".join(chunks)
            api = self._api
            if api in _GOOGLE_JSON:
                return gemini_facts(pick(body, GeminiResponse), api == semconv.API_GEMINI_GENERATE_CONTENT)
            return facts_from_json(api, pick(body, RESPONSE_SHAPES.get(api, ChatResponse)))
        except ValueError:
            return ResponseFacts()
        finally:
            # The body wrapper keeps this parser (its feed) as long as the response lives: let go of the body now.
            self._chunks = []
            self._head = self._tail = b""


class SseParser:
    """Splits a server-sent-event stream into ``data:`` payloads and hands the interesting ones to ``on_data``.

    Subclasses say what is interesting with ``MARKERS``, bytes regexes run over each block of complete lines
    before any line is split out, and again over each line of a block that has one. Each marker starts with a
    literal, which ``re`` finds with a fast substring search; one pattern of alternatives would be tried at every
    quote of every chunk, about twice as slow. A line that spans chunks is kept in pieces until its newline arrives.
    """

    MARKERS: tuple[re.Pattern[bytes], ...]

    def __init__(self) -> None:
        self.facts = ResponseFacts()
        self._pending: list[bytes] = []
        self._pending_size = 0

    def wants_everything(self) -> bool:
        """True while every data line must be parsed (before the first chunk gave us the id and model)."""
        return False

    def feed(self, chunk: bytes) -> None:
        cut = chunk.rfind(b"\n")
        if cut < 0:
            self._pending_size += len(chunk)
            if self._pending_size > MAX_SSE_LINE:
                self._pending, self._pending_size = [], 0
            else:
                self._pending.append(chunk)
            return
        block = chunk[:cut]
        if self._pending:
            self._pending.append(block)
            block = b"".join(self._pending)
        rest = chunk[cut + 1 :]
        self._pending = [rest] if rest else []
        self._pending_size = len(rest)
        self._block(block)

    def _interesting(self, data: bytes) -> bool:
        for marker in self.MARKERS:
            if marker.search(data) is not None:
                return True
        return False

    def _block(self, block: bytes) -> None:
        everything = self.wants_everything()
        if not everything and not self._interesting(block):
            return
        for line in block.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if everything or self._interesting(payload):
                try:
                    self.on_data(payload)
                except Exception:
                    log.debug("Could not parse an SSE data line for usage", exc_info=True)
                everything = self.wants_everything()

    def on_data(self, payload: bytes) -> None:
        raise NotImplementedError

    def result(self) -> ResponseFacts:
        if self._pending:
            # A final line without a trailing newline still counts (some servers end the body without one).
            tail = b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            self._block(tail)
        return self.facts


class ChatStreamParser(SseParser):
    """Chat Completions (and legacy Completions) chunks: id, model and tier from the first, finish reasons as they
    come, usage from the last. ``[DONE]`` ends the stream."""

    MARKERS = (
        re.compile(rb'_reason"\s*:\s*"'),  # a finish reason (not null)
        re.compile(rb'usage"\s*:\s*\{'),  # a usage object (not null)
        re.compile(rb'error"\s*:\s*\{'),
        re.compile(rb"\[DONE\]"),
    )

    def __init__(self) -> None:
        super().__init__()
        self._first = True

    def wants_everything(self) -> bool:
        return self._first

    def on_data(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            self.facts.terminal = True
            return
        chunk = pick(payload, ChatResponse)
        if isinstance(chunk, dict):
            self._first = False
            chunk_facts(chunk, self.facts)


class MessagesStreamParser(SseParser):
    """Anthropic Messages events: input usage from message_start, output from the LAST message_delta.

    message_start's ``output_tokens`` is a placeholder (usually 1), so a stream cut before any message_delta
    reports its input and cache tokens but no output count rather than a wrong one.
    """

    # Text that merely mentions these costs one JSON decode: the event's "type" is checked after it.
    MARKERS = (re.compile(rb'"message_(?:start|delta|stop)"'), re.compile(rb'"error"'))

    def __init__(self) -> None:
        super().__init__()
        self._usage = AnthropicUsage()

    def on_data(self, payload: bytes) -> None:
        event = pick(payload, MessageEvent)
        if not isinstance(event, dict):
            return
        facts = self.facts
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            message = message if isinstance(message, dict) else {}
            if isinstance(message.get("id"), str):
                facts.response_id = message["id"]
            if isinstance(message.get("model"), str):
                facts.response_model = message["model"]
            usage = message.get("usage")
            self._usage.update(usage if isinstance(usage, dict) else {}, output=False)
        elif kind == "message_delta":
            delta = event.get("delta")
            reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            if isinstance(reason, str):
                facts.finish_reasons[0] = reason
            usage = event.get("usage")
            self._usage.update(usage if isinstance(usage, dict) else {})
        elif kind == "message_stop":
            facts.terminal = True
        elif kind == "error":
            facts.error_type = error_type(event.get("error"))
        facts.usage = self._usage.to_usage()
        facts.service_tier = self._usage.tier


class ResponsesStreamParser(SseParser):
    """Responses API events: id and model from ``response.created``; everything from the terminal event.

    The stream ends with ``response.completed``, ``response.incomplete`` (e.g. max_output_tokens: still billed,
    usage included) or ``response.failed``; each carries the whole response object with its usage.
    """

    MARKERS = (re.compile(rb'"response\.(?:created|completed|incomplete|failed)"'), re.compile(rb'"error"'))

    def on_data(self, payload: bytes) -> None:
        event = pick(payload, ResponseEvent)
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        facts = self.facts
        if kind == "error":
            # {"type": "error", "code": ..., "message": ...}: the code is the useful part.
            facts.error_type = str(event.get("code") or "error")
            return
        response = event.get("response")
        if not isinstance(response, dict):
            return
        if kind == "response.created":
            if isinstance(response.get("id"), str):
                facts.response_id = response["id"]
            if isinstance(response.get("model"), str):
                facts.response_model = response["model"]
        elif kind in _RESPONSES_TERMINAL:
            responses_facts(response, facts)
            facts.terminal = True


_RESPONSES_TERMINAL: Final = frozenset({"response.completed", "response.incomplete", "response.failed"})


class GeminiStreamParser(SseParser):
    """Google's ``streamGenerateContent?alt=sse`` chunks (Gemini and Vertex AI). Each chunk is a whole response object
    whose ``usageMetadata`` holds the RUNNING totals, so only the latest one counts: it is kept as it came and decoded
    once, when the stream ends (or when a later chunk that must be decoded anyway, a finish reason or an error,
    supersedes it). The first chunk is decoded for the response's id and model."""

    MARKERS = (re.compile(rb'"usageMetadata"'), re.compile(rb'"finishReason"'), re.compile(rb'"error"'))

    def __init__(self) -> None:
        super().__init__()
        self._first = True
        self._latest: bytes | None = None  # the latest chunk with usage not decoded yet

    def wants_everything(self) -> bool:
        return self._first

    def on_data(self, payload: bytes) -> None:
        if self._first or b'"finishReason"' in payload or b'"error"' in payload:
            self._latest = None  # this chunk's usage, if any, is newer
            chunk = pick(payload, GeminiResponse)
            if isinstance(chunk, dict):
                self._first = False
                gemini_chunk(chunk, self.facts)
        else:
            self._latest = payload

    def result(self) -> ResponseFacts:
        facts = super().result()
        latest, self._latest = self._latest, None
        if latest is not None:
            try:
                chunk = pick(latest, GeminiResponse)
            except ValueError:
                log.debug("Could not parse an SSE data line for usage", exc_info=True)
            else:
                if isinstance(chunk, dict):
                    gemini_chunk(chunk, facts)
        return facts


# Vertex AI's :predict embeddings: each prediction's statistics.token_count, a JSON number (Struct values may print
# as 6.0). The lookahead wants the number's end in hand, so a count split across chunks is read once it is whole.
_TOKEN_COUNT: Final = re.compile(rb'"token_count"\s*:\s*(\d+)(?:\.0*)?(?=\s*[,}\]])')
# What is kept of a chunk's end for the next: more than any one "token_count": <number> can span.
_COUNT_CARRY: Final = 64


class PredictParser:
    """Sums Vertex AI ``:predict`` embeddings' ``statistics.token_count`` as the body passes, keeping only a few
    bytes across chunks: an embeddings body can be megabytes of floats, and its counts are spread through it."""

    __slots__ = ("_carry", "_total")

    def __init__(self) -> None:
        self._carry = b""
        self._total: int | None = None

    def feed(self, chunk: bytes) -> None:
        data = self._carry + chunk if self._carry else chunk
        end = 0
        for match in _TOKEN_COUNT.finditer(data):
            self._total = (self._total or 0) + int(match.group(1))
            end = match.end()
        self._carry = data[max(end, len(data) - _COUNT_CARRY) :]

    def result(self) -> ResponseFacts:
        return ResponseFacts(usage=predict_usage(self._total), terminal=True)


def body_parser(api: str, streamed: bool) -> BodyParser:
    """The parser for a response body of ``api``: SSE when the response is an event stream, else JSON."""
    if not streamed:
        return PredictParser() if api == semconv.API_VERTEX_PREDICT else JsonBodyParser(api)
    if api == semconv.API_GEMINI_GENERATE_CONTENT:
        return GeminiStreamParser()
    if api == semconv.API_ANTHROPIC_MESSAGES:
        return MessagesStreamParser()
    if api == semconv.API_RESPONSES:
        return ResponsesStreamParser()
    return ChatStreamParser()
