"""``instrument()`` in a process that set up no tracer provider: one is set up from the OTEL_* variables, as
``opentelemetry-instrument`` would, and a provider the application (or the distro) sets is used, never doubled.

Each scenario is a real ``python`` subprocess making a real OpenAI SDK call to the fake provider, exporting over real
OTLP (gRPC or HTTP) to the real receiver, whose Parquet says what arrived."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from tokentrail.instrumentation import _provider
from tokentrail.processor.demo.fake_provider import FakeProvider
from tokentrail.processor.ingest.receiver import Receiver

from tests.helpers.receiver import read_usage
from tests.helpers.spans import usage_of

CLI = Path(sys.executable).with_name("opentelemetry-instrument")

# The first-hour app of issue 12: instrument() and one call, nothing else; the key comes from code, not the env.
APP = """
import logging, sys
import openai
from tokentrail.instrumentation import instrument

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
instrument(fingerprint_salt="first-hour-salt")
client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-from-the-secret-manager-0123", max_retries=0)
client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
"""

# An application with its own provider, set before or after instrument(), or by opentelemetry-instrument.
OWN_PROVIDER_APP = """
import gc, logging, sys
import openai
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokentrail.instrumentation import instrument

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
when = sys.argv[2]
exporter = InMemorySpanExporter()

def own_provider():
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider

provider = own_provider() if when == "before" else None
instrument(fingerprint_salt="s")
if when == "after":
    provider = own_provider()
if when == "distro":
    provider = trace.get_tracer_provider()  # opentelemetry-instrument's, exporting over OTLP
    provider.add_span_processor(SimpleSpanProcessor(exporter))
openai.OpenAI(base_url=sys.argv[1], api_key="k", max_retries=0).chat.completions.create(model="m", messages=[])
providers = [o for o in gc.get_objects() if isinstance(o, TracerProvider)]
print(len(providers), trace.get_tracer_provider() is provider, [s.name for s in exporter.get_finished_spans()])
"""


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path / "data", grpc_port=0, http_port=0) as running:
        yield running


def otel_env(**values: str) -> dict[str, str]:
    """This process's environment without any OTEL_* or TokenTrail setting of the developer's, plus ``values``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("OTEL_", "TOKENTRAIL_"))}
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        env.pop(name, None)
    env.update(values)
    return env


def run(*command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return result


def landed(receiver: Receiver) -> list[dict[str, Any]]:
    receiver.flush()
    return read_usage(receiver.data_dir)


@pytest.mark.parametrize(("protocol", "port_of", "where"), [
    ("grpc", "grpc_port", "OTLP/gRPC http://127.0.0.1:{port}"),
    ("http/protobuf", "http_port", "OTLP/HTTP http://127.0.0.1:{port}/v1/traces"),
])
def test_instrument_alone_sets_up_a_provider_from_the_otel_variables_and_the_span_arrives(
    protocol: str, port_of: str, where: str, fake: FakeProvider, receiver: Receiver
) -> None:
    """Issue 12, item 2: `python app.py` with only OTEL_EXPORTER_OTLP_ENDPOINT set exported nothing, silently."""
    port = getattr(receiver, port_of)
    env = otel_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_SERVICE_NAME="first-hour",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=issue-12",
    )
    result = run(sys.executable, "-c", APP, fake.openai_base_url, env=env)
    (record,) = landed(receiver)  # flushed at exit: the script ends right after its call
    assert record["service"] == "first-hour"
    assert record["model"] == "gpt-4o-mini"
    assert record["input_tokens"] == usage_of(fake.last_call)["prompt_tokens"]
    assert record["credential_type"] == "system"  # item 1 as well: the key passed in code is the service's own
    (line,) = [line for line in result.stderr.splitlines() if "set up the global TracerProvider" in line]
    assert line.startswith("INFO ") and line.endswith(where.format(port=port))
    assert "TokenTrail credentials: a key is the service's own (system)" in result.stderr


def test_the_traces_protocol_variable_wins_over_the_general_one(fake: FakeProvider, receiver: Receiver) -> None:
    env = otel_env(
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{receiver.http_port}/v1/traces",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf",
    )
    run(sys.executable, "-c", APP, fake.openai_base_url, env=env)
    assert len(landed(receiver)) == 1


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_provider_the_application_sets_is_used_and_no_second_one_is_made(
    when: str, fake: FakeProvider, receiver: Receiver
) -> None:
    env = otel_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.grpc_port}")
    result = run(sys.executable, "-c", OWN_PROVIDER_APP, fake.openai_base_url, when, env=env)
    assert result.stdout.strip() == "1 True ['chat m']"
    assert "Overriding of current TracerProvider" not in result.stderr
    assert "set up the global TracerProvider" not in result.stderr
    assert landed(receiver) == []  # the application's provider exports in memory only


