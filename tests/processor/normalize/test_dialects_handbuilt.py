"""Dialects whose libraries cannot run here, built by hand from their documented attribute names: the Vercel AI
SDK (JavaScript; legacy ``ai.*`` spans of every generation and v7 GenAI spans), and older names of OpenLLMetry, the
OTel conventions and pydantic-ai that the installed versions no longer write."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from tokentrail.processor.normalize.reader import DIALECTS, normalize_request
from tokentrail.processor.schema import UsageRecord

from tests.helpers.golden import TEMPLATES
from tests.helpers.otlp import make_request, make_span


def records(*spans):  # noqa: ANN002, ANN201
    result = normalize_request(make_request(list(spans)))
    assert result.rejected == 0, result.errors
    return result


def only(*spans) -> UsageRecord:  # noqa: ANN002
    (record,) = records(*spans).records
    return record


def span(name: str, attrs: dict, **kwargs: Any):  # noqa: ANN201
    return make_span(attrs, name=name, trace_id=os.urandom(16), span_id=os.urandom(8), **kwargs)


# -- Vercel AI SDK, legacy spans ---------------------------------------------------------------------------------

VERCEL_BASE = {
    "ai.model.provider": "openai.chat",
    "ai.model.id": "gpt-4o-mini",
    "ai.telemetry.functionId": "support-reply",
    "ai.telemetry.metadata.userId": "cust_v",
    "ai.telemetry.metadata.plan": "pro",
    "ai.telemetry.metadata.tags": ["feature:support"],
}


def vercel_outer(operation: str, **usage: object):  # noqa: ANN201
    return span(operation, {**VERCEL_BASE, "ai.operationId": operation, "operation.name": operation, **usage})


def vercel_call(operation: str, **attrs: object):  # noqa: ANN201
    return span(
        operation,
        {
            **VERCEL_BASE,
            "ai.operationId": operation,
            "operation.name": f"{operation} support-reply",
            "gen_ai.system": VERCEL_BASE["ai.model.provider"],
            "gen_ai.request.model": "gpt-4o-mini",
            **attrs,
        },
    )


def test_vercel_v4_promptTokens_generation_and_the_outer_span_is_never_counted() -> None:
    step = vercel_call(
        "ai.generateText.doGenerate",
        **{
            "ai.usage.promptTokens": 1200,
            "ai.usage.completionTokens": 80,
            "gen_ai.usage.prompt_tokens": 1200,
            "gen_ai.usage.completion_tokens": 80,
            "ai.response.id": "chatcmpl-v4",
            "ai.response.model": "gpt-4o-mini-2024-07-18",
        },
    )
    outer = vercel_outer("ai.generateText", **{"ai.usage.promptTokens": 1200, "ai.usage.completionTokens": 80})
    tool = span("ai.toolCall", {"ai.operationId": "ai.toolCall", "ai.toolCall.name": "lookup"})
    result = records(outer, step, tool)
    (record,) = result.records
    assert result.skipped == 2
    assert record.source == "vercel-ai"
    assert (record.provider, record.model, record.request_model) == ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini")
    assert (record.input_tokens, record.output_tokens) == (1200, 80)
    assert (record.response_id, record.operation, record.streamed) == ("chatcmpl-v4", "chat", False)
    assert record.user_id == "cust_v"
    assert sorted(record.tags) == ["feature:support", "plan:pro"]


def test_vercel_v5_inputTokens_generation_with_cache_and_reasoning_streamed() -> None:
    record = only(
        vercel_outer("ai.streamText", **{"ai.usage.inputTokens": 5000, "ai.usage.outputTokens": 900}),
        vercel_call(
            "ai.streamText.doStream",
            **{
                "ai.usage.inputTokens": 5000,
                "ai.usage.outputTokens": 900,
                "ai.usage.totalTokens": 5900,
                "ai.usage.cachedInputTokens": 4096,
                "ai.usage.reasoningTokens": 512,
                "ai.response.id": "resp_v5",
            },
        ),
    )
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens, record.reasoning_tokens) == (
        5000,
        4096,
        900,
        512,
    )
    assert record.streamed is True


def test_vercel_v6_input_token_details_are_an_inclusive_total_even_for_anthropic() -> None:
    record = only(
        vercel_call(
            "ai.generateText.doGenerate",
            **{
                "ai.model.provider": "anthropic.messages",
                "gen_ai.system": "anthropic.messages",
                "ai.model.id": "claude-sonnet-4-5",
                "ai.usage.inputTokens": 2100,
                "ai.usage.inputTokenDetails.noCacheTokens": 100,
                "ai.usage.inputTokenDetails.cacheReadTokens": 1500,
                "ai.usage.inputTokenDetails.cacheWriteTokens": 500,
                "ai.usage.outputTokens": 40,
                "ai.usage.outputTokenDetails.reasoningTokens": 10,
            },
        )
    )
    assert record.provider == "anthropic"
    assert (record.input_tokens, record.cached_input_tokens, record.cache_creation_input_tokens) == (2100, 1500, 500)
    assert (record.output_tokens, record.reasoning_tokens) == (40, 10)


def test_vercel_v4_anthropic_input_excludes_the_cache_which_is_added_from_provider_metadata() -> None:
    record = only(
        vercel_call(
            "ai.generateText.doGenerate",
            **{
                "ai.model.provider": "anthropic.messages",
                "ai.model.id": "claude-3-5-sonnet-latest",
                "ai.usage.promptTokens": 100,
                "ai.usage.completionTokens": 20,
                "ai.response.providerMetadata": json.dumps(
                    {"anthropic": {"cacheCreationInputTokens": 500, "cacheReadInputTokens": 1500}}
                ),
            },
        )
    )
    assert (record.input_tokens, record.cached_input_tokens, record.cache_creation_input_tokens) == (2100, 1500, 500)


def test_vercel_v5_anthropic_raw_usage_in_provider_metadata_is_exact() -> None:
    raw = {"input_tokens": 100, "cache_read_input_tokens": 1500, "cache_creation_input_tokens": 500, "output_tokens": 20}
    record = only(
        vercel_call(
            "ai.generateText.doGenerate",
            **{
                "ai.model.provider": "anthropic.messages",
                "ai.model.id": "claude-sonnet-4-5",
                "ai.usage.inputTokens": 100,
                "ai.usage.cachedInputTokens": 1500,
                "ai.usage.outputTokens": 20,
                "ai.response.providerMetadata": json.dumps({"anthropic": {"usage": raw}}),
            },
        )
    )
    assert (record.input_tokens, record.cached_input_tokens, record.cache_creation_input_tokens) == (2100, 1500, 500)


def test_vercel_embeddings_count_the_doEmbed_call_not_the_embed_total() -> None:
    outer = vercel_outer("ai.embedMany", **{"ai.usage.tokens": 300, "ai.model.id": "text-embedding-3-small"})
    calls = [
        vercel_call("ai.embedMany.doEmbed", **{"ai.usage.tokens": 100, "ai.model.id": "text-embedding-3-small"})
        for _ in range(3)
    ]
    result = records(outer, *calls)
    assert [(r.operation, r.input_tokens, r.output_tokens) for r in result.records] == [("embeddings", 100, 0)] * 3


def test_vercel_provider_spellings_map_to_catalog_ids() -> None:
    for given, expected in [
        ("azure-openai.chat", "azure"),
        ("google.generative-ai", "google"),
        ("amazon-bedrock", "aws"),
        ("xai.chat", "x-ai"),
        ("mistral.chat", "mistral"),
        ("groq.chat", "groq"),
    ]:
        record = only(vercel_call("ai.generateText.doGenerate", **{"ai.model.provider": given, "ai.usage.inputTokens": 1}))
        assert record.provider == expected, given


# -- Vercel AI SDK v7 (@ai-sdk/otel GenAI spans) -----------------------------------------------------------------


def test_vercel_v7_chat_spans_count_and_the_invoke_agent_root_does_not() -> None:
    root = span(
        "invoke_agent gpt-4o",
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 3000,
            "gen_ai.usage.output_tokens": 300,
        },
    )
    step = span("step 1", {"gen_ai.operation.name": "agent_step"})
    chats = [
        span(
            "chat gpt-4o",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.id": f"chatcmpl-{i}",
                "gen_ai.usage.input_tokens": 1500,
                "gen_ai.usage.output_tokens": 150,
                "gen_ai.usage.cache_read.input_tokens": 1024,
            },
        )
        for i in range(2)
    ]
    result = records(root, step, *chats)
    assert [(r.source, r.input_tokens, r.cached_input_tokens) for r in result.records] == [("otel-genai", 1500, 1024)] * 2
    assert result.skipped == 2


def test_vercel_v7_embeddings_root_over_its_calls_is_not_counted() -> None:
    attrs = {"gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai", "gen_ai.request.model": "text-embedding-3-small"}
    root = span("embeddings text-embedding-3-small", {**attrs, "gen_ai.usage.input_tokens": 200})
    children = [
        make_span(
            {**attrs, "gen_ai.usage.input_tokens": 100},
            name="embeddings text-embedding-3-small",
            trace_id=root.trace_id,
            span_id=os.urandom(8),
        )
        for _ in range(2)
    ]
    for child in children:
        child.parent_span_id = root.span_id
    result = records(*children, root)
    assert sorted(r.span_id for r in result.records) == sorted(c.span_id.hex() for c in children)


# -- older names of other libraries ------------------------------------------------------------------------------


def test_openllmetry_legacy_names_with_total_deriving_the_output() -> None:
    record = only(
        span(
            "anthropic.chat",
            {
                "gen_ai.system": "Anthropic",
                "llm.request.type": "chat",
                "gen_ai.request.model": "claude-3-haiku-20240307",
                "gen_ai.usage.prompt_tokens": 2100,
                "llm.usage.total_tokens": 2150,
                "gen_ai.usage.cache_read_input_tokens": 1500,
                "gen_ai.usage.cache_creation_input_tokens": 500,
                "traceloop.association.properties.user_id": "cust_t",
                "traceloop.association.properties.chat_id": "c9",
                "llm.is_streaming": True,
            },
        )
    )
    assert (record.source, record.provider, record.operation) == ("openllmetry", "anthropic", "chat")
    assert (record.input_tokens, record.output_tokens) == (2100, 50)
    assert (record.cached_input_tokens, record.cache_creation_input_tokens) == (1500, 500)
    assert (record.user_id, record.tags, record.streamed) == ("cust_t", ["chat_id:c9"], True)


def test_openllmetry_workflow_spans_are_not_calls() -> None:
    wf = span("joke.workflow", {"traceloop.span.kind": "workflow", "traceloop.workflow.name": "joke"})
    assert records(wf).records == []


def test_otel_semconv_1_26_prompt_and_completion_token_names() -> None:
    record = only(
        span(
            "chat gpt-4",
            {
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4",
                "gen_ai.usage.prompt_tokens": 10,
                "gen_ai.usage.completion_tokens": 3,
            },
        )
    )
    assert (record.source, record.input_tokens, record.output_tokens) == ("otel-genai", 10, 3)


def test_modality_splits_are_parts_of_the_total_and_never_added() -> None:
    record = only(
        span(
            "chat gpt-4o",
            {
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.text.input_tokens": 60,
                "gen_ai.usage.image.input_tokens": 40,
                "gen_ai.usage.output_tokens": 5,
            },
        )
    )
    assert record.input_tokens == 100


def test_pydantic_ai_older_agent_run_span_with_plain_usage_is_not_counted() -> None:
    run = span(
        "agent run",
        {
            "agent_name": "support",
            "model_name": "gpt-4o",
            "logfire.msg": "support run",
            "gen_ai.usage.input_tokens": 999,
            "gen_ai.usage.output_tokens": 99,
        },
    )
    result = records(run)
    assert (result.records, result.skipped, result.rejected) == ([], 1, 0)


def test_openinference_chain_and_agent_spans_are_not_calls() -> None:
    chain = span("RunnableSequence", {"openinference.span.kind": "CHAIN", "llm.token_count.prompt": 500})
    agent = span("Agent", {"openinference.span.kind": "AGENT", "llm.token_count.total": 900})
    assert records(chain, agent).records == []


def test_an_enclosing_span_marked_duplicate_by_our_instrumentation_is_not_counted() -> None:
    outer = span(
        "chat gpt-4o",
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 10,
            "tokentrail.duplicate": True,
        },
    )
    assert records(outer).records == []


def test_reasoning_beyond_the_output_is_capped_to_it_with_a_warning() -> None:
    base = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}
    result = records(span("chat", {**base, "gen_ai.usage.output_tokens": 5, "gen_ai.usage.reasoning.output_tokens": 50}))
    (record,) = result.records
    assert (record.output_tokens, record.reasoning_tokens) == (5, 5)
    assert result.dropped_fields == 1 and "capped" in result.warnings[0]


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        # Anthropic's exclusive count sent under the conventions' inclusive name: 100 uncached + 500 read.
        ({"gen_ai.usage.input_tokens": 100, "gen_ai.usage.cache_read.input_tokens": 500}, (600, 500, 0)),
        (
            {
                "gen_ai.usage.input_tokens": 40,
                "gen_ai.usage.cache_read.input_tokens": 30,
                "gen_ai.usage.cache_creation.input_tokens": 20,
            },
            (90, 30, 20),
        ),
    ],
)
def test_cached_input_beyond_the_input_means_an_exclusive_input_count_never_capped(
    attrs: dict, expected: tuple
) -> None:
    base = {"gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-sonnet-4-5"}
    result = records(span("chat", {**base, **attrs, "gen_ai.usage.output_tokens": 7}))
    (record,) = result.records
    assert (record.input_tokens, record.cached_input_tokens, record.cache_creation_input_tokens) == expected
    assert record.output_tokens == 7
    # Recorded that it was done: a warning in the export's partial success.
    assert result.warnings and "exclusive of the cache" in result.warnings[0]


def test_cached_input_within_the_input_is_left_inclusive_without_a_warning() -> None:
    attrs = {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 500,
        "gen_ai.usage.cache_read.input_tokens": 500,
        "gen_ai.usage.output_tokens": 3,
    }
    result = records(span("chat", attrs))
    (record,) = result.records
    assert (record.input_tokens, record.cached_input_tokens) == (500, 500)
    assert result.warnings == []


def test_input_cached_tokens_is_the_cached_part_of_the_input() -> None:
    record = only(
        span(
            "chat gpt-4o",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.input_cached_tokens": 800,
                "gen_ai.usage.output_tokens": 10,
            },
        )
    )
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens) == (1000, 800, 10)


def test_vercel_v5_google_output_without_thinking_tokens_is_completed_from_the_total() -> None:
    """AI SDK v5's Google provider: outputTokens = candidates only; totalTokens also counts the thoughts."""
    usage = {
        "ai.usage.inputTokens": 1500,
        "ai.usage.outputTokens": 694,
        "ai.usage.reasoningTokens": 634,
        "ai.usage.totalTokens": 1500 + 694 + 634,
    }
    record = only(vercel_call("ai.generateText.doGenerate", **{**usage, "ai.model.provider": "google.generative-ai"}))
    assert (record.provider, record.output_tokens, record.reasoning_tokens) == ("google", 694 + 634, 634)


