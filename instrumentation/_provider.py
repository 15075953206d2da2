"""A tracer provider for a process that set none, built from the OTEL_* variables as ``opentelemetry-instrument`` does.

Without one, ``instrument()`` in a plain ``python app.py`` hands its spans to OpenTelemetry's proxy provider, which
drops every one of them without a word. The SDK's own configurator (``opentelemetry.sdk._configuration``, run by the
distro) is private and sets up metrics and logs too, so the same tracing is built here from public pieces:
``Resource.create()`` (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``), a ``TracerProvider`` (the sampler and
span limits from their variables, and a shutdown at exit that flushes what is left), and a ``BatchSpanProcessor``
(``OTEL_BSP_*``) per exporter ``OTEL_TRACES_EXPORTER`` names (default ``otlp``), loaded from its
``opentelemetry_traces_exporter`` entry point as the SDK loads it; each exporter reads its own
``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers, certificate, compression, timeout).

What to build is decided at ``instrument()``, where what is wrong with it is said. It is built at the first LLM call,
and only if the global provider is still the proxy then: an application that sets its own provider after
``instrument()`` keeps it (OpenTelemetry lets a global provider be set once), and one that set it before, or
``opentelemetry-instrument``, which sets it before any instrumentor runs, never sees a second one. The exporters'
modules (gRPC above all) are imported only when a provider is built.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_TRACES_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import ProxyTracerProvider

log = logging.getLogger(__name__)

EXPORTER_GROUP: Final = "opentelemetry_traces_exporter"
OTLP_GRPC: Final = "otlp_proto_grpc"
OTLP_HTTP: Final = "otlp_proto_http"
# OTLP protocol -> the exporter entry point that speaks it, as the SDK maps them.
OTLP_BY_PROTOCOL: Final = {"grpc": OTLP_GRPC, "http/protobuf": OTLP_HTTP}
# The package to install for an exporter that is missing.
PACKAGES: Final = {
    OTLP_GRPC: "opentelemetry-exporter-otlp-proto-grpc",
    OTLP_HTTP: "opentelemetry-exporter-otlp-proto-http",
}


@dataclass(frozen=True)
class Exporter:
    """One exporter to build: its entry point's name, where its spans go (for the log), and how to load its class."""

    name: str
    where: str
    load: Callable[[], Any]


def needed(tracer_provider: object) -> bool:
    """True when nothing will receive the spans: no provider given and the global one is still the API's proxy."""
    return tracer_provider is None and isinstance(trace.get_tracer_provider(), ProxyTracerProvider)


def _otlp_where(name: str, env: Mapping[str, str]) -> str:
    """Where an OTLP exporter sends spans, as it will resolve it from the variables (for the log only)."""
    endpoint = env.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "").strip()
    if name == OTLP_HTTP:
        if not endpoint:
            base = env.get(OTEL_EXPORTER_OTLP_ENDPOINT, "").strip() or "http://localhost:4318"
            endpoint = base.rstrip("/") + "/v1/traces"
        return f"OTLP/HTTP {endpoint}"
    return f"OTLP/gRPC {endpoint or env.get(OTEL_EXPORTER_OTLP_ENDPOINT, '').strip() or 'http://localhost:4317'}"


