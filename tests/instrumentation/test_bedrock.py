"""AWS Bedrock through the real boto3 client, against the fake Bedrock runtime on loopback (its event streams in
AWS's binary encoding): one span per call of the shape every other SDK's spans have, exact tokens, attribution and
credentials, and streams that end their span however the application leaves them, reading exactly what they would
without us."""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]  # botocore and boto3 ship no types
import pytest
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.eventstream import ChecksumMismatch, EventStream, EventStreamBuffer  # type: ignore[import-untyped]
from botocore.exceptions import ClientError, EndpointConnectionError, EventStreamError  # type: ignore[import-untyped]
from botocore.response import StreamingBody  # type: ignore[import-untyped]
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tokentrail.instrumentation import attribute, instrument, semconv, uninstrument
from tokentrail.instrumentation._bedrock import _key_of
from tokentrail.instrumentation._bedrock_usage import request_model
from tokentrail.instrumentation._credentials import fingerprint
from tokentrail.processor.demo.fake_bedrock import FakeBedrock, FakeBedrockCall, decode_events, encode_event
from tokentrail.processor.pricing.catalog import catalog_price

from tests.helpers.spans import TEST_SALT, attrs, cache_exclusive_tokens, genai_spans, only_genai_span

ACCESS_KEY_ID = "AKIAFAKEBEDROCK0TEST"
SECRET_KEY = "fake/Secret+Key0123456789abcdefghijklmno"
SESSION_TOKEN = "FakeSessionToken//0123456789"
MESSAGES: Any = [{"role": "user", "content": [{"text": "Tell me about the lazy dog, at some length please."}]}]
CTX: dict[str, Any] = {"user": "cust_42", "tags": ["plan:pro", "feature:bedrock"]}
SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"

# Every model id form, for each family: bare ids, cross-region profiles, and ARNs (foundation model, system inference
# profile, application inference profile: an opaque id, served as Claude by the fake).
MODEL_IDS = [
    SONNET,
    f"us.{SONNET}",
    f"eu.{SONNET}",
    f"apac.{SONNET}",
    "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
    f"arn:aws:bedrock:us-east-1::foundation-model/{SONNET}",
    f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{SONNET}",
    "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6",
    "amazon.nova-pro-v1:0",
    "us.amazon.nova-lite-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
    "us.meta.llama3-3-70b-instruct-v1:0",
    "mistral.mistral-large-2402-v1:0",
    "cohere.command-r-plus-v1:0",
]
OPERATIONS = ["converse", "converse_stream", "invoke_model", "invoke_model_with_response_stream"]


@pytest.fixture(scope="module")
def bedrock_server() -> Iterator[FakeBedrock]:
    with FakeBedrock() as fake:
        yield fake


@pytest.fixture
def bedrock(bedrock_server: FakeBedrock) -> FakeBedrock:
    bedrock_server.reset()
    return bedrock_server


def make_client(fake: FakeBedrock, **extra: Any) -> Any:
    """A real boto3 bedrock-runtime client aimed at the fake, with dummy credentials and no retries."""
    options: dict[str, Any] = {
        "endpoint_url": fake.base_url,
        "region_name": "us-east-1",
        "aws_access_key_id": ACCESS_KEY_ID,
        "aws_secret_access_key": SECRET_KEY,
        "aws_session_token": SESSION_TOKEN,
        "config": Config(retries={"total_max_attempts": 1}),
        **extra,
    }
    return boto3.client("bedrock-runtime", **options)


@pytest.fixture
def client(instrumented: TracerProvider, bedrock: FakeBedrock) -> Any:
    return make_client(bedrock)


def invoke_body(limit: int | None = None) -> str:
    body: dict[str, Any] = {"messages": MESSAGES}
    if limit is not None:
        body["max_tokens"] = limit
    return json.dumps(body)