def test_under_opentelemetry_instrument_the_distros_provider_is_the_only_one(
    fake: FakeProvider, receiver: Receiver, tmp_path: Path
) -> None:
    """The zero-code path, with instrument() in the code as well: the distro sets up the provider before any
    instrumentor runs, and TokenTrail must not configure a second one (the span would be exported twice)."""
    app = tmp_path / "app.py"
    app.write_text(OWN_PROVIDER_APP)
    env = otel_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.grpc_port}",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="openai,anthropic",
    )
    result = run(str(CLI), sys.executable, str(app), fake.openai_base_url, "distro", env=env)
    assert result.stdout.strip() == "1 True ['chat m']"
    assert "set up the global TracerProvider" not in result.stderr
    assert len(landed(receiver)) == 1


@pytest.mark.parametrize(("variables", "said"), [
    ({"OTEL_TRACES_EXPORTER": "none"}, "WARNING tokentrail.instrumentation._provider TokenTrail: OTEL_TRACES_EXPORTER=none"),
    ({"OTEL_SDK_DISABLED": "true"}, "WARNING tokentrail.instrumentation._provider TokenTrail: OTEL_SDK_DISABLED=true"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "ERROR tokentrail.instrumentation._provider TokenTrail: "
     "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not an OTLP protocol"),
])
def test_a_configuration_that_exports_nothing_is_said_not_silent(
    variables: dict[str, str], said: str, fake: FakeProvider, receiver: Receiver
) -> None:
    env = otel_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.grpc_port}", **variables)
    result = run(sys.executable, "-c", APP, fake.openai_base_url, env=env)
    assert any(line.startswith(said) for line in result.stderr.splitlines()), result.stderr
    assert "set up the global TracerProvider" not in result.stderr
    assert landed(receiver) == []


def test_an_exporter_that_is_not_installed_is_named_with_its_package(caplog: pytest.LogCaptureFixture) -> None:
    installed = {point.name: point for point in entry_points(group=_provider.EXPORTER_GROUP)}
    without_http = {name: point for name, point in installed.items() if name != _provider.OTLP_HTTP}
    with caplog.at_level(logging.ERROR, logger=_provider.__name__):
        planned = _provider.plan({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, without_http)
    assert planned == ()
    (record,) = caplog.records
    assert "opentelemetry-exporter-otlp-proto-http, which is not installed" in record.getMessage()


def test_the_plan_reads_every_exporter_named_and_where_each_sends() -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp, console",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318/",
    }
    planned = _provider.plan(env)
    assert [(exporter.name, exporter.where) for exporter in planned] == [
        (_provider.OTLP_HTTP, "OTLP/HTTP https://collector.example:4318/v1/traces"),
        ("console", "the console (stdout)"),
    ]
    assert [exporter.name for exporter in _provider.plan({})] == [_provider.OTLP_GRPC]  # the distro's default


def test_nothing_heavy_is_imported_with_the_package_nor_by_instrument_given_a_provider() -> None:
    """The OTLP exporters (gRPC above all) load only when a provider has to be built."""
    script = (
        "import sys\n"
        "import tokentrail.instrumentation as tt\n"
        "first = sorted(m for m in sys.modules if m.startswith('opentelemetry.exporter') or m.endswith('_provider'))\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "tt.instrument(tracer_provider=TracerProvider(), fingerprint_salt='s')\n"
        "print(first, sorted(m for m in sys.modules if m.startswith('opentelemetry.exporter') or m == 'grpc'))\n"
    )
    assert run(sys.executable, "-c", script, env=otel_env()).stdout.strip() == "[] []"


def test_instrument_given_a_provider_sets_up_none(fake: FakeProvider, receiver: Receiver) -> None:
    script = APP.replace(
        'instrument(fingerprint_salt="first-hour-salt")',
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry import trace\n"
        "instrument(tracer_provider=TracerProvider(), fingerprint_salt='s')",
    ) + "\nprint(type(trace.get_tracer_provider()).__name__)\n"
    env = otel_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.grpc_port}")
    assert run(sys.executable, "-c", script, fake.openai_base_url, env=env).stdout.strip() == "ProxyTracerProvider"
    assert landed(receiver) == []
