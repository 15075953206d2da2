"""A fake LLM provider: a real HTTP server on loopback that speaks the OpenAI, Anthropic and Google (Gemini,
Vertex AI) APIs, and records the truth about every call so tests can assert on exact tokens and bytes.

Tests, the demo and end-to-end runs point the real SDKs at it (``openai.OpenAI(base_url=fake.openai_base_url)``,
``anthropic.Anthropic(base_url=fake.anthropic_base_url)``) so that every layer, from the SDK's HTTP client to the
span, is exercised on the wire. It serves OpenAI Chat Completions, Responses, legacy Completions and Embeddings,
and Anthropic Messages, streamed and not; Google's routes are built in ``fake_gemini`` (which documents their usage)
and sent from here, through the same failure modes and codings. Every call is recorded in ``fake.calls`` with the
exact usage the server sent and the exact bytes it received and sent, so a test can assert on exact token counts and
on bytes.

Usage is a deterministic function of the request (the same request always gives the same numbers):

* ``N`` (total prompt tokens) = 10 + len(canonical JSON of the prompt material) // 4, where canonical JSON is
  ``json.dumps(..., sort_keys=True, separators=(",", ":"))`` and the material is ``{"messages": ...}`` (plus
  ``"system"`` if present) for Chat Completions and Messages, ``{"input": ...}`` (plus ``"instructions"``) for
  Responses and Embeddings, ``{"prompt": ...}`` for legacy Completions;
* ``M`` (output tokens) = min(limit, 16), where limit is ``max_completion_tokens``, ``max_tokens`` or
  ``max_output_tokens`` (16 if none); the finish reason is ``length`` when limit < 16, else ``stop`` /
  ``end_turn``; a Responses call whose limit is < 16 ends ``incomplete`` (reason ``max_output_tokens``);
* OpenAI: ``prompt_tokens`` = N (inclusive of cache), ``prompt_tokens_details.cached_tokens`` = N // 4,
  ``completion_tokens`` = M, ``completion_tokens_details.reasoning_tokens`` = M // 5, ``total_tokens`` = N + M;
  Responses reports the same numbers under its own names (``input_tokens``, ``input_tokens_details``...);
  Embeddings reports ``prompt_tokens`` = ``total_tokens`` = N and no output;
* Anthropic: ``cache_read_input_tokens`` = N // 4, ``cache_creation_input_tokens`` = C = N // 8,
  ``input_tokens`` = N - both (EXCLUSIVE of cache, as Anthropic reports it), ``output_tokens`` = M; the cache
  writes are all 5-minute ones, unless the request asks for a 1-hour cache (``"ttl": "1h"`` anywhere), when C // 2
  are 1-hour and the rest 5-minute;
* ``service_tier``: OpenAI responses echo the requested ``flex``/``priority``/``scale``/``default`` (else
  ``default``); Anthropic's usage says ``standard``.

Failure injection, by request header ``x-fake-fail``:

* ``midstream``: a streamed response stops after its first content delta and the connection is dropped without
  ending the chunked body, so the client sees a protocol error mid-stream (a non-streamed request ignores it);
* ``truncate``: a streamed response ends cleanly (a well-formed end of body) after its first content delta,
  without its final events: no usage, no ``[DONE]``/``message_stop``/``response.completed``;
* ``failed``: a Responses stream ends with ``response.failed`` (error code ``server_error``, the usage so far);
* ``malformed``: a JSON response body is cut in the middle; a stream gets one line of broken JSON among its events;
* ``non-utf8``: the response (JSON or stream) carries bytes that are not UTF-8 inside its text;
* ``status:<code>`` (e.g. ``status:429``): the response is that HTTP status with the provider's error envelope.
  SDKs retry 429/5xx by default: pass ``max_retries=0`` to see exactly one call.

Header ``x-fake-encoding: gzip`` gzips the response body (JSON whole, a stream event by event); ``br`` and ``zstd``
compress it the same way (with ``brotli``, and ``zstandard`` or ``backports.zstd``, when installed), and a list such
as ``gzip, br`` applies each coding in turn, as Content-Encoding says.

The server's lifecycle is ``fake_server``'s (shared with ``fake_bedrock``), the codings ``fake_encoding``'s, the text
and vectors ``fake_reply``'s.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from tokentrail.processor.demo.fake_encoding import ENCODING_HEADER, codings_of, compress
from tokentrail.processor.demo.fake_encoding import Compressor as _Compressor  # the old name: tests import it
from tokentrail.processor.demo.fake_gemini import (
    GEMINI_AUDIO_PART_TOKENS,
    GEMINI_TOOL_USE_TOKENS,
    embedding_tokens,
    gemini_usage,
    google_api,
    google_error,
    google_reply,
    google_route,
)
from tokentrail.processor.demo.fake_reply import (
    DEFAULT_OUTPUT_TOKENS,
    EMBEDDING_DIMENSIONS,
    canonical_length,
    reply_pieces,
    vector,
)
from tokentrail.processor.demo.fake_server import (
    FAIL_HEADER,
    FakeHandler,
    FakeServer,
    cut_events,
    dumps,
    injected_status,
    json_object,
)

__all__ = [  # the Gemini and shared names too: tests import them from here
    "DEFAULT_OUTPUT_TOKENS",
    "EMBEDDING_DIMENSIONS",
    "ENCODING_HEADER",
    "FAIL_HEADER",
    "GEMINI_AUDIO_PART_TOKENS",
    "GEMINI_TOOL_USE_TOKENS",
    "FakeCall",
    "FakeProvider",
    "anthropic_usage",
    "compress",
    "embedding_tokens",
    "embeddings_usage",
    "gemini_usage",
    "openai_usage",
    "output_limit",
    "output_tokens",
    "prompt_tokens",
    "responses_usage",
]

_NOT_UTF8: Final = b"\xff\xfe\xc3("  # invalid UTF-8, spliced raw into a JSON string
_OPENAI_TIERS: Final = frozenset({"flex", "priority", "scale", "default"})


@dataclass(slots=True)
class FakeCall:
    """One LLM request the fake served, and the truth about its response.

    ``usage`` is the usage object exactly as the server sent it in the non-streamed form of the response (for an
    Anthropic stream: message_start's input fields with the final ``output_tokens``), or ``None`` when the
    response carried none (a Chat Completions stream without ``stream_options.include_usage``, an error). ``failure`` is the ``x-fake-fail`` mode that applied, if any. ``raw_request`` is the request
    body as received; ``response_body`` the response body as sent (after any gzip, without chunked framing; of a
    stream, what has been sent so far, each event recorded before it is written).
    """

    path: str
    model: str | None
    stream: bool
    include_usage: bool
    usage: dict[str, Any] | None
    response_id: str | None
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    failure: str | None = None
    api: str = ""
    raw_request: bytes = b""
    response_body: bytes = b""


def _material(body: dict[str, Any], api: str = "chat") -> dict[str, Any]:
    if api in ("responses", "embeddings"):
        return {name: body[name] for name in ("input", "instructions") if name in body}
    if api == "completions":
        return {"prompt": body.get("prompt", "")}
    material: dict[str, Any] = {"messages": body.get("messages", [])}
    if "system" in body:
        material["system"] = body["system"]
    return material


def prompt_tokens(body: dict[str, Any], api: str = "chat") -> int:
    """N: the total prompt tokens the fake charges for a request."""
    return 10 + canonical_length(_material(body, api)) // 4


def output_limit(body: dict[str, Any]) -> int:
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_OUTPUT_TOKENS


def output_tokens(body: dict[str, Any]) -> int:
    """M: the output tokens the fake generates for a request."""
    return min(output_limit(body), DEFAULT_OUTPUT_TOKENS)


def openai_usage(body: dict[str, Any], api: str = "chat") -> dict[str, Any]:
    n, m = prompt_tokens(body, api), output_tokens(body)
    return {
        "prompt_tokens": n,
        "completion_tokens": m,
        "total_tokens": n + m,
        "prompt_tokens_details": {"cached_tokens": n // 4, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": m // 5,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def responses_usage(body: dict[str, Any]) -> dict[str, Any]:
    n, m = prompt_tokens(body, "responses"), output_tokens(body)
    return {
        "input_tokens": n,
        "input_tokens_details": {"cached_tokens": n // 4, "cache_write_tokens": 0},
        "output_tokens": m,
        "output_tokens_details": {"reasoning_tokens": m // 5},
        "total_tokens": n + m,
    }


def embeddings_usage(body: dict[str, Any]) -> dict[str, Any]:
    n = prompt_tokens(body, "embeddings")
    return {"prompt_tokens": n, "total_tokens": n}


def anthropic_usage(body: dict[str, Any]) -> dict[str, Any]:
    n, m = prompt_tokens(body), output_tokens(body)
    cache_read, cache_creation = n // 4, n // 8
    one_hour = cache_creation // 2 if _asks_for_1h_cache(body) else 0
    return {
        "input_tokens": n - cache_read - cache_creation,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache_creation - one_hour,
            "ephemeral_1h_input_tokens": one_hour,
        },
        "output_tokens": m,
        "service_tier": "standard",
    }


def _asks_for_1h_cache(body: dict[str, Any]) -> bool:
    return '"ttl":"1h"' in json.dumps(body, separators=(",", ":"))


def _openai_tier(body: dict[str, Any]) -> str:
    tier = body.get("service_tier")
    return tier if isinstance(tier, str) and tier in _OPENAI_TIERS else "default"



def _request(raw: bytes) -> tuple[dict[str, Any], str | None, bool]:
    """An OpenAI or Anthropic request's body, model and whether it asks for a stream."""
    body = json_object(raw)
    model = body.get("model") if isinstance(body.get("model"), str) else None
    return body, model, body.get("stream") is True


def _includes_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _choices_chunk(base: dict[str, Any], include_usage: bool, choices: list[dict[str, Any]], usage: Any = None) -> bytes:
    """One Chat Completions or legacy Completions stream chunk (``usage`` null but on the last, when asked for)."""
    data = {**base, "choices": choices}
    if include_usage:
        data["usage"] = usage
    return b"data: " + dumps(data) + b"\n\n"


class _Handler(FakeHandler):
    _raw: bytes

    # Routing -------------------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        if self.path.partition("?")[0] == "/health":
            self._send_json(200, {"status": "ok"})
        else:
            self._send_json(404, {"error": {"type": "not_found", "message": "not found"}})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.partition("?")[0]
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        self._raw = raw
        handler: Callable[[str, bytes], None] | None
        if path.endswith("/chat/completions"):
            handler = self._chat
        elif path.endswith("/v1/messages"):
            handler = self._messages
        elif path.endswith("/responses"):
            handler = self._responses
        elif path.endswith("/completions"):
            handler = self._completions
        elif path.endswith("/embeddings"):
            handler = self._embeddings
        elif google_route(path) is not None:
            handler = self._google
        else:
            handler = None
        if handler is None:
            self._send_json(404, {"error": {"type": "not_found", "message": f"no route for {path}"}})
        else:
            handler(path, raw)

    # Chat Completions ----------------------------------------------------------------------------------------

    def _chat(self, path: str, raw: bytes) -> None:
        body, model, stream = _request(raw)
        include_usage = stream and _includes_usage(body)
        failure = self._failure()
        if self._injected(path, body, model, stream, include_usage, failure, "chat"):
            return
        response_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        usage = openai_usage(body)
        limit = output_limit(body)
        finish = "length" if limit < DEFAULT_OUTPUT_TOKENS else "stop"
        pieces = reply_pieces(output_tokens(body))
        created = int(time.time())
        tier = _openai_tier(body)
        stated = usage if (include_usage or not stream) else None
        call = self._record(
            path, body, "chat", failure, model=model, stream=stream, include_usage=include_usage, usage=stated,
            response_id=response_id,
        )  # fmt: skip
        base = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "service_tier": tier,
        }
        if not stream:
            self._send_json(
                200,
                {
                    "id": response_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "".join(pieces),
                                "refusal": None,
                                "annotations": [],
                            },
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                    "service_tier": tier,
                    "system_fingerprint": "fp_fake",
                },
                call=call,
            )
            return

        chunk = partial(_choices_chunk, base, include_usage)
        events = [
            chunk(
                [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": "", "refusal": None},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        ]
        events += [
            chunk([{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}])
            for piece in pieces
        ]
        events.append(chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]))
        if include_usage:
            events.append(chunk([], usage))
        events.append(b"data: [DONE]\n\n")
        self._stream(call, events, first_content=1)

    # Legacy Completions --------------------------------------------------------------------------------------

    def _completions(self, path: str, raw: bytes) -> None:
        body, model, stream = _request(raw)
        include_usage = stream and _includes_usage(body)
        failure = self._failure()
        if self._injected(path, body, model, stream, include_usage, failure, "completions"):
            return
        response_id = f"cmpl-{uuid.uuid4().hex[:24]}"
        usage = {k: v for k, v in openai_usage(body, "completions").items() if not k.endswith("_details")}
        finish = "length" if output_limit(body) < DEFAULT_OUTPUT_TOKENS else "stop"
        pieces = reply_pieces(output_tokens(body))
        stated = usage if (include_usage or not stream) else None
        call = self._record(
            path, body, "completions", failure, model=model, stream=stream, include_usage=include_usage, usage=stated,
            response_id=response_id,
        )  # fmt: skip
        base = {"id": response_id, "object": "text_completion", "created": int(time.time()), "model": model}
        if not stream:
            choice = {"text": "".join(pieces), "index": 0, "logprobs": None, "finish_reason": finish}
            self._send_json(200, {**base, "choices": [choice], "usage": usage}, call=call)
            return

        chunk = partial(_choices_chunk, base, include_usage)
        events = [chunk([{"text": piece, "index": 0, "logprobs": None, "finish_reason": None}]) for piece in pieces]
        events.append(chunk([{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}]))
        if include_usage:
            events.append(chunk([], usage))
        events.append(b"data: [DONE]\n\n")
        self._stream(call, events, first_content=1)

    # Embeddings ----------------------------------------------------------------------------------------------

    def _embeddings(self, path: str, raw: bytes) -> None:
        body, model, _ = _request(raw)
        failure = self._failure()
        if self._injected(path, body, model, False, False, failure, "embeddings"):
            return
        usage = embeddings_usage(body)
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        given = body.get("dimensions")
        dimensions = given if isinstance(given, int) else EMBEDDING_DIMENSIONS
        call = self._record(path, body, "embeddings", failure, model=model, usage=usage)
        data = []
        for index in range(count):
            values = vector(index, dimensions)
            embedding: Any = values
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *values)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        self._send_json(200, {"object": "list", "data": data, "model": model, "usage": usage}, call=call)

    # Responses -----------------------------------------------------------------------------------------------

    def _responses(self, path: str, raw: bytes) -> None:
        body, model, stream = _request(raw)
        failure = self._failure()
        if self._injected(path, body, model, stream, False, failure, "responses"):
            return
        response_id = f"resp_{uuid.uuid4().hex[:24]}"
        usage = responses_usage(body)
        pieces = reply_pieces(output_tokens(body))
        incomplete = output_limit(body) < DEFAULT_OUTPUT_TOKENS
        failed = stream and failure == "failed"
        call = self._record(
            path, body, "responses", failure, model=model, stream=stream, include_usage=stream, usage=usage,
            response_id=response_id,
        )  # fmt: skip
        message_id = f"msg_{uuid.uuid4().hex[:24]}"
        text = "".join(pieces)

        def response(status: str, with_usage: bool, content: str | None) -> dict[str, Any]:
            output = []
            if content is not None:
                output = [
                    {
                        "id": message_id,
                        "type": "message",
                        "status": "completed" if status == "completed" else "incomplete",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": content, "annotations": []}],
                    }
                ]
            return {
                "id": response_id,
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "error": {"code": "server_error", "message": "injected failure"} if status == "failed" else None,
                "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
                "instructions": body.get("instructions"),
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "service_tier": _openai_tier(body) if status != "in_progress" else "auto",
                "usage": usage if with_usage else None,
            }

        final_status = "incomplete" if incomplete else "completed"
        if not stream:
            self._send_json(200, response(final_status, True, text), call=call)
            return
        sequence = iter(range(1_000_000))

        def event(kind: str, **data: Any) -> bytes:
            return _event(kind, {"type": kind, "sequence_number": next(sequence), **data})

        events = [
            event("response.created", response=response("in_progress", False, None)),
            event("response.in_progress", response=response("in_progress", False, None)),
            event(
                "response.output_item.added",
                output_index=0,
                item={"id": message_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []},
            ),
            event(
                "response.content_part.added",
                item_id=message_id,
                output_index=0,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            ),
        ]
        events += [
            event(
                "response.output_text.delta",
                item_id=message_id,
                output_index=0,
                content_index=0,
                delta=piece,
                logprobs=[],
            )
            for piece in pieces
        ]
        events.append(
            event("response.output_text.done", item_id=message_id, output_index=0, content_index=0, text=text, logprobs=[])
        )
        part = {"type": "output_text", "text": text, "annotations": []}
        events.append(event("response.content_part.done", item_id=message_id, output_index=0, content_index=0, part=part))
        item = {"id": message_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
        events.append(event("response.output_item.done", output_index=0, item=item))
        if failed:
            events.append(event("response.failed", response=response("failed", True, text)))
        else:
            events.append(event(f"response.{final_status}", response=response(final_status, True, text)))
        self._stream(call, events, first_content=4)

    # Anthropic Messages --------------------------------------------------------------------------------------

    def _messages(self, path: str, raw: bytes) -> None:
        body, model, stream = _request(raw)
        failure = self._failure()
        if self._injected(path, body, model, stream, False, failure, "messages"):
            return
        response_id = f"msg_{uuid.uuid4().hex[:24]}"
        usage = anthropic_usage(body)
        limit = output_limit(body)
        stop_reason = "max_tokens" if limit < DEFAULT_OUTPUT_TOKENS else "end_turn"
        pieces = reply_pieces(output_tokens(body))
        call = self._record(
            path, body, "messages", failure, model=model, stream=stream, usage=usage, response_id=response_id
        )
        if not stream:
            self._send_json(
                200,
                {
                    "id": response_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": "".join(pieces)}],
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": usage,
                },
                extra_headers={"request-id": f"req_{uuid.uuid4().hex[:24]}"},
                call=call,
            )
            return

        start_usage = {**usage, "output_tokens": 1}
        events = [
            _event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": response_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": start_usage,
                    },
                },
            ),
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            _event("ping", {"type": "ping"}),
        ]
        events += [
            _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            )
            for piece in pieces
        ]
        events += [
            _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            ),
            _event("message_stop", {"type": "message_stop"}),
        ]
        self._stream(call, events, first_content=3)

    # Google: Gemini Developer API and Vertex AI (built in fake_gemini) ----------------------------------------

    def _google(self, path: str, raw: bytes) -> None:
        route = google_route(path)
        assert route is not None  # routed here by it
        model, method = route
        body = json_object(raw)
        stream = method == "streamGenerateContent"
        failure = self._failure()
        if self._injected(path, body, model, stream, False, failure, google_api(path)):
            return
        reply = google_reply(path, model, method, body)
        call = self._record(
            path, body, reply.api, failure, model=model, stream=stream, include_usage=stream, usage=reply.usage,
            response_id=reply.response_id,
        )  # fmt: skip
        if stream:
            self._stream(call, reply.events, first_content=0)
        else:
            self._send_json(200, reply.payload, call=call)

    # Shared --------------------------------------------------------------------------------------------------

    def _failure(self) -> str | None:
        return self.headers.get(FAIL_HEADER)

    def _record(
        self,
        path: str,
        body: dict[str, Any],
        api: str,
        failure: str | None,
        *,
        model: str | None,
        stream: bool = False,
        include_usage: bool = False,
        usage: dict[str, Any] | None = None,
        response_id: str | None = None,
        status: int = 200,
    ) -> FakeCall:
        """Record the call before its response is sent: a test may look while a stream is open."""
        call = FakeCall(
            path, model, stream, include_usage, usage, response_id, self.headers_dict(), body, status, failure, api,
            self._raw,
        )  # fmt: skip
        self.server.fake.record(call)
        return call

    def _injected(
        self,
        path: str,
        body: dict[str, Any],
        model: str | None,
        stream: bool,
        include_usage: bool,
        failure: str | None,
        api: str,
    ) -> bool:
        """Answer an injected ``status:<code>`` failure with the API's error envelope; True when it did."""
        status = injected_status(failure)
        if status is None:
            return False
        call = self._record(
            path, body, api, failure, model=model, stream=stream, include_usage=include_usage, status=status
        )
        kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}.get(
            status, "api_error"
        )
        if path.endswith("/v1/messages"):
            envelope: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": "injected failure"}}
        elif api in ("gemini", "vertex"):
            envelope = google_error(status)
        else:
            envelope = {"error": {"message": "injected failure", "type": kind, "param": None, "code": None}}
        self._send_json(status, envelope, call=call)
        return True

    def _stream(self, call: FakeCall, events: list[bytes], first_content: int) -> None:
        """Send ``events``, applying the stream failure modes; ``first_content`` is the first content delta's index."""
        failure = call.failure
        events = cut_events(events, first_content, failure)
        if failure == "malformed":
            events = [*events[:first_content], b'data: {"broken": [1, 2\n\n', *events[first_content:]]
        elif failure == "non-utf8":
            events = [*events[:first_content], _inject_not_utf8(events[first_content]), *events[first_content + 1 :]]
        self._send_events(call, events, cut=failure == "midstream")

    def _send_json(
        self,
        status: int,
        payload: dict[str, Any],
        extra_headers: dict[str, str] | None = None,
        call: FakeCall | None = None,
    ) -> None:
        data = dumps(payload)
        failure = call.failure if call is not None else None
        if failure == "malformed":
            data = data[: len(data) // 2]
        elif failure == "non-utf8":
            data = _inject_not_utf8(data)
        headers = {"Content-Type": "application/json", **(extra_headers or {})}
        codings = codings_of(self.headers.get(ENCODING_HEADER))
        if codings:
            data = compress(data, codings)
            headers["Content-Encoding"] = ", ".join(codings)
        if call is not None:
            call.response_body = data
        self.send_body(status, {"Content-Length": str(len(data)), **headers}, data)

    def _send_events(self, call: FakeCall, events: list[bytes], cut: bool) -> None:
        """Send SSE events as HTTP/1.1 chunks, each coded and recorded before it is written; ``cut`` drops the
        connection without the final chunk."""
        headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "Transfer-Encoding": "chunked",
        }
        packers = [_Compressor(coding) for coding in codings_of(self.headers.get(ENCODING_HEADER))]
        if packers:
            headers["Content-Encoding"] = ", ".join(packer.coding for packer in packers)
        self.start_chunked(headers)
        sent: list[bytes] = []
        for event in events:
            payload = event
            for packer in packers:
                payload = packer.chunk(payload)
            sent.append(payload)
            # What has been sent so far, before the client can read it: a test may look while the stream is open.
            call.response_body = b"".join(sent)
            self.write_chunk(payload)
        if packers and not cut:
            tail = b""
            for packer in packers:
                tail = packer.chunk(tail) + packer.finish() if tail else packer.finish()
            sent.append(tail)
            self.write_chunk(tail)
        call.response_body = b"".join(sent)
        self.end_chunked(cut)


def _inject_not_utf8(data: bytes) -> bytes:
    """``data`` with invalid UTF-8 bytes inside its first long-enough JSON string value."""
    marker = data.find(b'"text"')
    if marker < 0:
        marker = data.find(b'"content"')
    if marker < 0:
        marker = data.find(b'"model"')
    quote = data.find(b'"', data.find(b":", marker) + 1)
    return data[: quote + 1] + _NOT_UTF8 + data[quote + 1 :]




def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"


class FakeProvider(FakeServer[FakeCall]):
    """A loopback OpenAI, Anthropic and Google (Gemini, Vertex AI) compatible server. Use as a context manager, or
    ``start()``/``stop()``. ``port`` 0 (the default) takes a free one; it listens on 127.0.0.1 only."""

    handler = _Handler
    thread_name = "fake-llm-provider"
    served_nothing = "the fake provider has served no LLM call yet"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    @property
    def gemini_base_url(self) -> str:
        """The ``base_url`` of ``google.genai``'s ``HttpOptions``, for the Gemini Developer API and Vertex AI alike:
        the SDK appends the API version and the resource path."""
        return self.base_url