def call(client: Any, operation: str, model_id: str, limit: int | None = None) -> list[Any]:
    """Make one call as an application would, reading the whole response; what it read (body bytes or events)."""
    if operation == "converse":
        config = {"inferenceConfig": {"maxTokens": limit}} if limit else {}
        response = client.converse(modelId=model_id, messages=MESSAGES, **config)
        return [response["output"], response["usage"]]
    if operation == "converse_stream":
        config = {"inferenceConfig": {"maxTokens": limit}} if limit else {}
        return list(client.converse_stream(modelId=model_id, messages=MESSAGES, **config)["stream"])
    if operation == "invoke_model":
        return [client.invoke_model(modelId=model_id, body=invoke_body(limit))["body"].read()]
    return list(client.invoke_model_with_response_stream(modelId=model_id, body=invoke_body(limit))["body"])


def expected_tokens(fake_call: FakeBedrockCall) -> dict[str, int]:
    """The span's counts for what the fake answered: Bedrock's input excludes the cache, the span's includes it."""
    usage = fake_call.usage
    assert usage is not None
    return cache_exclusive_tokens(
        usage["inputTokens"], usage["outputTokens"], usage["cacheReadInputTokens"], usage["cacheWriteInputTokens"]
    )


def assert_no_secret(span: ReadableSpan) -> None:
    for value in attrs(span).values():
        text = repr(value)
        for secret in (ACCESS_KEY_ID, SECRET_KEY, SESSION_TOKEN):
            assert secret not in text


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_one_span_per_call_with_exact_tokens_and_attribution(
    client: Any, bedrock: FakeBedrock, exporter: InMemorySpanExporter, operation: str, model_id: str
) -> None:
    with attribute(user=CTX["user"], tags=CTX["tags"]):
        call(client, operation, model_id)
    served = bedrock.last_call
    assert served.model_id == model_id  # the id reached the server intact (percent-encoded on the way)
    span = only_genai_span(exporter)
    a = attrs(span)
    model = request_model(model_id)
    assert span.name == f"chat {model}"
    assert span.kind == SpanKind.CLIENT
    assert span.status.status_code == StatusCode.UNSET
    assert a[semconv.GEN_AI_PROVIDER_NAME] == "aws.bedrock"
    assert a[semconv.GEN_AI_OPERATION_NAME] == "chat"
    assert a[semconv.GEN_AI_REQUEST_MODEL] == model
    assert semconv.GEN_AI_RESPONSE_MODEL not in a  # the request's id prices the call (see _bedrock_usage)
    assert a[semconv.TOKENTRAIL_API] == ("bedrock.converse" if operation.startswith("converse") else "bedrock.invoke_model")
    assert a[semconv.GEN_AI_REQUEST_STREAM] is operation.endswith("stream")
    assert a[semconv.SERVER_ADDRESS] == "127.0.0.1"
    assert a[semconv.SERVER_PORT] == bedrock.port
    expected = expected_tokens(served)
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == expected[semconv.GEN_AI_USAGE_INPUT_TOKENS]
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == expected[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]
    # Llama's body has no cache fields at all; every other answer states them (0 for the uncached families).
    assert a.get(semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, 0) == expected[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS]
    assert a.get(semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, 0) == expected[
        semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
    ]
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == (served.stop_reason,)
    assert semconv.TOKENTRAIL_USAGE_MISSING not in a
    assert semconv.TOKENTRAIL_STREAM_INCOMPLETE not in a
    assert a[semconv.USER_ID] == CTX["user"]
    assert a[semconv.TOKENTRAIL_TAGS] == tuple(CTX["tags"])
    assert a[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "system"
    assert a[semconv.TOKENTRAIL_CREDENTIAL_ID] == fingerprint(ACCESS_KEY_ID, TEST_SALT.encode())
    assert_no_secret(span)
    # Our baggage never reached AWS.
    assert "baggage" not in served.headers or "tokentrail" not in served.headers["baggage"]


def test_request_models_keep_the_cross_region_prefix_and_drop_named_arns() -> None:
    assert request_model(f"us.{SONNET}") == f"us.{SONNET}"
    assert request_model(f"arn:aws:bedrock:eu-west-1::foundation-model/{SONNET}") == SONNET
    assert request_model(f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/global.{SONNET}") == f"global.{SONNET}"
    opaque = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
    assert request_model(opaque) == opaque  # names no model: an overrides alias prices it


def test_cache_writes_are_split_by_lifetime_from_converse_cache_details(client: Any, exporter: InMemorySpanExporter, bedrock: FakeBedrock) -> None:
    client.converse(modelId=SONNET, messages=MESSAGES)
    write = bedrock.last_call.usage["cacheWriteInputTokens"]  # type: ignore[index]
    assert write > 0
    assert attrs(only_genai_span(exporter))[semconv.TOKENTRAIL_CACHE_CREATION_5M_INPUT_TOKENS] == write


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_limited_answer_reports_its_stop_reason_and_exact_output(
    client: Any, bedrock: FakeBedrock, exporter: InMemorySpanExporter, operation: str
) -> None:
    call(client, operation, "meta.llama3-1-70b-instruct-v1:0", limit=5)
    a = attrs(only_genai_span(exporter))
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == (bedrock.last_call.stop_reason,)
    assert bedrock.last_call.stop_reason in ("length", "max_tokens")


# -- the application reads exactly what it would without us ---------------------------------------------------------

DETERMINISTIC = ["amazon.nova-pro-v1:0", "meta.llama3-1-70b-instruct-v1:0", "mistral.mistral-large-2402-v1:0"]


def read_all(client: Any) -> list[Any]:
    out: list[Any] = []
    for model_id in DETERMINISTIC:
        out.append(call(client, "converse_stream", model_id))
        out.append(call(client, "invoke_model_with_response_stream", model_id))
        out.append(call(client, "invoke_model", model_id))
        response = client.invoke_model(modelId=model_id, body=invoke_body())
        out.append(list(response["body"].iter_chunks(7)))
        response = client.invoke_model(modelId=model_id, body=invoke_body())
        out.append(list(response["body"].iter_lines()))
        body = client.invoke_model(modelId=model_id, body=invoke_body())["body"]
        buffer = bytearray(10_000)
        out.append(bytes(buffer[: body.readinto(buffer)]))
    return out


def test_the_application_reads_the_same_events_and_bytes_with_and_without_us(
    bedrock: FakeBedrock, tracer_provider: TracerProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch
) -> None:
    without = read_all(make_client(bedrock))
    assert not genai_spans(exporter)
    instrument(tracer_provider=tracer_provider, fingerprint_salt=TEST_SALT)
    try:
        client = make_client(bedrock)
        response = client.converse_stream(modelId=SONNET, messages=MESSAGES)
        assert isinstance(response["stream"], EventStream)
        list(response["stream"])
        response = client.invoke_model(modelId=SONNET, body=invoke_body())
        assert isinstance(response["body"], StreamingBody)
        response["body"].read()
        exporter.clear()
        with_us = read_all(client)
    finally:
        uninstrument()
    assert with_us == without
    assert len(genai_spans(exporter)) == 6 * len(DETERMINISTIC)
    for span in genai_spans(exporter):
        assert semconv.GEN_AI_USAGE_INPUT_TOKENS in attrs(span)


# -- streams and bodies that end early, fail, or are dropped ----------------------------------------------------------


def test_a_stream_closed_early_ends_its_span_incomplete(client: Any, exporter: InMemorySpanExporter) -> None:
    stream = client.converse_stream(modelId=SONNET, messages=MESSAGES)["stream"]
    first = next(iter(stream))
    assert "messageStart" in first
    assert not genai_spans(exporter)  # still open while the application reads
    stream.close()
    a = attrs(only_genai_span(exporter))
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert a[semconv.TOKENTRAIL_USAGE_MISSING] is True  # never a silent $0
    assert semconv.GEN_AI_USAGE_INPUT_TOKENS not in a


def test_leaving_the_loop_does_not_end_the_call_resuming_it_reads_the_rest(
    client: Any, exporter: InMemorySpanExporter, bedrock: FakeBedrock
) -> None:
    body = client.invoke_model_with_response_stream(modelId="amazon.nova-pro-v1:0", body=invoke_body())["body"]
    for _event in body:
        break
    assert not genai_spans(exporter)
    rest = list(body)
    assert len(rest) == len(bedrock.last_call.events) - 1
    a = attrs(only_genai_span(exporter))
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == bedrock.last_call.usage["outputTokens"]  # type: ignore[index]
    assert semconv.TOKENTRAIL_STREAM_INCOMPLETE not in a


@pytest.mark.parametrize("operation", ["converse_stream", "invoke_model_with_response_stream"])
def test_a_stream_cut_mid_way_ends_its_span_failed(
    client: Any, bedrock: FakeBedrock, exporter: InMemorySpanExporter, operation: str
) -> None:
    bedrock.fail_next("midstream")
    with pytest.raises(Exception):  # noqa: B017, PT011 - botocore's error for a cut body varies with urllib3
        call(client, operation, SONNET)
    span = only_genai_span(exporter)
    a = attrs(span)
    assert span.status.status_code == StatusCode.ERROR
    assert a[semconv.ERROR_TYPE]
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True


@pytest.mark.parametrize("operation", ["converse_stream", "invoke_model_with_response_stream"])
def test_an_exception_event_ends_its_span_failed(
    client: Any, bedrock: FakeBedrock, exporter: InMemorySpanExporter, operation: str
) -> None:
    bedrock.fail_next("exception")
    with pytest.raises(EventStreamError):
        call(client, operation, "amazon.nova-pro-v1:0")
    span = only_genai_span(exporter)
    assert span.status.status_code == StatusCode.ERROR
    assert attrs(span)[semconv.ERROR_TYPE] == "EventStreamError"
    assert attrs(span)[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True


def test_a_stream_truncated_cleanly_is_incomplete_without_usage(
    client: Any, bedrock: FakeBedrock, exporter: InMemorySpanExporter
) -> None:
    bedrock.fail_next("truncate")
    call(client, "converse_stream", SONNET)
    a = attrs(only_genai_span(exporter))
    assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True
    assert a[semconv.TOKENTRAIL_USAGE_MISSING] is True


@pytest.mark.parametrize("operation", ["converse_stream", "invoke_model_with_response_stream", "invoke_model"])
@pytest.mark.parametrize("partly", [False, True])
def test_an_abandoned_response_ends_its_span(
    client: Any, bedrock: FakeBedrock, exporter: InMemorySpanExporter, operation: str, partly: bool
) -> None:
    if operation == "converse_stream":
        response = client.converse_stream(modelId=SONNET, messages=MESSAGES)
        if partly:
            next(iter(response["stream"]))
    elif operation == "invoke_model":
        response = client.invoke_model(modelId=SONNET, body=invoke_body())
        if partly:
            response["body"].read(5)
    else:
        response = client.invoke_model_with_response_stream(modelId=SONNET, body=invoke_body())
        if partly:
            next(iter(response["body"]))
    assert not genai_spans(exporter)
    del response
    gc.collect()
    a = attrs(only_genai_span(exporter))
    if operation == "invoke_model":
        # The headers counted the call before the body was read: its usage survives the body being dropped.
        assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == expected_tokens(bedrock.last_call)[semconv.GEN_AI_USAGE_INPUT_TOKENS]
    else:
        assert a[semconv.TOKENTRAIL_STREAM_INCOMPLETE] is True


def test_an_invoke_body_closed_unread_keeps_the_headers_usage(
    client: Any, bedrock: FakeBedrock, exporter: InMemorySpanExporter
) -> None:
    client.invoke_model(modelId="cohere.command-r-plus-v1:0", body=invoke_body())["body"].close()
    a = attrs(only_genai_span(exporter))
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == expected_tokens(bedrock.last_call)[semconv.GEN_AI_USAGE_INPUT_TOKENS]
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == bedrock.last_call.usage["outputTokens"]  # type: ignore[index]


# -- failures -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS)
def test_an_error_status_ends_the_span_with_its_status(
    client: Any, bedrock: FakeBedrock, exporter: InMemorySpanExporter, operation: str
) -> None:
    bedrock.fail_next("status:429")
    with pytest.raises(ClientError) as raised:
        call(client, operation, SONNET)
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    span = only_genai_span(exporter)
    a = attrs(span)
    assert span.status.status_code == StatusCode.ERROR
    assert a[semconv.ERROR_TYPE] == "429"
    assert semconv.GEN_AI_USAGE_INPUT_TOKENS not in a


def test_retries_are_one_call(bedrock: FakeBedrock, instrumented: TracerProvider, exporter: InMemorySpanExporter) -> None:
    client = make_client(bedrock, config=Config(retries={"total_max_attempts": 3, "mode": "standard"}))
    bedrock.fail_next("status:503")
    client.converse(modelId=SONNET, messages=MESSAGES)
    assert len(bedrock.calls) == 2
    span = only_genai_span(exporter)
    assert span.status.status_code == StatusCode.UNSET
    assert attrs(span)[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == bedrock.last_call.usage["outputTokens"]  # type: ignore[index]
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing of ours stayed current


def test_a_connection_error_ends_the_span_failed(instrumented: TracerProvider, exporter: InMemorySpanExporter) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = boto3.client(
        "bedrock-runtime", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"total_max_attempts": 1}),
    )  # fmt: skip
    with pytest.raises(EndpointConnectionError):
        client.converse(modelId=SONNET, messages=MESSAGES)
    span = only_genai_span(exporter)
    assert span.status.status_code == StatusCode.ERROR
    assert attrs(span)[semconv.ERROR_TYPE] == "EndpointConnectionError"
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_call_botocore_drops_between_its_events_still_ends(client: Any, exporter: InMemorySpanExporter) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("another library's handler failed")

    client.meta.events.register_last("before-call.bedrock-runtime", broken)  # runs after ours: no after-call comes
    with pytest.raises(RuntimeError):
        client.converse(modelId=SONNET, messages=MESSAGES)
    gc.collect()
    span = only_genai_span(exporter)
    assert span.status.status_code == StatusCode.ERROR
    assert attrs(span)[semconv.ERROR_TYPE] == "_OTHER"
    assert trace.get_current_span() is trace.INVALID_SPAN


# -- credentials ----------------------------------------------------------------------------------------------------


def test_attribute_credential_and_byok_keys_apply_to_aws_keys(
    bedrock: FakeBedrock, tracer_provider: TracerProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch
) -> None:
    instrument(tracer_provider=tracer_provider, fingerprint_salt=TEST_SALT)
    try:
        client = make_client(bedrock)
        with attribute(credential="byok"):
            client.converse(modelId=SONNET, messages=MESSAGES)
        instrument(tracer_provider=tracer_provider, fingerprint_salt=TEST_SALT, byok_keys=[ACCESS_KEY_ID])
        client.converse(modelId=SONNET, messages=MESSAGES)
        other = make_client(bedrock, aws_access_key_id="AKIAOTHERSYSTEMKEY00")
        other.converse(modelId=SONNET, messages=MESSAGES)
    finally:
        uninstrument()
    first, second, third = (attrs(span) for span in genai_spans(exporter))
    assert first[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "byok"
    assert second[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "byok"
    assert third[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "system"
    assert third[semconv.TOKENTRAIL_CREDENTIAL_ID] == fingerprint("AKIAOTHERSYSTEMKEY00", TEST_SALT.encode())


def test_the_key_is_read_from_the_signed_authorization_only() -> None:
    """SigV4 carries the access key id (never the secret); a Bedrock API key is a Bearer token (botocore sends one only
    over HTTPS, so this reads the header directly rather than through the loopback fake)."""
    sigv4 = (
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20250101/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=0123abcd"
    )
    assert _key_of(sigv4) == (False, ACCESS_KEY_ID.encode())
    assert _key_of(b"Bearer ABSK-key") == (True, b"Bearer ABSK-key")
    assert _key_of("AWS4-HMAC-SHA256 SignedHeaders=host") is None
    assert _key_of(None) is None


# -- living with the rest of OpenTelemetry -----------------------------------------------------------------------------


def test_another_instrumentations_call_span_is_enriched_not_duplicated(
    client: Any, bedrock: FakeBedrock, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    tracer = instrumented.get_tracer("another-instrumentation")
    with attribute(user="u1"), tracer.start_as_current_span(
        "chat claude", kind=SpanKind.CLIENT,
        attributes={semconv.GEN_AI_OPERATION_NAME: "chat", semconv.GEN_AI_SYSTEM: "aws.bedrock"},
    ):  # fmt: skip
        client.converse(modelId=SONNET, messages=MESSAGES)
    span = only_genai_span(exporter)
    a = attrs(span)
    assert span.name == "chat claude"
    assert a[semconv.TOKENTRAIL_API] == "bedrock.converse"
    assert a[semconv.USER_ID] == "u1"
    assert a[semconv.TOKENTRAIL_CREDENTIAL_ID] == fingerprint(ACCESS_KEY_ID, TEST_SALT.encode())
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == bedrock.last_call.usage["outputTokens"]  # type: ignore[index]
    assert semconv.GEN_AI_PROVIDER_NAME not in a  # it said gen_ai.system already


def test_suppressed_instrumentation_makes_no_span(client: Any, exporter: InMemorySpanExporter) -> None:
    with suppress_instrumentation():
        client.converse(modelId=SONNET, messages=MESSAGES)
    assert not genai_spans(exporter)


def test_uninstrument_unregisters_and_instrument_again_registers_once(
    bedrock: FakeBedrock, tracer_provider: TracerProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch
) -> None:
    instrument(tracer_provider=tracer_provider, fingerprint_salt=TEST_SALT)
    client = make_client(bedrock)
    uninstrument()
    client.converse(modelId=SONNET, messages=MESSAGES)
    make_client(bedrock).converse(modelId=SONNET, messages=MESSAGES)
    assert not genai_spans(exporter)
    instrument(tracer_provider=tracer_provider, fingerprint_salt=TEST_SALT)
    instrument(tracer_provider=tracer_provider, fingerprint_salt=TEST_SALT)  # idempotent
    try:
        make_client(bedrock).converse(modelId=SONNET, messages=MESSAGES)
    finally:
        uninstrument()
    only_genai_span(exporter)


def test_other_aws_clients_are_left_alone(instrumented: TracerProvider) -> None:
    from tokentrail.instrumentation import _bedrock

    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    runtime = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    assert runtime.meta.events in _bedrock._emitters  # noqa: SLF001 - where our handlers are registered
    assert s3.meta.events not in _bedrock._emitters  # noqa: SLF001


def test_importing_the_instrumentation_does_not_import_botocore() -> None:
    code = (
        "import sys; import tokentrail.instrumentation, tokentrail.instrumentation.instrumentor; "
        "assert 'botocore' not in sys.modules, 'botocore imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_without_botocore_instrument_still_works(
    tracer_provider: TracerProvider, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setitem(sys.modules, "botocore.client", None)  # import botocore.client raises ImportError
    instrument(tracer_provider=tracer_provider, fingerprint_salt=TEST_SALT)
    try:
        from tokentrail.instrumentation import _bedrock, _transport

        assert not _bedrock._patched  # noqa: SLF001
        assert _transport._patched  # noqa: SLF001 - the httpx hooks are in place all the same
    finally:
        uninstrument()


def test_a_sampled_out_call_makes_no_span_and_reads_normally(bedrock: FakeBedrock, clean_env: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(tracer_provider=provider, fingerprint_salt=TEST_SALT)
    try:
        events = call(make_client(bedrock), "converse_stream", SONNET)
    finally:
        uninstrument()
    assert "metadata" in events[-1]
    assert not exporter.get_finished_spans()


# -- the fake's event-stream encoding, checked against botocore's own parser --------------------------------------


def test_the_event_stream_encoding_round_trips_through_botocore() -> None:
    messages = [
        ({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}, b'{"bytes":"e30="}'),
        ({":event-type": "metadata", ":message-type": "event"}, b""),
    ]
    data = b"".join(encode_event(headers, payload) for headers, payload in messages)
    buffer = EventStreamBuffer()
    buffer.add_data(data[:7])  # split mid-prelude, as the network may
    buffer.add_data(data[7:])
    parsed = [(message.headers, message.payload) for message in buffer]
    assert parsed == messages
    assert decode_events(data) == messages
    corrupt = bytearray(data)
    corrupt[20] ^= 0xFF
    broken = EventStreamBuffer()
    broken.add_data(bytes(corrupt))
    with pytest.raises(ChecksumMismatch):
        list(broken)
    assert zlib.crc32(data[:8]).to_bytes(4, "big") == data[8:12]


# -- end to end: through OTLP, the receiver's normalization and pricing ------------------------------------------


def test_bedrock_calls_land_as_priced_records(tmp_path: Path, bedrock: FakeBedrock, clean_env: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from tokentrail.processor.ingest.receiver import Receiver

    from tests.helpers.receiver import read_usage

    with Receiver(tmp_path, grpc_port=0) as receiver:
        provider = TracerProvider(resource=Resource.create({"service.name": "bedrock-e2e"}))
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{receiver.grpc_port}", insecure=True))
        )
        instrument(tracer_provider=provider, fingerprint_salt=TEST_SALT)
        try:
            client = make_client(bedrock)
            with attribute(user=CTX["user"], tags=CTX["tags"]):
                call(client, "converse", f"us.{SONNET}")
                converse = bedrock.last_call
                call(client, "invoke_model_with_response_stream", "global.anthropic.claude-sonnet-4-5-20250929-v1:0")
                streamed = bedrock.last_call
            assert provider.force_flush(10_000)
            receiver.flush()
            records = sorted(read_usage(tmp_path), key=lambda record: record["timestamp"])
        finally:
            uninstrument()
            provider.shutdown()
    assert len(records) == 2
    for record, served in zip(records, (converse, streamed), strict=True):
        tokens = expected_tokens(served)
        assert record["provider"] == "aws"
        assert record["model"] == request_model(served.model_id)
        assert record["input_tokens"] == tokens[semconv.GEN_AI_USAGE_INPUT_TOKENS]
        assert record["output_tokens"] == tokens[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]
        assert record["cached_input_tokens"] == tokens[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS]
        assert record["cache_creation_input_tokens"] == tokens[semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS]
        assert record["user_id"] == CTX["user"]
        assert sorted(record["tags"]) == sorted(CTX["tags"])
        assert record["credential_type"] == "system"
        assert record["price_status"] == "priced"
        timestamp = record["timestamp"]
        when = timestamp if isinstance(timestamp, datetime) else datetime.fromisoformat(str(timestamp))
        exact = catalog_price(
            "aws", record["model"], when.astimezone(UTC),
            input_tokens=record["input_tokens"], output_tokens=record["output_tokens"],
            cached_input_tokens=record["cached_input_tokens"],
            cache_creation_input_tokens=record["cache_creation_input_tokens"],
        )  # fmt: skip
        assert record["market_cost"] == exact
        assert record["market_cost"] > 0
        assert record["total_cost"] == record["market_cost"]
