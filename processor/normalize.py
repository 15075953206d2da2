"""Every GenAI span dialect becomes one ``UsageRecord``.

Each dialect is a small table (``Dialect``) naming where it keeps each fact; the code that reads spans is shared.
A span is read once: only the attribute keys some dialect names are kept, so a span that is not about an LLM call
costs one pass of set lookups and no conversions. One bad span is rejected with a message and counted; the rest of
its batch is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tokentrail.instrumentation import semconv as sc

from .otlp import (
    STATUS_CODE_ERROR,
    NotAnInteger,
    as_bool,
    as_int,
    as_str,
    as_str_list,
    nanos_to_datetime,
    pick_attributes,
    resource_service_environment,
)
from .pricing import USAGE_MISSING, canonical_provider
from .schema import UNPRICED, UsageRecord

__all__ = [
    "ANTHROPIC_SDK",
    "DIALECTS",
    "MAX_TOKENS",
    "OTEL_GENAI",
    "TOKENTRAIL",
    "Dialect",
    "NormalizeResult",
    "SpanRejected",
    "normalize_request",
    "normalize_span",
]

log = logging.getLogger(__name__)

MAX_TOKENS: Final = 1_000_000_000  # above this a count is a bug or an attack, not a call
MAX_ERRORS: Final = 20
DEFAULT_CREDENTIAL_TYPE: Final = "system"  # a key the service was configured with  # messages kept per request; every rejection is still counted

# Aggregating spans repeat the totals of the calls under them: counting them would bill twice.
AGGREGATE_OPERATIONS: Final = frozenset({"invoke_agent", "create_agent", "execute_tool", "invoke_workflow"})
ANTHROPIC_MESSAGES_CREATE: Final = "anthropic.messages.create"


@dataclass(frozen=True, slots=True)
class Dialect:
    """Where one instrumentation keeps each fact. Keys in a tuple are tried in order; the first present wins."""

    source: str
    provider: tuple[str, ...] = (sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_SYSTEM)
    response_model: tuple[str, ...] = (sc.GEN_AI_RESPONSE_MODEL,)
    request_model: tuple[str, ...] = (sc.GEN_AI_REQUEST_MODEL,)
    input_tokens: tuple[str, ...] = (sc.GEN_AI_USAGE_INPUT_TOKENS,)
    output_tokens: tuple[str, ...] = (sc.GEN_AI_USAGE_OUTPUT_TOKENS,)
    cache_read: tuple[str, ...] = (sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,)
    cache_write: tuple[str, ...] = (
        sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
        sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    )
    reasoning: tuple[str, ...] = (sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,)
    # Counts billed on top of the main usage (not overlapping it), summed in.
    extra_input: tuple[str, ...] = ()
    extra_output: tuple[str, ...] = ()
    # False for dialects whose input count excludes cache reads and writes (the Anthropic API's own convention).
    input_includes_cache: bool = True
    default_api: str | None = None
    default_provider: str | None = None

    def keys(self) -> frozenset[str]:
        return frozenset(
            (
                *self.provider,
                *self.response_model,
                *self.request_model,
                *self.input_tokens,
                *self.output_tokens,
                *self.cache_read,
                *self.cache_write,
                *self.reasoning,
                *self.extra_input,
                *self.extra_output,
            )
        )

    def usage_keys(self) -> frozenset[str]:
        return frozenset(
            (
                *self.input_tokens,
                *self.output_tokens,
                *self.cache_read,
                *self.cache_write,
                *self.reasoning,
                *self.extra_input,
                *self.extra_output,
            )
        )


# (a) OpenTelemetry GenAI semantic conventions, any version; `gen_ai.usage.input_tokens` is inclusive.
OTEL_GENAI: Final = Dialect(source="otel-genai")
# Our own instrumentation: the same conventions plus `tokentrail.*` attribution.
TOKENTRAIL: Final = Dialect(source="tokentrail")
# (b) The Anthropic Python SDK's `anthropic.messages.create` span. The SDK sets `gen_ai.usage.input_tokens` to
# input + cache reads + cache writes (inclusive), names cache creation `cache_write`, and reports the tokens of
# context compaction apart from the main usage (they are billed too).
ANTHROPIC_SDK: Final = Dialect(
    source="anthropic-sdk",
    cache_write=(sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS),
    extra_input=("anthropic.usage.compaction.input_tokens",),
    extra_output=("anthropic.usage.compaction.output_tokens",),
    default_api=sc.API_ANTHROPIC_MESSAGES,
    default_provider="anthropic",
)

DIALECTS: Final = (TOKENTRAIL, OTEL_GENAI, ANTHROPIC_SDK)

_ATTRIBUTION_KEYS: Final = frozenset(
    {
        sc.USER_ID,
        sc.TOKENTRAIL_TAGS,
        sc.TOKENTRAIL_CREDENTIAL_TYPE,
        sc.TOKENTRAIL_CREDENTIAL_ID,
        sc.TOKENTRAIL_API,
        sc.TOKENTRAIL_STREAM_INCOMPLETE,
        sc.TOKENTRAIL_USAGE_MISSING,
        sc.GEN_AI_OPERATION_NAME,
        sc.GEN_AI_RESPONSE_ID,
        sc.GEN_AI_REQUEST_STREAM,
        sc.ERROR_TYPE,
    }
)
_KEYS: Final = frozenset().union(_ATTRIBUTION_KEYS, *(d.keys() for d in DIALECTS))
# Any of these makes a span a GenAI call (besides our `tokentrail.api` and the Anthropic span name).
_USAGE_KEYS: Final = frozenset().union(*(d.usage_keys() for d in DIALECTS))


class SpanRejected(ValueError):
    """A GenAI span that cannot become a record; the message goes back to the exporter in partial_success."""


@dataclass(slots=True)
class NormalizeResult:
    records: list[UsageRecord] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    skipped: int = 0  # spans that are not LLM calls
    received: int = 0  # every span in the request


def _first(found: dict[str, AnyValue], keys: tuple[str, ...]) -> AnyValue | None:
    for key in keys:
        value = found.get(key)
        if value is not None:
            return value
    return None


def _count(found: dict[str, AnyValue], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = found.get(key)
        if value is not None:
            n = as_int(value, key)
            if n is None:
                continue
            if n < 0 or n > MAX_TOKENS:
                raise SpanRejected(f"{key}={n} is out of range [0, {MAX_TOKENS}]")
            return n
    return None


def _sum(found: dict[str, AnyValue], keys: tuple[str, ...]) -> int:
    total = 0
    for key in keys:
        n = _count(found, (key,))
        if n:
            total += n
    return total


def _dialect(span: Span, found: dict[str, AnyValue]) -> Dialect | None:
    """Which dialect wrote this span, or None when it is not an LLM call (the common, cheap case)."""
    if span.name == ANTHROPIC_MESSAGES_CREATE:
        return ANTHROPIC_SDK
    if not found:
        return None
    if sc.TOKENTRAIL_API in found:
        return TOKENTRAIL
    if _USAGE_KEYS.isdisjoint(found):
        return None
    if as_str(found.get(sc.GEN_AI_OPERATION_NAME)) in AGGREGATE_OPERATIONS:
        return None
    return OTEL_GENAI


def normalize_span(
    span: Span,
    found: dict[str, AnyValue],
    dialect: Dialect,
    service: str | None,
    environment: str | None,
) -> UsageRecord:
    """One record from one span already known to be a GenAI call; raises ``SpanRejected`` with the reason."""
    provider_name = as_str(_first(found, dialect.provider)) or dialect.default_provider
    request_model = as_str(_first(found, dialect.request_model))
    model = as_str(_first(found, dialect.response_model)) or request_model
    if not provider_name or not model:
        missing = " and ".join(n for n, v in (("provider", provider_name), ("model", model)) if not v)
        raise SpanRejected(f"span {span.name!r} has GenAI usage but no {missing}")
    if not span.trace_id or not span.span_id:
        raise SpanRejected(f"span {span.name!r} has no trace or span id")
    if not span.start_time_unix_nano:
        raise SpanRejected(f"span {span.name!r} has no start time")

    try:
        input_tokens = _count(found, dialect.input_tokens)
        output_tokens = _count(found, dialect.output_tokens)
        cache_read = _count(found, dialect.cache_read) or 0
        cache_write = _count(found, dialect.cache_write) or 0
        reasoning = _count(found, dialect.reasoning) or 0
        extra_input = _sum(found, dialect.extra_input)
        extra_output = _sum(found, dialect.extra_output)
    except NotAnInteger as exc:
        raise SpanRejected(str(exc)) from None

    usage_missing = as_bool(found.get(sc.TOKENTRAIL_USAGE_MISSING))
    error_type = as_str(found.get(sc.ERROR_TYPE))
    is_error = error_type is not None or span.status.code == STATUS_CODE_ERROR
    if input_tokens is None and output_tokens is None and not is_error:
        # A successful call that reported no usage was still billed: never price it as $0.
        usage_missing = True

    inclusive_input = input_tokens or 0
    if not dialect.input_includes_cache:
        inclusive_input += cache_read + cache_write
    # House rule: cached tokens are part of an inclusive input count, never added on top of it.
    inclusive_input += extra_input

    if is_error:
        status = "error"
    elif as_bool(found.get(sc.TOKENTRAIL_STREAM_INCOMPLETE)):
        status = "incomplete"
    else:
        status = "ok"

    credential_type = (as_str(found.get(sc.TOKENTRAIL_CREDENTIAL_TYPE)) or "").strip().lower()
    if credential_type not in sc.CREDENTIAL_TYPES:
        credential_type = DEFAULT_CREDENTIAL_TYPE

    end = span.end_time_unix_nano
    start = span.start_time_unix_nano
    record = UsageRecord(
        timestamp=nanos_to_datetime(start),
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        response_id=as_str(found.get(sc.GEN_AI_RESPONSE_ID)),
        service=service,
        environment=environment,
        source=dialect.source,
        api=as_str(found.get(sc.TOKENTRAIL_API)) or dialect.default_api,
        operation=as_str(found.get(sc.GEN_AI_OPERATION_NAME)),
        provider=canonical_provider(provider_name),
        model=model,
        request_model=request_model,
        user_id=as_str(found.get(sc.USER_ID)),
        tags=as_str_list(found.get(sc.TOKENTRAIL_TAGS)),
        credential_type=credential_type,
        credential_id=as_str(found.get(sc.TOKENTRAIL_CREDENTIAL_ID)),
        input_tokens=inclusive_input,
        output_tokens=(output_tokens or 0) + extra_output,
        cached_input_tokens=cache_read,
        cache_creation_input_tokens=cache_write,
        reasoning_tokens=reasoning,
        duration_ms=(end - start) / 1e6 if end >= start else None,
        streamed=as_bool(found.get(sc.GEN_AI_REQUEST_STREAM)),
        status=status,
        error_type=error_type,
    )
    if usage_missing:
        record.price_status = UNPRICED
        record.price_version = USAGE_MISSING
    return record


def _iter_spans(request: ExportTraceServiceRequest) -> Iterable[tuple[Span, str | None, str | None]]:
    for resource_spans in request.resource_spans:
        service, environment = resource_service_environment(resource_spans.resource)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield span, service, environment


def normalize_request(request: ExportTraceServiceRequest) -> NormalizeResult:
    """All usage records in one OTLP export. Never raises for a bad span: it is rejected, counted and explained."""
    result = NormalizeResult()
    records = result.records
    keys = _KEYS
    for span, service, environment in _iter_spans(request):
        result.received += 1
        found = pick_attributes(span.attributes, keys)
        dialect = _dialect(span, found)
        if dialect is None:
            result.skipped += 1
            continue
        try:
            records.append(normalize_span(span, found, dialect, service, environment))
        except SpanRejected as exc:
            _reject(result, span, str(exc))
        except Exception as exc:  # a bug must cost one span, not the batch
            log.exception("normalizing span %r failed", span.name)
            _reject(result, span, f"span {span.name!r} could not be read: {type(exc).__name__}")
    return result


def _reject(result: NormalizeResult, span: Span, message: str) -> None:
    result.rejected += 1
    if len(result.errors) < MAX_ERRORS:
        result.errors.append(message)
