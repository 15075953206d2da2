"""The pure parts: usage from bodies and event streams, request facts, endpoint recognition."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokentrail.instrumentation import _call, _jsonbody, semconv
from tokentrail.instrumentation._credentials import fingerprint, system_key_fingerprints
from tokentrail.instrumentation._decoding import decoding
from tokentrail.instrumentation._endpoints import normalise_base_urls, recognise
from tokentrail.instrumentation._parsers import (
    FULL_JSON_BODY,
    MAX_SSE_LINE,
    ChatStreamParser,
    JsonBodyParser,
    MessagesStreamParser,
    ResponsesStreamParser,
    body_parser,
)
from tokentrail.instrumentation._request import FULL_PARSE_LIMIT, read_request
from tokentrail.instrumentation._usage import BodyParser, ResponseFacts, Usage
from tokentrail.processor.demo.fake_provider import compress

CHAT = semconv.API_CHAT_COMPLETIONS
MESSAGES = semconv.API_ANTHROPIC_MESSAGES


def sse(*events: dict | str, named: bool = False, newline: bytes = b"\n") -> bytes:
    out = b""
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        if named and isinstance(event, dict):
            out += b"event: " + event["type"].encode() + newline
        out += b"data: " + data.encode() + newline + newline
    return out


def feed_in_pieces(parser: BodyParser, body: bytes, size: int) -> ResponseFacts:
    for start in range(0, len(body), size):
        parser.feed(body[start : start + size])
    return parser.result()


START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "model": "claude-x",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 1},
    },
}


def test_anthropic_stream_takes_the_last_cumulative_delta_never_the_sum() -> None:
    body = sse(
        START,
        {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 5}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 12}},
        {"type": "message_stop"},
        named=True,
    )
    facts = feed_in_pieces(MessagesStreamParser(), body, 1000)
    assert facts.usage == Usage(
        input_tokens=130, output_tokens=12, cache_read_input_tokens=100, cache_creation_input_tokens=20
    )
    assert (facts.response_id, facts.response_model, facts.finish_reasons, facts.terminal) == (
        "msg_1",
        "claude-x",
        {0: "end_turn"},
        True,
    )


def test_anthropic_delta_with_cumulative_input_fields_replaces_the_start_values() -> None:
    body = sse(
        START,
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"input_tokens": 11, "cache_read_input_tokens": 100, "output_tokens": 3},
        },
    )
    usage = feed_in_pieces(MessagesStreamParser(), body, 1000).usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (131, 3)


@pytest.mark.parametrize("size", [1, 3, 17, 10_000])
def test_chat_stream_gives_the_same_facts_however_the_bytes_are_split(size: int) -> None:
    usage = {
        "prompt_tokens": 50,
        "completion_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 20},
        "completion_tokens_details": {"reasoning_tokens": 4},
    }
    body = sse(
        {"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": None}], "usage": None},
        {"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "\"usage\": {"}, "finish_reason": None}], "usage": None},
        {"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
        {"id": "c1", "model": "gpt-4o", "choices": [], "usage": usage},
        "[DONE]",
        newline=b"\r\n",
    )
    facts = feed_in_pieces(ChatStreamParser(), body, size)
    assert facts.usage == Usage(
        input_tokens=50, output_tokens=9, cache_read_input_tokens=20, reasoning_output_tokens=4
    )
    assert (facts.response_id, facts.finish_reasons, facts.terminal) == ("c1", {0: "stop"}, True)


def test_chat_stream_without_usage_reports_none_not_zero() -> None:
    body = sse({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, "[DONE]")
    facts = feed_in_pieces(ChatStreamParser(), body, 5)
    assert facts.usage is None and facts.terminal


def test_groq_usage_nested_under_x_groq_is_read() -> None:
    body = sse({"id": "c", "model": "llama", "choices": [], "x_groq": {"id": "r", "usage": {"prompt_tokens": 7, "completion_tokens": 2}}})
    usage = feed_in_pieces(ChatStreamParser(), body, 100).usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (7, 2)


def test_deepseek_cache_hits_are_cache_reads() -> None:
    data = {"id": "d", "model": "deepseek-chat", "choices": [], "usage": {"prompt_tokens": 30, "prompt_cache_hit_tokens": 12, "completion_tokens": 1}}
    usage = feed_in_pieces(JsonBodyParser(CHAT), json.dumps(data).encode(), 4).usage
    assert usage is not None and (usage.input_tokens, usage.cache_read_input_tokens) == (30, 12)


def test_an_error_event_in_a_stream_sets_the_error_type() -> None:
    body = sse(START, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}, named=True)
    facts = feed_in_pieces(MessagesStreamParser(), body, 50)
    assert facts.error_type == "overloaded_error" and not facts.terminal


def test_anthropic_json_body_input_is_made_inclusive() -> None:
    data = {"id": "m", "model": "c", "stop_reason": "max_tokens", "usage": {"input_tokens": 3, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 5, "output_tokens": 6}}
    facts = feed_in_pieces(JsonBodyParser(MESSAGES), json.dumps(data).encode(), 8)
    assert facts.usage == Usage(input_tokens=12, output_tokens=6, cache_read_input_tokens=4, cache_creation_input_tokens=5)
    assert facts.finish_reasons == {0: "max_tokens"}


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_json_bodies_are_decoded(encoding: str, compress: Callable[[bytes], bytes]) -> None:
    data = {"id": "x", "model": "m", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
    parser = decoding(body_parser(CHAT, streamed=False), encoding)
    usage = feed_in_pieces(parser, compress(json.dumps(data).encode()), 3).usage
    assert usage is not None and usage.input_tokens == 5


def test_raw_deflate_without_a_zlib_header_is_decoded() -> None:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = packer.compress(b'{"usage": {"prompt_tokens": 8}}') + packer.flush()
    usage = feed_in_pieces(decoding(JsonBodyParser(CHAT), "deflate"), body, 1000).usage
    assert usage is not None and usage.input_tokens == 8


def test_an_encoding_we_cannot_decode_reports_no_usage() -> None:
    """Without the HTTP library's decoders, or with bytes they cannot decode: no usage, never a guess or a raise."""
    assert feed_in_pieces(decoding(JsonBodyParser(CHAT), "br"), b"\x8b\x00garbage", 4).usage is None
    for library in (httpx, httpx2):
        parser = decoding(JsonBodyParser(CHAT), "br", library.Response)
        assert feed_in_pieces(parser, b"\x8b\x00garbage", 4).usage is None