def test_vercel_v6_output_with_thinking_tokens_inside_is_left_as_it_is() -> None:
    usage = {
        "ai.usage.inputTokens": 1500,
        "ai.usage.outputTokens": 694 + 634,
        "ai.usage.outputTokenDetails.reasoningTokens": 634,
        "ai.usage.totalTokens": 1500 + 694 + 634,
    }
    record = only(vercel_call("ai.generateText.doGenerate", **{**usage, "ai.model.provider": "google.generative-ai"}))
    assert (record.output_tokens, record.reasoning_tokens) == (694 + 634, 634)


# -- calls whose usage never came: counted as no_usage, in every dialect ------------------------------------------

_NO_USAGE_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    # openai-v2 (both modes) streaming a Chat Completion without stream_options.include_usage.
    "otel-genai": (
        "chat gpt-4o-mini",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.response.id": "chatcmpl-nousage",
            "gen_ai.response.finish_reasons": ["stop"],
        },
    ),
    "openllmetry": (
        "openai.chat",
        {
            "llm.request.type": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "llm.is_streaming": True,
            "traceloop.association.properties.user_id": "cust_ll",
        },
    ),
    "vercel-ai": (
        "ai.streamText.doStream",
        {**VERCEL_BASE, "ai.operationId": "ai.streamText.doStream", "ai.response.model": "gpt-4o-mini"},
    ),
    "openinference": (
        "ChatCompletion",
        {"openinference.span.kind": "LLM", "llm.provider": "openai", "llm.model_name": "gpt-4o-mini"},
    ),
    "pydantic-ai": (
        "chat gpt-4o-mini",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "model_request_parameters": "{}",
            "logfire.msg": "chat gpt-4o-mini",
        },
    ),
}


