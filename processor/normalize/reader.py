"""Every GenAI span becomes one usage record: the one reader that applies a dialect's table row to a span.

A span is read once: each attribute, as the sender encoded it, is looked up whole in a bounded memo (``_Entries``),
and only those whose keys some dialect names (``dialects.KEYS``) are decoded, so a span that is not about an LLM
call costs one lookup an attribute and no conversions. Which key supplies each fact
depends only on the dialect and on which known keys a span carries, so that choice is made once per distinct key
set (a ``Plan``, cached: data, not code) and a span costs one dict lookup per fact it carries. Each record is one
tuple in ``schema.FIELD_NAMES`` order; a request's records become ``schema.UsageColumns`` without an object per
record (``NormalizeResult.records`` builds ``UsageRecord`` objects for callers that want them).

One bad span is rejected with a message and counted; the rest of its batch is kept. A value that cannot be
decoded is dropped with a warning and the span read without it.

House rules, whatever the dialect: ``input_tokens`` includes cached input (dialects whose input count excludes
the cache add it, never the others), ``output_tokens`` includes reasoning, and spans that aggregate other calls'
usage (``invoke_agent``, agent runs, outer Vercel spans, a span marked ``tokentrail.duplicate``) are never counted.
The speed facts and how to measure them: docs/ARCHITECTURE.md, "Normalize" and "Performance".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tokentrail.instrumentation.semconv import (
    CREDENTIAL_TYPES,
    ERROR_TYPE,
    GEN_AI_OPERATION_NAME,
    TOKENTRAIL_API,
    TOKENTRAIL_CREDENTIAL_ID,
    TOKENTRAIL_CREDENTIAL_TYPE,
    TOKENTRAIL_STREAM_INCOMPLETE,
    TOKENTRAIL_USAGE_MISSING,
)
from tokentrail.processor.normalize.attribution import (
    MAX_CONVERSATION_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_USER_CHARS,
    conversation_of,
    from_metadata,
    limit_tags,
    tags_of,
    user_of,
)
from tokentrail.processor.normalize.dialects import (
    AGGREGATE_OPERATIONS,
    ANTHROPIC_SDK,
    DIALECTS,
    KEY_FACTS,
    KEYS,
    LABEL_KEYS,
    OPENINFERENCE,
    OPENLLMETRY,
    OTEL_GENAI,
    PYDANTIC_AI,
    TOKENTRAIL,
    TOKENTRAIL_DUPLICATE,
    VERCEL_AI,
    Dialect,
    dialect_of,
    usage_free,
)
from tokentrail.processor.normalize.limits import MAX_CALL_NANOS, CallLimits, call_limits
from tokentrail.processor.normalize.otlp import (
    STATUS_CODE_ERROR,
    InvalidRequest,
    InvalidValue,
    UnreadableAttribute,
    any_value,
    as_fast_request,
    attribute_entry,
    resource_service_environment,
    scrub_request,
)
from tokentrail.processor.normalize.rules import VERCEL_CONTEXT_PREFIXES, VERCEL_PROVIDER_METADATA, Finish, Found
from tokentrail.processor.normalize.usage import counts as usage_counts
from tokentrail.processor.normalize.usage import reported_cost as usage_reported_cost
from tokentrail.processor.normalize.values import (
    MAX_NAME_CHARS,
    MAX_TOKENS,
    Notes,
    SpanRejected,
    flag,
    json_object,
    name,
    optional_name,
    plain,
    text,
    text_list,
    without_controls,
)
from tokentrail.processor.pricing.catalog import canonical_provider
from tokentrail.processor.schema import CURRENCY, FIELD_NAMES, NO_USAGE, UNPRICED, UsageColumns, UsageRecord

__all__ = [
    "ANTHROPIC_SDK",
    "DIALECTS",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "MAX_TOKENS",
    "MAX_USER_CHARS",
    "OPENINFERENCE",
    "OPENLLMETRY",
    "OTEL_GENAI",
    "PYDANTIC_AI",
    "TOKENTRAIL",
    "VERCEL_AI",
    "CallLimits",
    "Dialect",
    "Finish",
    "NormalizeResult",
    "SpanRejected",
    "normalize_request",
]

log = logging.getLogger(__name__)

MAX_ERRORS: Final = 20  # messages kept per request; every rejection is still counted
DEFAULT_CREDENTIAL_TYPE: Final = "system"  # a key the service was configured with
# Start times outside [2000-01-01, now + 7 days] are a broken clock or a forged span, never a call to bill.
MIN_START_NANOS: Final = 946_684_800 * 10**9
MAX_FUTURE_NANOS: Final = 7 * 86_400 * 10**9
_HOUR_NANOS: Final = 3600 * 10**9
_MAX_CALL_HOURS: Final = MAX_CALL_NANOS // _HOUR_NANOS
_SPAN_NAMES: Final = frozenset().union(*(d.span_names for d in DIALECTS))  # names that choose a dialect
_NO_TRACE_ID: Final = bytes(16)
_NO_SPAN_ID: Final = bytes(8)
_OPERATION_COLUMN: Final = FIELD_NAMES.index("operation")
_USER_COLUMN: Final = FIELD_NAMES.index("user_id")
_TAGS_COLUMN: Final = FIELD_NAMES.index("tags")
_CONVERSATION_COLUMN: Final = FIELD_NAMES.index("conversation_id")
_CREDENTIAL_COLUMN: Final = FIELD_NAMES.index("credential_type")
# What an ancestor's attribution is read from: the Vercel AI SDK v7's runtime context (not its legacy metadata,
# which its call spans carry themselves).
_INHERITED_PREFIXES: Final = VERCEL_CONTEXT_PREFIXES[1:]
_SPAN_ID_COLUMN: Final = FIELD_NAMES.index("span_id")


@dataclass(slots=True)
class NormalizeResult:
    rows: list[tuple[Any, ...]] = field(default_factory=list)  # one per record, in ``FIELD_NAMES`` order
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    skipped: int = 0  # spans that are not LLM calls (or not counted: aggregates, duplicates)
    received: int = 0  # every span in the request
    dropped_fields: int = 0  # attribution values dropped or truncated (the record is kept)
    warnings: list[str] = field(default_factory=list)

    @property
    def columns(self) -> UsageColumns:
        """The records as columns (timestamps in microseconds, costs in pico-dollars: see ``UsageColumns``)."""
        return UsageColumns.from_rows(self.rows)

    @property
    def records(self) -> list[UsageRecord]:
        return self.columns.to_records()

    def reject(self, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)

    def warn(self, count: int, message: str) -> None:
        self.dropped_fields += count
        if len(self.warnings) < MAX_ERRORS:
            self.warnings.append(message)


# -- plans: which key supplies each fact, per set of known keys ------------------------------------------------


class Plan:
    """For one set of known keys a span carries (and the span name, which can choose a dialect): its dialect (None:
    not a call to count, whatever the values) and, per fact, the keys present that state it, in the dialect's
    order."""

    __slots__ = ("dialect", "keys", "first", "details", "provider_names", "usage_free")

    def __init__(self, present: frozenset[str], dialect: Dialect | None) -> None:
        self.dialect = dialect
        self.keys: dict[str, tuple[str, ...]] = {}
        self.first: dict[str, str | None] = {}
        self.provider_names: dict[str, str] = {}  # provider value -> canonical provider, for this dialect
        self.details = False
        self.usage_free = False  # no usage key at all: a call only if the dialect's ``call`` says so
        if dialect is None:
            return
        self.usage_free = usage_free(dialect, present)
        for fact in KEY_FACTS:
            keys = self.keys[fact] = tuple(k for k in getattr(dialect, fact) if k in present)
            self.first[fact] = keys[0] if keys else None
        # Anything beyond the main counts of an inclusive dialect takes the full usage rules.
        self.details = bool(
            any(self.keys[f] for f in ("total_tokens", "cache_write_1h", "input_audio", "output_audio"))
            or self.keys["extra_input"]
            or self.keys["extra_output"]
            or dialect.resolve is not None
            or not dialect.input_includes_cache
        )

    def canonical_provider(self, raw: object) -> str | None:
        """The record's provider from the provider attribute's value (remembered per value)."""
        if isinstance(raw, str):
            cached = self.provider_names.get(raw)
            if cached is not None:
                return cached
        assert self.dialect is not None
        provider_name = name(raw, "provider")
        if provider_name is None:
            return None
        if self.dialect.provider_prefix_only:
            provider_name = provider_name.split(".", 1)[0]
        key = provider_name.lower()
        provider = canonical_provider(self.dialect.provider_names.get(key, key))
        if len(self.provider_names) < 256 and isinstance(raw, str):
            self.provider_names[raw] = provider
        return provider


_PLANS: dict[tuple[frozenset[str], str], Plan] = {}
_MAX_PLANS: Final = 4096  # key sets come from spans: bound what a stream of odd spans can take


def _plan(present: frozenset[str], span_name: str) -> Plan:
    """The plan for these known keys; ``span_name`` matters only when it is one that chooses a dialect."""
    key = (present, span_name if span_name in _SPAN_NAMES else "")
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        plan = _PLANS[key] = Plan(present, dialect_of(present, key[1]))
    return plan


# -- a span's known attributes ----------------------------------------------------------------------------------


class _Invalid:
    """A known attribute whose value cannot be decoded (dropped with a warning unless a later duplicate replaces
    it)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Controls:
    """A label (``dialects.LABEL_KEYS``) that held control characters: ``value`` is it without them (read in its
    place, with a warning). Never remembered, like ``_Invalid``: the warning is each span's."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


def _label_without_controls(value: object) -> object | None:
    """A label's value (a string, or a tags array) without its control characters; None when it has none."""
    if type(value) is str:
        return without_controls(value)
    if type(value) is tuple:
        cleaned = [without_controls(v) if type(v) is str else None for v in value]
        if any(c is not None for c in cleaned):
            return tuple(v if c is None else c for v, c in zip(value, cleaned, strict=True))
    return None