@pytest.mark.parametrize("library", [httpx, httpx2], ids=["httpx", "httpx2"])
@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, br", "br, zstd", "x-unknown", "gzip, x-unknown"])
def test_other_encodings_are_decoded_as_the_http_library_decodes_them(library: Any, encoding: str) -> None:
    """Our parser reads what the application will read: the library's decoding, also where it ignores a coding."""
    data = {"id": "x", "model": "m", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
    codings = [coding.strip() for coding in encoding.split(",") if coding.strip() != "x-unknown"]
    body = compress(json.dumps(data).encode(), codings)
    try:
        readable = library.Response(200, headers={"content-encoding": encoding}, content=body).json() == data
    except Exception:
        readable = False  # httpx 0.28 fails on zstd inside stacked codings: then the application cannot read it either
    assert readable or (library is httpx and encoding == "br, zstd")
    usage = feed_in_pieces(decoding(JsonBodyParser(CHAT), encoding, library.Response), body, 7).usage
    if readable:
        assert usage is not None and usage.input_tokens == 5
    else:
        assert usage is None


def test_request_facts_are_read_from_json() -> None:
    body = json.dumps(
        {"model": "gpt-4o", "messages": [], "stream": True, "stream_options": {"include_usage": True}, "user": "u1"}
    ).encode()
    facts = read_request(CHAT, body)
    assert (facts.model, facts.stream, facts.include_usage, facts.user) == ("gpt-4o", True, True, "u1")


def test_request_facts_of_a_huge_body_are_scanned_without_decoding_it() -> None:
    prompt = 'say \\"model\\": \\"fake\\" ' + "x" * FULL_PARSE_LIMIT
    body = json.dumps(
        {"messages": [{"role": "user", "content": prompt}], "model": "claude-x", "stream": True, "metadata": {"user_id": "big"}}
    ).encode()
    facts = read_request(MESSAGES, body)
    assert (facts.model, facts.stream, facts.user) == ("claude-x", True, "big")


def test_a_body_that_is_not_json_gives_no_facts() -> None:
    assert read_request(CHAT, b"\x00not json").parsed is False


@pytest.mark.parametrize(
    "url, provider",
    [
        ("https://api.openai.com/v1/chat/completions", "openai"),
        ("https://api.anthropic.com/v1/messages", "anthropic"),
        ("https://api.groq.com/openai/v1/chat/completions", "groq"),
        ("https://api.mistral.ai/v1/chat/completions", "mistral_ai"),
        ("https://api.deepseek.com/chat/completions", "deepseek"),
        ("https://api.x.ai/v1/chat/completions", "x_ai"),
        ("https://openrouter.ai/api/v1/chat/completions", "openrouter"),
        ("https://my-res.openai.azure.com/openai/deployments/gpt/chat/completions", "azure.ai.openai"),
        ("http://localhost:8000/v1/chat/completions", "openai"),
        ("http://localhost:8000/v1/messages", "anthropic"),
    ],
)
def test_provider_is_recognised_by_host_then_by_api(url: str, provider: str) -> None:
    endpoint = recognise("POST", httpx2.URL(url))
    assert endpoint is not None and endpoint.provider == provider


@pytest.mark.parametrize(
    "method, url",
    [
        ("GET", "https://api.openai.com/v1/chat/completions"),
        ("POST", "https://api.openai.com/v1/threads/thread_1/messages"),
        ("POST", "https://api.anthropic.com/v1/messages/count_tokens"),
        ("POST", "https://graph.example.com/v1.0/me/messages"),
    ],
)
def test_other_requests_are_not_recognised(method: str, url: str) -> None:
    assert recognise(method, httpx2.URL(url)) is None


def test_server_address_and_default_port_come_from_the_url() -> None:
    endpoint = recognise("POST", httpx2.URL("https://api.openai.com/v1/chat/completions"))
    assert endpoint is not None and (endpoint.server_address, endpoint.server_port) == ("api.openai.com", 443)


def test_a_configured_base_url_wins_over_the_host_table() -> None:
    base_urls = normalise_base_urls({"https://api.openai.com/v1/": "corp-proxy", "https://api.openai.com": "x"})
    endpoint = recognise("POST", httpx2.URL("https://API.openai.com/v1/chat/completions"), base_urls)
    assert endpoint is not None and endpoint.provider == "corp-proxy"


def test_a_single_system_key_passed_bare_is_one_key() -> None:
    salt = b"s"
    assert system_key_fingerprints(salt, "sk-one", environ={}) == {fingerprint("sk-one", salt)}


# Responses, large bodies, cache lifetimes ---------------------------------------------------------------------

RESPONSE = {
    "id": "resp_1",
    "model": "gpt-5-2025-08-07",
    "status": "completed",
    "service_tier": "priority",
    "usage": {
        "input_tokens": 100,
        "input_tokens_details": {
            "cached_tokens": 60,
            "cache_write_tokens": 30,
            "cache_write_tokens_details": {"ttl_30m_tokens": 10, "ttl_12h_tokens": 20},
        },
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 25},
    },
}


