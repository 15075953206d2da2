"""A fake LLM provider: a real HTTP server on loopback that speaks OpenAI Chat Completions and Anthropic Messages.

Tests, the demo and end-to-end runs point the real SDKs at it (``openai.OpenAI(base_url=fake.openai_base_url)``,
``anthropic.Anthropic(base_url=fake.anthropic_base_url)``) so that every layer, from the SDK's HTTP client to the
span, is exercised on the wire. Every call is recorded in ``fake.calls`` with the exact usage the server sent,
so a test can assert on exact token counts instead of re-deriving them.

Usage is a deterministic function of the request (the same request always gives the same numbers):

* ``N`` (total prompt tokens) = 10 + len(canonical JSON of ``messages``, plus ``system`` if present) // 4, where
  canonical JSON is ``json.dumps(..., sort_keys=True, separators=(",", ":"))``;
* ``M`` (output tokens) = min(limit, 16), where limit is ``max_completion_tokens`` or ``max_tokens`` (16 if
  neither); the finish reason is ``length`` when limit < 16, else ``stop`` / ``end_turn``.
* OpenAI: ``prompt_tokens`` = N (inclusive of cache), ``prompt_tokens_details.cached_tokens`` = N // 4,
  ``completion_tokens`` = M, ``completion_tokens_details.reasoning_tokens`` = M // 5, ``total_tokens`` = N + M.
* Anthropic: ``cache_read_input_tokens`` = N // 4, ``cache_creation_input_tokens`` = N // 8,
  ``input_tokens`` = N - both (EXCLUSIVE of cache, as Anthropic reports it), ``output_tokens`` = M.

Failure injection, by request header ``x-fake-fail``:

* ``midstream``: a streamed response stops after its first content delta and the connection is dropped without
  ending the chunked body, so the client sees a protocol error mid-stream (a non-streamed request ignores it);
* ``status:<code>`` (e.g. ``status:429``): the response is that HTTP status with the provider's error envelope.
  SDKs retry 429/5xx by default: pass ``max_retries=0`` to see exactly one call.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final

DEFAULT_OUTPUT_TOKENS: Final = 16
_WORDS: Final = ("The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog.")
FAIL_HEADER: Final = "x-fake-fail"


@dataclass(slots=True)
class FakeCall:
    """One LLM request the fake served, and the truth about its response.

    ``usage`` is the usage object exactly as the server sent it in the non-streamed form of the response (for an
    Anthropic stream: message_start's input fields with the final ``output_tokens``), or ``None`` when the
    response carried none (a Chat Completions stream without ``stream_options.include_usage``, an error).
    ``failure`` is the ``x-fake-fail`` mode that applied, if any.
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


def prompt_tokens(body: dict[str, Any]) -> int:
    """N: the total prompt tokens the fake charges for a request."""
    material: dict[str, Any] = {"messages": body.get("messages", [])}
    if "system" in body:
        material["system"] = body["system"]
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return 10 + len(canonical) // 4


def output_limit(body: dict[str, Any]) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_OUTPUT_TOKENS


def output_tokens(body: dict[str, Any]) -> int:
    """M: the output tokens the fake generates for a request."""
    return min(output_limit(body), DEFAULT_OUTPUT_TOKENS)


def openai_usage(body: dict[str, Any]) -> dict[str, Any]:
    n, m = prompt_tokens(body), output_tokens(body)
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


def anthropic_usage(body: dict[str, Any]) -> dict[str, Any]:
    n, m = prompt_tokens(body), output_tokens(body)
    cache_read, cache_creation = n // 4, n // 8
    return {
        "input_tokens": n - cache_read - cache_creation,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": cache_creation, "ephemeral_1h_input_tokens": 0},
        "output_tokens": m,
        "service_tier": "standard",
    }


def _reply_pieces(m: int) -> list[str]:
    """One text piece per output token, so a stream has M content deltas."""
    return [_WORDS[i % len(_WORDS)] for i in range(m)]


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
        if path.endswith("/chat/completions"):
            self._chat(path, raw)
        elif path.endswith("/v1/messages"):
            self._messages(path, raw)
        else:
            self._send_json(404, {"error": {"type": "not_found", "message": f"no route for {path}"}})

    # Chat Completions ----------------------------------------------------------------------------------------

    def _chat(self, path: str, raw: bytes) -> None:
        body = _json_object(raw)
        model = body.get("model") if isinstance(body.get("model"), str) else None
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
        failure = self.headers.get(FAIL_HEADER)
        if failure and failure.startswith("status:"):
            self._fail_status(path, body, model, stream, include_usage, failure)
            return
        response_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        usage = openai_usage(body)
        limit = output_limit(body)
        finish = "length" if limit < DEFAULT_OUTPUT_TOKENS else "stop"
        pieces = _reply_pieces(output_tokens(body))
        created = int(time.time())
        midstream = stream and failure == "midstream"
        self._record(
            FakeCall(
                path=path,
                model=model,
                stream=stream,
                include_usage=include_usage,
                usage=usage if (include_usage or not stream) else None,
                response_id=response_id,
                headers=self._headers_dict(),
                body=body,
                failure="midstream" if midstream else None,
            )
        )
        base = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "service_tier": "default",
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
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                },
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
        self._send_events(events, cut_after=2 if midstream else None)

    # Anthropic Messages --------------------------------------------------------------------------------------

    def _messages(self, path: str, raw: bytes) -> None:
        body = _json_object(raw)
        model = body.get("model") if isinstance(body.get("model"), str) else None
        stream = body.get("stream") is True
        failure = self.headers.get(FAIL_HEADER)
        if failure and failure.startswith("status:"):
            self._fail_status(path, body, model, stream, False, failure)
            return
        response_id = f"msg_{uuid.uuid4().hex[:24]}"
        usage = anthropic_usage(body)
        limit = output_limit(body)
        stop_reason = "max_tokens" if limit < DEFAULT_OUTPUT_TOKENS else "end_turn"
        pieces = _reply_pieces(output_tokens(body))
        midstream = stream and failure == "midstream"
        self._record(
            FakeCall(
                path=path,
                model=model,
                stream=stream,
                include_usage=False,
                usage=usage,
                response_id=response_id,
                headers=self._headers_dict(),
                body=body,
                failure="midstream" if midstream else None,
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
        self._send_events(events, cut_after=4 if midstream else None)

    # Responses -----------------------------------------------------------------------------------------------

    def _fail_status(
        self,
        path: str,
        body: dict[str, Any],
        model: str | None,
        stream: bool,
        include_usage: bool,
        failure: str,
    ) -> None:
        try:
            status = int(failure.partition(":")[2])
        except ValueError:
            status = 500
        self._record(
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
            )
        )
        kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}.get(
            status, "api_error"
        )
        if path.endswith("/v1/messages"):
            envelope: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": "injected failure"}}
        else:
            envelope = {"error": {"message": "injected failure", "type": kind, "param": None, "code": None}}
        self._send_json(status, envelope)

    def _send_json(self, status: int, payload: dict[str, Any], extra_headers: dict[str, str] | None = None) -> None:
        data = _dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_events(self, events: list[bytes], cut_after: int | None) -> None:
        """Send SSE events as HTTP/1.1 chunks; ``cut_after`` drops the connection without the final chunk."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for position, event in enumerate(events):
            if cut_after is not None and position >= cut_after:
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _headers_dict(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def _record(self, call: FakeCall) -> None:
        fake = self.server.fake
        with fake._lock:
            fake.calls.append(call)


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
    """A loopback OpenAI + Anthropic compatible server. Use as a context manager, or ``start()``/``stop()``."""


    def __init__(self) -> None:
        self.calls: list[FakeCall] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeProvider:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
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
    def last_call(self) -> FakeCall:
        with self._lock:
            if not self.calls:
                raise LookupError("the fake provider has served no LLM call yet")
            return self.calls[-1]

    def reset(self) -> None:
        """Forget recorded calls (between phases of a test or demo)."""
        with self._lock:
            self.calls.clear()