_NOTHING_DROPPED: Final[frozenset[str]] = frozenset()
_OTHER: Final = (None, None)  # an attribute no dialect names: one entry of the span's dict, removed once
_ENTRIES_MAX: Final = 1 << 16  # attributes come from spans: bound what a stream of odd values can take
_ENTRY_MAX_BYTES: Final = 160  # longer attributes (prompts, URLs) rarely repeat: not remembered
# Values that are new on every call (response ids) are never remembered: each would cost an insert, and together
# they would fill the memo and clear what does repeat (models, providers, users) every 65k calls.
_UNIQUE_KEYS: Final = frozenset({"gen_ai.response.id", "ai.response.id"})


class _Entries(dict[bytes, tuple[str | None, object]]):
    """Attribute encodings (``KeyValue``) -> (key, decoded value) for the known keys, ``_OTHER`` for the rest.

    Looked up with ``[]``: an encoding met before (a model, a provider, a flag, another span's key) costs one lookup
    inside ``dict(map(...))``, and ``__missing__`` splits and decodes the others (remembering the short ones).
    ``invalid`` counts the values that could not be decoded or held control characters (``_Controls``), so that a
    reader notices one by comparing it before and after a span."""

    invalid = 0

    def __missing__(self, raw: bytes) -> tuple[str | None, object]:
        key, value_raw = attribute_entry(raw)
        if key not in KEYS:
            pair: tuple[str | None, object] = _OTHER
        else:
            try:
                value = any_value(value_raw)
            except InvalidValue as exc:
                self.invalid += 1
                return key, _Invalid(str(exc))
            pair = (key, value)
            if type(value) is dict:  # a kvlist's dict is the reader's to change: never shared
                return pair
            if key in LABEL_KEYS:  # only on a miss: a clean label met again is not scanned again
                cleaned = _label_without_controls(value)
                if cleaned is not None:
                    self.invalid += 1
                    return key, _Controls(cleaned)
        if len(raw) <= _ENTRY_MAX_BYTES and key not in _UNIQUE_KEYS:
            if len(self) >= _ENTRIES_MAX:
                self.clear()
            self[raw] = pair
        return pair


