"""Span attributes, built in one place from the facts the other modules gather.

Every name comes from ``semconv``; this module decides which facts become which attributes, and is the only
place that needs to change when the conventions move.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from . import semconv
from ._context import Attribution
from ._usage import ResponseFacts

# Operations of a single model call. Other GenAI spans (invoke_agent, execute_tool, ...) wrap calls; they are
# not the call, so a request made inside one still gets its own call span.
_CALL_OPERATIONS: Final = frozenset({"chat", "text_completion", "generate_content"})


def attribution_attributes(
    attribution: Attribution, credential_type: str | None, credential_id: str | None
) -> dict[str, AttributeValue]:
    """The ``user.id`` / ``tokentrail.*`` attribution attributes. Absent values set nothing."""
    attributes: dict[str, AttributeValue] = {}
    if attribution.user is not None:
        attributes[semconv.USER_ID] = attribution.user
    if attribution.tags:
        attributes[semconv.TOKENTRAIL_TAGS] = list(attribution.tags)
    if credential_type is not None:
        attributes[semconv.TOKENTRAIL_CREDENTIAL_TYPE] = credential_type
    if credential_id is not None:
        attributes[semconv.TOKENTRAIL_CREDENTIAL_ID] = credential_id
    if attribution.dropped:
        attributes[semconv.TOKENTRAIL_ATTRIBUTION_DROPPED] = attribution.dropped
    return attributes


def response_attributes(facts: ResponseFacts) -> dict[str, AttributeValue]:
    """Response id, model, finish reasons and usage. A count the response did not carry sets nothing."""
    attributes: dict[str, AttributeValue] = {}
    if facts.response_id is not None:
        attributes[semconv.GEN_AI_RESPONSE_ID] = facts.response_id
    if facts.response_model is not None:
        attributes[semconv.GEN_AI_RESPONSE_MODEL] = facts.response_model
    if facts.finish_reasons:
        attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = [
            facts.finish_reasons[index] for index in sorted(facts.finish_reasons)
        ]
    usage = facts.usage
    if usage is None:
        attributes[semconv.TOKENTRAIL_USAGE_MISSING] = True
        return attributes
    for name, value in (
        (semconv.GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens),
        (semconv.GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens),
        (semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, usage.cache_read_input_tokens),
        (semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, usage.cache_creation_input_tokens),
        (semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, usage.reasoning_output_tokens),
    ):
        if value is not None:
            attributes[name] = value
    return attributes


def is_genai_call_span(span: Span) -> bool:
    """Whether ``span`` is already some instrumentation's span of one LLM call, which we enrich, not duplicate.

    The SDK's spans are read through the SDK ``ReadableSpan`` attributes (``name``, ``kind``, ``attributes``);
    an API-only span has none of them and is never taken for a call span.
    """
    if not span.is_recording():
        return False
    name = getattr(span, "name", None)
    if isinstance(name, str) and name.startswith("anthropic.messages"):
        return True
    attributes = getattr(span, "attributes", None)
    if not attributes:
        return False
    if semconv.GEN_AI_PROVIDER_NAME not in attributes and semconv.GEN_AI_SYSTEM not in attributes:
        return False
    if getattr(span, "kind", SpanKind.CLIENT) != SpanKind.CLIENT:
        return False
    operation = attributes.get(semconv.GEN_AI_OPERATION_NAME)
    return operation is None or operation in _CALL_OPERATIONS


def has_genai_attributes(span: Span) -> bool:
    """Whether ``span`` describes GenAI work at all (any provider/system/operation attribute)."""
    attributes = getattr(span, "attributes", None)
    if not attributes:
        return False
    return (
        semconv.GEN_AI_PROVIDER_NAME in attributes
        or semconv.GEN_AI_SYSTEM in attributes
        or semconv.GEN_AI_OPERATION_NAME in attributes
    )
