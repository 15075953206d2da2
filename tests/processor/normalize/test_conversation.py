"""The conversation of a call (``group_by=conversation``): read from ``gen_ai.conversation.id`` and from where each
dialect keeps a session or thread id, cleaned like a user id, never turned into a tag."""

from __future__ import annotations

import os
from typing import Any

import pytest
from tokentrail.processor.normalize.reader import normalize_request
from tokentrail.processor.schema import UsageRecord

from tests.helpers.otlp import make_request, make_span

USAGE = {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2}
OTEL = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.operation.name": "chat"}


def only(attrs: dict[str, Any], name: str = "chat gpt-4o-mini", **kwargs: Any) -> UsageRecord:
    span = make_span(attrs, name=name, trace_id=os.urandom(16), span_id=os.urandom(8), **kwargs)
    result = normalize_request(make_request([span]))
    assert result.rejected == 0, result.errors
    (record,) = result.records
    return record


@pytest.mark.parametrize(
    ("attrs", "source"),
    [
        ({**OTEL, **USAGE, "gen_ai.conversation.id": "conv_1"}, "otel-genai"),
        ({**OTEL, **USAGE, "session.id": "conv_1"}, "otel-genai"),  # Langfuse's and OTel's session
        ({**OTEL, **USAGE, "langfuse.session.id": "conv_1"}, "otel-genai"),
        ({**OTEL, **USAGE, "tokentrail.api": "openai.chat_completions", "gen_ai.conversation.id": "conv_1"},
         "tokentrail"),
        (  # OpenInference: session.id is its session attribute
            {"openinference.span.kind": "LLM", "llm.provider": "openai", "llm.model_name": "gpt-4o-mini",
             "llm.token_count.prompt": 10, "llm.token_count.completion": 2, "session.id": "conv_1"},
            "openinference",
        ),
        (  # OpenInference metadata JSON
            {"openinference.span.kind": "LLM", "llm.provider": "openai", "llm.model_name": "gpt-4o-mini",
             "llm.token_count.prompt": 10, "llm.token_count.completion": 2,
             "metadata": '{"thread_id": "conv_1", "plan": "pro"}'},
            "openinference",
        ),
        (  # Vercel AI SDK: Langfuse's documented sessionId metadata
            {"ai.operationId": "ai.generateText.doGenerate", "ai.model.provider": "openai.chat",
             "ai.model.id": "gpt-4o-mini", "ai.usage.promptTokens": 10, "ai.usage.completionTokens": 2,
             "ai.telemetry.metadata.sessionId": "conv_1", "ai.telemetry.metadata.plan": "pro"},
            "vercel-ai",
        ),
        (  # OpenLLMetry association properties
            {**OTEL, **USAGE, "llm.request.type": "chat",
             "traceloop.association.properties.session_id": "conv_1",
             "traceloop.association.properties.plan": "pro"},
            "openllmetry",
        ),
    ],
    ids=["otel", "session.id", "langfuse", "tokentrail", "openinference", "openinference-metadata", "vercel",
         "openllmetry"],
)
def test_each_dialect_s_conversation_id_is_the_record_s(attrs: dict[str, Any], source: str) -> None:
    record = only(attrs)
    assert (record.source, record.conversation_id) == (source, "conv_1")
    assert not any("conv_1" in tag for tag in record.tags)  # a session id as a tag would be one tag per session
    if any(key.endswith("plan") or key == "metadata" for key in attrs):
        assert "plan:pro" in record.tags  # other metadata still become tags


def test_gen_ai_conversation_id_wins_over_a_session_id() -> None:
    record = only({**OTEL, **USAGE, "session.id": "browser-session", "gen_ai.conversation.id": "conv_1"})
    assert record.conversation_id == "conv_1"


def test_a_call_without_a_conversation_has_none() -> None:
    assert only({**OTEL, **USAGE}).conversation_id is None


def test_a_conversation_id_is_cleaned_like_a_user_id() -> None:
    result = normalize_request(make_request([
        make_span({**OTEL, **USAGE, "gen_ai.conversation.id": "  c\x00onv  "}),
        make_span({**OTEL, **USAGE, "gen_ai.conversation.id": "x" * 300}),
        make_span({**OTEL, **USAGE, "gen_ai.conversation.id": 42}),
        make_span({**OTEL, **USAGE, "gen_ai.conversation.id": "   "}),
    ]))
    assert [r.conversation_id for r in result.records] == ["conv", "x" * 256, "42", None]
    assert result.rejected == 0
    assert any("conversation id truncated from 300 to 256" in w for w in result.warnings)


def test_a_v7_chat_span_inherits_the_session_of_its_runtime_context() -> None:
    trace = os.urandom(16)
    agent = make_span({"gen_ai.operation.name": "invoke_agent", "ai.settings.context.sessionId": "conv_7",
                       "ai.settings.context.userId": "cust_7"}, name="invoke_agent", trace_id=trace,
                      span_id=os.urandom(8))
    chat = make_span({**OTEL, **USAGE}, trace_id=trace, span_id=os.urandom(8), parent_span_id=agent.span_id)
    result = normalize_request(make_request([chat, agent]))
    (record,) = result.records
    assert (record.user_id, record.conversation_id, record.tags) == ("cust_7", "conv_7", [])
