"""The fake provider speaks each API closely enough that the real SDKs accept it, and records the truth."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam
from tokentrail.processor.demo.fake_provider import (
    FakeCall,
    FakeProvider,
    anthropic_usage,
    openai_usage,
    prompt_tokens,
)

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
MESSAGES: list[MessageParam] = [{"role": "user", "content": "hello"}]


def sse_data(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def usage_of(call: FakeCall) -> dict[str, Any]:
    """The usage the fake sent for ``call`` (the test fails here if it sent none)."""
    assert call.usage is not None
    return call.usage


def test_base_urls_point_at_the_running_server() -> None:
    with FakeProvider() as fake:
        assert fake.base_url == f"http://127.0.0.1:{fake.port}"
        assert fake.openai_base_url == fake.base_url + "/v1"
        assert fake.anthropic_base_url == fake.base_url
        assert httpx.get(fake.base_url + "/health").json() == {"status": "ok"}


def test_start_and_stop_work_without_a_with_block() -> None:
    fake = FakeProvider().start()
    try:
        assert httpx.get(fake.base_url + "/health").status_code == 200
    finally:
        fake.stop()


def test_openai_usage_follows_the_documented_formula(fake: FakeProvider) -> None:
    body = {"model": "m", "messages": MESSAGES, "max_completion_tokens": 10}
    n = prompt_tokens(body)
    assert openai_usage(body) == {
        "prompt_tokens": n,
        "completion_tokens": 10,
        "total_tokens": n + 10,
        "prompt_tokens_details": {"cached_tokens": n // 4, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 2,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def test_anthropic_input_tokens_exclude_the_nonzero_cache_traffic() -> None:
    body = {"model": "m", "messages": MESSAGES * 20, "max_tokens": 100}
    usage = anthropic_usage(body)
    n = prompt_tokens(body)
    assert usage["cache_read_input_tokens"] == n // 4 > 0
    assert usage["cache_creation_input_tokens"] == n // 8 > 0
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"] == n


def test_openai_sdk_reads_a_chat_completion_and_the_call_is_recorded(fake: FakeProvider) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-a")
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
    call = fake.last_call
    assert call.path == "/v1/chat/completions"
    assert (call.model, call.stream, call.include_usage) == ("gpt-4o-mini", False, False)
    assert completion.id == call.response_id and call.response_id.startswith("chatcmpl-")
    assert completion.usage is not None and completion.usage.model_dump(exclude_none=True) == call.usage
    assert call.headers["authorization"] == "Bearer sk-a"


def test_openai_stream_with_include_usage_ends_with_an_empty_choices_usage_chunk(fake: FakeProvider) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-a")
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=CHAT, stream=True, stream_options={"include_usage": True}
        )
    )
    call = fake.last_call
    assert call.include_usage
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.model_dump(exclude_none=True) == call.usage
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert {chunk.id for chunk in chunks} == {call.response_id}


def test_openai_stream_without_include_usage_sends_no_usage(fake: FakeProvider) -> None:
    response = httpx.post(
        fake.openai_base_url + "/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    )
    assert response.text.rstrip().endswith("data: [DONE]")
    assert all("usage" not in chunk for chunk in sse_data(response.text))
    assert fake.last_call.usage is None


def test_anthropic_sdk_reads_a_message(fake: FakeProvider) -> None:
    client = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="sk-ant", open_telemetry=False)
    message = client.messages.create(model="claude-x", max_tokens=100, messages=MESSAGES)
    call = fake.last_call
    assert call.path == "/v1/messages" and call.response_id == message.id and message.id.startswith("msg_")
    assert message.usage.input_tokens == usage_of(call)["input_tokens"]
    assert message.usage.cache_read_input_tokens == usage_of(call)["cache_read_input_tokens"]
    # This SDK version sends the key as a bearer token; older ones used x-api-key.
    assert "sk-ant" in (call.headers.get("x-api-key"), call.headers.get("authorization", "").removeprefix("Bearer "))


def test_anthropic_stream_has_start_usage_and_a_cumulative_final_delta(fake: FakeProvider) -> None:
    response = httpx.post(
        fake.base_url + "/v1/messages",
        json={"model": "claude-x", "max_tokens": 100, "messages": MESSAGES, "stream": True},
    )
    events = sse_data(response.text)
    assert [event["type"] for event in events][:2] == ["message_start", "content_block_start"]
    assert [event["type"] for event in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    usage = usage_of(fake.last_call)
    start = events[0]["message"]["usage"]
    assert start["output_tokens"] == 1
    assert start["input_tokens"] == usage["input_tokens"]
    assert start["cache_read_input_tokens"] == usage["cache_read_input_tokens"]
    assert start["cache_creation_input_tokens"] == usage["cache_creation_input_tokens"]
    assert events[-2]["usage"] == {"output_tokens": usage["output_tokens"]}


def test_anthropic_sdk_accumulates_the_stream(fake: FakeProvider) -> None:
    client = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="sk-ant", open_telemetry=False)
    with client.messages.stream(model="claude-x", max_tokens=100, messages=MESSAGES) as stream:
        message = stream.get_final_message()
    assert message.usage.output_tokens == usage_of(fake.last_call)["output_tokens"]
    assert message.stop_reason == "end_turn"


def test_any_model_name_is_echoed(fake: FakeProvider) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-a")
    assert client.chat.completions.create(model="acme-private-9", messages=CHAT).model == "acme-private-9"


def test_response_ids_are_unique(fake: FakeProvider) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-a")
    for _ in range(3):
        client.chat.completions.create(model="m", messages=CHAT)
    assert len({call.response_id for call in fake.calls}) == 3


def test_midstream_failure_cuts_the_stream_with_a_protocol_error(fake: FakeProvider) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(
            fake.openai_base_url + "/chat/completions",
            json={"model": "m", "messages": MESSAGES, "stream": True},
            headers={"x-fake-fail": "midstream"},
        )
    assert fake.last_call.failure == "midstream"


def test_status_failure_returns_the_provider_error_envelope(fake: FakeProvider) -> None:
    client = anthropic.Anthropic(
        base_url=fake.anthropic_base_url, api_key="sk-ant", max_retries=0, open_telemetry=False
    )
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(
            model="m", max_tokens=5, messages=MESSAGES, extra_headers={"x-fake-fail": "status:429"}
        )
    assert (fake.last_call.status, fake.last_call.usage) == (429, None)


def test_unknown_paths_are_404_and_not_recorded(fake: FakeProvider) -> None:
    assert httpx.post(fake.base_url + "/v1/nothing", json={}).status_code == 404
    assert fake.calls == []


# The other interfaces ---------------------------------------------------------------------------------------------


def test_openai_sdk_reads_a_response_and_its_stream(fake: FakeProvider) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="k")
    response = client.responses.create(model="gpt-5", input="hello", service_tier="flex")
    assert response.usage.input_tokens == prompt_tokens({"input": "hello"}, "responses")  # type: ignore[union-attr]  # the fake always sends it
    assert (response.status, response.service_tier, response.id) == ("completed", "flex", fake.last_call.response_id)
    events = list(client.responses.create(model="gpt-5", input="hello", stream=True))
    assert [events[0].type, events[-1].type] == ["response.created", "response.completed"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == response.output_text


def test_a_responses_limit_below_the_output_ends_incomplete(fake: FakeProvider) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="k")
    response = client.responses.create(model="gpt-5", input="hello", max_output_tokens=3)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]  # the fake always sends it
    assert response.usage.output_tokens == 3  # type: ignore[union-attr]  # the fake always sends it


def test_a_failed_responses_stream_ends_with_response_failed(fake: FakeProvider) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="k")
    events = list(client.responses.create(model="gpt-5", input="x", stream=True, extra_headers={"x-fake-fail": "failed"}))
    assert events[-1].type == "response.failed" and events[-1].response.error.code == "server_error"  # type: ignore[union-attr]  # the fake always sends it


def test_openai_sdk_reads_a_legacy_completion_and_its_stream(fake: FakeProvider) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="k")
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once")
    assert completion.usage.prompt_tokens == prompt_tokens({"prompt": "Once"}, "completions")  # type: ignore[union-attr]  # the fake always sends it
    chunks = list(
        client.completions.create(model="m", prompt="Once", stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert "".join(c.choices[0].text for c in chunks if c.choices) == completion.choices[0].text


@pytest.mark.parametrize("encoding_format", ["float", "base64", None])
def test_openai_sdk_reads_embeddings_in_either_format(fake: FakeProvider, encoding_format: str | None) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="k")
    extra = {} if encoding_format is None else {"encoding_format": encoding_format}
    result = client.embeddings.create(model="e", input=["a", "b", "c"], dimensions=4, **extra)  # type: ignore[arg-type]  # optional SDK argument
    vectors = [
        struct.unpack("<4f", base64.b64decode(item.embedding)) if isinstance(item.embedding, str) else item.embedding
        for item in result.data
    ]
    assert [len(vector) for vector in vectors] == [4, 4, 4]
    assert result.usage.prompt_tokens == result.usage.total_tokens == usage_of(fake.last_call)["prompt_tokens"]


def test_a_one_hour_cache_request_splits_the_cache_writes() -> None:
    body = {"model": "m", "messages": MESSAGES * 20, "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}
    usage = anthropic_usage(body)
    split = usage["cache_creation"]
    assert split["ephemeral_1h_input_tokens"] == usage["cache_creation_input_tokens"] // 2 > 0
    assert split["ephemeral_5m_input_tokens"] + split["ephemeral_1h_input_tokens"] == usage["cache_creation_input_tokens"]
    assert anthropic_usage({"model": "m", "messages": MESSAGES * 20})["cache_creation"]["ephemeral_1h_input_tokens"] == 0


def test_the_bytes_exchanged_are_recorded(fake: FakeProvider) -> None:
    body = b'{"model": "m", "messages": []}'
    response = httpx.post(fake.openai_base_url + "/chat/completions", content=body)
    assert fake.last_call.raw_request == body
    assert fake.last_call.response_body == response.content


def test_gzip_is_applied_on_request(fake: FakeProvider) -> None:
    response = httpx.post(
        fake.openai_base_url + "/chat/completions", json={"model": "m", "messages": []}, headers={"x-fake-encoding": "gzip"}
    )
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["usage"] == fake.last_call.usage  # httpx decoded it


@pytest.mark.parametrize("failure", ["truncate", "malformed", "non-utf8"])
def test_stream_failure_modes_still_end_the_body_cleanly(fake: FakeProvider, failure: str) -> None:
    with httpx.stream(
        "POST", fake.openai_base_url + "/chat/completions",
        json={"model": "m", "messages": [], "stream": True, "stream_options": {"include_usage": True}},
        headers={"x-fake-fail": failure},
    ) as response:
        raw = response.read()
    assert raw == fake.last_call.response_body
    assert (b"[DONE]" in raw) is (failure != "truncate")
