"""One LLM call seen at the transport: decide what to do with it, and own its span until the body is done.

``begin`` runs before the request is sent. It returns ``None`` when the request is not an LLM call, or a ``Call``
that follows the response body to its end, having made current the context the request is sent in (the ``Call``'s
``token``, which the transport hook detaches once the request is sent). The ``Call`` holds either our own span, or
(when another instrumentation already traces the call, see ``_foreign``) that instrumentation's span, which we
enrich and never end. Nothing here may raise into the host call: the transport wrapper guards every entry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from . import _foreign, _inject, _privacy, _processor, _streams, semconv
from ._context import (
    _BAGGAGE_KEY,
    _CONTEXT_KEY,
    _NO_BAGGAGE,
    _SPAN_KEY,
    EMPTY,
    Attribution,
    attach,
    call_context,
    current_attribution,
    get_current,
    with_span,
)
from ._decoding import decoding
from ._endpoints import Endpoint
from ._metrics import MetricAttributes, Metrics
from ._parsers import JsonBodyParser, body_parser
from ._request import WANTED_HEADERS, read_headers, read_request
from ._sdkspan import sampler_reads_attributes, set_clean
from ._spans import attribution_attributes, request_attributes, response_attributes
from ._state import Settings
from ._usage import BodyParser, ResponseFacts

log = logging.getLogger(__name__)

_INJECTABLE_APIS = frozenset({semconv.API_CHAT_COMPLETIONS, semconv.API_COMPLETIONS})
# The request headers we read besides Authorization: rare, so meeting one sends the request the full way.
_OTHER_HEADERS = WANTED_HEADERS - {b"authorization"}
# Whether the context's baggage and current span can be read under their keys (see _context.call_context).
_FAST_CONTEXT = _BAGGAGE_KEY is not None and _SPAN_KEY is not None
_CLIENT = SpanKind.CLIENT
# Guards the one-time end of every call (held for a flag test-and-set: one lock for all calls costs nothing).
_END_LOCK = threading.Lock()


def begin(request: Any, settings: Settings) -> Call | None:
    """Start following ``request`` if it is an LLM call: with our own span, or with the span already tracing it.

    This runs before every request, so the common case is kept short, and its usual steps are written out rather than
    called (inside a real request each function call costs about twice what it does in a tight loop): the endpoint,
    its attributes and its metric attribute sets come from a per-URL memory, the key's fingerprint, type and name
    from a per-key one, and the current context is read once.
    """
    if request.method != "POST":
        return None  # not an LLM call, at the cost of one comparison
    # settings.endpoints.lookup(), its remembered answers read here.
    endpoints = settings.endpoints
    url = request.url
    try:
        reference = url._uri_reference
        key = (reference.scheme, reference.host, reference.port, reference.path, reference.query)
    except AttributeError:
        target = endpoints.lookup("POST", url)
    else:
        target = endpoints.known.get(key)
        if target is None:
            target = endpoints.learn(key, url)
    if target is None:
        return None
    endpoint, (start_attributes, endpoint_attributes, metric_attributes) = target
    # The request body if the client already holds it in memory (the SDKs always do); never reads a stream.
    try:
        body = request.content
    except Exception:
        body = None
    if not isinstance(body, bytes):
        body = None
    facts = read_request(endpoint.api, body)
    model = facts.model
    if not endpoint.known_host and not model:
        # A server we only know by path must at least send what an LLM request sends.
        return None

    # read_headers(), for the usual request: no header of ours but (perhaps) Authorization. Any other goes the full way.
    headers = request.headers
    authorization = None
    sent = None
    try:
        for _, name, value in headers._list:
            if name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name in _OTHER_HEADERS:
                sent = read_headers(headers)
                break
    except (AttributeError, TypeError, ValueError):
        sent = read_headers(headers)  # another kind of headers
    if sent is not None:
        authorization = sent.authorization
        if sent.baggage:
            _privacy.strip_header(headers)
    if settings.inject_stream_usage and facts.stream and not facts.include_usage and endpoint.api in _INJECTABLE_APIS:
        _inject_include_usage(request, body)

    ctx = get_current()
    # call_context(ctx), written out when the context keys are known.
    if _FAST_CONTEXT:
        entries = ctx.get(_BAGGAGE_KEY)
        if not isinstance(entries, dict):
            entries = _NO_BAGGAGE
        current = ctx.get(_SPAN_KEY)
        if current is None or not isinstance(current, Span):
            current = INVALID_SPAN
        attribution = ctx.get(_CONTEXT_KEY)
        if not isinstance(attribution, Attribution):
            attribution = current_attribution(ctx, entries) if entries else EMPTY
    else:
        attribution, entries, current = call_context(ctx)
    # Precedence: the application's explicit attribute() > the request's reporting headers > the request body.
    if sent is not None and (sent.user is not None or sent.tags is not None):
        attribution = attribution.with_fallback(sent.user, sent.tags)
    if facts.user is not None or facts.tags is not None:
        attribution = attribution.with_fallback(facts.user, facts.tags)
    # settings.fingerprints.classify(), its remembered answers read here.
    fingerprints = settings.fingerprints
    credential_headers = (authorization, None, None) if sent is None else (authorization, sent.x_api_key, sent.api_key)
    known = fingerprints.known.get(credential_headers)
    if known is None:
        known = fingerprints.learn(credential_headers)
    credential_id, credential_name = known[0], known[2]
    credential_type = known[1] if attribution.credential is None else attribution.credential
    # The deployment of an Azure URL stands in for a model the body does not name; the response's model is preferred.
    model = model or endpoint.deployment

    if settings.global_provider:
        # The application may have set its SDK provider after instrument() (opentelemetry-instrument does it that
        # way round): the attribution processor belongs on it too. A dictionary lookup once it is there.
        _processor.install(trace.get_tracer_provider())

    foreign = _foreign.call_span_for(current) if current is not INVALID_SPAN else None
    if foreign is not None:
        attributes = attribution_attributes(attribution, credential_type, credential_id, credential_name)
        attributes[semconv.TOKENTRAIL_API] = endpoint.api
        foreign.set_attributes(attributes)
        foreign.set_attributes(_foreign.missing(foreign, request_attributes(endpoint, model, facts.stream)))
        for outer in _foreign.enclosing_calls(foreign):
            outer.set_attribute(semconv.TOKENTRAIL_DUPLICATE, True)
        _mark_twin(getattr(foreign, "parent", None), foreign, endpoint.provider, model)
        call = Call(foreign, endpoint, False)
        if entries:
            call.token = _activate(ctx, entries, None)
        return call

    # What the conventions ask to be known at the start (operation, provider, server, model) is given to start_span
    # when the tracer's sampler may read it; everything else the request says, and with an attribute-blind sampler
    # (the SDK's own) all of it, is set with the response's attributes when the call ends, in one go and the cheap
    # way (see _sdkspan and Call.attributes). All of it is built before the span starts: nothing that could fail
    # stands between starting our span and handing it to the Call that will end it.
    at_start = start_attributes.copy()
    if model:
        at_start[semconv.GEN_AI_REQUEST_MODEL] = model
    rest = endpoint_attributes.copy()
    rest[semconv.GEN_AI_REQUEST_STREAM] = facts.stream
    attribution_attributes(attribution, credential_type, credential_id, credential_name, into=rest)
    tracer = settings.tracer
    name = f"{endpoint.operation} {model}" if model else endpoint.operation
    if sampler_reads_attributes(tracer):
        span = tracer.start_span(name, context=ctx, kind=_CLIENT, attributes=at_start)
        call = Call(span, endpoint, True, settings.metrics, metric_attributes, model or None)
        call.attributes = _kept_by_sampler(span, at_start, rest)
    else:
        span = tracer.start_span(name, context=ctx, kind=_CLIENT)
        call = Call(span, endpoint, True, settings.metrics, metric_attributes, model or None)
        at_start.update(rest)
        call.attributes = at_start
    if _foreign.open_calls:
        try:
            _mark_twin(current.get_span_context(), None, endpoint.provider, model)
        except Exception:
            log.debug("TokenTrail could not look for another instrumentation's span of this call", exc_info=True)
    # _activate(ctx, entries, span), written out.
    try:
        if entries:
            without_ours = _privacy.context_without_ours(ctx, entries)
            if without_ours is not None:
                ctx = without_ours
        if _SPAN_KEY is None:
            call.token = attach(with_span(ctx, span))
        else:  # with_span(ctx, span), written out
            values = dict(ctx)
            values[_SPAN_KEY] = span
            call.token = attach(Context(values))
    except Exception:
        log.debug("TokenTrail could not activate its span", exc_info=True)
    return call


def _kept_by_sampler(span: Span, at_start: dict[str, AttributeValue], rest: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
    """The attributes to set when the call ends: ``rest``, after any of ``at_start`` the span did not keep. The SDK
    starts a span with the attributes its sampler RETURNS, so a sampler that reads them but returns none would leave
    our span without its operation, provider, server and model."""
    try:
        kept = getattr(span, "attributes", None)
        if kept is None or not span.is_recording():
            return rest
        missing = {name: value for name, value in at_start.items() if name not in kept}
    except Exception:
        return rest
    if not missing:
        return rest
    missing.update(rest)
    return missing


def _activate(ctx: Context, entries: Mapping[str, object], span: Span | None) -> object | None:
    """Make current the context the request is sent in: ``span`` (ours) current, so HTTP-level spans and trace
    headers nest under the call, and our baggage removed, so no propagator writes it into a request to the provider.
    Returns the token to detach it with, or None when nothing needed to change (another instrumentation's span and
    no baggage of ours). Never raises: the span has started, and its call must go on."""
    try:
        # Some baggage: remove ours. (None at all, the usual case, leaves nothing to remove.)
        without_ours = _privacy.context_without_ours(ctx, entries) if entries else None
        if span is not None:
            return attach(with_span(ctx if without_ours is None else without_ours, span))
        return None if without_ours is None else attach(without_ours)
    except Exception:
        log.debug("TokenTrail could not activate its span", exc_info=True)
        return None


def _mark_twin(parent: Any, exclude: Any, provider: str, model: object) -> None:
    """Mark another instrumentation's unlinked span of this same call as a duplicate (see ``_foreign``)."""
    twin = _foreign.unlinked_twin(parent, exclude, provider, model)
    if twin is not None:
        twin.set_attribute(semconv.TOKENTRAIL_DUPLICATE, True)