_ENTRIES: Final = _Entries()


def _known_attributes(entries: Any) -> tuple[dict[Any, object], bool]:
    """The span's known attributes (key -> decoded value; the last of duplicate keys wins) and whether one holds an
    ``_Invalid`` or ``_Controls`` value. Raises ``UnreadableAttribute``."""
    invalid = _ENTRIES.invalid
    found = dict(map(_ENTRIES.__getitem__, entries))
    if None in found:
        del found[None]
    if _ENTRIES.invalid != invalid:
        return found, any(type(v) is _Invalid or type(v) is _Controls for v in found.values())
    return found, False


def _all_attributes(span: Any) -> dict[str, bytes]:
    """Every attribute of the span, key -> value encoding (the last of duplicate keys wins): for the dialects that
    read attribution from keys by prefix."""
    return dict(map(attribute_entry, span.attributes))


_PLANS_BY_KEYS: dict[tuple[tuple[str, ...], str], Plan] = {}


def _plan_of(found: dict[str, object], span_name: str) -> Plan:
    """``_plan`` by the known keys in the order the span carries them (a sender keeps one order: no set to build)."""
    key = (tuple(found), span_name if span_name in _SPAN_NAMES else "")
    plan = _PLANS_BY_KEYS.get(key)
    if plan is None:
        if len(_PLANS_BY_KEYS) >= _MAX_PLANS:
            _PLANS_BY_KEYS.clear()
        plan = _PLANS_BY_KEYS[key] = _plan(frozenset(key[0]), key[1])
    return plan


