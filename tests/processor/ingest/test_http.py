"""OTLP/HTTP (protobuf, JSON, gzip), bearer-token auth on both transports, TLS with a self-signed certificate, and
``GET /metrics``: every answer is the status code OTLP specifies, and a refused request stores nothing."""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from tokentrail.processor.ingest.receiver import Receiver

from tests.helpers.otlp import make_request, random_span
from tests.helpers.receiver import read_usage

TOKEN = "s3cret-ingest-token"


def post(
    url: str,
    body: bytes,
    content_type: str = "application/x-protobuf",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, bytes, Message]:
    """The status, body and headers (looked up by name in any case, as HTTP names are) of one POST."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path, grpc_port=0, http_port=0, receiver_id="http-r1", flush_interval=3600) as r:
        yield r


def traces_url(receiver: Receiver, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{receiver.http_port}/v1/traces"


def otlp_json(span_count: int = 1) -> dict:
    span = {
        "traceId": os.urandom(16).hex(),
        "spanId": os.urandom(8).hex(),
        "name": "chat gpt-4o",
        "kind": 3,
        "startTimeUnixNano": "1748779200000000000",
        "endTimeUnixNano": "1748779201500000000",
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1200"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 300}},
            {"key": "tokentrail.tags", "value": {"arrayValue": {"values": [{"stringValue": "plan:pro"}]}}},
        ],
    }
    spans = [dict(span, spanId=os.urandom(8).hex()) for _ in range(span_count)]
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
                "scopeSpans": [{"spans": spans}],
            }
        ]
    }


# -- OTLP/HTTP ----------------------------------------------------------------------------------------------------


def test_protobuf_body_is_stored_and_answered_with_an_export_response(receiver: Receiver, tmp_path: Path) -> None:
    status, body, headers = post(traces_url(receiver), make_request([random_span(), random_span()]).SerializeToString())
    assert status == 200
    assert headers["Content-Type"] == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans == 0
    receiver.flush()
    assert len(read_usage(tmp_path)) == 2


def test_json_body_with_hex_ids_and_string_int64s(receiver: Receiver, tmp_path: Path) -> None:
    document = otlp_json(3)
    status, body, headers = post(traces_url(receiver), json.dumps(document).encode(), "application/json")
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {}  # full success: an empty ExportTraceServiceResponse
    receiver.flush()
    rows = read_usage(tmp_path)
    assert len(rows) == 3
    assert {r["trace_id"] for r in rows} == {document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"]}
    assert rows[0]["service"] == "web" and rows[0]["input_tokens"] == 1200 and rows[0]["tags"] == ["plan:pro"]


def test_gzip_bodies_are_accepted(receiver: Receiver, tmp_path: Path) -> None:
    payload = gzip.compress(make_request([random_span()]).SerializeToString())
    assert post(traces_url(receiver), payload, headers={"Content-Encoding": "gzip"})[0] == 200
    payload = gzip.compress(json.dumps(otlp_json()).encode())
    assert post(traces_url(receiver), payload, "application/json", {"Content-Encoding": "gzip"})[0] == 200
    receiver.flush()
    assert len(read_usage(tmp_path)) == 2


def test_the_real_otlp_http_exporter_with_gzip_and_a_token(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from tests.helpers.otlp import genai_attributes

    with Receiver(tmp_path, grpc_port=0, http_port=0, ingest_token=TOKEN, flush_interval=3600) as receiver:
        exporter = OTLPSpanExporter(
            endpoint=traces_url(receiver), headers={"authorization": f"Bearer {TOKEN}"}, compression=Compression.Gzip
        )
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("t").start_as_current_span("chat gpt-4o") as span:
            span.set_attributes(genai_attributes())
        provider.shutdown()
        receiver.flush()
        assert receiver.stats["accepted"] == 1
    assert len(read_usage(tmp_path)) == 1


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "status", "message"),
    [
        (b"\xff\xff\xff\xff not protobuf", "application/x-protobuf", {}, 400, "malformed ExportTraceServiceRequest"),
        (b"{not json", "application/json", {}, 400, "malformed OTLP/JSON"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "application/json", {}, 400, "not hex"),
        (b"[]", "application/json", {}, 400, "JSON object"),
        (b"x", "text/plain", {}, 415, "Content-Type"),
        (b"not gzip", "application/x-protobuf", {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
        (b"x", "application/x-protobuf", {"Content-Encoding": "br"}, 400, "unsupported Content-Encoding"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message_and_store_nothing(
    receiver: Receiver, tmp_path: Path, body: bytes, content_type: str, headers: dict, status: int, message: str
) -> None:
    got, reply, _ = post(traces_url(receiver), body, content_type, headers)
    assert got == status
    assert message in reply.decode("utf-8", "replace")
    receiver.flush()
    assert read_usage(tmp_path) == []


def test_a_body_over_the_limit_is_413(tmp_path: Path) -> None:
    with Receiver(tmp_path, grpc_port=0, http_port=0, max_message_bytes=1000, flush_interval=3600) as receiver:
        assert post(traces_url(receiver), b"\x00" * 2000)[0] == 413
        bomb = gzip.compress(b"\x00" * 100_000)  # small on the wire, over the limit once inflated
        status, reply, _ = post(traces_url(receiver), bomb, headers={"Content-Encoding": "gzip"})
        assert status == 400 and b"exceeds the limit" in reply


def test_unknown_paths_are_404(receiver: Receiver) -> None:
    status, reply, _ = post(f"http://127.0.0.1:{receiver.http_port}/v1/profiles", b"")
    assert status == 404 and b"/v1/traces" in reply


def test_a_refused_write_is_503_with_retry_after(receiver: Receiver) -> None:
    wal = receiver.wal
    assert wal is not None

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    wal._fsync = full_disk
    status, reply, headers = post(traces_url(receiver), make_request([random_span()]).SerializeToString())
    assert status == 503 and headers.get("Retry-After")
    assert b"not stored" in reply
    assert receiver.metrics.counters()["requests_unavailable"] == 1


# -- auth ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path, grpc_port=0, http_port=0, ingest_token=TOKEN, flush_interval=3600) as r:
        yield r


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN])
def test_http_without_the_right_token_is_401_and_stores_nothing(
    guarded: Receiver, tmp_path: Path, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    status, _, reply_headers = post(traces_url(guarded), make_request([random_span()]).SerializeToString(), headers=headers)
    assert status == 401 and reply_headers.get("WWW-Authenticate") == "Bearer"
    guarded.flush()
    assert read_usage(tmp_path) == []
    assert guarded.stats["received"] == 0


def test_http_with_the_token_is_accepted(guarded: Receiver, tmp_path: Path) -> None:
    body = make_request([random_span()]).SerializeToString()
    assert post(traces_url(guarded), body, headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong"),)])
def test_grpc_without_the_right_token_is_unauthenticated_and_stores_nothing(
    guarded: Receiver, tmp_path: Path, metadata: tuple
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{guarded.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Export(make_request([random_span()]), metadata=metadata, timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    guarded.flush()
    assert read_usage(tmp_path) == []
    assert guarded.metrics.counters()["requests_unauthenticated"] == 1


def test_grpc_with_the_token_is_accepted(guarded: Receiver) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{guarded.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        stub.Export(make_request([random_span()]), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10)
    assert guarded.stats["accepted"] == 1


def test_metrics_endpoint_needs_the_token_too(guarded: Receiver) -> None:
    url = f"http://127.0.0.1:{guarded.http_port}/metrics"
    assert get(url)[0] == 401
    assert get(url, {"Authorization": f"Bearer {TOKEN}"})[0] == 200


# -- TLS ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, made here with the `cryptography` package."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_on_grpc_and_http(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    with Receiver(
        tmp_path, grpc_port=0, http_port=0, tls_cert=cert, tls_key=key, ingest_token=TOKEN, flush_interval=3600
    ) as receiver:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{receiver.grpc_port}", credentials) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            stub.Export(make_request([random_span()]), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10)
        context = ssl.create_default_context(cafile=str(cert))
        body = make_request([random_span()]).SerializeToString()
        status, _, _ = post(traces_url(receiver, "https"), body, headers={"Authorization": f"Bearer {TOKEN}"}, context=context)
        assert status == 200
        with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as plain:  # plaintext never gets through
            with pytest.raises(grpc.RpcError):
                trace_service_pb2_grpc.TraceServiceStub(plain).Export(make_request([random_span()]), timeout=5)
        receiver.flush()
        assert receiver.stats["accepted"] == 2
    assert len(read_usage(tmp_path)) == 2


def test_tls_needs_both_files(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="both"):
        Receiver(tmp_path, grpc_port=0, tls_cert=certificate[0])


# -- metrics ------------------------------------------------------------------------------------------------------


def test_metrics_count_every_outcome_in_prometheus_text(receiver: Receiver) -> None:
    from tests.helpers.otlp import genai_attributes, make_span

    bad = make_span(genai_attributes({"gen_ai.usage.input_tokens": -1}))
    span = random_span()
    post(traces_url(receiver), make_request([span, bad]).SerializeToString())
    post(traces_url(receiver), make_request([span]).SerializeToString())
    post(traces_url(receiver), b"garbage")
    status, text = get(f"http://127.0.0.1:{receiver.http_port}/metrics")
    assert status == 200
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["tokentrail_receiver_spans_received_total"] == 3
    assert values["tokentrail_receiver_spans_accepted_total"] == 1
    assert values["tokentrail_receiver_spans_rejected_total"] == 1
    assert values["tokentrail_receiver_spans_deduplicated_total"] == 1
    assert values["tokentrail_receiver_requests_invalid_total"] == 1
    assert values["tokentrail_receiver_wal_bytes_written_total"] > 0
    assert values["tokentrail_receiver_wal_pending_bytes"] > 0
    assert values["tokentrail_receiver_flush_lag_seconds"] >= 0
    assert 'receiver_id="http-r1"' in text
    receiver.flush()
    text = get(f"http://127.0.0.1:{receiver.http_port}/metrics")[1]
    assert "tokentrail_receiver_flush_lag_seconds{receiver_id=\"http-r1\"} 0" in text


def test_tokentrail_status_reads_what_receivers_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tokentrail.processor.cli import main as cli

    with Receiver(tmp_path, grpc_port=0, receiver_id="status-r1", flush_interval=3600) as receiver:
        receiver.export(make_request([random_span(), random_span()]))
    assert cli.main(["status", "--data-dir", str(tmp_path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    (r,) = status["receivers"]
    assert (r["receiver_id"], r["state"], r["metrics"]["spans_accepted"]) == ("status-r1", "stopped", 2)
    assert status["dataset"]["files"] == 1 and status["wal"]["segments"] == 0
    assert cli.main(["status", "--data-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "status-r1 (stopped" in text and "accepted 2" in text