@pytest.mark.parametrize("source", sorted(_NO_USAGE_CALLS))
def test_a_call_without_usage_is_a_no_usage_record_in_every_dialect(source: str) -> None:
    name, attrs = _NO_USAGE_CALLS[source]
    record = only(span(name, attrs))
    assert (record.source, record.provider, record.price_status) == (source, "openai", "no_usage")
    assert record.total_cost is None and record.market_cost is None
    assert (record.input_tokens, record.output_tokens) == (0, 0)


@pytest.mark.parametrize(
    ("name", "attrs"),
    [
        # An agent, a tool, a workflow: not calls, with or without usage.
        ("invoke_agent support", {"gen_ai.operation.name": "invoke_agent", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}),
        ("execute_tool lookup", {"gen_ai.operation.name": "execute_tool", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}),
        ("retrieve", {"gen_ai.operation.name": "retrieval", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}),
        ("workflow", {"traceloop.span.kind": "workflow", "llm.request.type": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}),
        ("ai.streamText", {**VERCEL_BASE, "ai.operationId": "ai.streamText"}),
        ("ai.toolCall", {"ai.operationId": "ai.toolCall", "ai.toolCall.name": "lookup"}),
        ("Chain", {"openinference.span.kind": "CHAIN", "llm.provider": "openai", "llm.model_name": "gpt-4o"}),
        ("Retriever", {"openinference.span.kind": "RETRIEVER"}),
        # Saying it is a chat, but naming no model or no provider: nothing to price, not taken for a call.
        ("chat", {"gen_ai.operation.name": "chat", "gen_ai.system": "openai"}),
        ("chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}),
        # An HTTP span.
        ("POST", {"http.request.method": "POST", "server.address": "api.openai.com"}),
    ],
)
def test_spans_that_are_not_calls_stay_skipped_without_usage(name: str, attrs: dict[str, Any]) -> None:
    result = records(span(name, attrs))
    assert (result.records, result.skipped) == ([], 1)


def test_each_dialects_realistic_span_is_one_record_and_an_embeddings_root_over_its_calls_is_not() -> None:
    """(Moved from the former equivalence test, which also compared these with the reference normalizer.)"""
    spans = [span(name, attrs) for name, attrs in TEMPLATES.values()]
    embedding = {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "text-embedding-3-small",
    }
    parent = span("embeddings", {**embedding, "gen_ai.usage.input_tokens": 30})
    children = [span("embeddings", {**embedding, "gen_ai.usage.input_tokens": 15}) for _ in range(2)]
    for child in children:
        child.parent_span_id = parent.span_id
    result = records(*spans, parent, *children)
    assert len(result.records) == len(TEMPLATES) + 2
    assert {r.source for r in result.records} == {d.source for d in DIALECTS}
    assert parent.span_id.hex() not in {r.span_id for r in result.records}


# -- attribution as metadata, and from ancestors ------------------------------------------------------------------


def test_metadata_can_state_the_credential_type_and_it_is_not_a_tag() -> None:
    record = only(
        vercel_call(
            "ai.generateText.doGenerate",
            **{"ai.usage.inputTokens": 10, "ai.usage.outputTokens": 2, "ai.telemetry.metadata.credential": "byok"},
        )
    )
    assert record.credential_type == "byok"
    assert not any(tag.startswith("credential") for tag in record.tags)


def _v7_tree(context: dict[str, Any], *, chat_attrs: dict[str, Any] | None = None):  # noqa: ANN202
    """An ``invoke_agent`` > ``step`` > ``chat`` tree as the AI SDK v7 OpenTelemetry integration writes it."""
    trace_id = os.urandom(16)
    agent = make_span(
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
         "gen_ai.usage.input_tokens": 40, "gen_ai.usage.output_tokens": 16, **context},
        name="invoke_agent gpt-4o", trace_id=trace_id, span_id=os.urandom(8),
    )  # fmt: skip
    step = make_span(
        {"gen_ai.operation.name": "agent_step", **context},
        name="step 1", trace_id=trace_id, span_id=os.urandom(8), parent_span_id=agent.span_id,
    )  # fmt: skip
    chat = make_span(
        {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
         "gen_ai.usage.input_tokens": 40, "gen_ai.usage.output_tokens": 16, **(chat_attrs or {})},
        name="chat gpt-4o", trace_id=trace_id, span_id=os.urandom(8), parent_span_id=step.span_id,
    )  # fmt: skip
    return agent, step, chat


