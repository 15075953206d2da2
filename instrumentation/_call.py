"""One LLM call seen at the transport: decide what to do with it, and own its span until the body is done.

``begin`` runs before the request is sent. It either returns ``None`` (not an LLM call; or some SDK already
traces the call, in which case our attribution goes onto that span instead of a second one), or a ``Call``
holding our span. ``Call.responded`` wraps the response body so the span ends, with the usage, when the
application is done with it. Nothing here may raise into the host call: the transport wrapper guards every entry.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from . import _streams, semconv
from ._context import current_attribution
from ._credentials import classify, request_key
from ._decoding import decoding
from ._endpoints import Endpoint, recognise
from ._request import header_attribution, read_request
from ._spans import attribution_attributes, is_genai_call_span, response_attributes
from ._state import Settings
from ._usage import BodyParser, ResponseFacts, body_parser

log = logging.getLogger(__name__)


def _request_body(request: Any) -> bytes | None:
    """The request body if the client already holds it in memory (the SDKs always do); never reads a stream."""
    try:
        content = request.content
    except Exception:
        return None
    return content if isinstance(content, bytes) else None


def begin(request: Any, settings: Settings) -> Call | None:
    """Start tracing ``request`` if it is an LLM call that no other instrumentation is already tracing."""
    endpoint = recognise(request.method, request.url, settings.base_urls)
    if endpoint is None:
        return None
    facts = read_request(endpoint.api, _request_body(request))
    if not endpoint.known_host and not facts.model:
        # A server we only know by path must at least send what an LLM request sends.
        return None

    headers = request.headers
    header_user, header_tags = header_attribution(headers)
    attribution = (
        current_attribution().with_fallback(header_user, header_tags).with_fallback(facts.user, facts.tags)
    )
    credential_type, credential_id = classify(
        request_key(headers), settings.salt, settings.system_fingerprints, attribution.credential
    )
    attributes = attribution_attributes(attribution, credential_type, credential_id)
    attributes[semconv.TOKENTRAIL_API] = endpoint.api

    current = trace.get_current_span()
    if is_genai_call_span(current):
        current.set_attributes(attributes)
        return None

    attributes.update(_request_attributes(endpoint, facts.model, facts.stream))
    name = f"{endpoint.operation} {facts.model}" if facts.model else endpoint.operation
    span = settings.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
    return Call(span, endpoint)


def _request_attributes(endpoint: Endpoint, model: str | None, stream: bool) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        semconv.GEN_AI_OPERATION_NAME: endpoint.operation,
        semconv.GEN_AI_PROVIDER_NAME: endpoint.provider,
        semconv.GEN_AI_REQUEST_STREAM: stream,
        semconv.SERVER_ADDRESS: endpoint.server_address,
        semconv.SERVER_PORT: endpoint.server_port,
    }
    if model:
        attributes[semconv.GEN_AI_REQUEST_MODEL] = model
    return attributes


def error_type(error: BaseException) -> str:
    """A low-cardinality ``error.type``: the exception's class name."""
    return type(error).__qualname__


class Call:
    """Our span of one LLM call, from the request to the end of the response body."""

    __slots__ = ("span", "endpoint", "_parser", "_streamed", "_ended", "_lock")

    def __init__(self, span: Span, endpoint: Endpoint) -> None:
        self.span = span
        self.endpoint = endpoint
        self._parser: BodyParser | None = None
        self._streamed = False
        self._ended = False
        self._lock = threading.Lock()

    def activate(self) -> object:
        """Make our span current while the request is sent, so HTTP-level spans nest under it."""
        return context.attach(trace.set_span_in_context(self.span))

    def failed(self, error: BaseException) -> None:
        """The request raised before a response arrived."""
        if not self._claim_end():
            return
        span = self.span
        if isinstance(error, Exception):
            span.set_attribute(semconv.ERROR_TYPE, error_type(error))
            span.set_status(Status(StatusCode.ERROR))
        # Anything else (cancellation, interrupt) is the application stopping the call, not the call failing.
        span.end()

    def responded(self, response: Any, sync_base: type, async_base: type) -> Any:
        """Wrap ``response``'s body so the span ends with the usage; error responses end the span now."""
        span = self.span
        status = response.status_code
        if status >= 400:
            if self._claim_end():
                span.set_attribute(semconv.ERROR_TYPE, str(status))
                span.set_status(Status(StatusCode.ERROR))
                span.end()
            return response
        if not span.is_recording():
            if self._claim_end():
                span.end()
            return response
        headers = response.headers
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        self._streamed = media_type == "text/event-stream"
        if not self._streamed and not media_type.endswith("json"):
            self._finish(ResponseFacts(), error=None, incomplete=False)
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
            facts = self._parser.result() if self._parser is not None else ResponseFacts()
        except Exception:
            log.debug("TokenTrail could not read the usage of a response", exc_info=True)
            facts = ResponseFacts()
        self._parser = None
        incomplete = self._streamed and not facts.terminal
        self._finish(facts, error=error, incomplete=incomplete)

    # ----------------------------------------------------------------------------------------------------------

    def _claim_end(self) -> bool:
        """True exactly once: a body ends many ways (read, closed, failed, collected), the span only once."""
        with self._lock:
            if self._ended:
                return False
            self._ended = True
            return True

    def _finish(self, facts: ResponseFacts, *, error: BaseException | None, incomplete: bool) -> None:
        span = self.span
        try:
            span.set_attributes(response_attributes(facts))
            if incomplete:
                span.set_attribute(semconv.TOKENTRAIL_STREAM_INCOMPLETE, True)
            if error is not None:
                span.set_attribute(semconv.ERROR_TYPE, error_type(error))
                span.set_status(Status(StatusCode.ERROR))
            elif facts.error_type is not None:
                span.set_attribute(semconv.ERROR_TYPE, facts.error_type)
                span.set_status(Status(StatusCode.ERROR))
        finally:
            span.end()