# -- a request ---------------------------------------------------------------------------------------------------


def normalize_request(request: ExportTraceServiceRequest, limits: CallLimits | None = None) -> NormalizeResult:
    """All usage records in one OTLP export (the standard message, or the faster ``otlp.fast_request_class()`` one
    the receiver parses into). Never raises for a bad span: it is rejected, counted and explained. ``limits``: the
    token limits of one call (default: ``limits.call_limits()``, from the environment)."""
    fast = as_fast_request(request)
    if limits is None:
        limits = call_limits()
    notes: list[str] = []
    try:
        return _normalize(_resources(fast, notes), notes, limits)
    except UnreadableAttribute:
        # The fast class does not look inside attributes at parse; the standard class would have refused this
        # request: read it as ``parse_export_request`` reads such a request (raises ``InvalidRequest``).
        scrubbed, warnings = scrub_request(fast.SerializeToString())
    try:
        return _normalize(_resources(scrubbed, warnings), warnings, limits)
    except UnreadableAttribute as exc:
        raise InvalidRequest(f"malformed ExportTraceServiceRequest: {exc}") from None


def _resources(request: Any, notes: list[str]) -> Iterator[tuple[Any, str | None, str | None]]:
    """Each scope's spans with their resource's service and environment (what was changed in them: ``notes``)."""
    for resource_spans in request.resource_spans:
        service, environment = resource_service_environment(resource_spans.resource)
        service = _resource_name(service, "service.name", notes)
        environment = _resource_name(environment, "deployment environment", notes)
        for scope_spans in resource_spans.scope_spans:
            yield scope_spans.spans, service, environment


def _resource_name(value: str | None, what: str, notes: list[str]) -> str | None:
    """A service or environment name: without control characters, at most MAX_NAME_CHARS (once per resource)."""
    if value is None:
        return None
    cleaned = without_controls(value)
    if cleaned is not None:
        notes.append(f"{what}: control characters removed")
        value = cleaned
    if len(value) > MAX_NAME_CHARS:
        notes.append(f"{what} truncated from {len(value)} to {MAX_NAME_CHARS} characters")
        value = value[:MAX_NAME_CHARS]
    return value or None


def _normalize(
    resources: Iterable[tuple[Any, str | None, str | None]], warnings: list[str], limits: CallLimits
) -> NormalizeResult:
    result = NormalizeResult()
    resources = list(resources)  # (which adds the resources' notes to ``warnings``)
    for warning in warnings:  # strings dropped at parse, first, as the sender would have read them
        result.warn(1, warning)
    append = result.rows.append
    now = time.time_ns()
    embedding_parents: dict[bytes, int] | None = None  # v7 Vercel embeddings: an outer span over inner ones
    # (row, parent span id, credential type stated) of the records with no user and no tags
    unattributed: list[tuple[int, bytes, bool]] | None = None
    for spans, service, environment in resources:
        result.received += len(spans)
        for span in spans:
            found, invalid = _known_attributes(span.attributes)
            plan = _plan_of(found, span.name)
            if plan.dialect is None:
                result.skipped += 1  # not an LLM call: the common, cheap case
                continue
            dropped = _NOTHING_DROPPED
            if invalid:
                dropped = _drop_invalid(result, found)
                plan = _plan(frozenset(found), span.name)
            row = _read(result, span, found, plan, dropped, service, environment, now, limits)
            if row is None:
                continue
            append(row)
            if row[_USER_COLUMN] is None and not row[_TAGS_COLUMN] and span.parent_span_id:
                if unattributed is None:
                    unattributed = []
                unattributed.append((len(result.rows) - 1, span.parent_span_id, TOKENTRAIL_CREDENTIAL_TYPE in found))
            if row[_OPERATION_COLUMN] == "embeddings" and span.parent_span_id:
                if embedding_parents is None:
                    embedding_parents = {}
                embedding_parents[span.parent_span_id] = embedding_parents.get(span.parent_span_id, 0) + 1
    if unattributed:
        _inherit_attribution(result, unattributed, resources)
    if embedding_parents:
        _drop_outer_embedding_spans(result, embedding_parents)
    return result