def test_a_v7_chat_span_inherits_the_runtime_context_of_its_ancestors_in_the_same_export() -> None:
    context = {
        "ai.settings.context.userId": "cust_7",
        "ai.settings.context.tags": ["plan:pro"],
        "ai.settings.context.credential": "byok",
    }
    agent, step, chat = _v7_tree(context)
    result = records(chat, step, agent)  # the order spans end in: the call first
    (record,) = result.records  # the invoke_agent span's totals are never counted
    assert (record.user_id, record.tags, record.credential_type) == ("cust_7", ["plan:pro"], "byok")


def test_attribution_on_the_call_span_itself_wins_over_its_ancestors() -> None:
    agent, step, chat = _v7_tree(
        {"ai.settings.context.userId": "outer"}, chat_attrs={"user.id": "inner", "tokentrail.credential.type": "system"}
    )
    (record,) = records(agent, step, chat).records
    assert (record.user_id, record.credential_type) == ("inner", "system")


def test_ancestors_missing_from_the_export_or_in_a_cycle_leave_the_record_unattributed() -> None:
    agent, step, chat = _v7_tree({"ai.settings.context.userId": "cust_7"})
    (alone,) = records(chat).records
    assert (alone.user_id, alone.tags) == (None, [])
    _, bare_step, bare_chat = _v7_tree({})
    bare_step.parent_span_id = bare_chat.span_id  # forged ids: chat > step > chat ...
    (cyclic,) = records(bare_chat, bare_step).records
    assert cyclic.user_id is None