@pytest.mark.parametrize("size", [1, 13, 100_000])
def test_responses_stream_takes_everything_from_its_terminal_event(size: int) -> None:
    created = {"type": "response.created", "response": {**RESPONSE, "status": "in_progress", "usage": None}}
    delta = {"type": "response.output_text.delta", "delta": '"type": "response.completed"'}
    body = sse(created, delta, {"type": "response.completed", "response": RESPONSE}, named=True)
    facts = feed_in_pieces(ResponsesStreamParser(), body, size)
    assert facts.usage == Usage(
        input_tokens=100,
        output_tokens=40,
        cache_read_input_tokens=60,
        cache_creation_input_tokens=30,
        reasoning_output_tokens=25,
        cache_creation_by_ttl={"30m": 10, "12h": 20},
    )
    assert (facts.response_id, facts.response_model, facts.service_tier, facts.terminal) == (
        "resp_1",
        "gpt-5-2025-08-07",
        "priority",
        True,
    )
    assert facts.finish_reasons == {0: "stop"}


def test_a_responses_error_event_sets_the_error_type_without_ending_the_stream() -> None:
    body = sse({"type": "error", "code": "rate_limit_exceeded", "message": "slow down"})
    facts = feed_in_pieces(ResponsesStreamParser(), body, 10)
    assert (facts.error_type, facts.terminal) == ("rate_limit_exceeded", False)


