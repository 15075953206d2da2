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
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from . import _foreign, _inject, _privacy, _processor, _streams, semconv
from ._context import current_attribution
from ._credentials import classify
from ._decoding import decoding
from ._endpoints import Endpoint, recognise
from ._parsers import body_parser
from ._request import read_headers, read_request
from ._spans import attribution_attributes, request_attributes, response_attributes
from ._state import Settings
from ._usage import BodyParser, ResponseFacts

log = logging.getLogger(__name__)

_INJECTABLE_APIS = frozenset({semconv.API_CHAT_COMPLETIONS, semconv.API_COMPLETIONS})


def _request_body(request: Any) -> bytes | None:
    """The request body if the client already holds it in memory (the SDKs always do); never reads a stream."""
    try:
        content = request.content
    except Exception:
        return None
    return content if isinstance(content, bytes) else None


def begin(request: Any, settings: Settings) -> Call | None:
    """Start following ``request`` if it is an LLM call: with our own span, or with the span already tracing it."""
    endpoint = recognise(request.method, request.url, settings.base_urls)
    if endpoint is None:
        return None
    body = _request_body(request)
    facts = read_request(endpoint.api, body)
    if not endpoint.known_host and not facts.model:
        # A server we only know by path must at least send what an LLM request sends.
        return None

    headers = request.headers
    sent = read_headers(headers)
    if sent.baggage:
        _privacy.strip_header(headers)
    if settings.inject_stream_usage and facts.stream and not facts.include_usage and endpoint.api in _INJECTABLE_APIS:
        _inject_include_usage(request, body)

    # Precedence: the application's explicit attribute() > the request's reporting headers > the request body.
    attribution = current_attribution().with_fallback(sent.user, sent.tags).with_fallback(facts.user, facts.tags)
    credential_type, credential_id = classify(
        sent.key, settings.salt, settings.system_fingerprints, attribution.credential
    )
    names = settings.credential_names
    credential_name = names.get(credential_id) if names and credential_id else None
    attributes = attribution_attributes(attribution, credential_type, credential_id, credential_name)
    attributes[semconv.TOKENTRAIL_API] = endpoint.api
    # The deployment of an Azure URL stands in for a model the body does not name; the response's model is preferred.
    requested = request_attributes(endpoint, facts.model or endpoint.deployment, facts.stream)

    if settings.global_provider:
        # The application may have set its SDK provider after instrument() (opentelemetry-instrument does it that
        # way round): the attribution processor belongs on it too. A dictionary lookup once it is there.
        _processor.install(trace.get_tracer_provider())

    current = trace.get_current_span()
    model = requested.get(semconv.GEN_AI_REQUEST_MODEL)
    foreign = _foreign.call_span_for(current)
    if foreign is not None:
        foreign.set_attributes(attributes)
        foreign.set_attributes(_foreign.missing(foreign, requested))
        for outer in _foreign.enclosing_calls(foreign):
            outer.set_attribute(semconv.TOKENTRAIL_DUPLICATE, True)
        _mark_twin(getattr(foreign, "parent", None), foreign, endpoint.provider, model)
        return Call(foreign, endpoint, own=False)

    attributes.update(requested)
    name = f"{endpoint.operation} {model}" if model else endpoint.operation
    span = settings.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
    _mark_twin(current.get_span_context(), None, endpoint.provider, model)
    return Call(span, endpoint, own=True, requested=requested, settings=settings)


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

    __slots__ = ("span", "endpoint", "own", "_requested", "_metrics", "_started", "_parser", "_streamed", "_ended", "_lock")

    def __init__(
        self,
        span: Span,
        endpoint: Endpoint,
        *,
        own: bool,
        requested: dict[str, AttributeValue] | None = None,
        settings: Settings | None = None,
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
        self._lock = threading.Lock()

    def activate(self) -> object | None:
        """The context the request is sent in: our span current (so HTTP-level spans and trace headers nest under
        the call), and our baggage removed (so no propagator writes it into a request to the provider)."""
        ctx = _privacy.context_without_ours()
        if self.own:
            ctx = trace.set_span_in_context(self.span, ctx)
        return None if ctx is None else context.attach(ctx)

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
        headers = response.headers
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        self._streamed = media_type == "text/event-stream"
        if not self._streamed and not media_type.endswith("json"):
            self.end("read")  # not a body we can read usage from: the call is recorded without it
            return response
        self._parser = decoding(body_parser(self.endpoint.api, self._streamed), headers.get("content-encoding"))
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
        if not self._claim_end():
            return
        try:
            try:
                facts = self._parser.result() if self._parser is not None else ResponseFacts()
            except Exception:
                log.debug("TokenTrail could not read the usage of a response", exc_info=True)
                facts = ResponseFacts()
            self._parser = None
            self._finish(facts, error=error, incomplete=self._streamed and not facts.terminal)
        except Exception:
            # This runs inside the application's read of the body: it must not raise, and our span must end.
            log.debug("TokenTrail could not finish a call", exc_info=True)
            if self.own:
                try:
                    self.span.end()
                except Exception:
                    pass

    # ----------------------------------------------------------------------------------------------------------

    def _claim_end(self) -> bool:
        """True exactly once: a body ends many ways (read, closed, failed, collected), the call only once."""
        with self._lock:
            if self._ended:
                return False
            self._ended = True
            return True

    def _finish(self, facts: ResponseFacts, *, error: BaseException | None, incomplete: bool) -> None:
        span = self.span
        if not self.own:
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
            span.set_attributes(attributes)
            if error is not None:
                kind = error_type(error)
            elif facts.error_type is not None:
                kind = facts.error_type
            if kind is not None:
                span.set_attribute(semconv.ERROR_TYPE, kind)
                span.set_status(Status(StatusCode.ERROR))
        finally:
            span.end()
        self._record_metrics(facts, kind)

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