def _inject_include_usage(request: Any, body: bytes | None) -> None:
    try:
        new_body = _inject.with_include_usage(body) if body else None
        if new_body is not None:
            _inject.replace_body(request, new_body)
    except Exception:
        log.debug("TokenTrail could not add stream_options.include_usage", exc_info=True)


# How a response's media type is read, by its raw (ASCII) content-type value: True for an event stream, False for
# JSON, None for a body we read no usage from. A service meets a handful of values; the memory is bounded anyway.
_MEDIA_KINDS: dict[bytes, bool | None] = {}
_MAX_MEDIA_KINDS = 64
_UNSEEN: Any = object()


def _media_kind(content_type: str) -> bool | None:
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "text/event-stream":
        return True
    return False if media_type.endswith("json") else None


def _media_kind_of(content_type: bytes, headers: Any) -> bool | None:
    """``_media_kind`` of a raw content-type value, remembered when it is ASCII (which decodes alike in every encoding
    ``headers.encoding`` may choose; that encoding costs a pass over every header the first time it is asked for)."""
    if not content_type.isascii():
        return _media_kind(content_type.decode(headers.encoding))
    kind = _media_kind(content_type.decode("ascii"))
    if len(_MEDIA_KINDS) >= _MAX_MEDIA_KINDS:
        _MEDIA_KINDS.clear()
    _MEDIA_KINDS[content_type] = kind
    return kind


