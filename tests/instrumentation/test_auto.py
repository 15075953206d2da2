"""Zero code changes: ``opentelemetry-instrument python app.py`` enables TokenTrail, in a real subprocess."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from tokentrail.instrumentation import TokenTrailInstrumentor, semconv
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import usage_of

CLI = Path(sys.executable).with_name("opentelemetry-instrument")


class OtlpHttpReceiver:
    """An OTLP/HTTP (protobuf) endpoint on loopback that keeps what it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.metrics: list[Any] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    receiver.spans += [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
                elif self.path == "/v1/metrics":
                    request = ExportMetricsServiceRequest.FromString(body)
                    receiver.metrics += [
                        m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                    ]
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OtlpHttpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def otlp() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as receiver:
        yield receiver


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(value(item) for item in v.array_value.values)
    return getattr(v, kind) if kind else None


def span_attributes(span: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in span.attributes}


APP = """
import sys
import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-app-key-0123456789", max_retries=0)
client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_headers={"ai-reporting-user": "u-zero"}
)
"""


def run(*command: str, env: dict[str, str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_instrumentor_is_registered_for_opentelemetry_instrument() -> None:
    (entry,) = [e for e in entry_points(group="opentelemetry_instrumentor") if e.name == "tokentrail"]
    assert entry.load() is TokenTrailInstrumentor
    assert TokenTrailInstrumentor().instrumentation_dependencies() == []


def test_only_otel_variables_produce_our_span_and_metrics_over_otlp(
    fake: FakeProvider, otlp: OtlpHttpReceiver, tmp_path: Path
) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = {
        "OTEL_SERVICE_NAME": "zero-code",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        # Only ours: the other GenAI instrumentations installed here register under the name "openai".
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai,anthropic",
        "OPENAI_API_KEY": "sk-app-key-0123456789",
        "TOKENTRAIL_FINGERPRINT_SALT": "zero-code-salt",
    }
    run(str(CLI), sys.executable, str(app), fake.openai_base_url, env=env)
    (span,) = otlp.spans
    a = span_attributes(span)
    assert span.name == "chat gpt-4o-mini"
    assert a[semconv.USER_ID] == "u-zero"
    assert a[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "system"
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(fake.last_call)["prompt_tokens"]
    names = {metric.name for metric in otlp.metrics}
    assert {semconv.METRIC_TOKEN_USAGE, semconv.METRIC_OPERATION_DURATION} <= names


GLOBAL_PROVIDER_SCRIPT = """
import sys
import openai
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokentrail.instrumentation import TokenTrailInstrumentor, attribute, instrument

if sys.argv[2] == "explicit":
    instrument(fingerprint_salt="s")  # before any global provider exists: spans follow the one set later
assert TokenTrailInstrumentor().is_instrumented_by_opentelemetry
exporter = InMemorySpanExporter()
provider = trace.get_tracer_provider()
if not isinstance(provider, TracerProvider):  # opentelemetry-instrument (the distro) may have set one up already
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
provider.add_span_processor(SimpleSpanProcessor(exporter))
client = openai.OpenAI(base_url=sys.argv[1], api_key="k")
for user in ("first-user", "global-user"):
    exporter.clear()
    with attribute(user=user):
        client.chat.completions.create(model="m", messages=[])
print([
    (span.name, span.attributes.get("user.id"), span.attributes.get("tokentrail.api"), span.attributes.get("tokentrail.duplicate"))
    for span in exporter.get_finished_spans()
])
"""

QUIET = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}


def test_instrument_without_a_provider_uses_the_global_one(fake: FakeProvider) -> None:
    output = run(sys.executable, "-c", GLOBAL_PROVIDER_SCRIPT, fake.openai_base_url, "explicit", env=QUIET)
    assert output == "[('chat m', 'global-user', 'chat.completions', None)]"


def test_opentelemetry_instrument_enables_tokentrail_with_no_code_change(fake: FakeProvider, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(GLOBAL_PROVIDER_SCRIPT)
    env = {**QUIET, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai,anthropic"}
    output = run(str(CLI), sys.executable, str(script), fake.openai_base_url, "auto", env=env)
    assert output == "[('chat m', 'global-user', 'chat.completions', None)]"


def test_opentelemetry_instrument_beside_other_genai_instrumentations_enriches_instead_of_duplicating(
    fake: FakeProvider, tmp_path: Path
) -> None:
    """Every GenAI instrumentation installed here auto-enables too (OpenLLMetry, OpenInference, and openai-v2 when
    its dependencies agree) and they nest: the innermost span is enriched, the enclosing ones marked duplicate."""
    pytest.importorskip("opentelemetry.instrumentation.openai")  # OpenLLMetry
    pytest.importorskip("openinference.instrumentation.openai")
    script = tmp_path / "app.py"
    script.write_text(GLOBAL_PROVIDER_SCRIPT)
    spans = ast.literal_eval(run(str(CLI), sys.executable, str(script), fake.openai_base_url, "auto", env=QUIET))
    counted = [span for span in spans if span[2] == "chat.completions" and not span[3]]
    assert counted == [("ChatCompletion", "global-user", "chat.completions", None)]  # OpenInference's, innermost
    others = [span for span in spans if span not in counted]
    assert ("openai.chat", "global-user", None, True) in others  # OpenLLMetry's, around it
    assert all(duplicate for *_, duplicate in others)