def test_a_failed_response_is_an_error_that_still_reports_its_usage() -> None:
    failed = {**RESPONSE, "status": "failed", "error": {"code": "server_error", "message": "x"}}
    facts = feed_in_pieces(JsonBodyParser(semconv.API_RESPONSES), json.dumps(failed).encode(), 50)
    assert facts.error_type == "server_error" and facts.usage is not None and facts.usage.output_tokens == 40


def test_a_body_too_large_to_decode_is_scanned_at_both_ends() -> None:
    data = {
        "id": "emb-1",
        "object": "list",
        "data": [{"embedding": [0.5] * 1000, "text": '"usage": {"prompt_tokens": 1}'} for _ in range(300)],
        "model": "text-embedding-3-large",
        "usage": {"prompt_tokens": 12345, "total_tokens": 12345},
    }
    body = json.dumps(data).encode()
    assert len(body) > FULL_JSON_BODY
    facts = feed_in_pieces(JsonBodyParser(semconv.API_EMBEDDINGS), body, 65536)
    assert facts.usage is not None and facts.usage.input_tokens == 12345  # the last usage object, not one in text
    assert (facts.response_id, facts.response_model) == ("emb-1", "text-embedding-3-large")


def test_anthropic_cache_writes_keep_their_lifetimes() -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "m",
            "usage": {
                "input_tokens": 5,
                "cache_creation_input_tokens": 30,
                "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
                "service_tier": "priority",
            },
        },
    }
    facts = feed_in_pieces(MessagesStreamParser(), sse(start, {"type": "message_stop"}), 7)
    assert facts.usage is not None and facts.usage.cache_creation_by_ttl == {"5m": 10, "1h": 20}
    assert facts.usage.input_tokens == 35 and facts.service_tier == "priority"


