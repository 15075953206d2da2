"""The instrumentation's configuration, resolved once at ``instrument()`` and read on every LLM request.

Kept as one immutable object behind one module global: a request reads it once and sees a consistent
configuration even while another thread re-instruments.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from . import _credentials, _endpoints, _provider, semconv
from ._metrics import MetricAttributes, Metrics
from ._spans import endpoint_attributes
from .version import __version__

log = logging.getLogger(__name__)

INSTRUMENTATION_SCOPE: Final = semconv.INSTRUMENTATION_SCOPE


# What is derived once per endpoint: its spans' attributes given at start and those set when the call ends (see
# _spans.endpoint_attributes), and its metric attribute sets.
EndpointFacts = tuple[dict[str, AttributeValue], dict[str, AttributeValue], MetricAttributes]


def endpoint_facts(endpoint: _endpoints.Endpoint) -> EndpointFacts:
    at_start, after_start = endpoint_attributes(endpoint)
    return at_start, after_start, MetricAttributes(endpoint)


@dataclass(frozen=True, slots=True)
class Settings:
    tracer: Tracer
    salt: bytes
    system_fingerprints: frozenset[str]
    base_urls: tuple[tuple[str, str], ...]
    # True when spans go to the global tracer provider, which the application may set only after instrument().
    global_provider: bool = True
    metrics: Metrics | None = None
    credential_names: Mapping[str, str] | None = None
    inject_stream_usage: bool = False
    byok_fingerprints: frozenset[str] = frozenset()
    unknown_keys: str = _credentials.UNKNOWN_KEYS_DEFAULT
    byok: _credentials.ByokResolver | None = None
    # A tracer provider to set up at the first LLM call if the application has set none by then (see _provider).
    provider_setup: _provider.Pending | None = None
    # Derived, and remembered for as long as these settings are in force: per endpoint, the attributes every span of
    # ours to it starts with and its metric attribute sets; per credential header, the key's fingerprint.
    endpoints: _endpoints.EndpointCache[EndpointFacts] = field(init=False, repr=False, compare=False)
    fingerprints: _credentials.Fingerprinter = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoints", _endpoints.EndpointCache(self.base_urls, endpoint_facts))
        object.__setattr__(
            self,
            "fingerprints",
            _credentials.Fingerprinter(
                self.salt,
                self.system_fingerprints,
                self.credential_names,
                self.byok_fingerprints,
                self.unknown_keys,
                self.byok,
            ),
        )


_settings: Settings | None = None
# The credential rule last said in the log: said again only when it changes.
_rule_said: str | None = None


def stream_usage_mode(value: str | None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to inject ``stream_options.include_usage``: the argument, else ``TOKENTRAIL_STREAM_USAGE``."""
    if value is None:
        value = (os.environ if environ is None else environ).get(semconv.ENV_STREAM_USAGE, "")
    value = value.strip().lower()
    if value not in ("", "inject", "off"):
        log.warning("TokenTrail: %s=%r is not 'inject' or 'off'; streams are left as they are", semconv.ENV_STREAM_USAGE, value)
    return value == "inject"


def configure(
    tracer_provider: TracerProvider | None = None,
    system_keys: Iterable[str] | None = None,
    fingerprint_salt: str | bytes | None = None,
    providers: Mapping[str, str] | None = None,
    meter_provider: MeterProvider | None = None,
    credential_names: Mapping[str, str] | None = None,
    stream_usage: str | None = None,
    byok_keys: Iterable[str] | None = None,
    byok: _credentials.ByokResolver | None = None,
    unknown_keys: str | None = None,
    set_up_tracer_provider: bool = False,
) -> Settings:
    """Resolve and install the settings. Without a provider the global one is used (through its proxy, so a
    provider registered later still receives the spans and the metrics); with ``set_up_tracer_provider``, one is set
    up from the OTEL_* variables at the first LLM call if none has been registered by then (``instrument()`` asks for
    that; ``opentelemetry-instrument``'s distro sets up its own).

    ``providers`` adds to (and overrides) ``TOKENTRAIL_PROVIDERS``; ``credential_names`` to
    ``TOKENTRAIL_CREDENTIAL_NAMES``. A bad ``unknown_keys`` (or ``TOKENTRAIL_UNKNOWN_KEYS``) or a ``byok`` that is not
    callable raises here, before anything changes.
    """
    global _settings, _rule_said
    unknown = _credentials.unknown_key_type(unknown_keys)
    if byok is not None and not callable(byok):
        raise TypeError(f"TokenTrail: byok must be a callable (credential id -> bool | None), not {type(byok).__name__}")
    salt = _credentials.resolve_salt(fingerprint_salt)
    try:
        metrics: Metrics | None = Metrics(meter_provider)
    except Exception:  # noqa: BLE001 - a broken meter provider must not stop the spans
        log.warning("TokenTrail could not create its metrics; spans are still emitted", exc_info=True)
        metrics = None
    system_fingerprints = _credentials.system_key_fingerprints(salt, system_keys)
    byok_fingerprints = _credentials.byok_key_fingerprints(salt, byok_keys)
    provider_setup = None
    if set_up_tracer_provider and _provider.needed(tracer_provider):
        exporters = _provider.plan()
        provider_setup = _provider.Pending(exporters) if exporters else None
    settings = Settings(
        tracer=trace.get_tracer(INSTRUMENTATION_SCOPE, __version__, tracer_provider=tracer_provider),
        salt=salt,
        system_fingerprints=system_fingerprints,
        base_urls=_endpoints.normalise_base_urls({**_endpoints.providers_from_env(), **(providers or {})}),
        global_provider=tracer_provider is None,
        metrics=metrics,
        credential_names=_credentials.credential_names(salt, credential_names) or None,
        inject_stream_usage=stream_usage_mode(stream_usage),
        byok_fingerprints=byok_fingerprints,
        unknown_keys=unknown,
        byok=byok,
        provider_setup=provider_setup,
    )
    _settings = settings
    source = "unknown_keys" if unknown_keys is not None else semconv.ENV_UNKNOWN_KEYS
    rule = _credentials.describe_rule(unknown, len(system_fingerprints), len(byok_fingerprints), byok, source)
    if rule != _rule_said:
        _rule_said = rule
        log.info("%s", rule)
    return settings


def current() -> Settings | None:
    return _settings


def clear() -> None:
    global _settings
    _settings = None
