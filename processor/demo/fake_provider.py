"""A fake LLM provider: a real HTTP server on loopback that speaks the OpenAI, Anthropic and Google (Gemini,
Vertex AI) APIs.

Tests, the demo and end-to-end runs point the real SDKs at it (``openai.OpenAI(base_url=fake.openai_base_url)``,
``anthropic.Anthropic(base_url=fake.anthropic_base_url)``) so that every layer, from the SDK's HTTP client to the
span, is exercised on the wire. It serves OpenAI Chat Completions, Responses, legacy Completions and Embeddings,
and Anthropic Messages, streamed and not. Every call is recorded in ``fake.calls`` with the exact usage the server
sent and the exact bytes it received and sent, so a test can assert on exact token counts and on bytes.

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

Google's own APIs, as the ``google-genai`` SDK calls them (``genai.Client(http_options={"base_url":
fake.gemini_base_url})``): the Gemini Developer API (``/v1beta/models/{model}:generateContent``,
``:streamGenerateContent?alt=sse``, ``:embedContent``, ``:batchEmbedContents``) and Vertex AI
(``/v1beta1/projects/{p}/locations/{l}/publishers/google/models/{model}:...``, and ``:predict`` for the text-embedding
models). Their usage (``usageMetadata``, camelCase, zero counts left out as proto3 JSON leaves them out):

* ``promptTokenCount`` = N + 32 per audio part, where N = 10 + len(canonical JSON of ``{"contents": ...}`` plus
  ``"systemInstruction"``) // 4, each ``inlineData`` counted as its ``mimeType`` alone; ``promptTokensDetails`` splits
  it into TEXT (N) and AUDIO (the audio parts);
* ``candidatesTokenCount`` = M = min(``generationConfig.maxOutputTokens``, 16), AUDIO in ``candidatesTokensDetails``
  when ``responseModalities`` asks for audio, else TEXT; finish reason ``MAX_TOKENS`` when the limit is < 16, else
  ``STOP``;
* ``cachedContentTokenCount`` = P // 4 (P the prompt count, which includes it) when the request names a
  ``cachedContent``;
* ``thoughtsTokenCount`` = M // 2 + 5 for thinking models (names with ``2.5`` or starting ``gemini-3``, not the
  ``-tts`` ones) unless ``thinkingConfig.thinkingBudget`` is 0;
* ``toolUsePromptTokenCount`` = 25 when ``tools`` include ``googleSearch`` or ``urlContext``;
* a stream sends one chunk per output token, each with the RUNNING totals (its candidates count so far), the last
  with the finish reason and the whole usage: summing chunks over-counts;
* embeddings: the Developer API's ``embedContent`` / ``batchEmbedContents`` carry no usage (as Google's do not);
  Vertex's ``embedContent`` / ``batchEmbedContents`` carry ``usageMetadata.promptTokenCount``, and ``:predict``
  a ``statistics.token_count`` per instance (1 + len(canonical JSON of its content) // 4) and
  ``metadata.billableCharacterCount``;
* ``responseId`` is random, ``modelVersion`` the model of the URL. Failures answer Google's error envelope
  (``{"error": {"code", "message", "status"}}``); the stream failure modes cut after the first chunk.

Header ``x-fake-encoding: gzip`` gzips the response body (JSON whole, a stream event by event); ``br`` and ``zstd``
compress it the same way (with ``brotli``, and ``zstandard`` or ``backports.zstd``, when installed), and a list such
as ``gzip, br`` applies each coding in turn, as Content-Encoding says.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final

DEFAULT_OUTPUT_TOKENS: Final = 16
EMBEDDING_DIMENSIONS: Final = 8
_WORDS: Final = ("The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog.")
FAIL_HEADER: Final = "x-fake-fail"
ENCODING_HEADER: Final = "x-fake-encoding"
_NOT_UTF8: Final = b"\xff\xfe\xc3("  # invalid UTF-8, spliced raw into a JSON string
_OPENAI_TIERS: Final = frozenset({"flex", "priority", "scale", "default"})


class _Compressor:
    """One Content-Encoding coding, applied chunk by chunk with each chunk flushed (an SSE event must reach the
    client whole), then finished."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._chunk: Callable[[bytes], bytes]
        self._finish: Callable[[], bytes]
        if coding == "gzip":
            packer = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
            self._chunk = lambda data: packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH)
            self._finish = lambda: packer.flush()
        elif coding == "br":
            import brotli  # a test dependency, only for this coding

            brotli_packer = brotli.Compressor()
            self._chunk = lambda data: brotli_packer.process(data) + brotli_packer.flush()
            self._finish = brotli_packer.finish
        elif coding == "zstd":
            try:
                import zstandard  # a test dependency, only for this coding

                zstd_packer = zstandard.ZstdCompressor().compressobj()
                self._chunk = lambda data: zstd_packer.compress(data) + zstd_packer.flush(
                    zstandard.COMPRESSOBJ_FLUSH_BLOCK
                )
                self._finish = zstd_packer.flush
            except ImportError:
                try:
                    from compression.zstd import ZstdCompressor  # type: ignore[import-not-found]  # Python 3.14+
                except ImportError:
                    from backports.zstd import ZstdCompressor
                block_packer = ZstdCompressor()
                self._chunk = lambda data: block_packer.compress(data, mode=ZstdCompressor.FLUSH_BLOCK)
                self._finish = lambda: block_packer.flush()
        else:
            raise ValueError(f"the fake provider cannot apply Content-Encoding {coding!r}")

    def chunk(self, data: bytes) -> bytes:
        return self._chunk(data)

    def finish(self) -> bytes:
        return self._finish()