def plan(
    environ: Mapping[str, str] | None = None, installed: Mapping[str, EntryPoint] | None = None
) -> tuple[Exporter, ...]:
    """The exporters to set up a provider with, read from the OTEL_* variables. Empty when there is nothing to build:
    the SDK disabled, ``OTEL_TRACES_EXPORTER=none``, or no exporter that could be found (each said in the log).

    ``installed`` (the installed ``opentelemetry_traces_exporter`` entry points by name) is for tests.
    """
    env = os.environ if environ is None else environ
    if env.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        log.warning(
            "TokenTrail: %s=true and no tracer provider is set: no span of this process is recorded or exported",
            OTEL_SDK_DISABLED,
        )
        return ()
    names = [name.strip() for name in env.get(OTEL_TRACES_EXPORTER, "otlp").split(",")]
    names = [name for name in names if name and name.lower() != "none"]
    if not names:
        log.warning(
            "TokenTrail: %s=none and no tracer provider is set: TokenTrail sets none up, and its spans are dropped "
            "unless the application sets a provider itself",
            OTEL_TRACES_EXPORTER,
        )
        return ()
    if installed is None:
        installed = {point.name: point for point in entry_points(group=EXPORTER_GROUP)}
    exporters: list[Exporter] = []
    for name in names:
        if name in ("otlp", OTLP_GRPC, OTLP_HTTP):
            variable = OTEL_EXPORTER_OTLP_TRACES_PROTOCOL if env.get(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) else OTEL_EXPORTER_OTLP_PROTOCOL
            protocol = env.get(variable, "").strip()
            if name == "otlp":
                if protocol and protocol not in OTLP_BY_PROTOCOL:
                    log.error(
                        "TokenTrail: %s=%r is not an OTLP protocol Python exports with (grpc, http/protobuf): "
                        "no spans are exported over OTLP",
                        variable,
                        protocol,
                    )
                    continue
                name = OTLP_BY_PROTOCOL[protocol or "grpc"]
            point = installed.get(name)
            if point is None:
                log.error(
                    "TokenTrail: spans over %s need %s, which is not installed (pip install %s): no spans are exported "
                    "over OTLP",
                    "OTLP/HTTP" if name == OTLP_HTTP else "OTLP/gRPC",
                    PACKAGES[name],
                    PACKAGES[name],
                )
                continue
            exporters.append(Exporter(name, _otlp_where(name, env), point.load))
            continue
        point = installed.get(name)
        if point is None:
            log.error("TokenTrail: %s names %r, which no installed package provides; skipped", OTEL_TRACES_EXPORTER, name)
            continue
        exporters.append(Exporter(name, "the console (stdout)" if name == "console" else f"the {name} exporter", point.load))
    return tuple(exporters)


def build(exporters: tuple[Exporter, ...]) -> tuple[TracerProvider | None, list[str]]:
    """A ``TracerProvider`` exporting through ``exporters`` in batches, and where its spans go; no provider when none
    of the exporters could be made."""
    processors: list[BatchSpanProcessor] = []
    where: list[str] = []
    for exporter in exporters:
        try:
            processors.append(BatchSpanProcessor(exporter.load()()))
            where.append(exporter.where)
        except Exception:  # noqa: BLE001 - one broken exporter must not stop the others, nor the LLM call
            log.error("TokenTrail could not create the %s span exporter; skipped", exporter.name, exc_info=True)
    if not processors:
        return None, where
    provider = TracerProvider(resource=Resource.create())  # shuts down (and so flushes) at exit
    for processor in processors:
        provider.add_span_processor(processor)
    return provider, where


class Pending:
    """A provider to set up at the first LLM call, unless the application has set one by then (see the module)."""

    __slots__ = ("exporters", "done", "_lock")

    def __init__(self, exporters: tuple[Exporter, ...]) -> None:
        self.exporters = exporters
        self.done = not exporters
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Set the provider up now if it is still needed. Never raises: this runs inside the application's call."""
        if self.done:
            return
        with self._lock:
            if self.done:
                return
            self.done = True
            try:
                self._set_up()
            except Exception:  # noqa: BLE001 - the application's LLM call goes on whatever happens here
                log.error("TokenTrail could not set up a tracer provider; no spans are exported", exc_info=True)

    def _set_up(self) -> None:
        if not isinstance(trace.get_tracer_provider(), ProxyTracerProvider):
            log.debug("TokenTrail: the application set a tracer provider; TokenTrail sets up none")
            return
        provider, where = build(self.exporters)
        if provider is None:
            return
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:  # the application set its own in the meantime
            provider.shutdown()
            return
        log.info(
            "TokenTrail set up the global TracerProvider (none was set) from the OTEL_* variables: spans go to %s",
            ", ".join(where),
        )
