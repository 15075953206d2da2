"""One LLM call seen at the transport: decide what to do with it, and own its span until the body is done.

``begin`` runs before the request is sent. It returns ``None`` when the request is not an LLM call, or a ``Call``
that follows the response body to its end. The ``Call`` holds either our own span, or (when another
instrumentation already traces the call, see ``_foreign``) that instrumentation's span, which we enrich and
never end. Nothing here may raise into the host call: the transport wrapper guards every entry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from . import _foreign, _inject, _privacy, _processor, _streams, semconv
from ._context import EMPTY, call_context, with_span
from ._decoding import decoding
from ._endpoints import Endpoint
from ._parsers import body_parser
from ._request import NO_HEADERS, read_headers, read_request
from ._spans import attribution_attributes, request_attributes, response_attributes
from ._state import Settings
from ._usage import BodyParser, ResponseFacts

log = logging.getLogger(__name__)

_INJECTABLE_APIS = frozenset({semconv.API_CHAT_COMPLETIONS, semconv.API_COMPLETIONS})
# Guards the one-time end of every call (held for a flag test-and-set: one lock for all calls costs nothing).
_END_LOCK = threading.Lock()


def begin(request: Any, settings: Settings) -> Call | None:
    """Start following ``request`` if it is an LLM call: with our own span, or with the span already tracing it.

    This runs before every LLM request, so the common case is kept short: the endpoint and its attributes come
    from a per-URL memory, the key's fingerprint from a per-key one, and the current context is read once.
    """
    target = settings.endpoints.lookup(request.method, request.url)
    if target is None:
        return None
    endpoint, endpoint_attributes = target
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

    headers = request.headers
    sent = read_headers(headers)
    if sent.baggage:
        _privacy.strip_header(headers)
    if settings.inject_stream_usage and facts.stream and not facts.include_usage and endpoint.api in _INJECTABLE_APIS:
        _inject_include_usage(request, body)

    ctx = context.get_current()
    # Precedence: the application's explicit attribute() > the request's reporting headers > the request body.
    attribution, entries, current = call_context(ctx)
    if sent is not NO_HEADERS and (sent.user is not None or sent.tags is not None):
        attribution = attribution.with_fallback(sent.user, sent.tags)
    if facts.user is not None or facts.tags is not None:
        attribution = attribution.with_fallback(facts.user, facts.tags)
    credential_type, credential_id = settings.fingerprints.classify(
        sent.authorization, sent.x_api_key, sent.api_key, attribution.credential
    )
    names = settings.credential_names
    credential_name = names.get(credential_id) if names and credential_id else None
    # The deployment of an Azure URL stands in for a model the body does not name; the response's model is preferred.
    model = model or endpoint.deployment

    if settings.global_provider:
        # The application may have set its SDK provider after instrument() (opentelemetry-instrument does it that
        # way round): the attribution processor belongs on it too. A dictionary lookup once it is there.
        _processor.install(trace.get_tracer_provider())

    foreign = _foreign.call_span_for(current)
    if foreign is not None:
        attributes = attribution_attributes(attribution, credential_type, credential_id, credential_name)
        attributes[semconv.TOKENTRAIL_API] = endpoint.api
        foreign.set_attributes(attributes)
        foreign.set_attributes(_foreign.missing(foreign, request_attributes(endpoint, model, facts.stream)))
        for outer in _foreign.enclosing_calls(foreign):
            outer.set_attribute(semconv.TOKENTRAIL_DUPLICATE, True)
        _mark_twin(getattr(foreign, "parent", None), foreign, endpoint.provider, model)
        return Call(foreign, endpoint, own=False, ctx=ctx, baggage=entries)

    # Everything our span knows at its start, given at its start: one validation pass in the SDK, not one per call.
    attributes = endpoint_attributes.copy()
    attributes[semconv.GEN_AI_REQUEST_STREAM] = facts.stream
    if model:
        attributes[semconv.GEN_AI_REQUEST_MODEL] = model
    if attribution is not EMPTY or credential_type is not None:
        attributes.update(attribution_attributes(attribution, credential_type, credential_id, credential_name))
    name = f"{endpoint.operation} {model}" if model else endpoint.operation
    span = settings.tracer.start_span(name, context=ctx, kind=SpanKind.CLIENT, attributes=attributes)
    if _foreign.open_calls:
        _mark_twin(current.get_span_context(), None, endpoint.provider, model)
    # The attributes double as the metrics' request attributes (they hold every one of METRIC_ATTRIBUTES).
    return Call(span, endpoint, own=True, requested=attributes, settings=settings, ctx=ctx, baggage=entries)


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
        "span", "endpoint", "own", "_requested", "_metrics", "_started", "_parser", "_streamed", "_ended", "_ctx",
        "_baggage",
    )  # fmt: skip

    def __init__(
        self,
        span: Span,
        endpoint: Endpoint,
        *,
        own: bool,
        requested: dict[str, AttributeValue] | None = None,
        settings: Settings | None = None,
        ctx: Context | None = None,
        baggage: Mapping[str, object] | None = None,
    ) -> None:
        self.span = span
        self.endpoint = endpoint
        self.own = own
        self._requested = requested
        self._metrics = settings.metrics if settings is not None else None
        self._started = time.monotonic()
        self._parser: BodyParser | None = None
        self._streamed = False
        self._ended = False
        # The context the request was begun in and its baggage, when known: read once, in begin().
        self._ctx = ctx
        self._baggage = baggage

    def activate(self) -> object | None:
        """The context the request is sent in: our span current (so HTTP-level spans and trace headers nest under
        the call), and our baggage removed (so no propagator writes it into a request to the provider)."""
        ctx, entries = self._ctx, self._baggage
        self._ctx = self._baggage = None
        without_ours = None
        if ctx is None or entries:
            # Baggage unknown, or some: remove ours. (None at all, the usual case, leaves nothing to remove.)
            without_ours = _privacy.context_without_ours(ctx, entries)
        if self.own:
            if without_ours is None and ctx is not None:
                return context.attach(with_span(ctx, self.span))
            return context.attach(trace.set_span_in_context(self.span, without_ours))
        return None if without_ours is None else context.attach(without_ours)

    def failed(self, error: BaseException) -> None:
        """The request raised before a response arrived."""
        if not self._claim_end() or not self.own:
            return
        span = self.span
        kind = None
        if isinstance(error, Exception):
            kind = error_type(error)
            span.set_attribute(semconv.ERROR_TYPE, kind)
            span.set_status(Status(StatusCode.ERROR))
        # Anything else (cancellation, interrupt) is the application stopping the call, not the call failing.
        span.end()
        self._record_metrics(None, kind)

    def responded(self, response: Any, sync_base: type, async_base: type) -> Any:
        """Wrap ``response``'s body so the call ends with the usage; error responses end it now."""
        span = self.span
        status = response.status_code
        if status >= 400:
            if self._claim_end() and self.own:
                span.set_attribute(semconv.ERROR_TYPE, str(status))
                span.set_status(Status(StatusCode.ERROR))
                span.end()
                self._record_metrics(None, str(status))
            return response
        if not span.is_recording():
            if self._claim_end() and self.own:
                span.end()
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
            encoding = headers.encoding
            content_type = "" if content_type is None else content_type.decode(encoding)
            if content_encoding is not None:
                content_encoding = content_encoding.decode(encoding)
        except (AttributeError, TypeError, ValueError):
            content_type, content_encoding = headers.get("content-type", ""), headers.get("content-encoding")
        media_type = content_type.partition(";")[0].strip().lower()
        streamed = self._streamed = media_type == "text/event-stream"
        if not streamed and not media_type.endswith("json"):
            self.end("read")  # not a body we can read usage from: the call is recorded without it
            return response
        parser = body_parser(self.endpoint.api, streamed)
        self._parser = parser if content_encoding is None else decoding(parser, content_encoding)
        response.stream = _streams.observe(response.stream, self, sync_base, async_base)
        return response

    # BodyObserver ---------------------------------------------------------------------------------------------

    def chunk(self, data: bytes) -> None:
        parser = self._parser
        if parser is not None:
            try:
                parser.feed(data)
            except Exception:
                log.debug("TokenTrail could not parse a response chunk", exc_info=True)
                self._parser = None

    def end(self, how: _streams.StreamEnd, error: BaseException | None = None) -> None:
        # True exactly once: a body ends many ways (read, closed, failed, collected), the call only once. (This is
        # _claim_end, written out: this method runs three times for every call, and ends it once.)
        if self._ended:
            return  # the usual answer after the first: a body read to its end is then closed, then freed
        with _END_LOCK:
            if self._ended:
                return
            self._ended = True
        span = self.span
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
            try:
                attributes = response_attributes(facts)
                if incomplete:
                    attributes[semconv.TOKENTRAIL_STREAM_INCOMPLETE] = True
                if error is not None:
                    kind = error_type(error)
                elif facts.error_type is not None:
                    kind = facts.error_type
                if kind is not None:
                    attributes[semconv.ERROR_TYPE] = kind
                    span.set_status(Status(StatusCode.ERROR))
                span.set_attributes(attributes)
            finally:
                span.end()
            self._record_metrics(facts, kind)
        except Exception:
            # This runs inside the application's read of the body: it must not raise, and our span must end.
            log.debug("TokenTrail could not finish a call", exc_info=True)
            if self.own:
                try:
                    span.end()
                except Exception:
                    pass

    # ----------------------------------------------------------------------------------------------------------

    def _claim_end(self) -> bool:
        """True exactly once: a body ends many ways (read, closed, failed, collected), the call only once."""
        if self._ended:
            return False
        with _END_LOCK:
            if self._ended:
                return False
            self._ended = True
            return True

    def _record_metrics(self, facts: ResponseFacts | None, kind: str | None) -> None:
        metrics = self._metrics
        if metrics is None or self._requested is None:
            return
        try:
            metrics.record(
                self._requested,
                facts.response_model if facts is not None else None,
                time.monotonic() - self._started,
                facts.usage if facts is not None else None,
                kind,
            )
        except Exception:
            log.debug("TokenTrail could not record its metrics", exc_info=True)
