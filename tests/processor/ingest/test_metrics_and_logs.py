"""OTLP metrics and logs sent to the receiver (``opentelemetry-instrument`` sends all three signals to one endpoint by
default): acknowledged over gRPC and HTTP with the traces' token, limits and status codes, counted in the receiver's
metrics and status file, and never stored."""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from tokentrail.processor.demo.fake_provider import FakeProvider
from tokentrail.processor.ingest.receiver import Receiver

from tests.helpers.receiver import read_usage

TOKEN = "s3cret-ingest-token"
SECRET = "the user's prompt: never stored"  # what a GenAI event may carry; must not reach the data directory
CLI = Path(sys.executable).with_name("opentelemetry-instrument")


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path, grpc_port=0, http_port=0, receiver_id="signals-r1", flush_interval=3600) as r:
        yield r


def counters(receiver: Receiver) -> dict[str, int]:
    return receiver.metrics.counters()


def assert_not_stored(data_dir: Path) -> None:
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


# -- the user's step ---------------------------------------------------------------------------------------------

APP = f"""
import logging, sys
import openai
from opentelemetry._logs import LogRecord, get_logger

client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-app-key-0123456789", max_retries=0)
client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi"}}])
get_logger("app").emit(LogRecord(body={SECRET!r}))  # as a GenAI event would carry it
logging.getLogger("app").warning("done")
"""


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_opentelemetry_instrument_with_default_exporters_gets_no_export_error(
    fake: FakeProvider, tmp_path: Path, protocol: str
) -> None:
    """Only the endpoint is set: traces, metrics and logs all go to the receiver, and the app's stderr (where the
    SDK's exporters log a refused export) stays free of export errors."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    data = tmp_path / "data"
    with Receiver(data, grpc_port=0, http_port=0, receiver_id="signals-r2", flush_interval=3600) as receiver:
        port = receiver.grpc_port if protocol == "grpc" else receiver.http_port
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}  # the defaults, as a user has them
        env |= {
            "OTEL_SERVICE_NAME": "zero-code",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai,anthropic",  # ours only (see tests/instrumentation)
            "OPENAI_API_KEY": "sk-app-key-0123456789",
        }
        result = subprocess.run(
            [str(CLI), sys.executable, str(app), fake.openai_base_url],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert "Failed to export" not in result.stderr, result.stderr
        assert "UNIMPLEMENTED" not in result.stderr and "404" not in result.stderr, result.stderr
        receiver.flush()
        seen = counters(receiver)
        assert seen["metric_points_ignored"] >= 2  # gen_ai.client.token.usage (input, output) at least
        assert seen["log_records_ignored"] >= 2  # the event and the logging record
        assert seen["requests_invalid"] == 0
        (record,) = read_usage(data)
        assert record["model"] == "gpt-4o-mini" and record["service"] == "zero-code"
    assert_not_stored(data)


# -- the SDK's exporters, exactly counted --------------------------------------------------------------------------


def recording(exporter: Any) -> list[Any]:
    """The results of every ``export`` call of a real exporter."""
    results: list[Any] = []
    export = exporter.export

    def export_and_record(*args: Any, **kwargs: Any) -> Any:
        results.append(export(*args, **kwargs))
        return results[-1]

    exporter.export = export_and_record
    return results


def exporters(receiver: Receiver, transport: str) -> tuple[Any, Any]:
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics

        endpoint = f"127.0.0.1:{receiver.grpc_port}"
        headers = (("authorization", f"Bearer {TOKEN}"),)
        return (
            GrpcMetrics(endpoint=endpoint, insecure=True, headers=headers),
            GrpcLogs(endpoint=endpoint, insecure=True, headers=headers),
        )
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics

    base = f"http://127.0.0.1:{receiver.http_port}"
    auth = {"authorization": f"Bearer {TOKEN}"}
    return (
        HttpMetrics(endpoint=f"{base}/v1/metrics", headers=auth, compression=Compression.Gzip),
        HttpLogs(endpoint=f"{base}/v1/logs", headers=auth),
    )


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_the_sdk_exporters_succeed_and_every_point_and_record_is_counted(
    tmp_path: Path, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="opentelemetry")
    with Receiver(tmp_path, grpc_port=0, http_port=0, ingest_token=TOKEN, flush_interval=3600) as receiver:
        metric_exporter, log_exporter = exporters(receiver, transport)
        metric_results, log_results = recording(metric_exporter), recording(log_exporter)

        reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
        meters = MeterProvider(metric_readers=[reader])
        loggers = LoggerProvider()
        loggers.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
        try:
            usage = meters.get_meter("t").create_histogram("gen_ai.client.token.usage", unit="{token}")
            model = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}
            usage.record(1200, {**model, "gen_ai.token.type": "input"})
            usage.record(300, {**model, "gen_ai.token.type": "output"})
            meters.get_meter("t").create_counter("requests").add(1)
            meters.force_flush()
            for _ in range(3):
                loggers.get_logger("t").emit(LogRecord(body=SECRET, severity_number=SeverityNumber.INFO))

            assert metric_results == [MetricExportResult.SUCCESS]
            assert [result.name for result in log_results] == ["SUCCESS"] * 3
            seen = counters(receiver)
            assert (seen["metric_points_ignored"], seen["log_records_ignored"]) == (3, 3)
            assert seen["requests_ok"] == 4
            assert receiver.stats["received"] == 0  # nothing reached the span pipeline
        finally:
            meters.shutdown()
            loggers.shutdown()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    status = json.loads(receiver.status_path().read_text())
    assert status["metrics"]["log_records_ignored"] == 3
    assert status["metrics"]["metric_points_ignored"] >= 3  # shutdown exported the cumulative points again
    assert read_usage(tmp_path) == []
    assert_not_stored(tmp_path)


# -- OTLP/HTTP bodies by hand: JSON, gzip, refusals ---------------------------------------------------------------


def post(url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


LOGS_JSON = {
    "resourceLogs": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
            "scopeLogs": [
                {
                    "logRecords": [
                        {
                            "timeUnixNano": "1748779200000000000",
                            "traceId": "5b8efff798038103d269b633813fc60c",  # hex, as OTLP/JSON writes ids
                            "spanId": "eee19b7ec3c1b174",
                            "eventName": "gen_ai.client.inference.operation.details",
                            "body": {"stringValue": SECRET},
                        },
                        {"body": {"stringValue": "second"}, "traceId": "not-hex-but-never-read"},
                    ]
                }
            ],
        }
    ]
}
METRICS_JSON = {
    "resourceMetrics": [
        {
            "scopeMetrics": [
                {
                    "metrics": [
                        {
                            "name": "gen_ai.client.token.usage",
                            "histogram": {
                                "aggregationTemporality": 2,
                                "dataPoints": [
                                    {"count": "1", "sum": 1200, "exemplars": [{"spanId": "eee19b7ec3c1b174"}]},
                                    {"count": "1", "sum": 300},
                                ],
                            },
                        },
                        {"name": "up", "gauge": {"dataPoints": [{"asInt": "1"}]}},
                    ]
                }
            ]
        }
    ]
}


def test_otlp_json_and_gzip_on_metrics_and_logs(receiver: Receiver, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{receiver.http_port}"
    status, body = post(f"{base}/v1/logs", json.dumps(LOGS_JSON).encode(), "application/json")
    assert (status, json.loads(body)) == (200, {})
    gzipped = gzip.compress(json.dumps(METRICS_JSON).encode())
    status, body = post(f"{base}/v1/metrics", gzipped, "application/json", {"Content-Encoding": "gzip"})
    assert (status, json.loads(body)) == (200, {})
    protobuf = ExportMetricsServiceRequest()
    protobuf.resource_metrics.add().scope_metrics.add().metrics.add(name="m").sum.data_points.add(as_int=1)
    status, body = post(f"{base}/v1/metrics", protobuf.SerializeToString(), "application/x-protobuf")
    assert status == 200 and ExportMetricsServiceResponse.FromString(body) == ExportMetricsServiceResponse()
    seen = counters(receiver)
    assert (seen["log_records_ignored"], seen["metric_points_ignored"], seen["requests_ok"]) == (2, 4, 3)
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        prometheus = response.read().decode()
    assert 'tokentrail_receiver_log_records_ignored_total{receiver_id="signals-r1"} 2' in prometheus
    assert 'tokentrail_receiver_metric_points_ignored_total{receiver_id="signals-r1"} 4' in prometheus
    receiver.flush()
    assert_not_stored(tmp_path)


@pytest.mark.parametrize("path", ["/v1/metrics", "/v1/logs"])
@pytest.mark.parametrize(
    ("body", "content_type", "headers", "status", "message"),
    [
        (b"\xff\xff\xff\xff not protobuf", "application/x-protobuf", {}, 400, "malformed Export"),
        (b"{not json", "application/json", {}, 400, "malformed OTLP/JSON"),
        (b"[]", "application/json", {}, 400, "JSON object"),
        (b'{"resourceLogs": 3, "resourceMetrics": 3}', "application/json", {}, 400, "malformed OTLP/JSON"),
        (b"x", "text/plain", {}, 415, "Content-Type"),
        (b"not gzip", "application/x-protobuf", {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
    ],
)
def test_bad_metrics_and_logs_bodies_get_the_traces_status_codes(
    receiver: Receiver, path: str, body: bytes, content_type: str, headers: dict, status: int, message: str
) -> None:
    got, reply = post(f"http://127.0.0.1:{receiver.http_port}{path}", body, content_type, headers)
    assert got == status
    assert message in reply.decode("utf-8", "replace")
    seen = counters(receiver)
    assert (seen["requests_invalid"], seen["requests_ok"]) == (1, 0)


def test_http_metrics_and_logs_need_the_token_and_respect_the_size_limit(tmp_path: Path) -> None:
    with Receiver(
        tmp_path, grpc_port=0, http_port=0, ingest_token=TOKEN, max_message_bytes=1000, flush_interval=3600
    ) as receiver:
        base = f"http://127.0.0.1:{receiver.http_port}"
        body = json.dumps(LOGS_JSON).encode()
        assert post(f"{base}/v1/logs", body, "application/json")[0] == 401
        assert post(f"{base}/v1/logs", body, "application/json", {"Authorization": "Bearer wrong"})[0] == 401
        assert post(f"{base}/v1/metrics", b"\x00" * 2000, "application/x-protobuf", {"Authorization": f"Bearer {TOKEN}"})[0] == 413
        assert post(f"{base}/v1/logs", body, "application/json", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        seen = counters(receiver)
        assert (seen["requests_unauthenticated"], seen["log_records_ignored"], seen["requests_ok"]) == (2, 2, 1)


def test_grpc_metrics_and_logs_need_the_token_and_refuse_garbage(tmp_path: Path) -> None:
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = SECRET
    with Receiver(tmp_path, grpc_port=0, ingest_token=TOKEN, max_message_bytes=1000, flush_interval=3600) as receiver:
        with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
            log_stub = logs_service_pb2_grpc.LogsServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                log_stub.Export(logs, metadata=(("authorization", "Bearer wrong"),), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            authorized = (("authorization", f"Bearer {TOKEN}"),)
            assert log_stub.Export(logs, metadata=authorized, timeout=10) == ExportLogsServiceResponse()
            garbage = channel.unary_unary(
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                request_serializer=None,
                response_deserializer=None,
            )
            with pytest.raises(grpc.RpcError) as malformed:
                garbage(b"\xff\xff\xff\xff", metadata=authorized, timeout=10)
            assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            big = ExportMetricsServiceRequest()
            big.resource_metrics.add().scope_metrics.add().metrics.add(name="x" * 2000)
            with pytest.raises(grpc.RpcError) as too_big:
                metrics_service_pb2_grpc.MetricsServiceStub(channel).Export(big, metadata=authorized, timeout=10)
            assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        seen = counters(receiver)
        assert (seen["requests_unauthenticated"], seen["requests_invalid"]) == (1, 1)
        assert (seen["log_records_ignored"], seen["requests_ok"]) == (1, 1)
    assert_not_stored(tmp_path)
