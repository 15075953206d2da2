"""A fake AWS Bedrock runtime: a real HTTP server on loopback that answers the ``bedrock-runtime`` REST API as boto3
calls it (``boto3.client("bedrock-runtime", endpoint_url=fake.base_url, ...)`` with any dummy credentials; the
signature is not checked).

It serves ``POST /model/{modelId}/converse``, ``/converse-stream``, ``/invoke`` and ``/invoke-with-response-stream``
(the model id percent-encoded, ARNs included), for the Anthropic Claude, Amazon Nova (and Titan), Meta Llama, Mistral
and Cohere families, with each family's own body, and the streams in AWS's binary event-stream encoding (written here:
prelude, headers, payload, CRC32s). The family is the model id's (after any ARN and cross-region prefix); an opaque id
(an application inference profile) is served as Claude. Every call is recorded in ``fake.calls`` with the exact usage
the server reported, so a test can assert exact token counts.

Usage is a deterministic function of the request:

* ``N`` (total prompt tokens) = 10 + len(canonical JSON of the prompt material) // 4, where canonical JSON is
  ``json.dumps(..., sort_keys=True, separators=(",", ":"))`` and the material is ``{"messages", "system"}`` (Converse)
  or the whole request body (``invoke``);
* ``M`` (output tokens) = min(limit, 16), the limit being Converse's ``inferenceConfig.maxTokens`` or the body's
  ``max_tokens`` / ``max_gen_len`` / ``inferenceConfig.max_new_tokens`` (16 if none); the stop reason says the limit
  (``max_tokens`` / ``length``) when it is < 16;
* Anthropic and Nova cache: reads R = N // 4, writes W = N // 8 (all 5-minute), reported input I = N - R - W (EXCLUSIVE
  of the cache, as Bedrock reports it everywhere); the other families have no cache (I = N);
* ``call.usage`` holds the truth in Converse's names (``inputTokens`` = I, ``outputTokens`` = M,
  ``cacheReadInputTokens`` = R, ``cacheWriteInputTokens`` = W);
* ``invoke`` bodies: Anthropic Messages ``usage``; Nova ``usage`` (``inputTokens``, ``cacheReadInputTokenCount``...);
  Llama ``prompt_token_count`` / ``generation_token_count``; Mistral and Cohere bodies carry no usage: only the
  ``x-amzn-bedrock-{input,output,cache-read-input,cache-write-input}-token-count`` headers do (every invoke answer
  has them); streams end with a chunk carrying ``amazon-bedrock-invocationMetrics``.

Failure injection, by request header ``x-fake-fail`` or, for the next requests, ``fake.fail_next(mode)``:

* ``status:<code>`` (e.g. ``status:429``): that HTTP status with AWS's error (``x-amzn-ErrorType``, ``{"message"}``);
  boto3 retries 429/5xx by default: use ``Config(retries={"total_max_attempts": 1})`` to see exactly one call;
* ``midstream``: a stream stops after its first content event and the connection is dropped mid-body;
* ``truncate``: a stream ends cleanly after its first content event, without its last events (no usage);
* ``exception``: a stream sends a ``modelStreamErrorException`` event after its first content event.

The server, its lifecycle and the chunked writes are ``fake_server``'s, shared with the fake LLM provider.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import unquote

from tokentrail.processor.demo.fake_server import (
    FAIL_HEADER,
    FakeHandler,
    FakeServer,
    cut_events,
    dumps,
    injected_status,
    json_object,
)

__all__ = [
    "FAMILIES",
    "FakeBedrock",
    "FakeBedrockCall",
    "decode_events",
    "encode_event",
    "family_of",
]

FAMILIES: Final = ("anthropic", "amazon", "meta", "mistral", "cohere")
_REGION_PREFIXES: Final = frozenset({"us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"})
_CACHED_FAMILIES: Final = frozenset({"anthropic", "amazon"})
_OPERATIONS: Final = frozenset({"converse", "converse-stream", "invoke", "invoke-with-response-stream"})
_REPLY: Final = ("The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".")


# -- AWS event-stream encoding -------------------------------------------------------------------------------------


def encode_event(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length, prelude CRC32), string headers (type 7),
    the payload and the CRC32 of everything before it."""
    encoded = b"".join(
        bytes([len(name)]) + name + b"\x07" + struct.pack(">H", len(value)) + value
        for name, value in ((key.encode(), val.encode()) for key, val in headers.items())
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def decode_events(data: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The (headers, payload) of each message in ``data``, CRCs checked: the inverse of ``encode_event``."""
    out: list[tuple[dict[str, str], bytes]] = []
    while data:
        total, headers_length = struct.unpack(">II", data[:8])
        if struct.unpack(">I", data[8:12])[0] != zlib.crc32(data[:8]):
            raise ValueError("prelude CRC mismatch")
        if struct.unpack(">I", data[total - 4 : total])[0] != zlib.crc32(data[: total - 4]):
            raise ValueError("message CRC mismatch")
        raw, headers = data[12 : 12 + headers_length], {}
        while raw:
            name_length = raw[0]
            name = raw[1 : 1 + name_length].decode()
            value_length = struct.unpack(">H", raw[2 + name_length : 4 + name_length])[0]
            headers[name] = raw[4 + name_length : 4 + name_length + value_length].decode()
            raw = raw[4 + name_length + value_length :]
        out.append((headers, data[12 + headers_length : total - 4]))
        data = data[total:]
    return out


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return encode_event(
        {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}, dumps(payload)
    )


def _chunk(data: dict[str, Any]) -> bytes:
    """An invoke_model_with_response_stream ``chunk`` event: the model's JSON, base64 in ``bytes``."""
    return _event("chunk", {"bytes": base64.b64encode(dumps(data)).decode(), "p": "abcdefgh"})


def _exception(kind: str, message: str) -> bytes:
    return encode_event(
        {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"},
        dumps({"message": message}),
    )


# -- what the fake charges -----------------------------------------------------------------------------------------


def family_of(model_id: str) -> str:
    """The model family a model id names (after any ARN and cross-region prefix); Claude for an opaque id."""
    resource = model_id.rpartition("/")[2] if model_id.startswith("arn:") else model_id
    parts = resource.split(".")
    if len(parts) > 2 and parts[0] in _REGION_PREFIXES:
        parts = parts[1:]
    return parts[0] if parts[0] in FAMILIES else "anthropic"


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _limit(body: dict[str, Any], converse: bool) -> int:
    if converse:
        value = _dict(body.get("inferenceConfig")).get("maxTokens")
    else:
        value = body.get("max_tokens", body.get("max_gen_len", _dict(body.get("inferenceConfig")).get("max_new_tokens")))
    return value if isinstance(value, int) and value > 0 else 16


@dataclass(slots=True)
class FakeBedrockCall:
    """One Bedrock request the fake served, and the truth about its response. ``usage`` is in Converse's names,
    input EXCLUSIVE of the cache (``None`` for an error answer); ``events`` the (event type, payload) of each stream
    event sent; ``request_id`` the ``x-amzn-RequestId`` answered."""

    operation: str
    model_id: str
    family: str
    stream: bool
    usage: dict[str, int] | None
    request_id: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    failure: str | None = None
    stop_reason: str = ""
    events: list[tuple[str, bytes]] = field(default_factory=list)
    raw_request: bytes = b""


def _usage(family: str, material: object, limit: int) -> tuple[dict[str, int], bool]:
    total = 10 + len(_canonical(material)) // 4
    output = min(limit, 16)
    read, write = (total // 4, total // 8) if family in _CACHED_FAMILIES else (0, 0)
    usage = {
        "inputTokens": total - read - write,
        "outputTokens": output,
        "cacheReadInputTokens": read,
        "cacheWriteInputTokens": write,
    }
    return usage, limit < 16


# -- the server ----------------------------------------------------------------------------------------------------


class _Handler(FakeHandler):
    def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        parts = self.path.partition("?")[0].split("/")
        if len(parts) != 4 or parts[1] != "model" or parts[3] not in _OPERATIONS:
            self._error(404, "UnknownOperationException", f"no route for {self.path}")
            return
        model_id, operation = unquote(parts[2]), parts[3]
        body = json_object(raw)
        family = family_of(model_id)
        converse = operation.startswith("converse")
        stream = operation.endswith("stream")
        material = {k: body[k] for k in ("messages", "system") if k in body} if converse else body
        usage, limited = _usage(family, material, _limit(body, converse))
        fake = cast(FakeBedrock, self.server.fake)
        failure = self.headers.get(FAIL_HEADER) or fake._next_failure()
        call = FakeBedrockCall(
            operation, model_id, family, stream, usage, str(uuid.uuid4()),
            self.headers_dict(), body, failure=failure, raw_request=raw,
        )  # fmt: skip
        fake.record(call)
        status = injected_status(failure)
        if status is not None:
            call.status, call.usage = status, None
            kind = "ThrottlingException" if call.status == 429 else "InternalServerException"
            self._error(call.status, kind, "injected failure", call.request_id)
            return
        if converse:
            call.stop_reason = "max_tokens" if limited else "end_turn"
            if stream:
                self._send_stream(call, _converse_events(call), first_content=1)
            else:
                self._send_json(call, _converse_body(call))
            return
        call.stop_reason = _stop_reason(family, limited)
        if stream:
            self._send_stream(call, _invoke_events(call), first_content=_first_content(family))
        else:
            self._send_json(call, _invoke_body(call), _token_headers(usage))

    def _error(self, status: int, kind: str, message: str, request_id: str | None = None) -> None:
        data = dumps({"message": message})
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(data)),
            "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": request_id or str(uuid.uuid4()),
        }
        self.send_body(status, headers, data)

    def _send_json(self, call: FakeBedrockCall, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        data = dumps(payload)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        self.send_body(200, {**headers, "x-amzn-RequestId": call.request_id, **(extra or {})}, data)

    def _send_stream(self, call: FakeBedrockCall, events: list[tuple[str, bytes]], first_content: int) -> None:
        failure = call.failure
        events = cut_events(events, first_content, failure)
        if failure == "exception":
            events = [
                *events[: first_content + 1],
                ("modelStreamErrorException", _exception("modelStreamErrorException", "injected stream error")),
            ]
        call.events = events
        headers = {
            "Content-Type": "application/vnd.amazon.eventstream",
            "Transfer-Encoding": "chunked",
            "x-amzn-RequestId": call.request_id,
        }
        if not call.operation.startswith("converse"):
            headers["X-Amzn-Bedrock-Content-Type"] = "application/json"
        self.start_chunked(headers)
        for _kind, message in events:
            self.write_chunk(message)
        self.end_chunked(cut=failure == "midstream")


# -- bodies and events ---------------------------------------------------------------------------------------------


def _text(count: int) -> list[str]:
    return [_REPLY[i % len(_REPLY)] for i in range(max(count, 1))]


def _stop_reason(family: str, limited: bool) -> str:
    if family == "anthropic":
        return "max_tokens" if limited else "end_turn"
    if family == "amazon":
        return "max_tokens" if limited else "end_turn"
    if family == "cohere":
        return "MAX_TOKENS" if limited else "COMPLETE"
    return "length" if limited else "stop"


def _first_content(family: str) -> int:
    """The index of a family's first content event in its invoke stream."""
    return {"anthropic": 2, "amazon": 1}.get(family, 0)


def _token_headers(usage: dict[str, int]) -> dict[str, str]:
    return {
        "X-Amzn-Bedrock-Input-Token-Count": str(usage["inputTokens"]),
        "X-Amzn-Bedrock-Output-Token-Count": str(usage["outputTokens"]),
        "X-Amzn-Bedrock-Cache-Read-Input-Token-Count": str(usage["cacheReadInputTokens"]),
        "X-Amzn-Bedrock-Cache-Write-Input-Token-Count": str(usage["cacheWriteInputTokens"]),
        "X-Amzn-Bedrock-Invocation-Latency": "42",
    }


def _invocation_metrics(usage: dict[str, int]) -> dict[str, int]:
    return {
        "inputTokenCount": usage["inputTokens"],
        "outputTokenCount": usage["outputTokens"],
        "invocationLatency": 42,
        "firstByteLatency": 7,
        "cacheReadInputTokenCount": usage["cacheReadInputTokens"],
        "cacheWriteInputTokenCount": usage["cacheWriteInputTokens"],
    }


def _converse_usage(usage: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {**usage, "totalTokens": sum(usage.values())}
    if usage["cacheWriteInputTokens"]:
        out["cacheDetails"] = [{"ttl": "5m", "inputTokens": usage["cacheWriteInputTokens"]}]
    return out


def _converse_body(call: FakeBedrockCall) -> dict[str, Any]:
    assert call.usage is not None
    text = "".join(_text(call.usage["outputTokens"]))
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": call.stop_reason,
        "usage": _converse_usage(call.usage),
        "metrics": {"latencyMs": 42},
    }


def _converse_events(call: FakeBedrockCall) -> list[tuple[str, bytes]]:
    assert call.usage is not None
    events = [("messageStart", _event("messageStart", {"role": "assistant", "p": "abc"}))]
    for piece in _text(call.usage["outputTokens"]):
        events.append(
            ("contentBlockDelta", _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}))
        )
    events += [
        ("contentBlockStop", _event("contentBlockStop", {"contentBlockIndex": 0})),
        ("messageStop", _event("messageStop", {"stopReason": call.stop_reason})),
        ("metadata", _event("metadata", {"usage": _converse_usage(call.usage), "metrics": {"latencyMs": 42}})),
    ]
    return events


def _invoke_body(call: FakeBedrockCall) -> dict[str, Any]:
    usage = call.usage
    assert usage is not None
    text = "".join(_text(usage["outputTokens"]))
    if call.family == "anthropic":
        return {
            "id": f"msg_bdrk_{call.request_id.replace('-', '')[:24]}",
            "type": "message",
            "role": "assistant",
            "model": "claude",
            "content": [{"type": "text", "text": text}],
            "stop_reason": call.stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage["inputTokens"],
                "cache_creation_input_tokens": usage["cacheWriteInputTokens"],
                "cache_read_input_tokens": usage["cacheReadInputTokens"],
                "output_tokens": usage["outputTokens"],
            },
        }
    if call.family == "amazon":
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": call.stop_reason,
            "usage": {
                "inputTokens": usage["inputTokens"],
                "outputTokens": usage["outputTokens"],
                "totalTokens": sum(usage.values()),
                "cacheReadInputTokenCount": usage["cacheReadInputTokens"],
                "cacheWriteInputTokenCount": usage["cacheWriteInputTokens"],
            },
        }
    if call.family == "meta":
        return {
            "generation": text,
            "prompt_token_count": usage["inputTokens"],
            "generation_token_count": usage["outputTokens"],
            "stop_reason": call.stop_reason,
        }
    if call.family == "mistral":
        return {"outputs": [{"text": text, "stop_reason": call.stop_reason}]}
    return {  # Cohere Command R
        "response_id": call.request_id,
        "text": text,
        "generation_id": str(uuid.uuid5(uuid.NAMESPACE_URL, call.request_id)),
        "chat_history": [],
        "finish_reason": call.stop_reason,
    }


