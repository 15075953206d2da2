"""The instrumentation's configuration, resolved once at ``instrument()`` and read on every LLM request.

Kept as one immutable object behind one module global: a request reads it once and sees a consistent
configuration even while another thread re-instruments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import Tracer, TracerProvider

from . import _credentials, _endpoints
from .version import __version__

INSTRUMENTATION_SCOPE = "tokentrail.instrumentation"


@dataclass(frozen=True, slots=True)
class Settings:
    tracer: Tracer
    salt: bytes
    system_fingerprints: frozenset[str]
    base_urls: tuple[tuple[str, str], ...]


_settings: Settings | None = None


def configure(
    tracer_provider: TracerProvider | None = None,
    system_keys: Iterable[str] | None = None,
    fingerprint_salt: str | bytes | None = None,
    providers: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve and install the settings. Without a provider the global one is used (through its proxy, so a
    provider registered later still receives the spans)."""
    global _settings
    salt = _credentials.resolve_salt(fingerprint_salt)
    settings = Settings(
        tracer=trace.get_tracer(INSTRUMENTATION_SCOPE, __version__, tracer_provider=tracer_provider),
        salt=salt,
        system_fingerprints=_credentials.system_key_fingerprints(salt, system_keys),
        base_urls=_endpoints.normalise_base_urls(providers),
    )
    _settings = settings
    return settings


def current() -> Settings | None:
    return _settings


def clear() -> None:
    global _settings
    _settings = None
