"""``otel-collector.yaml``: a Collector configuration that forwards only GenAI spans to ``tokentrail serve``.

There is no Collector binary in the test environment, so these tests check what a Collector would reject or
silently get wrong: undefined components, a port that does not match the receiver, processor order, and
which spans the filter drops.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from tokentrail.processor.cli.serve import DEFAULT_GRPC_PORT
from tokentrail.processor.ingest.receiver import Receiver

CONFIG_PATH = Path(__file__).resolve().parent.parent / "otel-collector.yaml"
SECTIONS = {"receivers", "processors", "exporters", "connectors", "extensions"}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded = yaml.safe_load(CONFIG_PATH.read_text())
    assert isinstance(loaded, dict)
    return loaded


def component_type(name: str) -> str:
    """The Collector names components ``type[/name]``."""
    return name.split("/", 1)[0]


def test_every_component_a_pipeline_names_is_defined(config: dict[str, Any]) -> None:
    pipelines = config["service"]["pipelines"]
    assert pipelines
    for pipeline_name, pipeline in pipelines.items():
        assert component_type(pipeline_name) in {"traces", "metrics", "logs"}
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                assert component in (config.get(section) or {}), f"{pipeline_name}: {section} {component} undefined"


def test_only_known_top_level_sections_are_used(config: dict[str, Any]) -> None:
    assert set(config) <= SECTIONS | {"service"}


def test_otlp_receiver_listens_on_the_standard_ports(config: dict[str, Any]) -> None:
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"


def test_tokentrail_exporter_targets_the_receivers_default_port(config: dict[str, Any]) -> None:
    exporter = config["exporters"]["otlp/tokentrail"]
    host, port = exporter["endpoint"].rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) == DEFAULT_GRPC_PORT == 14317
    assert exporter["tls"]["insecure"] is True


def test_tokentrail_exporter_queues_and_retries_so_a_restart_loses_nothing(config: dict[str, Any]) -> None:
    exporter = config["exporters"]["otlp/tokentrail"]
    assert exporter["sending_queue"]["enabled"] is True
    assert exporter["retry_on_failure"]["enabled"] is True


def test_the_tokentrail_pipeline_filters_genai_spans_then_batches(config: dict[str, Any]) -> None:
    pipeline = config["service"]["pipelines"]["traces/tokentrail"]
    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["processors"] == ["memory_limiter", "filter/genai", "batch"]
    assert pipeline["exporters"] == ["otlp/tokentrail"]


def test_memory_limiter_comes_first_in_every_pipeline(config: dict[str, Any]) -> None:
    for name, pipeline in config["service"]["pipelines"].items():
        assert pipeline["processors"][0] == "memory_limiter", name


def test_a_debug_exporter_is_defined_for_troubleshooting(config: dict[str, Any]) -> None:
    assert "debug" in config["exporters"]


def test_a_pipeline_to_the_users_existing_backend_is_offered_commented_out() -> None:
    text = CONFIG_PATH.read_text()
    assert re.search(r"^\s*#\s*traces:\s*$", text, re.MULTILINE)
    assert re.search(r"^\s*#\s*exporters: \[otlp/backend\]", text, re.MULTILINE)


# --- the filter -----------------------------------------------------------------------------------------------

_NIL_CHECK = re.compile(r'attributes\["([^"]+)"\] == nil')


def drops(conditions: list[str], attributes: dict[str, object]) -> bool:
    """The filter processor drops a span when any condition is true. Our conditions are conjunctions of
    ``attributes["k"] == nil``; anything else fails the test rather than being guessed at."""
    for condition in conditions:
        terms = [term.strip() for term in condition.split(" and ")]
        keys = []
        for term in terms:
            match = _NIL_CHECK.fullmatch(term)
            assert match, f"unexpected OTTL term: {term!r}"
            keys.append(match.group(1))
        if all(attributes.get(key) is None for key in keys):
            return True
    return False


@pytest.fixture(scope="module")
def span_conditions(config: dict[str, Any]) -> list[str]:
    genai = config["processors"]["filter/genai"]
    assert genai["error_mode"] == "ignore"  # a bad attribute type must not stop the pipeline
    conditions = genai["traces"]["span"]
    assert conditions
    return conditions


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"http.request.method": "GET", "url.full": "https://example.com/"},
        {"db.system": "postgresql", "db.query.text": "SELECT 1"},
        {"gen_ai.request.model": "gpt-4o"},  # a model alone is not a call: no operation, no provider
    ],
    ids=["no attributes", "http span", "db span", "model only"],
)
def test_the_filter_drops_spans_without_genai_attributes(
    span_conditions: list[str], attributes: dict[str, object]
) -> None:
    assert drops(span_conditions, attributes)


@pytest.mark.parametrize(
    "attributes",
    [
        {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"},  # current semconv, ours
        {"gen_ai.provider.name": "anthropic"},
        {"gen_ai.system": "openai"},  # older semconv, OpenLLMetry, Vercel AI SDK doGenerate spans
        {"gen_ai.operation.name": "chat"},
        {"llm.token_count.prompt": 12, "llm.token_count.completion": 3},  # OpenInference
        {"llm.token_count.total": 15},
    ],
    ids=["semconv", "provider only", "gen_ai.system", "operation only", "openinference", "openinference total"],
)
def test_the_filter_keeps_genai_spans(span_conditions: list[str], attributes: dict[str, object]) -> None:
    assert not drops(span_conditions, attributes)


def test_the_cli_default_grpc_port_is_the_receivers_default() -> None:
    assert inspect.signature(Receiver).parameters["grpc_port"].default == DEFAULT_GRPC_PORT


def test_the_filter_keeps_every_span_the_receiver_counts(span_conditions: list[str]) -> None:
    """Every span of every golden fixture that becomes a usage record (the real instrumentations' spans, calls
    without usage among them) passes the filter: a call the Collector dropped would be lost without a trace. (The
    edge cases are spans bent out of shape on purpose, several without any GenAI marker.)"""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from tokentrail.processor.normalize.otlp import any_value
    from tokentrail.processor.normalize.reader import normalize_request

    from tests.helpers.golden import load, names

    counted = 0
    for name in names():
        if name == "edge-cases-handbuilt":
            continue
        for request, _ in load(name):
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        single = ExportTraceServiceRequest()
                        single.resource_spans.add().scope_spans.add().spans.append(span)
                        if not normalize_request(single).rows:
                            continue
                        counted += 1
                        attributes = {kv.key: any_value(kv.value.SerializeToString()) for kv in span.attributes}
                        assert not drops(span_conditions, attributes), (name, span.name, sorted(attributes))
    assert counted >= 30