_MAX_ANCESTORS: Final = 32  # a parent chain is a few spans deep; a cycle in forged ids must still end


def _inherit_attribution(
    result: NormalizeResult,
    unattributed: list[tuple[int, bytes, bool]],
    resources: list[tuple[Any, str | None, str | None]],
) -> None:
    """Records with no user and no tags take them (and a conversation) from the nearest ancestor in the same export that states them as
    the Vercel AI SDK v7 does: its GenAI ``chat`` spans carry none, the enclosing ``step`` and ``invoke_agent``
    spans carry the call's ``runtimeContext`` as ``ai.settings.context.*``. (An ancestor exported in another
    request is not seen: ``enrichSpan`` setting ``user.id`` and ``tokentrail.tags`` on the call span always is.)"""
    by_id = {span.span_id: span for spans, _, _ in resources for span in spans}
    inherited: dict[bytes, list[tuple[str, object]] | None] = {}
    for index, parent_id, credential_stated in unattributed:
        found = _ancestor_attribution(parent_id, by_id, inherited)
        if found is None:
            continue
        notes: Notes = []
        meta = from_metadata(found, None, [])
        user = user_of(meta.user, notes)
        tags = limit_tags(meta.tags, notes) if meta.tags else meta.tags
        conversation = conversation_of(meta.conversation, notes)
        if notes:
            result.warn(len(notes), "inherited attribution: " + "; ".join(notes))
        if user is not None or tags or meta.credential is not None or conversation is not None:
            row = list(result.rows[index])
            row[_USER_COLUMN], row[_TAGS_COLUMN] = user, tags
            if meta.credential is not None and not credential_stated:
                row[_CREDENTIAL_COLUMN] = _credential_type(meta.credential)
            if conversation is not None and row[_CONVERSATION_COLUMN] is None:
                row[_CONVERSATION_COLUMN] = conversation
            result.rows[index] = tuple(row)


def _ancestor_attribution(
    parent_id: bytes, by_id: dict[bytes, Any], memo: dict[bytes, Any]
) -> list[tuple[str, object]] | None:
    """The ``ai.settings.context.*`` items of the nearest ancestor that has any, or None."""
    visited: list[bytes] = []
    found: list[tuple[str, object]] | None = None
    span_id = parent_id
    for _ in range(_MAX_ANCESTORS):
        if span_id in memo:
            found = memo[span_id]
            break
        span = by_id.get(span_id)
        if span is None:
            break
        visited.append(span_id)
        items = _context_items(span)
        if items:
            found = items
            break
        span_id = span.parent_span_id
        if not span_id:
            break
    for seen in visited:
        memo[seen] = found
    return found


def _context_items(span: Any) -> list[tuple[str, object]]:
    """A span's Vercel runtime-context attribution items (name, value), in key order; undecodable values skipped."""
    items = []
    for key, raw in sorted(_all_attributes(span).items()):
        for prefix in _INHERITED_PREFIXES:
            if key.startswith(prefix):
                try:
                    items.append((key[len(prefix) :], plain(any_value(raw))))
                except InvalidValue:
                    pass
                break
    return items