def _codings(value: str | None) -> list[str]:
    """The codings of an ``x-fake-encoding`` header, in the order they are applied."""
    return [coding.strip() for coding in (value or "").split(",") if coding.strip()]


def compress(data: bytes, codings: list[str]) -> bytes:
    for coding in codings:
        packer = _Compressor(coding)
        data = packer.chunk(data) + packer.finish()
    return data


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
    canonical = json.dumps(_material(body, api), sort_keys=True, separators=(",", ":"))
    return 10 + len(canonical) // 4


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


def _reply_pieces(m: int) -> list[str]:
    """One text piece per output token, so a stream has M content deltas."""
    return [_WORDS[i % len(_WORDS)] for i in range(m)]


# Google's paths: ``/{version}/[projects/{p}/locations/{l}/][publishers/{pub}/](models|tunedModels)/{m}:{method}``.
_GOOGLE_PATH: Final = re.compile(r"/(?:models|tunedModels)/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$")
_GOOGLE_METHODS: Final = frozenset(
    {"generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents", "predict"}
)
_GOOGLE_STATUS: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
GEMINI_AUDIO_PART_TOKENS: Final = 32
GEMINI_TOOL_USE_TOKENS: Final = 25
_GEMINI_SERVER_TOOLS: Final = ("googleSearch", "urlContext", "googleSearchRetrieval")


def _is_vertex(path: str) -> bool:
    return "/projects/" in path or "/publishers/" in path


def _without_inline_data(value: Any) -> Any:
    """``value`` with each ``inlineData`` part's bytes left out: an audio clip is counted by its part, not its size."""
    if isinstance(value, dict):
        if isinstance(value.get("inlineData"), dict):
            return {"inlineData": {"mimeType": _mime_type(value["inlineData"])}}
        return {key: _without_inline_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_inline_data(item) for item in value]
    return value


def _mime_type(data: dict[str, Any]) -> str:
    """An inline part's media type: proto3 JSON accepts ``mimeType`` and ``mime_type`` (google-genai sends the
    second)."""
    return str(data.get("mimeType") or data.get("mime_type") or "")


def _audio_parts(value: Any) -> int:
    if isinstance(value, dict):
        data = value.get("inlineData")
        if isinstance(data, dict) and _mime_type(data).startswith("audio/"):
            return 1
        return sum(_audio_parts(item) for item in value.values())
    if isinstance(value, list):
        return sum(_audio_parts(item) for item in value)
    return 0


