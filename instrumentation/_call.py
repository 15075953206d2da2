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
from contextvars import Token
from typing import Any, Final, Protocol

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from . import _foreign, _inject, _privacy, _processor, _streams, semconv
from ._context import call_context
from ._decoding import decoding
from ._endpoints import Endpoint
from ._gemini import GOOGLE_APIS
from ._metrics import MetricAttributes, Metrics
from ._parsers import body_parser
from ._request import UNKNOWN, HeaderFacts, RequestFacts, read_headers, read_request
from ._spans import attribution_attributes, request_attributes, response_attributes
from ._state import Settings
from ._usage import ResponseFacts

__all__ = ["Call", "CallSpan", "FactsReader", "begin", "error_type"]

log = logging.getLogger(__name__)

_INJECTABLE_APIS = frozenset({semconv.API_CHAT_COMPLETIONS, semconv.API_COMPLETIONS})
# What a Google API request says, all of it in its path (see _gemini): its body is not read.
_GOOGLE_STREAMED: Final = RequestFacts(stream=True)
# Guards the one-time end of every call (held for a flag test-and-set: one lock for all calls costs nothing).
_END_LOCK = threading.Lock()


def begin(request: Any, settings: Settings) -> Call | None:
    """Start following ``request`` if it is an LLM call: with our own span, or with the span already tracing it.

    Returns None for any other request, and for every request while OpenTelemetry's instrumentation is suppressed
    in the current context (``suppress_instrumentation``), as the contrib instrumentations do.
    """
    if request.method != "POST" or not is_instrumentation_enabled():
        return None
    target = settings.endpoints.lookup(request.url)
    if target is None:
        return None
    endpoint, (start_attributes, endpoint_attributes, metric_attributes) = target
    google = endpoint.api in GOOGLE_APIS
    body = None
    if google:
        facts = _GOOGLE_STREAMED if endpoint.stream else UNKNOWN
    else:
        # The request body if the client already holds it in memory (the SDKs always do); never reads a stream.
        try:
            body = request.content
        except Exception:  # noqa: BLE001 - a streamed upload (RequestNotRead): its body is not ours to read
            body = None
        if not isinstance(body, bytes):
            body = None
        facts = read_request(endpoint.api, body)
    model = facts.model or endpoint.model
    if not endpoint.known_host and not model:
        # A server we only know by path must at least send what an LLM request sends.
        return None
    sent = read_headers(request.headers)
    if sent.baggage:
        _privacy.strip_header(request.headers)
    sent_request = request
    if settings.inject_stream_usage and facts.stream and not facts.include_usage and endpoint.api in _INJECTABLE_APIS:
        sent_request = _with_include_usage(request, body)

    ctx = context.get_current()
    attribution, entries, current = call_context(ctx)
    # Precedence: the application's explicit attribute() > the request's reporting headers > the request body.
    if sent.user is not None or sent.tags is not None:
        attribution = attribution.with_fallback(sent.user, sent.tags)
    if facts.user is not None or facts.tags is not None:
        attribution = attribution.with_fallback(facts.user, facts.tags)
    if google:
        credential_type, credential_id, credential_name = _google_credential(
            settings, request.url, sent, attribution.credential
        )
    else:
        credential_type, credential_id, credential_name = settings.fingerprints.classify(
            sent.authorization, sent.x_api_key, sent.api_key, attribution.credential
        )
    # The deployment of an Azure URL stands in for a model the body does not name; the response's model is preferred.
    model = model or endpoint.deployment

    if settings.global_provider:
        setup = settings.provider_setup
        if setup is not None and not setup.done:
            setup.ensure()  # the first call, in a process that set no provider: one from the OTEL_* variables
        # The application may have set its SDK provider after instrument() (opentelemetry-instrument does it that
        # way round): the attribution processor belongs on it too. A dictionary lookup once it is there.
        _processor.install(trace.get_tracer_provider())

    foreign = _foreign.call_span_for(current)
    if foreign is not None:
        attributes = attribution_attributes(attribution, credential_type, credential_id, credential_name)
        attributes[semconv.TOKENTRAIL_API] = endpoint.api
        attributes.update(_foreign.missing(foreign, request_attributes(endpoint, model, facts.stream)))
        foreign.set_attributes(attributes)
        for outer in _foreign.enclosing_calls(foreign):
            outer.set_attribute(semconv.TOKENTRAIL_DUPLICATE, True)
        _mark_twin(getattr(foreign, "parent", None), foreign, endpoint.provider, model)
        call = Call(foreign, endpoint, False)
        call.request = sent_request
        call.token = _activate(ctx, entries, None)
        return call

    # What the conventions ask to be known at the start (operation, provider, server, model) is given to start_span,
    # for samplers; everything else the request says is set with the response's attributes when the call ends, in
    # one set_attributes. All of it is built before the span starts: nothing that could fail stands between starting
    # our span and handing it to the Call that will end it.
    at_start = start_attributes.copy()
    if model:
        at_start[semconv.GEN_AI_REQUEST_MODEL] = model
    rest = endpoint_attributes.copy()
    rest[semconv.GEN_AI_REQUEST_STREAM] = facts.stream
    attribution_attributes(attribution, credential_type, credential_id, credential_name, into=rest)
    name = f"{endpoint.operation} {model}" if model else endpoint.operation
    span = settings.tracer.start_span(name, context=ctx, kind=SpanKind.CLIENT, attributes=at_start)
    call = Call(span, endpoint, True, settings.metrics, metric_attributes, model or None)
    call.request = sent_request
    call.attributes = _kept_by_sampler(span, at_start, rest)
    if _foreign.open_calls:
        try:
            _mark_twin(current.get_span_context(), None, endpoint.provider, model)
        except Exception:  # noqa: BLE001 - our span has started: the call must go on
            log.debug("TokenTrail could not look for another instrumentation's span of this call", exc_info=True)
    call.token = _activate(ctx, entries, span)
    return call


