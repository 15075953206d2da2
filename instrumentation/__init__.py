"""TokenTrail instrumentation: what every LLM API call costs and who it was for, as OpenTelemetry spans.

    from tokentrail.instrumentation import instrument, attribute

    instrument()                                  # once, at startup
    with attribute(user="u_42", tags=["customer:acme", "feature:search"]):
        client.chat.completions.create(...)       # its span carries user.id and tokentrail.tags
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
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
) -> None:
    """Trace every LLM call made through ``httpx2``/``httpx`` (the OpenAI and Anthropic SDKs, and others).

    Idempotent: calling it again applies the new arguments without patching twice.

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
    }
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.configure(**arguments)
    else:
        instrumentor.instrument(**arguments)


def uninstrument() -> None:
    """Remove the patches. Spans already started still end normally."""
    instrumentor = _instrumentor()()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