def error_type(error: BaseException) -> str:
    """A low-cardinality ``error.type``: the exception's class name."""
    return type(error).__qualname__


class Call:
    """One LLM call from the request to the end of the response body.

    ``own`` says whose span it is. Our span is ended here, with the response facts and the metrics. Another
    instrumentation's span is only given the facts it lacks, while it is still open; ending it, recording its
    errors and its metrics stay that instrumentation's job.
    """

    __slots__ = (
        "span", "endpoint", "own", "ended", "token", "attributes", "_metrics", "_metric_attributes", "_model",
        "_started", "_parser", "_streamed",
    )  # fmt: skip

    def __init__(
        self,
        span: Span,
        endpoint: Endpoint,
        own: bool,
        metrics: Metrics | None = None,
        metric_attributes: MetricAttributes | None = None,
        model: str | None = None,
    ) -> None:
        self.span = span
        self.endpoint = endpoint
        self.own = own
        self.ended = False  # see BodyObserver
        # The token of the context the request is sent in (see _activate), for the transport hook to detach.
        self.token: object | None = None
        # What the request said, for our span: set with the response's attributes when the call ends, in one go.
        self.attributes: dict[str, AttributeValue] = {}
        # Where our span's metrics go (None for another instrumentation's span): the endpoint's attribute sets and
        # the request's model complete them.
        self._metrics = metrics if metric_attributes is not None else None
        self._metric_attributes = metric_attributes
        self._model = model
        self._started = time.monotonic()
        self._parser: BodyParser | None = None
        self._streamed = False

    def failed(self, error: BaseException) -> None:
        """The request raised before a response arrived."""
        if not self._claim_end() or not self.own:
            return
        span = self.span
        kind = None
        attributes = self.attributes
        if isinstance(error, Exception):
            kind = error_type(error)
            attributes[semconv.ERROR_TYPE] = kind
            span.set_status(Status(StatusCode.ERROR))
        # Anything else (cancellation, interrupt) is the application stopping the call, not the call failing.
        try:
            set_clean(span, attributes)
        finally:
            span.end()
        self._record_metrics(None, kind)

    def responded(self, response: Any, wrappers: _streams.Wrappers) -> Any:
        """Wrap ``response``'s body (with the HTTP library's ``wrappers``) so the call ends with the usage; error
        responses end it now."""
        span = self.span
        status = response.status_code
        if status >= 400:
            if self._claim_end() and self.own:
                attributes = self.attributes
                attributes[semconv.ERROR_TYPE] = str(status)
                try:
                    set_clean(span, attributes)
                    span.set_status(Status(StatusCode.ERROR))
                finally:
                    span.end()
                self._record_metrics(None, str(status))
            return response
        if not span.is_recording():
            if self._claim_end() and self.own:
                span.end()  # a span nobody records: nothing to set on it
            return response
        # content-type and content-encoding as headers.get gives them, in one pass over httpx's and httpx2's
        # (raw name, lower-case name, value) triples rather than a scan per name.
        headers = response.headers
        content_type = content_encoding = None
        try:
            for _, name, value in headers._list:
                if name == b"content-type":
                    if content_type is not None:
                        raise ValueError("repeated")  # get() joins repeated values: let it
                    content_type = value
                elif name == b"content-encoding":
                    if content_encoding is not None:
                        raise ValueError("repeated")
                    content_encoding = value
            if content_type is None:
                content_type = b""
            streamed = _MEDIA_KINDS.get(content_type, _UNSEEN)
            if streamed is _UNSEEN:
                streamed = _media_kind_of(content_type, headers)
            if content_encoding is not None:
                # ASCII (all of them, in practice) decodes alike in any encoding headers.encoding may choose, and
                # that encoding costs a pass over every header the first time it is asked for.
                content_encoding = content_encoding.decode(
                    "ascii" if content_encoding.isascii() else headers.encoding
                )
        except (AttributeError, TypeError, ValueError):
            streamed = _media_kind(headers.get("content-type", ""))
            content_encoding = headers.get("content-encoding")
        if streamed is None:
            self.end("read")  # not a body we can read usage from: the call is recorded without it
            return response
        self._streamed = streamed
        parser = body_parser(self.endpoint.api, True) if streamed else JsonBodyParser(self.endpoint.api)
        if content_encoding is not None:
            parser = decoding(parser, content_encoding, type(response))
        self._parser = parser
        # The body wrapped in the library's class of the same kind(s) as the body, so the client's type checks still
        # pass, feeding each chunk to the parser.
        body = response.stream
        if isinstance(body, wrappers.async_base):
            wrapper = wrappers.both_cls if isinstance(body, wrappers.sync_base) else wrappers.async_cls
        else:
            wrapper = wrappers.sync_cls
        response.stream = wrapper(body, self, parser.feed)
        return response

    # BodyObserver ---------------------------------------------------------------------------------------------

    def unfed(self) -> None:
        log.debug("TokenTrail could not parse a response chunk", exc_info=True)
        self._parser = None

    def end(self, how: _streams.StreamEnd, error: BaseException | None = None) -> None:
        # True exactly once: a body ends many ways (read, closed, failed, collected), the call only once. (This is
        # _claim_end, written out: this method runs for every call, and ends it once.)
        if self.ended:
            return  # the usual answer after the first (the body wrapper checks too, before calling)
        with _END_LOCK:
            if self.ended:
                return
            self.ended = True
        span = self.span
        span_ended = False
        try:
            parser = self._parser
            self._parser = None
            try:
                facts = parser.result() if parser is not None else ResponseFacts()
            except Exception:
                log.debug("TokenTrail could not read the usage of a response", exc_info=True)
                facts = ResponseFacts()
            incomplete = self._streamed and not facts.terminal
            if not self.own:
                # Another instrumentation's span: only the facts it lacks, while it is open.
                if span.is_recording():
                    attributes = response_attributes(facts)
                    if incomplete:
                        attributes[semconv.TOKENTRAIL_STREAM_INCOMPLETE] = True
                    span.set_attributes(_foreign.missing(span, attributes))
                return
            kind: str | None = None
            # The request's, then the response's: built by the parser along the way (a whole Chat Completions body),
            # else from the facts.
            attributes = self.attributes
            try:
                attributes.update(response_attributes(facts))
                if incomplete:
                    attributes[semconv.TOKENTRAIL_STREAM_INCOMPLETE] = True
                if error is not None:
                    kind = error_type(error)
                elif facts.error_type is not None:
                    kind = facts.error_type
                if kind is not None:
                    attributes[semconv.ERROR_TYPE] = kind
                    span.set_status(Status(StatusCode.ERROR))
            finally:
                try:
                    set_clean(span, attributes)  # what the request said, at least, whatever failed above
                finally:
                    span_ended = True
                    span.end()
            metrics = self._metrics
            if metrics is not None and metrics.live:
                self._record_metrics(facts, kind)
        except Exception:
            # This runs inside the application's read of the body: it must not raise, and our span must end (with
            # what the request said, at least).
            log.debug("TokenTrail could not finish a call", exc_info=True)
            if self.own and not span_ended:
                try:
                    set_clean(span, self.attributes)
                except Exception:
                    pass
                try:
                    span.end()
                except Exception:
                    pass

    # ----------------------------------------------------------------------------------------------------------

    def _claim_end(self) -> bool:
        """True exactly once: a body ends many ways (read, closed, failed, collected), the call only once."""
        if self.ended:
            return False
        with _END_LOCK:
            if self.ended:
                return False
            self.ended = True
            return True

    def _record_metrics(self, facts: ResponseFacts | None, kind: str | None) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        try:
            metrics.record(
                self._metric_attributes,  # type: ignore[arg-type]
                self._model,
                facts.response_model if facts is not None else None,
                time.monotonic() - self._started,
                facts.usage if facts is not None else None,
                kind,
            )
        except Exception:
            log.debug("TokenTrail could not record its metrics", exc_info=True)