def _google_credential(
    settings: Settings, url: Any, sent: HeaderFacts, explicit: str | None
) -> tuple[str | None, str | None, str | None]:
    """The credential of a call to Google's APIs. An API key (``x-goog-api-key``, or the ``key`` query parameter some
    clients send) is a key like any other: fingerprinted, and classified by the same rules. A bearer token is not a
    key there: it is an OAuth access token (Vertex AI's application default credentials, a service account) that
    changes every hour, so its fingerprint would name no lasting identity and add a new one each hour; the call is
    paid by the service's own Google Cloud project, so it is ``system`` unless ``attribute(credential=...)`` says
    otherwise, with no fingerprint."""
    key = sent.goog_api_key
    if key is None:
        try:
            value = url.params.get("key")
        except Exception:  # noqa: BLE001 - a query string the URL class cannot parse: no key there
            value = None
        key = value.encode() if isinstance(value, str) and value else None
    if key is not None:
        return settings.fingerprints.classify(None, key, None, explicit)
    if sent.authorization is not None:
        return explicit or "system", None, None
    return explicit, None, None


def _kept_by_sampler(span: Span, at_start: dict[str, AttributeValue], rest: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
    """The attributes to set when the call ends: ``rest``, after any of ``at_start`` the span did not keep. The SDK
    starts a span with the attributes its sampler RETURNS, so a sampler that reads them but returns none would leave
    our span without its operation, provider, server and model."""
    try:
        kept = getattr(span, "attributes", None)
        if kept is None or not span.is_recording():
            return rest
        missing = {name: value for name, value in at_start.items() if name not in kept}
    except Exception:  # noqa: BLE001 - a span class of another SDK: what it kept is its own business
        return rest
    if not missing:
        return rest
    missing.update(rest)
    return missing


def _activate(ctx: Context, entries: Mapping[str, object], span: Span | None) -> Token[Context] | None:
    """Make current the context the request is sent in: ``span`` (ours) current, so HTTP-level spans and trace
    headers nest under the call, and our baggage removed, so no propagator writes it into a request to the provider.
    Returns the token to detach it with, or None when nothing needed to change (another instrumentation's span and
    no baggage of ours). Never raises: the span has started, and its call must go on."""
    try:
        # Some baggage: remove ours. (None at all, the usual case, leaves nothing to remove.)
        without_ours = _privacy.context_without_ours(ctx, entries) if entries else None
        if span is not None:
            return context.attach(trace.set_span_in_context(span, ctx if without_ours is None else without_ours))
        return None if without_ours is None else context.attach(without_ours)
    except Exception:  # noqa: BLE001 - the span has started, and its call must go on
        log.debug("TokenTrail could not activate its span", exc_info=True)
        return None


def _mark_twin(parent: Any, exclude: Any, provider: str, model: object) -> None:
    """Mark another instrumentation's unlinked span of this same call as a duplicate (see ``_foreign``)."""
    twin = _foreign.unlinked_twin(parent, exclude, provider, model)
    if twin is not None:
        twin.set_attribute(semconv.TOKENTRAIL_DUPLICATE, True)


def _with_include_usage(request: Any, body: bytes | None) -> Any:
    """``request``, or a copy of it that asks for the stream's usage (see ``_inject``)."""
    try:
        new_body = _inject.with_include_usage(body) if body else None
        if new_body is not None and "transfer-encoding" not in request.headers:
            return _inject.with_body(request, new_body)
    except Exception:  # noqa: BLE001 - the request goes out as the application wrote it
        log.debug("TokenTrail could not add stream_options.include_usage", exc_info=True)
    return request


def _body_headers(headers: Any) -> tuple[str, str | None]:
    """A response's ``Content-Type`` (empty when absent) and ``Content-Encoding`` as ``headers.get`` gives them (a
    repeated header's values joined by ", "), found in one pass over ``headers.raw``: each ``get`` is a scan of its
    own, and one for a header the response lacks raises and catches a ``KeyError``."""
    content_type: bytes | None = None
    content_encoding: bytes | None = None
    for name, value in headers.raw:
        lowered = name.lower()
        if lowered == b"content-type":
            content_type = value if content_type is None else content_type + b", " + value
        elif lowered == b"content-encoding":
            content_encoding = value if content_encoding is None else content_encoding + b", " + value
    if (content_type is not None and not content_type.isascii()) or (
        content_encoding is not None and not content_encoding.isascii()
    ):
        # Not ASCII: decoded as the HTTP library decodes its header values.
        return headers.get("content-type", ""), headers.get("content-encoding")
    return (
        "" if content_type is None else content_type.decode("ascii"),
        None if content_encoding is None else content_encoding.decode("ascii"),
    )


def _media_kind(content_type: str) -> bool | None:
    """How a response's media type is read: True for an event stream, False for JSON, None for a body we read no
    usage from."""
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "text/event-stream":
        return True
    return False if media_type.endswith("json") else None


def error_type(error: BaseException) -> str:
    """A low-cardinality ``error.type``: the exception's class name."""
    return type(error).__qualname__


class FactsReader(Protocol):
    """What a call's response is read by (a ``BodyParser`` for httpx, one of ``_bedrock_usage``'s readers): only its
    result is needed to end the call."""

    def result(self) -> ResponseFacts: ...


class CallSpan:
    """One LLM call's span from its start to its end, whatever carried the call (httpx here, botocore in
    ``_bedrock``): how it ends is the same for every client, so it is written once.

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
        # The token of the context the request is sent in (see _activate), to detach once it is sent.
        self.token: Token[Context] | None = None
        # What the request said, for our span: set with the response's attributes when the call ends, in one go.
        self.attributes: dict[str, AttributeValue] = {}
        # Where our span's metrics go (None for another instrumentation's span): the endpoint's attribute sets and
        # the request's model complete them.
        self._metrics = metrics if metric_attributes is not None else None
        self._metric_attributes = metric_attributes
        self._model = model
        self._started = time.monotonic()
        # What reads the response, for its facts when the call ends (None: no body we read usage from).
        self._parser: FactsReader | None = None
        # Whether the response is a stream, which is incomplete unless its final event was seen.
        self._streamed = False

    def failed(self, error: BaseException | None, kind: str | None = None) -> None:
        """The call ended without a response body to read: an exception (``error``) or an error status (``kind``)."""
        if not self._claim_end() or not self.own:
            return
        span = self.span
        if kind is None and isinstance(error, Exception):
            kind = error_type(error)
        # Anything else (cancellation, interrupt) is the application stopping the call, not the call failing.
        attributes = self.attributes
        try:
            if kind is not None:
                attributes[semconv.ERROR_TYPE] = kind
                span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(attributes)
        finally:
            span.end()
        self._record_metrics(None, kind)

    # BodyObserver ---------------------------------------------------------------------------------------------

    def end(self, how: _streams.StreamEnd, error: BaseException | None = None, facts: ResponseFacts | None = None) -> None:
        """The response ended ``how``; its facts are ``facts`` when the caller already has them, else the reader's."""
        if not self._claim_end():
            return
        span = self.span
        span_ended = False
        try:
            parser = self._parser
            self._parser = None
            if facts is None:
                try:
                    facts = parser.result() if parser is not None else ResponseFacts()
                except Exception:  # noqa: BLE001 - a body we could not read: the call is recorded without its usage
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
            # The request's, then the response's.
            attributes = self.attributes
            try:
                response_attributes(facts, into=attributes)
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
                    span.set_attributes(attributes)  # what the request said, at least, whatever failed above
                finally:
                    span_ended = True
                    span.end()
            self._record_metrics(facts, kind)
        except Exception:  # noqa: BLE001 - this runs inside the application's read of the body
            # This runs inside the application's read of the body: it must not raise, and our span must end (with
            # what the request said, at least).
            log.debug("TokenTrail could not finish a call", exc_info=True)
            if self.own and not span_ended:
                try:
                    span.set_attributes(self.attributes)
                    span.end()
                except Exception:  # noqa: BLE001 - as above
                    log.debug("TokenTrail could not end its span", exc_info=True)

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
        metrics, attributes = self._metrics, self._metric_attributes
        if metrics is None or attributes is None:
            return
        try:
            metrics.record(
                attributes,
                self._model,
                facts.response_model if facts is not None else None,
                time.monotonic() - self._started,
                facts.usage if facts is not None else None,
                kind,
            )
        except Exception:  # noqa: BLE001 - metrics must never break the host call
            log.debug("TokenTrail could not record its metrics", exc_info=True)


class Call(CallSpan):
    """One LLM call seen at the transport, from the request to the end of the response body. ``begin`` sets
    ``request`` (the request to send: the application's, or a copy of it with stream_options.include_usage, see
    ``_inject``) as soon as it has made the call, so construction stays ``CallSpan``'s alone."""

    __slots__ = ("request",)

    request: Any

    def responded(self, response: Any, wrappers: _streams.Wrappers) -> Any:
        """Wrap ``response``'s body (with the HTTP library's ``wrappers``) so the call ends with the usage; error
        responses end it now."""
        span = self.span
        status = response.status_code
        if status >= 400:
            self.failed(None, str(status))
            return response
        if not span.is_recording():
            if self._claim_end() and self.own:
                span.end()  # a span nobody records: nothing to set on it
            return response
        content_type, content_encoding = _body_headers(response.headers)
        streamed = _media_kind(content_type)
        if streamed is None:
            self.end("read")  # not a body we can read usage from: the call is recorded without it
            return response
        self._streamed = streamed
        parser = body_parser(self.endpoint.api, streamed)
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

    def unfed(self) -> None:
        """A chunk the parser failed on: what it read so far is not trusted, the call is recorded without usage."""
        log.debug("TokenTrail could not parse a response chunk", exc_info=True)
        self._parser = None
