"""The OpenTelemetry instrumentor: what ``opentelemetry-instrument`` and ``instrument()`` switch on and off.

Registered as the ``tokentrail`` ``opentelemetry_instrumentor`` entry point, so ``opentelemetry-instrument
python app.py`` enables TokenTrail with no code change; the OTEL_* variables configure the global tracer
provider that it then uses.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from . import _state, _transport
from ._processor import AttributionSpanProcessor

log = logging.getLogger(__name__)

# One processor per tracer provider, kept across instrument/uninstrument cycles: the SDK cannot remove a
# processor, so a second instrument() re-enables the first one instead of stacking another.
_processors: weakref.WeakKeyDictionary[Any, AttributionSpanProcessor] = weakref.WeakKeyDictionary()


class TokenTrailInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments the ``httpx2`` and ``httpx`` transports for LLM calls.

    Keyword arguments of ``instrument()``: ``tracer_provider`` (default: the global one), ``system_keys`` (keys
    that count as the service's own, besides the provider env vars and TOKENTRAIL_SYSTEM_KEYS),
    ``fingerprint_salt`` (default: TOKENTRAIL_FINGERPRINT_SALT), ``providers`` (``{base_url: provider}`` for
    servers whose host does not say which provider they are).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        # Either HTTP library is optional: patching skips whichever is not installed.
        return []

    def _instrument(self, **kwargs: Any) -> None:
        self.configure(**kwargs)
        _transport.patch()

    def _uninstrument(self, **kwargs: Any) -> None:
        _transport.unpatch()
        _state.clear()
        for processor in list(_processors.values()):
            processor.enabled = False

    def configure(self, **kwargs: Any) -> None:
        """Apply new settings to an active (or about to be active) instrumentation without re-patching."""
        tracer_provider = kwargs.get("tracer_provider")
        _state.configure(
            tracer_provider=tracer_provider,
            system_keys=kwargs.get("system_keys"),
            fingerprint_salt=kwargs.get("fingerprint_salt"),
            providers=kwargs.get("providers"),
        )
        _install_processor(tracer_provider if tracer_provider is not None else trace.get_tracer_provider())


def _install_processor(provider: Any) -> None:
    """Add the attribution processor to an SDK provider once. An API-only (proxy) provider has nowhere to add it."""
    add = getattr(provider, "add_span_processor", None)
    if add is None:
        log.debug("TokenTrail: the tracer provider takes no span processors; attribution is stamped at the transport only")
        return
    try:
        processor = _processors.get(provider)
        if processor is None:
            processor = AttributionSpanProcessor()
            add(processor)
            _processors[provider] = processor
        processor.enabled = True
    except Exception:
        log.debug("TokenTrail could not add its span processor", exc_info=True)
