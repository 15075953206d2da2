"""A span processor that stamps attribution onto GenAI spans from any instrumentation.

Other instrumentations (the Anthropic SDK's own spans, OpenInference, the OTel contrib GenAI instrumentations)
know nothing of ``attribute()``. Their spans start inside the application's attribution scope, so reading the
scope in ``on_start`` gives them the same ``user.id``/``tokentrail.tags`` our own spans carry. A span that
already has a value (set by its own instrumentation, or by our transport hook) keeps it.

The processor also keeps the registry of open call spans (``_foreign``) that lets the transport hook find the
call span behind an HTTP-level span, and the instrumentations nested around the call.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from . import _foreign, semconv
from ._context import current_attribution
from ._spans import attribution_attributes, has_genai_attributes

log = logging.getLogger(__name__)


class AttributionSpanProcessor(SpanProcessor):
    """Adds ``user.id``, ``tokentrail.tags`` and an explicit ``tokentrail.credential.type`` to GenAI spans.

    ``enabled`` lets ``uninstrument()`` switch it off: the SDK offers no way to remove a processor.
    """

    def __init__(self) -> None:
        self.enabled = True

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if not self.enabled:
            return
        try:
            # Our own spans are born with their attribution, and are not another instrumentation's.
            scope = span.instrumentation_scope
            if scope is not None and scope.name == semconv.INSTRUMENTATION_SCOPE:
                return
            _foreign.started(span)
            if not has_genai_attributes(span):
                return
            attribution = current_attribution(parent_context)
            attributes = attribution_attributes(attribution, attribution.credential, None)
            existing = span.attributes or {}
            for name, value in attributes.items():
                if name not in existing:
                    span.set_attribute(name, value)
        except Exception:
            log.debug("TokenTrail could not stamp attribution on a span", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        if not _foreign.open_calls:
            return  # nothing to forget (the usual case, for every span the application ends)
        try:
            _foreign.ended(span)
        except Exception:
            log.debug("TokenTrail could not forget an ended span", exc_info=True)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# One processor per tracer provider, kept across instrument/uninstrument cycles: the SDK cannot remove a
# processor, so a second instrument() re-enables the first one instead of stacking another.
_processors: weakref.WeakKeyDictionary[Any, AttributionSpanProcessor] = weakref.WeakKeyDictionary()


def install(provider: Any) -> None:
    """Add the attribution processor to an SDK provider once. An API-only (proxy) provider has nowhere to add it."""
    try:
        processor = _processors.get(provider)
    except TypeError:  # not weak-referenceable: not an SDK provider
        return
    if processor is not None:
        processor.enabled = True
        return
    add = getattr(provider, "add_span_processor", None)
    if add is None:
        return
    try:
        processor = AttributionSpanProcessor()
        add(processor)
        _processors[provider] = processor
    except Exception:
        log.debug("TokenTrail could not add its span processor", exc_info=True)


def disable_all() -> None:
    for processor in list(_processors.values()):
        processor.enabled = False
    _foreign.clear()
