"""AWS Bedrock through boto3/botocore: one span per ``bedrock-runtime`` call, with the shape of every other call span.

botocore does not send through httpx, so the transport hooks never see Bedrock. It has an event system instead, and
every client carries one (``client.meta.events``): a ``bedrock-runtime`` client gets our handlers when it is created
(a wrapt wrap of ``ClientCreator.create_client``, through which boto3 and botocore make every client; clients made
before ``instrument()`` stay unobserved). The call is followed through botocore's public events:

* ``before-call``: recognise the operation (``Converse``, ``ConverseStream``, ``InvokeModel``,
  ``InvokeModelWithResponseStream``), read the model id from the request's path and start the span (or find another
  instrumentation's span of the call to enrich, as ``_foreign`` does for httpx). The call rides in botocore's
  per-call ``context`` dictionary, which botocore documents as open-ended and hands to every later event;
* ``request-created`` (after botocore has signed each attempt): the credential. The access key id is read from the
  SigV4 ``Authorization`` header (``Credential=<key id>/...``), a Bedrock API key from ``Bearer``; each is given to
  the same ``Fingerprinter`` as every other SDK's key, so the fingerprint, the byok rules and friendly names apply
  unchanged. The secret key and session token are never read. Our span is made current (and our baggage removed)
  for the HTTP send, until ``response-received``;
* ``after-call``: the parsed response. Converse's usage ends the call at once; ``invoke_model``'s body and the two
  event streams are replaced by botocore objects of the same classes that read through to the originals
  (``_bedrock_streams``), so the call ends when the application has read, closed, failed on or dropped them;
* ``after-call-error``: the request failed without a response (connection errors, after botocore's retries).

A guard object in the context dictionary ends a call that never reached ``after-call`` (a later handler raised)
when botocore drops the dictionary. Nothing here may raise into the host call: every handler catches its own.
Async clients (aioboto3 / aiobotocore) are not instrumented.
"""

from __future__ import annotations

import importlib
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import Span, SpanKind

from . import _foreign, _processor, _state, semconv
from ._bedrock_usage import (
    API_CONVERSE,
    API_INVOKE_MODEL,
    ConverseStreamReader,
    InvokeBodyReader,
    InvokeStreamReader,
    converse_facts,
    operation_of,
    request_model,
)
from ._call import CallSpan, FactsReader, _activate, _kept_by_sampler
from ._context import call_context
from ._endpoints import Endpoint
from ._metrics import MetricAttributes
from ._spans import attribution_attributes, credential_attributes, request_attributes
from ._usage import ResponseFacts

__all__ = ["PROVIDER", "SERVICE", "patch", "unpatch"]

log = logging.getLogger(__name__)

PROVIDER: Final = "aws.bedrock"
SERVICE: Final = "bedrock-runtime"
# operation name -> (tokentrail.api, streamed)
OPERATIONS: Final[Mapping[str, tuple[str, bool]]] = {
    "Converse": (API_CONVERSE, False),
    "ConverseStream": (API_CONVERSE, True),
    "InvokeModel": (API_INVOKE_MODEL, False),
    "InvokeModelWithResponseStream": (API_INVOKE_MODEL, True),
}
# The key of our call in botocore's per-call context dictionary.
CONTEXT_KEY: Final = "tokentrail.bedrock.call"
_UNIQUE: Final = "tokentrail-bedrock"
# An error.type for a call that ended without its outcome being seen (OTel's catch-all value).
LOST: Final = "_OTHER"


# -- the call ----------------------------------------------------------------------------------------------------