def test_a_huge_sse_line_without_a_newline_is_dropped_not_buffered_forever() -> None:
    parser = ChatStreamParser()
    for _ in range(5):
        parser.feed(b"x" * (MAX_SSE_LINE // 4 + 1))
    assert parser._pending_size <= MAX_SSE_LINE


@pytest.mark.parametrize(
    "coding, library",
    [("gzip", None), ("br", httpx), ("br", httpx2), ("zstd", httpx), ("zstd", httpx2)],
    ids=["gzip", "br-httpx", "br-httpx2", "zstd-httpx", "zstd-httpx2"],
)
def test_a_compressed_stream_cut_before_its_coding_ends_keeps_what_it_said(coding: str, library: Any) -> None:
    """An application that closes a stream after its last event may never read the coding's own end (or a
    connection may drop there): the events already decoded, usage included, still count."""
    events = [
        b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n',
        b'data: {"id":"c","model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}\n\n',
        b"data: [DONE]\n\n",
    ]
    from tokentrail.processor.demo.fake_provider import _Compressor

    packer = _Compressor(coding)
    sent = [packer.chunk(event) for event in events]  # each event flushed, the coding never finished
    parser = decoding(body_parser(CHAT, streamed=True), coding, library.Response if library else None)
    for chunk in sent:
        parser.feed(chunk)
    facts = parser.result()
    assert facts.usage is not None and facts.usage.input_tokens == 9
    assert facts.terminal


# Reading a body's few fields with msgspec gives what json gives ------------------------------------------------------

ODD_BODIES = [
    b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}',
    b'{"model": "m", "model": "n"}',  # a repeated key: the last one, as json
    b'{"model": "\\u00e9\\ud83d\\ude00", "user": null}',
    b'{"model": "m", "temperature": NaN}',  # only Python's json reads NaN
    b'{"model": 12345678901234567890123, "usage": {"prompt_tokens": 1e400}}',
    '{"model": "é"}'.encode("utf-16"),
    b'{"id": "c", "choices": "not a list", "usage": {"prompt_tokens": 1}}',
    b'{"id": "c", "choices": [{"index": 0, "finish_reason": "stop"}, "not an object"]}',
    b'{"id": "c", "choices": [{"index": 0, "message": {"content": "\xff"}, "finish_reason": "stop"}]}',
    b'{"type": "response.completed", "response": "not an object"}',
    b'{"type": "response.completed", "response": {"id": "r", "output": [1, 2], "usage": {"input_tokens": 3}}}',
    b'  {"model": "m"}  \n',
    b'[{"model": "m"}]',
    b'"just a string"',
    b'{"model": "m"',
    b"",
]


@pytest.mark.parametrize("body", ODD_BODIES)
@pytest.mark.parametrize("shape", [_jsonbody.Request, _jsonbody.ChatResponse, _jsonbody.ResponseEvent, _jsonbody.MessageEvent])
def test_a_picked_body_is_what_json_gives_of_its_fields(body: bytes, shape: type[msgspec.Struct]) -> None:
    try:
        expected = _jsonbody.project(json.loads(body), _jsonbody.SPECS[shape])
    except ValueError:
        with pytest.raises(ValueError):
            _jsonbody.pick(body, shape)
        return
    assert _jsonbody.pick(body, shape) == expected


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(["model", "stream", "user", "id", "choices", "usage", "index", "finish_reason", "other"])


@given(st.dictionaries(FIELD_NAMES, JSON_VALUES | st.lists(st.dictionaries(FIELD_NAMES, JSON_VALUES), max_size=3)))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # nested JSON draws slowly on a loaded CI machine
def test_any_json_object_is_picked_as_json_reads_it(data: dict[str, Any]) -> None:
    body = json.dumps(data).encode()
    for shape in (_jsonbody.Request, _jsonbody.ChatResponse):
        assert _jsonbody.pick(body, shape) == _jsonbody.project(json.loads(body), _jsonbody.SPECS[shape])


@pytest.mark.parametrize(
    "content_type, kind",
    [
        ("application/json", False),
        ("application/json; charset=utf-8", False),
        ("Application/Problem+JSON", False),
        ("text/event-stream", True),
        (" TEXT/EVENT-STREAM ;charset=utf-8", True),
        ("text/plain", None),
        ("", None),
    ],
)
def test_a_response_is_read_as_json_or_events_by_its_media_type(content_type: str, kind: bool | None) -> None:
    assert _call._media_kind(content_type) is kind


@pytest.mark.parametrize("library", [httpx, httpx2], ids=["httpx", "httpx2"])
@pytest.mark.parametrize(
    "raw",
    [
        [(b"Content-Type", b"application/json")],
        [(b"content-type", b"text/event-stream"), (b"Content-Encoding", b"gzip")],
        [(b"x-request-id", b"abc")],
        [(b"content-encoding", b"gzip"), (b"CONTENT-ENCODING", b"br"), (b"content-type", b"application/json")],
        [(b"content-type", b"application/json; charset=\xe9t\xe9"), (b"content-encoding", b"zstd")],
        [(b"content-type", "application/json; x=\u00e9".encode())],
        [],
    ],
)
def test_a_response_s_body_headers_read_in_one_pass_are_what_headers_get_gives(
    library: Any, raw: list[tuple[bytes, bytes]]
) -> None:
    headers = library.Headers(raw)
    expected = (headers.get("content-type", ""), headers.get("content-encoding"))
    assert _call._body_headers(headers) == expected