def _invoke_events(call: FakeBedrockCall) -> list[tuple[str, bytes]]:
    usage = call.usage
    assert usage is not None
    pieces = _text(usage["outputTokens"])
    metrics = {"amazon-bedrock-invocationMetrics": _invocation_metrics(usage)}
    chunks: list[dict[str, Any]]
    if call.family == "anthropic":
        start_usage = {
            "input_tokens": usage["inputTokens"],
            "cache_creation_input_tokens": usage["cacheWriteInputTokens"],
            "cache_read_input_tokens": usage["cacheReadInputTokens"],
            "output_tokens": 1,
        }
        message: dict[str, Any] = {
            "id": f"msg_bdrk_{call.request_id.replace('-', '')[:24]}", "type": "message", "role": "assistant",
            "model": "claude", "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage,
        }  # fmt: skip
        chunks = [
            {"type": "message_start", "message": message},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}} for p in pieces),
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": call.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": usage["outputTokens"]},
            },
            {"type": "message_stop", **metrics},
        ]
    elif call.family == "amazon":
        nova_usage = {
            "inputTokens": usage["inputTokens"],
            "outputTokens": usage["outputTokens"],
            "cacheReadInputTokenCount": usage["cacheReadInputTokens"],
            "cacheWriteInputTokenCount": usage["cacheWriteInputTokens"],
        }
        chunks = [
            {"messageStart": {"role": "assistant"}},
            *({"contentBlockDelta": {"delta": {"text": p}, "contentBlockIndex": 0}} for p in pieces),
            {"contentBlockStop": {"contentBlockIndex": 0}},
            {"messageStop": {"stopReason": call.stop_reason}},
            {"metadata": {"usage": nova_usage, "metrics": {}, "trace": {}}, **metrics},
        ]
    elif call.family == "meta":
        chunks = [
            {
                "generation": p,
                "prompt_token_count": usage["inputTokens"] if i == 0 else None,
                "generation_token_count": i + 1,
                "stop_reason": None,
            }
            for i, p in enumerate(pieces)
        ]
        chunks[-1] = {**chunks[-1], "generation_token_count": usage["outputTokens"], "stop_reason": call.stop_reason}
        chunks[-1].update(metrics)
    elif call.family == "mistral":
        chunks = [{"outputs": [{"text": p, "stop_reason": None}]} for p in pieces]
        chunks.append({"outputs": [{"text": "", "stop_reason": call.stop_reason}], **metrics})
    else:
        chunks = [{"is_finished": False, "event_type": "text-generation", "text": p} for p in pieces]
        chunks.append({
            "is_finished": True, "event_type": "stream-end", "finish_reason": call.stop_reason,
            "response": {"response_id": call.request_id, "text": "".join(pieces)}, **metrics,
        })  # fmt: skip
    return [("chunk", _chunk(chunk)) for chunk in chunks]


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class FakeBedrock(FakeServer[FakeBedrockCall]):
    """A loopback ``bedrock-runtime`` server. Use as a context manager, or ``start()``/``stop()``. ``port`` 0 (the
    default) takes a free one; it listens on 127.0.0.1 only; ``base_url`` is boto3's ``endpoint_url``."""

    handler = _Handler
    thread_name = "fake-bedrock"
    served_nothing = "the fake Bedrock has served no call yet"

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self._failures: deque[str] = deque()

    def fail_next(self, mode: str, times: int = 1) -> None:
        """Answer the next ``times`` requests with failure ``mode`` (see the module's docstring)."""
        with self._lock:
            self._failures.extend([mode] * times)

    def _next_failure(self) -> str | None:
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def reset(self) -> None:
        """Forget recorded calls and pending failures."""
        with self._lock:
            self.calls.clear()
            self._failures.clear()
