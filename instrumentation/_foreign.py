"""Other instrumentations' spans of the same LLM call: find the one to enrich instead of emitting a second one.

One logical call must give one GenAI span with usage. When the Anthropic SDK's own span, an OpenTelemetry contrib
instrumentation (openai-v2 and everything built on ``opentelemetry-util-genai``), OpenLLMetry, OpenInference or an
agent framework (pydantic-ai) already traces the call, the request reaches our transport hook with that span
current. We stamp our attribution on it, fill in what it lacks, and emit nothing of our own.

Two cases need more than the current span, and a registry of open call spans kept by our span processor:

* an HTTP-level span (``opentelemetry-instrumentation-httpx``) sits between the call span and our hook: the call
  span is its parent, found by id;
* two call-level instrumentations nest (OpenLLMetry's ``openai.chat`` around OpenInference's ``ChatCompletion``):
  the innermost is enriched and the enclosing ones are marked ``tokentrail.duplicate`` so the call counts once;
* an instrumentation starts its call span without making it current (OpenLLMetry's Anthropic ``anthropic.chat``):
  nothing links it to the request, so it is recognised as the request's unlinked twin, an open call span with the
  same parent, provider and model, and marked ``tokentrail.duplicate`` only when it is the one such span (two
  concurrent calls alike leave both unmarked: a wrong mark would lose a call, a missed one is caught by the
  receiver's dedupe on the response id).

Everything here reads SDK span objects duck-typed (``name``, ``kind``, ``attributes``, ``parent``); an API-only
span has none of them and is never taken for a call span.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Final

from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from . import semconv

log = logging.getLogger(__name__)

# Operations of a single model call. Other GenAI spans (invoke_agent, execute_tool, ...) wrap calls; they are
# not the call, so a request made inside one still gets its own call span.
CALL_OPERATIONS: Final = frozenset({"chat", "text_completion", "generate_content", "embeddings", "completion"})
OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
_OPENINFERENCE_CALL_KINDS: Final = frozenset({"LLM", "EMBEDDING"})
_ANTHROPIC_SDK_PREFIX: Final = "anthropic.messages"

# Attribute names that say the same thing: a span that has one of a group lacks none of it.
_EQUIVALENT: Final[dict[str, tuple[str, ...]]] = {
    semconv.GEN_AI_PROVIDER_NAME: (semconv.GEN_AI_PROVIDER_NAME, semconv.GEN_AI_SYSTEM),
    semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: (
        semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
        semconv.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    ),
}
_USAGE_PREFIX: Final = "gen_ai.usage."

# Open call spans by span id, kept by the span processor. Bounded: a span some instrumentation never ends must not
# grow it forever.
MAX_OPEN: Final = 10_000
_open: dict[int, Any] = {}
open_calls: Final = _open  # read-only for other modules: empty (falsy) when no other call span is open


def _looks_like_call(span: Any) -> bool:
    """At start, before most attributes are set: anything that may turn out to be a call span."""
    name = getattr(span, "name", None)
    if isinstance(name, str) and name.startswith(_ANTHROPIC_SDK_PREFIX):
        return True
    attributes = getattr(span, "attributes", None)
    if not attributes:
        return False
    return (
        semconv.GEN_AI_OPERATION_NAME in attributes
        or semconv.GEN_AI_PROVIDER_NAME in attributes
        or semconv.GEN_AI_SYSTEM in attributes
        or OPENINFERENCE_SPAN_KIND in attributes
    )


def started(span: Any) -> None:
    """Called by the span processor for every span that starts."""
    if _looks_like_call(span):
        if len(_open) >= MAX_OPEN:
            _open.pop(next(iter(_open)), None)
        _open[span.context.span_id] = span


def ended(span: Any) -> None:
    """Called by the span processor for every span that ends."""
    if _open:
        _open.pop(span.context.span_id, None)


def clear() -> None:
    _open.clear()


def is_call_span(span: Span) -> bool:
    """Whether ``span`` is some instrumentation's live span of one LLM call, which we enrich, not duplicate."""
    if not span.is_recording():
        return False
    name = getattr(span, "name", None)
    if isinstance(name, str) and name.startswith(_ANTHROPIC_SDK_PREFIX):
        return True
    attributes = getattr(span, "attributes", None)
    if not attributes:
        return False
    openinference_kind = attributes.get(OPENINFERENCE_SPAN_KIND)
    if openinference_kind is not None:
        return openinference_kind in _OPENINFERENCE_CALL_KINDS
    operation = attributes.get(semconv.GEN_AI_OPERATION_NAME)
    if operation is None and semconv.GEN_AI_PROVIDER_NAME not in attributes and semconv.GEN_AI_SYSTEM not in attributes:
        return False
    if getattr(span, "kind", SpanKind.CLIENT) != SpanKind.CLIENT:
        return False
    return operation is None or operation in CALL_OPERATIONS


