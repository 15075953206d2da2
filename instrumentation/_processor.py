"""A span processor that stamps attribution onto GenAI spans from any instrumentation.

Other instrumentations (the Anthropic SDK's own spans, OpenInference, the OTel contrib GenAI instrumentations)
know nothing of ``attribute()``. Their spans start inside the application's attribution scope, so reading the
scope in ``on_start`` gives them the same ``user.id``/``tokentrail.tags`` our own spans carry. A span that
already has a value (set by its own instrumentation, or by our transport hook) keeps it.
"""

from __future__ import annotations

import logging

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

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
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
