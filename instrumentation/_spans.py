"""Span attributes, built in one place from the facts the other modules gather.

Every name comes from ``semconv``; this module decides which facts become which attributes, and is the only
place that needs to change when the conventions move.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from . import semconv
from ._context import EMPTY, Attribution

__all__ = [
    "attribution_attributes",
    "credential_attributes",
    "endpoint_attributes",
    "has_genai_attributes",
    "request_attributes",
    "response_attributes",
]

if TYPE_CHECKING:  # named in hints only: `import tokentrail.instrumentation` (the span processor) needs neither
    from ._endpoints import Endpoint
    from ._usage import ResponseFacts, Usage


def attribution_attributes(
    attribution: Attribution,
    credential_type: str | None,
    credential_id: str | None,
    credential_name: str | None = None,
    into: dict[str, AttributeValue] | None = None,
) -> dict[str, AttributeValue]:
    """The ``user.id`` / ``tokentrail.*`` attribution attributes, added to ``into`` when given (a call's start
    attributes: one dict, no merge). Absent values set nothing."""
    attributes: dict[str, AttributeValue] = {} if into is None else into
    if attribution.user is not None:
        attributes[semconv.USER_ID] = attribution.user
    if attribution.tags:
        attributes[semconv.TOKENTRAIL_TAGS] = attribution.tags  # a tuple of str, as the SDK keeps it
    if attribution.conversation is not None:
        attributes[semconv.GEN_AI_CONVERSATION_ID] = attribution.conversation
    if credential_type is not None:
        attributes[semconv.TOKENTRAIL_CREDENTIAL_TYPE] = credential_type
    if credential_id is not None:
        attributes[semconv.TOKENTRAIL_CREDENTIAL_ID] = credential_id
    if credential_name is not None:
        attributes[semconv.TOKENTRAIL_CREDENTIAL_NAME] = credential_name
    if attribution.dropped:
        attributes[semconv.TOKENTRAIL_ATTRIBUTION_DROPPED] = attribution.dropped
    return attributes


def credential_attributes(
    credential_type: str | None,
    credential_id: str | None,
    credential_name: str | None = None,
    into: dict[str, AttributeValue] | None = None,
) -> dict[str, AttributeValue]:
    """The ``tokentrail.credential.*`` attributes alone, for a credential learnt after the call's span has started
    (botocore signs each Bedrock attempt after the span starts). Built by ``attribution_attributes``, so the rules
    stay in one place while the httpx path, which knows its credential at the start, keeps its single call."""
    return attribution_attributes(EMPTY, credential_type, credential_id, credential_name, into)


# The attributes the GenAI conventions ask to be given when a call span starts (samplers may read them); the
# request's model, the last of them, comes from the body.
_AT_START: Final = (
    semconv.GEN_AI_OPERATION_NAME,
    semconv.GEN_AI_PROVIDER_NAME,
    semconv.SERVER_ADDRESS,
    semconv.SERVER_PORT,
)


def endpoint_attributes(endpoint: Endpoint) -> tuple[dict[str, AttributeValue], dict[str, AttributeValue]]:
    """The attributes every call of ours to ``endpoint`` carries, whatever its body, in two parts: those given at
    the span's start (operation, provider, server) and the others (API, Azure's deployment and api-version), set
    with the response's when the call ends. Computed once per endpoint (see ``EndpointCache``)."""
    attributes = request_attributes(endpoint, None, False)
    del attributes[semconv.GEN_AI_REQUEST_STREAM]  # the body's
    attributes[semconv.TOKENTRAIL_API] = endpoint.api
    at_start = {name: attributes.pop(name) for name in _AT_START}
    return at_start, attributes


def request_attributes(
    endpoint: Endpoint, model: str | None, stream: bool
) -> dict[str, AttributeValue]:
    """The attributes known before the response: operation, provider, server, requested model, streaming."""
    attributes: dict[str, AttributeValue] = {
        semconv.GEN_AI_OPERATION_NAME: endpoint.operation,
        semconv.GEN_AI_PROVIDER_NAME: endpoint.provider,
        semconv.GEN_AI_REQUEST_STREAM: stream,
        semconv.SERVER_ADDRESS: endpoint.server_address,
        semconv.SERVER_PORT: endpoint.server_port,
    }
    if model:
        attributes[semconv.GEN_AI_REQUEST_MODEL] = model
    if endpoint.deployment is not None:
        attributes[semconv.TOKENTRAIL_AZURE_DEPLOYMENT] = endpoint.deployment
    if endpoint.api_version is not None:
        attributes[semconv.TOKENTRAIL_AZURE_API_VERSION] = endpoint.api_version
    return attributes


def response_attributes(
    facts: ResponseFacts, into: dict[str, AttributeValue] | None = None
) -> dict[str, AttributeValue]:
    """Response id, model, finish reasons, service tier and usage, added to ``into`` when given (our span's request
    attributes: one dict, no merge). A count the response did not carry sets nothing."""
    attributes: dict[str, AttributeValue] = {} if into is None else into
    if facts.response_id is not None:
        attributes[semconv.GEN_AI_RESPONSE_ID] = facts.response_id
    if facts.response_model is not None:
        attributes[semconv.GEN_AI_RESPONSE_MODEL] = facts.response_model
    reasons = facts.finish_reasons
    if reasons:
        attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = _in_order(reasons)
    if facts.service_tier is not None:
        attributes[semconv.TOKENTRAIL_SERVICE_TIER] = facts.service_tier.lower()
    usage = facts.usage
    if usage is None:
        attributes[semconv.TOKENTRAIL_USAGE_MISSING] = True
    else:
        _usage_into(attributes, usage)
    return attributes


def _in_order(reasons: dict[int, str]) -> tuple[str, ...]:
    """The finish reasons by choice index."""
    return tuple(reasons.values()) if len(reasons) == 1 else tuple([reasons[index] for index in sorted(reasons)])


def _usage_into(attributes: dict[str, AttributeValue], usage: Usage) -> None:
    """The token counts of ``usage`` into ``attributes``; a count the response did not carry sets nothing."""
    input_tokens, output_tokens, cache_read, cache_creation, reasoning, by_ttl, input_audio, output_audio = usage
    if input_tokens is not None:
        attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
    if output_tokens is not None:
        attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
    if cache_read is not None:
        attributes[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = cache_read
    if cache_creation is not None:
        attributes[semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = cache_creation
    if reasoning is not None:
        attributes[semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = reasoning
    if input_audio is not None:
        attributes[semconv.TOKENTRAIL_INPUT_AUDIO_TOKENS] = input_audio
    if output_audio is not None:
        attributes[semconv.TOKENTRAIL_OUTPUT_AUDIO_TOKENS] = output_audio
    if by_ttl:
        for ttl, value in by_ttl.items():
            name = semconv.CACHE_CREATION_BY_TTL.get(ttl)
            if name is not None:
                attributes[name] = value


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