def _parent_call(span: Any) -> Any | None:
    parent = getattr(span, "parent", None)
    if parent is None:
        return None
    candidate = _open.get(parent.span_id)
    return candidate if candidate is not None and is_call_span(candidate) else None


def call_span_for(current: Span) -> Span | None:
    """The other instrumentation's call span that the request being sent belongs to, if any.

    The current span itself, or, when the current span is an HTTP client span of another instrumentation, its
    parent call span.
    """
    if not current.is_recording():
        return None  # no span, or a non-recording one: neither is a call span nor has one as a parent
    if is_call_span(current):
        return current
    if current.is_recording() and getattr(current, "kind", None) == SpanKind.CLIENT:
        return _parent_call(current)
    return None


def enclosing_calls(span: Any, limit: int = 4) -> Iterator[Any]:
    """Open call spans directly enclosing ``span`` (another instrumentation of the same call), innermost first."""
    for _ in range(limit):
        span = _parent_call(span)
        if span is None:
            return
        yield span


def _provider_of(attributes: Any) -> object:
    return attributes.get(semconv.GEN_AI_PROVIDER_NAME) or attributes.get(semconv.GEN_AI_SYSTEM)


def unlinked_twin(parent: Any, exclude: Any, provider: str, model: object) -> Any | None:
    """The one open call span, other than ``exclude``, started under ``parent`` (a span context, or None for a
    root) for the same provider and model and not yet marked; None when there is none or more than one."""
    if not _open:
        return None
    parent_id = parent.span_id if parent is not None and parent.is_valid else None
    found = None
    for span in list(_open.values()):
        if span is exclude or not span.is_recording():
            continue
        span_parent = getattr(span, "parent", None)
        if (span_parent.span_id if span_parent is not None else None) != parent_id:
            continue
        attributes = getattr(span, "attributes", None) or {}
        if attributes.get(semconv.TOKENTRAIL_DUPLICATE) or semconv.TOKENTRAIL_API in attributes:
            continue
        if _provider_of(attributes) != provider or attributes.get(semconv.GEN_AI_REQUEST_MODEL) != model:
            continue
        if found is not None:
            return None  # ambiguous
        found = span
    return found


def missing(span: Any, attributes: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
    """The part of ``attributes`` that ``span`` does not already state (under any equivalent name).

    ``tokentrail.usage.missing`` is dropped when the span has any token count: its instrumentation found usage
    somewhere we did not.
    """
    existing = getattr(span, "attributes", None) or {}
    lacking: dict[str, AttributeValue] = {}
    for name, value in attributes.items():
        if any(alias in existing for alias in _EQUIVALENT.get(name, (name,))):
            continue
        lacking[name] = value
    if semconv.TOKENTRAIL_USAGE_MISSING in lacking and any(key.startswith(_USAGE_PREFIX) for key in existing):
        del lacking[semconv.TOKENTRAIL_USAGE_MISSING]
    return lacking