class BedrockCall(CallSpan):
    """One Bedrock call from ``before-call`` to the end of its response: a ``CallSpan`` (which ends it as every call
    is ended) that also learns its credential from each signed attempt and makes its span current while it is sent,
    since botocore has no single hook around the send as the httpx transports do."""

    __slots__ = ("responded", "_settings", "_explicit", "_credential_seen", "_context", "_entries")

    def __init__(
        self,
        span: Span,
        endpoint: Endpoint,
        own: bool,
        settings: _state.Settings,
        explicit: str | None,
        streamed: bool,
        metric_attributes: MetricAttributes | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(span, endpoint, own, settings.metrics, metric_attributes, model)
        self._streamed = streamed
        self.responded = False  # after-call or after-call-error was seen: the guard has nothing to do
        # The application's context at the call and its baggage entries, which each attempt is sent in (``sending``).
        self._context: Context | None = None
        self._entries: Mapping[str, object] = {}
        self._settings = settings
        self._explicit = explicit  # attribute(credential=...)
        self._credential_seen = False

    # Sending --------------------------------------------------------------------------------------------------

    def credential(self, authorization: object) -> None:
        """The key in a signed request's ``Authorization``, classified once per call (retries re-sign with it)."""
        if self._credential_seen:
            return
        self._credential_seen = True
        key = _key_of(authorization)
        if key is None:
            return
        bearer, key_id = key
        fingerprints = self._settings.fingerprints
        if bearer:
            kind, key_hash, name = fingerprints.classify(key_id, None, None, self._explicit)
        else:
            kind, key_hash, name = fingerprints.classify(None, key_id, None, self._explicit)
        if self.own:
            credential_attributes(kind, key_hash, name, into=self.attributes)
        elif self.span.is_recording():
            self.span.set_attributes(credential_attributes(kind, key_hash, name))

    def remember(self, ctx: Context, entries: Mapping[str, object]) -> None:
        """The application's context at the call (and its baggage entries), for ``sending``."""
        self._context = ctx
        self._entries = entries

    def sending(self) -> None:
        """An attempt is about to be sent: our span current (so HTTP-level spans nest under it) and our baggage
        removed (so no propagator sends it to AWS), until ``detach`` at its response. Per attempt, so nothing stays
        attached when botocore fails between its events."""
        if self.token is None and self._context is not None:
            self.token = _activate(self._context, self._entries, self.span if self.own else None)

    def detach(self) -> None:
        token, self.token = self.token, None
        if token is not None:
            try:
                context.detach(token)
            except Exception:  # noqa: BLE001 - the call goes on whatever the context did
                log.debug("TokenTrail could not restore the context", exc_info=True)

    # Reading --------------------------------------------------------------------------------------------------

    def follow(self, reader: FactsReader) -> None:
        """The response's facts come from ``reader`` when the call ends."""
        self._parser = reader

    def unfed(self) -> None:
        """A chunk or event the reader failed on. The wrappers stop feeding it; what it read before still counts,
        since Bedrock's usage arrives whole in one event or body, never summed over chunks."""
        log.debug("TokenTrail could not read a Bedrock response chunk", exc_info=True)


class _Guard:
    """Lives in botocore's context dictionary for one call: when botocore drops the dictionary, a call whose
    outcome no event told us (a handler after ours raised) is ended, so no span stays open forever."""

    __slots__ = ("call",)

    def __init__(self, call: BedrockCall) -> None:
        self.call = call

    def __del__(self) -> None:
        try:
            call = self.call
            if not call.responded and not call.ended:
                call.failed(None, LOST)
        except Exception:  # noqa: BLE001, S110 - a finalizer must not raise, and may run when logging is gone
            pass


def _key_of(authorization: object) -> tuple[bool, bytes] | None:
    """(bearer, key) from a signed request's ``Authorization``: a Bedrock API key (``Bearer``) or the access key id
    of a SigV4 signature (``AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/bedrock/aws4_request, ...``)."""
    if isinstance(authorization, str):
        authorization = authorization.encode("latin-1", "replace")
    if not isinstance(authorization, bytes):
        return None
    if authorization[:7].lower() == b"bearer ":
        return True, authorization
    start = authorization.find(b"Credential=")
    if start < 0:
        return None
    start += len(b"Credential=")
    end = authorization.find(b"/", start)
    key_id = authorization[start:end] if end > start else b""
    return (False, key_id) if key_id else None


# -- endpoints ---------------------------------------------------------------------------------------------------

# Per (api, operation, host, port): the span attributes every call to it starts with, those set at its end, and its
# metric attribute sets (as _state.endpoint_facts gives them for httpx endpoints).
_endpoints: dict[tuple[str, str, str, int], tuple[Endpoint, _state.EndpointFacts]] = {}
MAX_ENDPOINTS: Final = 256


def _endpoint(api: str, operation: str, url: str) -> tuple[Endpoint, _state.EndpointFacts]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    key = (api, operation, host, port)
    found = _endpoints.get(key)
    if found is None:
        endpoint = Endpoint(api, PROVIDER, operation, host, port, True)
        if len(_endpoints) >= MAX_ENDPOINTS:
            _endpoints.clear()
        found = _endpoints[key] = (endpoint, _state.endpoint_facts(endpoint))
    return found


def _model_id(url_path: object) -> str | None:
    """The model id of a request path ``/model/{modelId}/<operation>`` (the id percent-encoded, ARNs included)."""
    if not isinstance(url_path, str):
        return None
    parts = url_path.partition("?")[0].split("/")
    if len(parts) < 4 or parts[-3] != "model":
        return None
    return unquote(parts[-2]) or None


# -- the event handlers ------------------------------------------------------------------------------------------


def _call_of(request_context: object) -> BedrockCall | None:
    guard = request_context.get(CONTEXT_KEY) if isinstance(request_context, dict) else None
    return guard.call if isinstance(guard, _Guard) else None


def _before_call(model: Any = None, params: Any = None, context: Any = None, **kwargs: Any) -> None:
    try:
        settings = _state.current()
        if settings is None or not isinstance(context, dict) or not isinstance(params, dict):
            return
        known = OPERATIONS.get(getattr(model, "name", ""))
        if known is None or not is_instrumentation_enabled():
            return
        call = _begin(settings, known[0], known[1], params)
        if call is not None:
            context[CONTEXT_KEY] = _Guard(call)
    except Exception:  # noqa: BLE001 - the call goes out as if we were not there
        log.debug("TokenTrail could not start tracing a Bedrock call", exc_info=True)


def _begin(settings: _state.Settings, api: str, streamed: bool, params: Mapping[str, Any]) -> BedrockCall | None:
    model_id = _model_id(params.get("url_path"))
    url = params.get("url")
    if model_id is None or not isinstance(url, str):
        return None
    model = request_model(model_id)
    endpoint, (start_attributes, end_attributes, metric_attributes) = _endpoint(api, operation_of(model), url)
    ctx = context.get_current()
    attribution, entries, current = call_context(ctx)
    if settings.global_provider:
        setup = settings.provider_setup
        if setup is not None and not setup.done:
            setup.ensure()  # the first call, in a process that set no provider: one from the OTEL_* variables
        _processor.install(trace.get_tracer_provider())
    explicit = attribution.credential

    foreign = _foreign.call_span_for(current)
    if foreign is not None:
        attributes = attribution_attributes(attribution, explicit, None)
        attributes[semconv.TOKENTRAIL_API] = api
        attributes.update(_foreign.missing(foreign, request_attributes(endpoint, model, streamed)))
        foreign.set_attributes(attributes)
        for outer in _foreign.enclosing_calls(foreign):
            outer.set_attribute(semconv.TOKENTRAIL_DUPLICATE, True)
        call = BedrockCall(foreign, endpoint, False, settings, explicit, streamed)
        call.remember(ctx, entries)
        return call

    at_start = start_attributes.copy()
    at_start[semconv.GEN_AI_REQUEST_MODEL] = model
    rest = end_attributes.copy()
    rest[semconv.GEN_AI_REQUEST_STREAM] = streamed
    attribution_attributes(attribution, explicit, None, into=rest)
    span = settings.tracer.start_span(
        f"{endpoint.operation} {model}", context=ctx, kind=SpanKind.CLIENT, attributes=at_start
    )
    call = BedrockCall(span, endpoint, True, settings, explicit, streamed, metric_attributes, model)
    call.attributes = _kept_by_sampler(span, at_start, rest)
    call.remember(ctx, entries)
    return call


def _request_created(request: Any = None, **kwargs: Any) -> None:
    try:
        call = _call_of(getattr(request, "context", None))
        if call is not None:
            call.sending()
            call.credential(request.headers.get("Authorization"))
    except Exception:  # noqa: BLE001 - the request goes out as if we were not there
        log.debug("TokenTrail could not read a Bedrock request's credential", exc_info=True)


def _response_received(context: Any = None, **kwargs: Any) -> None:
    call = _call_of(context)
    if call is not None:
        call.detach()  # the HTTP exchange is over; our span stops being current


def _answered(request_context: object) -> BedrockCall | None:
    """The call that botocore's final event for it (``after-call`` or ``after-call-error``) is about, now sent: not
    current any more, and nothing left for its guard to do."""
    call = _call_of(request_context)
    if call is not None:
        call.detach()
        call.responded = True
    return call


def _after_call_error(exception: BaseException | None = None, context: Any = None, **kwargs: Any) -> None:
    call = _answered(context)
    if call is None:
        return
    try:
        call.failed(exception, LOST if exception is None else None)
    except Exception:  # noqa: BLE001 - the host call's own exception goes on untouched
        log.debug("TokenTrail could not record a failed Bedrock call", exc_info=True)


def _after_call(http_response: Any = None, parsed: Any = None, model: Any = None, context: Any = None, **kwargs: Any) -> None:
    call = _answered(context)
    if call is None:
        return
    try:
        _responded(call, getattr(model, "name", ""), http_response, parsed)
    except Exception:  # noqa: BLE001 - the response goes to the application whatever happened to our span
        log.debug("TokenTrail could not observe a Bedrock response", exc_info=True)
        try:
            call.end("failed")
        except Exception:  # noqa: BLE001 - as above
            log.debug("TokenTrail could not end a Bedrock call it could not observe", exc_info=True)


def _responded(call: BedrockCall, operation: str, http_response: Any, parsed: Any) -> None:
    status = getattr(http_response, "status_code", 200)
    if not isinstance(parsed, dict):
        call.end("read")
        return
    if status >= 300:
        call.failed(None, str(status))
        return
    if not call.span.is_recording():
        call.end("read", facts=ResponseFacts(terminal=True))  # a span nobody records: nothing to read for it
        return
    metadata = parsed.get("ResponseMetadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    request_id = metadata.get("RequestId") if isinstance(metadata.get("RequestId"), str) else None
    headers = metadata.get("HTTPHeaders")
    headers = headers if isinstance(headers, dict) else {}
    if operation == "Converse":
        call.end("read", facts=converse_facts(parsed, request_id))
        return
    streams = _stream_classes()
    tier = parsed.get("serviceTier")
    tier = tier if isinstance(tier, str) else None
    if operation == "ConverseStream":
        stream = parsed.get("stream")
        if isinstance(stream, streams.EventStream):
            converse_reader = ConverseStreamReader(request_id)
            call.follow(converse_reader)
            parsed["stream"] = streams.ObservedEventStream(stream, call, converse_reader.feed)
            return
    elif operation == "InvokeModelWithResponseStream":
        body = parsed.get("body")
        if isinstance(body, streams.EventStream):
            stream_reader = InvokeStreamReader(request_id, tier)
            call.follow(stream_reader)
            parsed["body"] = streams.ObservedEventStream(body, call, stream_reader.feed)
            return
    elif operation == "InvokeModel":
        body = parsed.get("body")
        body_reader = InvokeBodyReader(request_id, headers, tier)
        call.follow(body_reader)
        if isinstance(body, streams.StreamingBody):
            length = headers.get("content-length")
            size = int(length) if isinstance(length, str) and length.isdigit() else None
            parsed["body"] = streams.ObservedBody(body, call, body_reader.feed, size)
            return
    call.end("read")  # no body of the kind we read: the call is recorded with what the headers said


# -- registration ------------------------------------------------------------------------------------------------

# (event, handler, last): ``last`` handlers run after botocore's own (request-created: after the signer).
_HANDLERS: Final[tuple[tuple[str, Callable[..., None], bool], ...]] = (
    (f"before-call.{SERVICE}", _before_call, True),
    (f"request-created.{SERVICE}", _request_created, True),
    (f"response-received.{SERVICE}", _response_received, False),
    (f"after-call.{SERVICE}", _after_call, False),
    (f"after-call-error.{SERVICE}", _after_call_error, False),
)

_patched: list[Any] = []  # the botocore.client module, while its ClientCreator.create_client is wrapped
_emitters: weakref.WeakSet[Any] = weakref.WeakSet()  # the event systems of the clients we registered on


_streams_module: list[Any] = []  # _bedrock_streams, once imported (it imports botocore)


def _stream_classes() -> Any:
    if not _streams_module:
        _streams_module.append(importlib.import_module("._bedrock_streams", __package__))
    return _streams_module[0]


def register(client: Any) -> None:
    """Register our handlers on a ``bedrock-runtime`` client's event system. Idempotent (``unique_id``)."""
    meta = getattr(client, "meta", None)
    if meta is None or getattr(meta.service_model, "service_name", None) != SERVICE:
        return
    events = meta.events
    for event, handler, last in _HANDLERS:
        register_on = events.register_last if last else events.register_first
        register_on(event, handler, unique_id=f"{_UNIQUE}-{event}")
    _emitters.add(events)


def _unregister(events: Any) -> None:
    for event, handler, _last in _HANDLERS:
        try:
            events.unregister(event, handler, unique_id=f"{_UNIQUE}-{event}")
        except Exception:  # noqa: BLE001 - a client that changed under us keeps a handler that does nothing
            log.debug("TokenTrail could not unregister %s", event, exc_info=True)


def _create_client(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    client = wrapped(*args, **kwargs)
    try:
        register(client)
    except Exception:  # noqa: BLE001 - the application gets its client, uninstrumented
        log.debug("TokenTrail could not instrument a botocore client", exc_info=True)
    return client


def patch() -> None:
    """Wrap ``botocore.client.ClientCreator.create_client`` when botocore is installed. Idempotent."""
    if _patched:
        return
    try:
        module = importlib.import_module("botocore.client")
        _stream_classes()  # fails here, not at the first call, if botocore lacks what the wrappers need
    except Exception:  # noqa: BLE001 - botocore not installed (or not of a shape we know): Bedrock is not observed
        log.debug("TokenTrail: botocore is not installed; Bedrock calls are not instrumented", exc_info=True)
        return
    try:
        import wrapt

        wrapt.wrap_function_wrapper(module, "ClientCreator.create_client", _create_client)
        _patched.append(module)
    except Exception:
        log.warning("TokenTrail could not instrument botocore", exc_info=True)


def unpatch() -> None:
    """Remove the wrap and our handlers from every client we registered them on."""
    from opentelemetry.instrumentation.utils import unwrap

    while _patched:
        module = _patched.pop()
        try:
            unwrap(module.ClientCreator, "create_client")
        except Exception:
            log.debug("TokenTrail could not unwrap ClientCreator.create_client", exc_info=True)
    for events in list(_emitters):
        _unregister(events)
    _emitters.clear()