def _gemini_config(body: dict[str, Any]) -> dict[str, Any]:
    config = body.get("generationConfig")
    return config if isinstance(config, dict) else {}


def _gemini_limit(body: dict[str, Any]) -> int:
    value = _gemini_config(body).get("maxOutputTokens")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else DEFAULT_OUTPUT_TOKENS


def _thinks(body: dict[str, Any], model: str) -> bool:
    thinking = _gemini_config(body).get("thinkingConfig")
    if isinstance(thinking, dict) and thinking.get("thinkingBudget") == 0:
        return False
    return ("2.5" in model or model.startswith("gemini-3")) and "-tts" not in model


def gemini_usage(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The ``usageMetadata`` the fake answers a generateContent request with (see the module's docstring)."""
    material = {"contents": body.get("contents", [])}
    if "systemInstruction" in body:
        material["systemInstruction"] = body["systemInstruction"]
    text = 10 + len(json.dumps(_without_inline_data(material), sort_keys=True, separators=(",", ":"))) // 4
    audio = GEMINI_AUDIO_PART_TOKENS * _audio_parts(material)
    prompt = text + audio
    m = min(_gemini_limit(body), DEFAULT_OUTPUT_TOKENS)
    details = [{"modality": "TEXT", "tokenCount": text}]
    if audio:
        details.append({"modality": "AUDIO", "tokenCount": audio})
    modalities = _gemini_config(body).get("responseModalities")
    spoken = isinstance(modalities, list) and "AUDIO" in modalities
    usage: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": m}
    total = prompt + m
    if isinstance(body.get("cachedContent"), str):
        usage["cachedContentTokenCount"] = prompt // 4
    if _thinks(body, model):
        usage["thoughtsTokenCount"] = m // 2 + 5
        total += usage["thoughtsTokenCount"]
    tools = json.dumps(body.get("tools", []))
    if any(f'"{name}"' in tools for name in _GEMINI_SERVER_TOOLS):
        usage["toolUsePromptTokenCount"] = GEMINI_TOOL_USE_TOKENS
        usage["toolUsePromptTokensDetails"] = [{"modality": "TEXT", "tokenCount": GEMINI_TOOL_USE_TOKENS}]
        total += GEMINI_TOOL_USE_TOKENS
    usage["totalTokenCount"] = total
    usage["promptTokensDetails"] = details
    if "cachedContentTokenCount" in usage:
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": usage["cachedContentTokenCount"]}]
    usage["candidatesTokensDetails"] = [{"modality": "AUDIO" if spoken else "TEXT", "tokenCount": m}]
    return usage


def _running_gemini_usage(usage: dict[str, Any], candidates: int) -> dict[str, Any]:
    """A stream chunk's usage before the last: everything so far, with ``candidates`` output tokens generated."""
    running = {**usage, "candidatesTokenCount": candidates}
    running["totalTokenCount"] = usage["totalTokenCount"] - usage["candidatesTokenCount"] + candidates
    modality = usage["candidatesTokensDetails"][0]["modality"]
    running["candidatesTokensDetails"] = [{"modality": modality, "tokenCount": candidates}]
    return running


def embedding_tokens(content: Any) -> int:
    """The tokens the fake counts for one embedded content (a Content object, or a string for ``:predict``)."""
    return 1 + len(json.dumps(_without_inline_data(content), sort_keys=True, separators=(",", ":"))) // 4


def _dimensions(entry: Any) -> int:
    if isinstance(entry, dict):
        for holder in (entry, entry.get("embedContentConfig")):
            if isinstance(holder, dict) and isinstance(holder.get("outputDimensionality"), int):
                return int(holder["outputDimensionality"])
    return EMBEDDING_DIMENSIONS


def _vector(index: int, dimensions: int) -> list[float]:
    return [round(0.001 * (index + 1) * (d + 1), 6) for d in range(dimensions)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeProvider

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that stops reading a stream early resets the connection: that is a test scenario, not a bug.
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes: with Nagle's algorithm on, the body waited for the client's delayed
    # ACK of the headers, 40 ms on every non-streamed call over loopback (a real provider's stack sends at once).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass  # keep test output clean

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
        elif (google := _GOOGLE_PATH.search(path)) is not None and google["method"] in _GOOGLE_METHODS:
            handler = self._google
        else:
            handler = None
        if handler is None:
            self._send_json(404, {"error": {"type": "not_found", "message": f"no route for {path}"}})
        else:
            handler(path, raw)

    # Chat Completions ----------------------------------------------------------------------------------------

    def _chat(self, path: str, raw: bytes) -> None:
        body = _json_object(raw)
        model = body.get("model") if isinstance(body.get("model"), str) else None
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
        failure = self._failure()
        if failure and failure.startswith("status:"):
            self._fail_status(path, body, model, stream, include_usage, failure, "chat")
            return
        response_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        usage = openai_usage(body)
        limit = output_limit(body)
        finish = "length" if limit < DEFAULT_OUTPUT_TOKENS else "stop"
        pieces = _reply_pieces(output_tokens(body))
        created = int(time.time())
        tier = _openai_tier(body)
        call = self._record(
            FakeCall(
                path=path,
                model=model,
                stream=stream,
                include_usage=include_usage,
                usage=usage if (include_usage or not stream) else None,
                response_id=response_id,
                headers=self._headers_dict(),
                body=body,
                failure=failure,
                api="chat",
            )
        )
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

        def chunk(choices: list[dict[str, Any]], usage_value: Any = None) -> bytes:
            data = {**base, "choices": choices}
            if include_usage:
                data["usage"] = usage_value
            return b"data: " + _dumps(data) + b"\n\n"

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
        body = _json_object(raw)
        model = body.get("model") if isinstance(body.get("model"), str) else None
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
        failure = self._failure()
        if failure and failure.startswith("status:"):
            self._fail_status(path, body, model, stream, include_usage, failure, "completions")
            return
        response_id = f"cmpl-{uuid.uuid4().hex[:24]}"
        usage = {k: v for k, v in openai_usage(body, "completions").items() if not k.endswith("_details")}
        finish = "length" if output_limit(body) < DEFAULT_OUTPUT_TOKENS else "stop"
        pieces = _reply_pieces(output_tokens(body))
        call = self._record(
            FakeCall(
                path=path,
                model=model,
                stream=stream,
                include_usage=include_usage,
                usage=usage if (include_usage or not stream) else None,
                response_id=response_id,
                headers=self._headers_dict(),
                body=body,
                failure=failure,
                api="completions",
            )
        )
        base = {"id": response_id, "object": "text_completion", "created": int(time.time()), "model": model}
        if not stream:
            choice = {"text": "".join(pieces), "index": 0, "logprobs": None, "finish_reason": finish}
            self._send_json(200, {**base, "choices": [choice], "usage": usage}, call=call)
            return

        def chunk(choices: list[dict[str, Any]], usage_value: Any = None) -> bytes:
            data = {**base, "choices": choices}
            if include_usage:
                data["usage"] = usage_value
            return b"data: " + _dumps(data) + b"\n\n"

        events = [chunk([{"text": piece, "index": 0, "logprobs": None, "finish_reason": None}]) for piece in pieces]
        events.append(chunk([{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}]))
        if include_usage:
            events.append(chunk([], usage))
        events.append(b"data: [DONE]\n\n")
        self._stream(call, events, first_content=1)

    # Embeddings ----------------------------------------------------------------------------------------------

    def _embeddings(self, path: str, raw: bytes) -> None:
        body = _json_object(raw)
        model = body.get("model") if isinstance(body.get("model"), str) else None
        failure = self._failure()
        if failure and failure.startswith("status:"):
            self._fail_status(path, body, model, False, False, failure, "embeddings")
            return
        usage = embeddings_usage(body)
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        given = body.get("dimensions")
        dimensions = given if isinstance(given, int) else EMBEDDING_DIMENSIONS
        call = self._record(
            FakeCall(
                path=path,
                model=model,
                stream=False,
                include_usage=False,
                usage=usage,
                response_id=None,
                headers=self._headers_dict(),
                body=body,
                failure=failure,
                api="embeddings",
            )
        )
        data = []
        for index in range(count):
            vector = [round(0.001 * (index + 1) * (d + 1), 6) for d in range(dimensions)]
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        self._send_json(200, {"object": "list", "data": data, "model": model, "usage": usage}, call=call)

    # Responses -----------------------------------------------------------------------------------------------

    def _responses(self, path: str, raw: bytes) -> None:
        body = _json_object(raw)
        model = body.get("model") if isinstance(body.get("model"), str) else None
        stream = body.get("stream") is True
        failure = self._failure()
        if failure and failure.startswith("status:"):
            self._fail_status(path, body, model, stream, False, failure, "responses")
            return
        response_id = f"resp_{uuid.uuid4().hex[:24]}"
        usage = responses_usage(body)
        pieces = _reply_pieces(output_tokens(body))
        incomplete = output_limit(body) < DEFAULT_OUTPUT_TOKENS
        failed = stream and failure == "failed"
        call = self._record(
            FakeCall(
                path=path,
                model=model,
                stream=stream,
                include_usage=stream,
                usage=usage,
                response_id=response_id,
                headers=self._headers_dict(),
                body=body,
                failure=failure,
                api="responses",
            )
        )
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
        body = _json_object(raw)
        model = body.get("model") if isinstance(body.get("model"), str) else None
        stream = body.get("stream") is True
        failure = self._failure()
        if failure and failure.startswith("status:"):
            self._fail_status(path, body, model, stream, False, failure, "messages")
            return
        response_id = f"msg_{uuid.uuid4().hex[:24]}"
        usage = anthropic_usage(body)
        limit = output_limit(body)
        stop_reason = "max_tokens" if limit < DEFAULT_OUTPUT_TOKENS else "end_turn"
        pieces = _reply_pieces(output_tokens(body))
        call = self._record(
            FakeCall(
                path=path,
                model=model,
                stream=stream,
                include_usage=False,
                usage=usage,
                response_id=response_id,
                headers=self._headers_dict(),
                body=body,
                failure=failure,
                api="messages",
            )
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

    # Google: Gemini Developer API and Vertex AI ---------------------------------------------------------------

    def _google(self, path: str, raw: bytes) -> None:
        match = _GOOGLE_PATH.search(path)
        assert match is not None  # routed here by the same pattern
        model, method = match["model"], match["method"]
        api = "vertex" if _is_vertex(path) else "gemini"
        body = _json_object(raw)
        stream = method == "streamGenerateContent"
        failure = self._failure()
        if failure and failure.startswith("status:"):
            self._fail_status(path, body, model, stream, False, failure, api)
            return
        if method in ("generateContent", "streamGenerateContent"):
            self._generate_content(path, body, model, api, stream, failure)
        elif method == "predict":
            self._predict(path, body, model, failure)
        else:
            self._embed_content(path, body, model, api, method == "batchEmbedContents", failure)

    def _generate_content(
        self, path: str, body: dict[str, Any], model: str, api: str, stream: bool, failure: str | None
    ) -> None:
        usage = gemini_usage(body, model)
        response_id = base64.urlsafe_b64encode(uuid.uuid4().bytes[:12]).decode().rstrip("=")
        m = usage["candidatesTokenCount"]
        finish = "MAX_TOKENS" if _gemini_limit(body) < DEFAULT_OUTPUT_TOKENS else "STOP"
        pieces = _reply_pieces(m)
        call = self._record(
            FakeCall(
                path=path,
                model=model,
                stream=stream,
                include_usage=stream,
                usage=usage,
                response_id=response_id,
                headers=self._headers_dict(),
                body=body,
                failure=failure,
                api=api,
            )
        )
        vertex = api == "vertex"

        def response(text: str, running: dict[str, Any], finished: bool) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
            if finished:
                candidate["finishReason"] = finish
            if vertex:
                candidate["avgLogprobs"] = -0.25
            else:
                candidate["index"] = 0
            payload: dict[str, Any] = {"candidates": [candidate], "usageMetadata": running, "modelVersion": model}
            if vertex:
                payload["createTime"] = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
            payload["responseId"] = response_id
            return payload

        if not stream:
            self._send_json(200, response("".join(pieces), usage, True), call=call)
            return
        events = []
        for count, piece in enumerate(pieces, start=1):
            last = count == len(pieces)
            running = usage if last else _running_gemini_usage(usage, count)
            events.append(b"data: " + _dumps(response(piece, running, last)) + b"\r\n\r\n")
        self._stream(call, events, first_content=0)

    def _embed_content(
        self, path: str, body: dict[str, Any], model: str, api: str, batch: bool, failure: str | None
    ) -> None:
        requests = body.get("requests") if batch else [body]
        contents = [entry.get("content") for entry in requests or [] if isinstance(entry, dict)]
        counts = [embedding_tokens(content) for content in contents]
        usage = None
        if api == "vertex":  # the Developer API states no usage for embeddings
            usage = {"promptTokenCount": sum(counts), "totalTokenCount": sum(counts)}
        call = self._record(
            FakeCall(
                path=path,
                model=model,
                stream=False,
                include_usage=False,
                usage=usage,
                response_id=None,
                headers=self._headers_dict(),
                body=body,
                failure=failure,
                api=api,
            )
        )
        vectors = [{"values": _vector(index, _dimensions(entry))} for index, entry in enumerate(requests or [])]
        payload: dict[str, Any] = {"embeddings": vectors} if batch else {"embedding": vectors[0] if vectors else {}}
        if usage is not None:
            payload["usageMetadata"] = usage
            if not batch:
                payload["truncated"] = False
        self._send_json(200, payload, call=call)

    def _predict(self, path: str, body: dict[str, Any], model: str, failure: str | None) -> None:
        instances = body.get("instances")
        instances = [entry for entry in instances if isinstance(entry, dict)] if isinstance(instances, list) else []
        parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        dimensions = parameters.get("outputDimensionality") if isinstance(parameters, dict) else None
        statistics = [
            {"truncated": False, "token_count": embedding_tokens(entry.get("content"))} for entry in instances
        ]
        characters = sum(len(entry["content"]) for entry in instances if isinstance(entry.get("content"), str))
        usage = {"statistics": statistics, "metadata": {"billableCharacterCount": characters}}
        call = self._record(
            FakeCall(
                path=path,
                model=model,
                stream=False,
                include_usage=False,
                usage=usage,
                response_id=None,
                headers=self._headers_dict(),
                body=body,
                failure=failure,
                api="vertex",
            )
        )
        size = dimensions if isinstance(dimensions, int) else EMBEDDING_DIMENSIONS
        predictions = [
            {"embeddings": {"statistics": stats, "values": _vector(index, size)}}
            for index, stats in enumerate(statistics)
        ]
        self._send_json(200, {"predictions": predictions, "metadata": usage["metadata"]}, call=call)

    # Shared --------------------------------------------------------------------------------------------------

    def _failure(self) -> str | None:
        return self.headers.get(FAIL_HEADER)

    def _fail_status(
        self,
        path: str,
        body: dict[str, Any],
        model: str | None,
        stream: bool,
        include_usage: bool,
        failure: str,
        api: str,
    ) -> None:
        try:
            status = int(failure.partition(":")[2])
        except ValueError:
            status = 500
        call = self._record(
            FakeCall(
                path=path,
                model=model,
                stream=stream,
                include_usage=include_usage,
                usage=None,
                response_id=None,
                headers=self._headers_dict(),
                body=body,
                status=status,
                failure=failure,
                api=api,
            )
        )
        kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}.get(
            status, "api_error"
        )
        if path.endswith("/v1/messages"):
            envelope: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": "injected failure"}}
        elif api in ("gemini", "vertex"):
            envelope = {"error": {"code": status, "message": "injected failure", "status": _GOOGLE_STATUS.get(status, "INTERNAL")}}
        else:
            envelope = {"error": {"message": "injected failure", "type": kind, "param": None, "code": None}}
        self._send_json(status, envelope, call=call)

    def _stream(self, call: FakeCall, events: list[bytes], first_content: int) -> None:
        """Send ``events``, applying the stream failure modes; ``first_content`` is the first content delta's index."""
        failure = call.failure
        if failure == "truncate" or failure == "midstream":
            events = events[: first_content + 1]
        elif failure == "malformed":
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
        data = _dumps(payload)
        failure = call.failure if call is not None else None
        if failure == "malformed":
            data = data[: len(data) // 2]
        elif failure == "non-utf8":
            data = _inject_not_utf8(data)
        headers = {"Content-Type": "application/json", **(extra_headers or {})}
        codings = _codings(self.headers.get(ENCODING_HEADER))
        if codings:
            data = compress(data, codings)
            headers["Content-Encoding"] = ", ".join(codings)
        if call is not None:
            call.response_body = data
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_events(self, call: FakeCall, events: list[bytes], cut: bool) -> None:
        """Send SSE events as HTTP/1.1 chunks; ``cut`` drops the connection without the final chunk."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        packers = [_Compressor(coding) for coding in _codings(self.headers.get(ENCODING_HEADER))]
        if packers:
            self.send_header("Content-Encoding", ", ".join(packer.coding for packer in packers))
        self.end_headers()
        sent: list[bytes] = []
        for event in events:
            payload = event
            for packer in packers:
                payload = packer.chunk(payload)
            sent.append(payload)
            # What has been sent so far, before the client can read it: a test may look while the stream is open.
            call.response_body = b"".join(sent)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
            self.wfile.flush()
        if cut:
            call.response_body = b"".join(sent)
            self.close_connection = True
            return
        if packers:
            tail = b""
            for packer in packers:
                tail = packer.chunk(tail) + packer.finish() if tail else packer.finish()
            sent.append(tail)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(tail), tail))
        call.response_body = b"".join(sent)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _headers_dict(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def _record(self, call: FakeCall) -> FakeCall:
        call.raw_request = self._raw
        fake = self.server.fake
        with fake._lock:
            fake.calls.append(call)
        return call


def _inject_not_utf8(data: bytes) -> bytes:
    """``data`` with invalid UTF-8 bytes inside its first long-enough JSON string value."""
    marker = data.find(b'"text"')
    if marker < 0:
        marker = data.find(b'"content"')
    if marker < 0:
        marker = data.find(b'"model"')
    quote = data.find(b'"', data.find(b":", marker) + 1)
    return data[: quote + 1] + _NOT_UTF8 + data[quote + 1 :]


def _dumps(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n"


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class FakeProvider:
    """A loopback OpenAI, Anthropic and Google (Gemini, Vertex AI) compatible server. Use as a context manager, or ``start()``/``stop()``.
    ``port`` 0 (the default) takes a free one; it listens on 127.0.0.1 only."""

    def __init__(self, port: int = 0) -> None:
        self._requested_port = port
        self.calls: list[FakeCall] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeProvider:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self._requested_port), _Handler)
        server.fake = self
        self._server = server
        # A short poll interval: stop() waits up to one interval, and tests start and stop many servers.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-llm-provider", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeProvider is not started: use start() or `with FakeProvider() as fake:`")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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

    @property
    def last_call(self) -> FakeCall:
        with self._lock:
            if not self.calls:
                raise LookupError("the fake provider has served no LLM call yet")
            return self.calls[-1]

    def reset(self) -> None:
        """Forget recorded calls (between phases of a test or demo)."""
        with self._lock:
            self.calls.clear()
