"""TokenTrail instrumentation: what every LLM API call costs and who it was for, as OpenTelemetry spans.

    from tokentrail.instrumentation import instrument, attribute

    instrument()                                  # once, at startup
    with attribute(user="u_42", tags=["customer:acme", "feature:search"]):
        client.chat.completions.create(...)       # its span carries user.id and tokentrail.tags
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._context import Attribution, attribute, current_attribution
from ._processor import AttributionSpanProcessor

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from .instrumentor import TokenTrailInstrumentor

__all__ = [
    "Attribution",
    "AttributionSpanProcessor",
    "TokenTrailInstrumentor",
    "attribute",
    "credential_id",
    "current_attribution",
    "instrument",
    "uninstrument",
]


def __getattr__(name: str) -> Any:
    """``TokenTrailInstrumentor``, imported when first asked for: the instrumentor base class, wrapt and the metrics
    API cost more to import than the tracing SDK itself, and a process that only reads ``attribute()`` needs none."""
    if name == "TokenTrailInstrumentor":
        return _instrumentor()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _instrumentor() -> type[TokenTrailInstrumentor]:
    module = importlib.import_module(".instrumentor", __name__)
    instrumentor: type[TokenTrailInstrumentor] = module.TokenTrailInstrumentor
    return instrumentor


def instrument(
    tracer_provider: TracerProvider | None = None,
    system_keys: Iterable[str] | None = None,
    fingerprint_salt: str | bytes | None = None,
    providers: Mapping[str, str] | None = None,
    meter_provider: MeterProvider | None = None,
    credential_names: Mapping[str, str] | None = None,
    stream_usage: str | None = None,
    byok_keys: Iterable[str] | None = None,
    byok: Callable[[str], bool | None] | None = None,
    unknown_keys: str | None = None,
) -> None:
    """Trace every LLM call made through ``httpx2``/``httpx`` (the OpenAI and Anthropic SDKs, and others).

    Idempotent: calling it again applies the new arguments without patching twice.

    * Spans go to ``tracer_provider``, else to the global provider. When the process has none (no SDK provider set
      by the application or by ``opentelemetry-instrument``) by its first LLM call, one is set up then from the
      standard OTEL_* variables, as ``opentelemetry-instrument`` would (``OTEL_TRACES_EXPORTER``, default ``otlp``;
      ``OTEL_EXPORTER_OTLP_*``; ``OTEL_SERVICE_NAME``; ``OTEL_RESOURCE_ATTRIBUTES``), flushed at exit.
    * A key is the service's own (``system``) unless the application says otherwise: ``attribute(credential=...)``
      around the call; ``byok_keys``, its customers' keys or their fingerprints (the keys are fingerprinted here and
      never kept); ``byok``, a function asked on each call with the key's fingerprint (see ``credential_id``) that
      returns True for a customer's key, False for the service's, None to leave it to the other rules; or
      ``unknown_keys="byok"`` (``TOKENTRAIL_UNKNOWN_KEYS=byok``): every key is a customer's except the system keys
      (the provider env vars such as ``OPENAI_API_KEY``, ``TOKENTRAIL_SYSTEM_KEYS``, ``system_keys``). Any other value
      of ``unknown_keys`` raises ``ValueError``.
    * ``providers`` maps base URLs to provider names for servers whose host does not identify them (a proxy, a
      self-hosted Ollama/vLLM/LiteLLM), on top of ``TOKENTRAIL_PROVIDERS``.
    * ``meter_provider`` receives the ``gen_ai.client.*`` metrics (default: the global one).
    * ``credential_names`` gives keys friendly names (``tokentrail.credential.name``): ``{fingerprint: name}``, or
      ``{key: name}`` (the key is fingerprinted here and never kept), on top of ``TOKENTRAIL_CREDENTIAL_NAMES``.
    * ``stream_usage="inject"`` asks Chat/Completions streams for their usage (see ``TOKENTRAIL_STREAM_USAGE``).
    """
    instrumentor = _instrumentor()()
    arguments = {
        "tracer_provider": tracer_provider,
        "system_keys": system_keys,
        "fingerprint_salt": fingerprint_salt,
        "providers": providers,
        "meter_provider": meter_provider,
        "credential_names": credential_names,
        "stream_usage": stream_usage,
        "byok_keys": byok_keys,
        "byok": byok,
        "unknown_keys": unknown_keys,
        "set_up_tracer_provider": True,
    }
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.configure(**arguments)
    else:
        instrumentor.instrument(**arguments)


def credential_id(key: str) -> str:
    """The ``tokentrail.credential.id`` spans carry for ``key``: its salted fingerprint under the salt in force
    (``instrument(fingerprint_salt=...)``, else ``TOKENTRAIL_FINGERPRINT_SALT``). For a ``byok`` resolver: compute it
    when a customer's key is stored, and keep the fingerprint, not the key, where the resolver looks."""
    state = importlib.import_module("._state", __name__)
    settings = state.current()
    credentials = importlib.import_module("._credentials", __name__)
    salt: bytes = settings.salt if settings is not None else credentials.resolve_salt(None)
    fingerprint: str = credentials.fingerprint(key, salt)
    return fingerprint


def uninstrument() -> None:
    """Remove the patches. Spans already started still end normally."""
    instrumentor = _instrumentor()()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
