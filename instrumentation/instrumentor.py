"""The OpenTelemetry instrumentor: what ``opentelemetry-instrument`` and ``instrument()`` switch on and off.

Registered as the ``tokentrail`` ``opentelemetry_instrumentor`` entry point, so ``opentelemetry-instrument
python app.py`` enables TokenTrail with no code change; the OTEL_* variables configure the global tracer and
meter providers that it then uses.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]  # not in its __all__

from . import _bedrock, _processor, _state, _transport


class TokenTrailInstrumentor(BaseInstrumentor):
    """Instruments the ``httpx2`` and ``httpx`` transports for LLM calls, and botocore's ``bedrock-runtime`` clients
    (AWS Bedrock, when botocore is installed: see ``_bedrock``).

    Keyword arguments of ``instrument()``: ``tracer_provider`` and ``meter_provider`` (default: the global ones),
    ``system_keys`` (keys that count as the service's own, besides the provider env vars and
    TOKENTRAIL_SYSTEM_KEYS), ``fingerprint_salt`` (default: TOKENTRAIL_FINGERPRINT_SALT), ``providers``
    (``{base_url: provider}`` for servers whose host does not say which provider they are, added to
    TOKENTRAIL_PROVIDERS), ``credential_names`` (``{fingerprint or key: name}``, added to
    TOKENTRAIL_CREDENTIAL_NAMES), ``stream_usage`` (``"inject"`` or ``"off"``; default TOKENTRAIL_STREAM_USAGE),
    ``byok_keys``, ``byok`` and ``unknown_keys`` (see ``tokentrail.instrumentation.instrument``), and
    ``set_up_tracer_provider`` (what ``instrument()`` passes: set one up from OTEL_* if the process has none; off by
    default, because under ``opentelemetry-instrument`` the distro sets up the provider before instrumentors run).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        # Either HTTP library, and botocore, are optional: patching skips whichever is not installed.
        return []

    def _instrument(self, **kwargs: Any) -> None:
        self.configure(**kwargs)
        _transport.patch()
        _bedrock.patch()

    def _uninstrument(self, **kwargs: Any) -> None:
        _transport.unpatch()
        _bedrock.unpatch()
        _state.clear()
        _processor.disable_all()

    def configure(self, **kwargs: Any) -> None:
        """Apply new settings to an active (or about to be active) instrumentation without re-patching."""
        tracer_provider = kwargs.get("tracer_provider")
        _state.configure(
            tracer_provider=tracer_provider,
            system_keys=kwargs.get("system_keys"),
            fingerprint_salt=kwargs.get("fingerprint_salt"),
            providers=kwargs.get("providers"),
            meter_provider=kwargs.get("meter_provider"),
            credential_names=kwargs.get("credential_names"),
            stream_usage=kwargs.get("stream_usage"),
            byok_keys=kwargs.get("byok_keys"),
            byok=kwargs.get("byok"),
            unknown_keys=kwargs.get("unknown_keys"),
            set_up_tracer_provider=bool(kwargs.get("set_up_tracer_provider", False)),
        )
        _processor.install(tracer_provider if tracer_provider is not None else trace.get_tracer_provider())