class _BadAttribute(Exception):
    """An attribute outside the known keys (met in attribution by prefix) whose value cannot be decoded: the span
    is read again without it."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason


def _read(
    result: NormalizeResult,
    span: Any,
    found: dict[str, object],
    plan: Plan,
    dropped: frozenset[str],
    service: str | None,
    environment: str | None,
    now: int,
    limits: CallLimits,
) -> tuple[Any, ...] | None:
    """The span's record, or None when it is skipped or rejected (counted and explained in ``result``). An attribute
    that cannot be decoded met outside the known keys (attribution by prefix) is dropped with a warning, and the span
    read again without it (each round removes one attribute: the loop ends). ``dropped``: attributes already
    dropped, which attribution by prefix must not meet again."""
    while True:
        dialect = plan.dialect
        notes: Notes = []
        try:
            if dialect is None or _skip(span, plan, dialect, found):
                result.skipped += 1
                return None
            row = _row(span, found, plan, dropped, service, environment, notes, now, limits)
        except _BadAttribute as bad:
            result.warn(1, f"attribute {bad.key[:100]!r} dropped: {bad.reason}")
            dropped = dropped | {bad.key}
            found = {k: v for k, v in found.items() if k != bad.key}
            plan = _plan(frozenset(found), span.name)
            continue
        except SpanRejected as exc:
            result.reject(str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - a bug must cost one span, not the batch; logged with its traceback
            log.exception("normalizing span %r failed", span.name[:100])
            result.reject(f"span {span.name[:100]!r} could not be read: {type(exc).__name__}")
            return None
        if notes:
            result.warn(len(notes), f"span {span.name[:100]!r}: " + "; ".join(notes))
        return row


def _drop_invalid(result: NormalizeResult, found: dict[str, object]) -> frozenset[str]:
    """Known attributes whose values cannot be decoded are removed from ``found`` (as if never sent), with a warning
    each, in key order; returns their keys. Labels that held control characters are read without them, with a
    warning each."""
    for key in sorted(k for k, v in found.items() if type(v) is _Controls):
        controls = found[key]
        assert isinstance(controls, _Controls)
        found[key] = controls.value
        result.warn(1, f"attribute {key[:100]!r}: control characters removed")
    invalid = sorted(k for k, v in found.items() if type(v) is _Invalid)
    for key in invalid:
        value = found.pop(key)
        assert isinstance(value, _Invalid)
        result.warn(1, f"attribute {key[:100]!r} dropped: {value.reason}")
    return frozenset(invalid)


def _drop_outer_embedding_spans(result: NormalizeResult, parents: dict[bytes, int]) -> None:
    """An embeddings span whose children in the same export are embeddings spans repeats their total (the Vercel
    AI SDK v7 ``embeddings {model}`` root over its per-call spans): only the children count."""
    outer = {p.hex() for p in parents}
    op, sid = _OPERATION_COLUMN, _SPAN_ID_COLUMN
    kept = [r for r in result.rows if not (r[op] == "embeddings" and r[sid] in outer)]
    result.skipped += len(result.rows) - len(kept)
    result.rows = kept


def _skip(span: Any, plan: Plan, dialect: Dialect, found: Found) -> bool:
    """True when the values say this span is not a call to count (an outer span, an aggregate, a duplicate, or a
    span without usage that is not a call)."""
    if dialect.counted is not None and not dialect.counted(span, found):
        return True
    if plan.usage_free and (dialect.call is None or not dialect.call(span, found)):
        return True
    operation = found.get(GEN_AI_OPERATION_NAME)
    if operation is not None and text(operation) in AGGREGATE_OPERATIONS:
        return True
    duplicate = found.get(TOKENTRAIL_DUPLICATE)
    return duplicate is not None and flag(duplicate)


# -- one span ------------------------------------------------------------------------------------------------


def _row(
    span: Any,
    found: dict[str, object],
    plan: Plan,
    dropped: frozenset[str],
    service: str | None,
    environment: str | None,
    notes: Notes,
    now: int,
    limits: CallLimits,
) -> tuple[Any, ...]:
    """One record (a ``FIELD_NAMES``-ordered tuple) from one span known to be a GenAI call; raises ``SpanRejected``.

    The receiver's ceiling is here (docs/ARCHITECTURE.md, "Performance"): a clean string or count is taken inline,
    and the ``values`` / ``attribution`` helpers handle everything else (types to coerce, notes to write)."""
    dialect = plan.dialect
    assert dialect is not None
    first = plan.first
    key = first["provider"]
    provider = plan.canonical_provider(found[key]) if key is not None else None
    if provider is None and dialect.default_provider is not None:
        provider = canonical_provider(dialect.default_provider)
    key = first["request_model"]
    request_model = name(found[key], "request model") if key is not None else None
    key = first["response_model"]
    model = (name(found[key], "model") if key is not None else None) or request_model
    if not provider or not model:
        missing = " and ".join(n for n, v in (("provider", provider), ("model", model)) if not v)
        what = "is a GenAI call without usage" if plan.usage_free else "has GenAI usage"
        raise SpanRejected(f"span {span.name[:100]!r} {what} but no {missing}")
    trace_id, span_id = span.trace_id, span.span_id
    if len(trace_id) != 16 or len(span_id) != 8 or trace_id == _NO_TRACE_ID or span_id == _NO_SPAN_ID:
        raise SpanRejected(f"span {span.name[:100]!r} has no valid trace or span id")
    start = span.start_time_unix_nano
    if start < MIN_START_NANOS or start > now + MAX_FUTURE_NANOS:
        when = "no start time" if not start else f"start time {_iso(start)} outside [2000-01-01, now + 7 days]"
        raise SpanRejected(f"span {span.name[:100]!r} has {when}")

    # (read before the counts only so that its note comes first; a span rejected for its counts drops it anyway)
    error_type = optional_name(found[ERROR_TYPE], "error.type", notes) if ERROR_TYPE in found else None
    counts = usage_counts(span, found, dialect, plan.keys, plan.details, provider, notes)
    if counts[0] > limits.max_input_tokens or counts[1] > limits.max_output_tokens:
        raise SpanRejected(f"span {span.name[:100]!r} has {limits.exceeded(counts[0], counts[1])}")
    usage_missing = TOKENTRAIL_USAGE_MISSING in found and flag(found[TOKENTRAIL_USAGE_MISSING])
    is_error = error_type is not None or span.status.code == STATUS_CODE_ERROR
    if not counts[8] and not is_error:
        # A successful call that reported no usage was still billed: never price it as $0.
        usage_missing = True
    if is_error:
        status = "error"
    elif TOKENTRAIL_STREAM_INCOMPLETE in found and flag(found[TOKENTRAIL_STREAM_INCOMPLETE]):
        status = "incomplete"
    else:
        status = "ok"

    user, tags, stated_credential, conversation = _attribution(span, dialect, plan, found, dropped, notes)
    credential_type = DEFAULT_CREDENTIAL_TYPE
    if TOKENTRAIL_CREDENTIAL_TYPE in found:
        value = found[TOKENTRAIL_CREDENTIAL_TYPE]
        credential_type = (_CREDENTIAL_TYPES.get(value) if type(value) is str else None) or _credential_type(value)
    elif stated_credential is not None:
        credential_type = _credential_type(stated_credential)
    key = first["streamed"]
    streamed = False
    if key is not None:
        value = found[key]
        streamed = value if type(value) is bool else flag(value)
    if not streamed and first["stream_markers"] is not None:
        streamed = True
    key = first["response_id"]
    response_id = _label(found[key], "response id", notes) if key is not None else None
    key = first["operation"]
    operation = (_label(found[key], "operation", notes) if key is not None else None) or dialect.default_operation
    if dialect.finish is not None:
        fields = Finish(response_id, operation, streamed)
        dialect.finish(span, found, fields)
        response_id, operation, streamed = fields.response_id, fields.operation, fields.streamed
    value = found.get(TOKENTRAIL_API)
    if type(value) is not str or len(value) > MAX_NAME_CHARS:  # a clean string is taken inline
        value = _label(value, "api", notes) if value is not None else None
    api = value or dialect.default_api
    credential_id = (
        _label(found[TOKENTRAIL_CREDENTIAL_ID], "credential id", notes) if TOKENTRAIL_CREDENTIAL_ID in found else None
    )
    service_tier = None
    key = first["service_tier"]
    if key is not None:
        service_tier = optional_name(found[key], "service tier", notes)
        if service_tier is not None:
            service_tier = service_tier.strip().lower() or None
    reported_cost = (
        usage_reported_cost(found, first["reported_cost"], notes)
        if first["reported_cost"] is not None or VERCEL_PROVIDER_METADATA in found
        else None
    )
    took = span.end_time_unix_nano - start
    duration_ms = took / 1e6 if 0 <= took <= MAX_CALL_NANOS else _no_duration(took, notes)  # a broken clock
    return (
        start // 1000,  # timestamp (µs)
        trace_id.hex(),
        span_id.hex(),
        response_id,
        service,
        environment,
        dialect.source,
        api,
        operation,
        provider,
        model,
        request_model,
        user,
        tags,
        conversation,
        credential_type,
        credential_id,
        *counts[:8],  # input, output, cache read, cache write, reasoning, 1-hour writes, audio in, audio out
        service_tier,
        None,  # total_cost
        None,  # market_cost
        reported_cost,
        CURRENCY,
        NO_USAGE if usage_missing else UNPRICED,  # price_status (the pricer decides the rest)
        None,  # price_version
        duration_ms,
        streamed,
        status,
        error_type,
    )


def _no_duration(took: int, notes: Notes) -> float | None:
    """No duration (None) for a span that ends before it starts (or has no end) or lasts longer than any call: a
    broken clock, said in a note; the call is kept."""
    if took < 0:
        notes.append("duration dropped: end time before start time")
    else:
        notes.append(f"duration dropped: {took // _HOUR_NANOS} hours, longer than any call ({_MAX_CALL_HOURS} h)")
    return None


def _label(value: object, what: str, notes: Notes) -> str | None:
    """``values.optional_name``, a clean string taken without a further call."""
    if type(value) is str and 0 < len(value) <= MAX_NAME_CHARS:
        return value
    return optional_name(value, what, notes)


_CREDENTIAL_TYPES: dict[str, str] = {}  # credential type attribute -> the record's credential type (bounded)


def _credential_type(value: object) -> str:
    cached = _CREDENTIAL_TYPES.get(value) if isinstance(value, str) else None
    if cached is None:
        cached = (text(value) or "").strip().lower()
        if cached not in CREDENTIAL_TYPES:
            cached = DEFAULT_CREDENTIAL_TYPE
        if len(_CREDENTIAL_TYPES) < 64 and isinstance(value, str):
            _CREDENTIAL_TYPES[value] = cached
    return cached


def _attribution(
    span: Any, dialect: Dialect, plan: Plan, found: Found, dropped: frozenset[str], notes: Notes
) -> tuple[str | None, list[str], str | None, str | None]:
    """The record's user and tags, the credential type metadata states (None: not stated there) and the
    conversation."""
    user_key = plan.first["user"]
    tag_keys = plan.keys["tags"]
    conversation_key = plan.first["conversation"]
    if not dialect.metadata_prefixes and not plan.keys["metadata_json"]:
        user = None
        if user_key is not None:
            value = found[user_key]
            if type(value) is str and len(value) <= MAX_USER_CHARS:
                user = value.strip() or None
            else:
                user = user_of(value, notes)
        conversation = None
        if conversation_key is not None:
            value = found[conversation_key]
            if type(value) is str and len(value) <= MAX_CONVERSATION_CHARS:
                conversation = value.strip() or None
            else:
                conversation = conversation_of(value, notes)
        if not tag_keys:
            return user, [], None, conversation
        values = [found[tag_keys[0]]] if len(tag_keys) == 1 else [found[k] for k in tag_keys]
        return user, tags_of(values, notes), None, conversation
    tags = [tag for k in tag_keys for tag in text_list(found[k])]
    meta = from_metadata(
        _metadata_items(span, dialect, plan, found, dropped),
        text(found[user_key]) if user_key else None,
        tags,
        text(found[conversation_key]) if conversation_key else None,
    )
    return (
        user_of(meta.user, notes),
        limit_tags(meta.tags, notes) if meta.tags else meta.tags,
        meta.credential,
        conversation_of(meta.conversation, notes),
    )


def _metadata_items(
    span: Any, dialect: Dialect, plan: Plan, found: Found, dropped: frozenset[str]
) -> Iterator[tuple[str, object]]:
    if dialect.metadata_prefixes:
        prefixes = dialect.metadata_prefixes
        attributes = _all_attributes(span)  # every attribute, not only the known keys in ``found``
        for key in sorted(attributes):  # key order, whatever order the sender used
            if key in dropped:
                continue
            for prefix in prefixes:
                if key.startswith(prefix):
                    try:
                        value = any_value(attributes[key])
                    except InvalidValue as exc:
                        raise _BadAttribute(key, str(exc)) from None
                    yield key[len(prefix) :], plain(value)
                    break
    for key in plan.keys["metadata_json"]:
        obj = json_object(found[key])
        if isinstance(obj, dict):
            yield from obj.items()


def _iso(nanos: int) -> str:
    try:
        return datetime.fromtimestamp(nanos / 1e9, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{nanos} ns"
