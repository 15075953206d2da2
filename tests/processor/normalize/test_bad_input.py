"""Bad input costs the bad span or the bad field, never the batch: absurd or mistyped counts, huge arrays and strings,
invalid UTF-8 and impossible timestamps are rejected (counted in partial_success.rejected_spans, with a message) or
dropped (with a warning), and a property test drives the normalizer with arbitrary attribute maps."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from tokentrail.instrumentation import semconv as sc
from tokentrail.processor.ingest.receiver import Receiver
from tokentrail.processor.normalize.reader import (
    DIALECTS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TOKENS,
    MAX_USER_CHARS,
    normalize_request,
)
from tokentrail.processor.normalize.values import without_controls
from tokentrail.processor.schema import records_to_table

from tests.helpers.otlp import (
    T0_NS,
    any_value,
    export,
    export_raw,
    genai_attributes,
    make_request,
    make_span,
    random_span,
)
from tests.helpers.receiver import read_usage

MB = "x" * (1 << 20)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path, grpc_port=0, receiver_id="bad-r1", flush_interval=3600) as r:
        yield r


def normalize(*spans: Span):  # noqa: ANN201
    return normalize_request(make_request(list(spans)))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"gen_ai.usage.input_tokens": -1}, "out of range"),
        ({"gen_ai.usage.output_tokens": 10**12}, "out of range"),
        ({"gen_ai.usage.input_tokens": "1200"}, "must be an integer"),
        ({"gen_ai.usage.input_tokens": True}, "must be an integer"),
        ({"gen_ai.usage.input_tokens": [1, 2]}, "must be an integer"),
        ({"gen_ai.usage.cache_read.input_tokens": 2.5}, "must be an integer"),
        ({"gen_ai.response.model": MB}, "characters long"),
        ({"gen_ai.provider.name": MB}, "characters long"),
    ],
)
def test_a_bad_count_or_name_rejects_only_its_span(changes: dict, reason: str) -> None:
    result = normalize(make_span(genai_attributes(changes)), random_span())
    assert (len(result.records), result.rejected) == (1, 1)
    assert reason in result.errors[0]


@pytest.mark.parametrize(
    ("start_ns", "reason"),
    [(1, "outside"), (0, "no start time"), (4_102_444_800 * 10**9, "2100-01-01"), (T0_NS - 30 * 365 * 86_400 * 10**9, "1995")],
)
def test_impossible_start_times_reject_the_span(start_ns: int, reason: str) -> None:
    result = normalize(make_span(genai_attributes(), start_ns=start_ns), random_span())
    assert (len(result.records), result.rejected) == (1, 1)
    assert reason in result.errors[0]


def test_a_10k_tag_array_keeps_ten_tags_and_warns() -> None:
    result = normalize(make_span(genai_attributes({"tokentrail.tags": [f"t{i}" for i in range(10_000)]})))
    (record,) = result.records
    assert record.tags == [f"t{i}" for i in range(MAX_TAGS)]
    assert result.rejected == 0 and result.dropped_fields >= 1
    assert "only the first 10" in result.warnings[0]


def test_megabyte_attribution_strings_are_truncated_or_dropped_and_the_call_kept() -> None:
    result = normalize(
        make_span(
            genai_attributes(
                {"user.id": MB, "tokentrail.tags": [MB, "ok"], "gen_ai.response.id": MB, "tokentrail.credential.id": MB}
            )
        )
    )
    (record,) = result.records
    assert len(record.user_id or "") == MAX_USER_CHARS
    assert record.tags == ["x" * MAX_TAG_CHARS, "ok"]
    assert record.response_id is None and record.credential_id is None
    assert result.dropped_fields == 4


def test_a_megabyte_service_name_is_truncated() -> None:
    request = make_request([make_span(genai_attributes())], resource={"service.name": MB})
    (record,) = normalize_request(request).records
    assert record.service == "x" * 256


def test_invalid_utf8_drops_the_attribute_not_the_batch(receiver: Receiver, tmp_path: Path) -> None:
    good = random_span({"user.id": "AAAA-marker"})
    request = make_request([good, random_span()])
    payload = request.SerializeToString().replace(b"AAAA-marker", b"\xff\xfe\xfd\xfc-marker")
    response = ExportTraceServiceResponse.FromString(export_raw(receiver.grpc_port, payload))
    assert response.partial_success.rejected_spans == 0
    assert "'user.id' dropped: invalid UTF-8" in response.partial_success.error_message
    receiver.flush()
    rows = read_usage(tmp_path)
    assert len(rows) == 2
    assert sorted(r["user_id"] or "" for r in rows) == ["", "cust_42"]


def test_invalid_utf8_in_a_span_name_clears_the_name_and_keeps_the_call(receiver: Receiver, tmp_path: Path) -> None:
    span = make_span(genai_attributes(), name="chat ZZZZ", trace_id=os.urandom(16))
    payload = make_request([span]).SerializeToString().replace(b"chat ZZZZ", b"chat \xc3\x28ZZ")
    response = ExportTraceServiceResponse.FromString(export_raw(receiver.grpc_port, payload))
    assert "name cleared" in response.partial_success.error_message
    receiver.flush()
    assert len(read_usage(tmp_path)) == 1


def test_truncated_protobuf_is_invalid_argument_with_a_message(receiver: Receiver) -> None:
    payload = make_request([random_span()]).SerializeToString()[:-7]
    with pytest.raises(grpc.RpcError) as info:
        export_raw(receiver.grpc_port, payload)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed ExportTraceServiceRequest" in (info.value.details() or "")


def test_rejections_and_warnings_reach_the_sender_and_the_rest_is_stored(receiver: Receiver, tmp_path: Path) -> None:
    spans = [
        random_span(),
        make_span(genai_attributes({"gen_ai.usage.input_tokens": -3}), trace_id=os.urandom(16)),
        make_span(genai_attributes(), start_ns=1, trace_id=os.urandom(16)),
        random_span({"tokentrail.tags": [str(i) for i in range(50)]}),
    ]
    response = export(receiver.grpc_port, make_request(spans))
    assert response.partial_success.rejected_spans == 2
    message = response.partial_success.error_message
    assert "out of range" in message and "outside" in message and "warning:" in message
    receiver.flush()
    assert len(read_usage(tmp_path)) == 2
    assert receiver.metrics.counters()["fields_dropped"] >= 1


# -- property test ------------------------------------------------------------------------------------------------

KNOWN_KEYS = sorted({k for d in DIALECTS for k in d.keys()} | {sc.TOKENTRAIL_CREDENTIAL_TYPE, sc.ERROR_TYPE, "tokentrail.duplicate"})
NAMES = ["chat gpt-4o", "anthropic.messages.create", "ai.generateText.doGenerate", "ai.generateText", "agent run", ""]

scalars = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="x", min_size=300, max_size=2000),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, 7, 1200, MAX_TOKENS, MAX_TOKENS + 1, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.binary(max_size=20),
    st.just('{"anthropic": {"usage": {"input_tokens": 5, "cache_read_input_tokens": 3}}}'),
    st.just('{"user_id": "u", "tags": ["a", "b"], "team": 3}'),
)


values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=20)
attribute_maps = st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=30), values, max_size=25)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    maps=st.lists(attribute_maps, min_size=1, max_size=4),
    name=st.sampled_from(NAMES),
    start=st.sampled_from([0, 1, T0_NS, 4_102_444_800 * 10**9]) | st.integers(min_value=0, max_value=2**64 - 1),
    duration=st.integers(min_value=-(10**12), max_value=10**15),
    error=st.booleans(),
)
def test_the_normalizer_never_raises_and_every_record_satisfies_the_schema(
    maps: list[dict], name: str, start: int, duration: int, error: bool
) -> None:
    spans = [
        Span(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            parent_span_id=os.urandom(8),
            name=name,
            start_time_unix_nano=start,
            end_time_unix_nano=max(0, min(2**64 - 1, start + duration)),
            attributes=[KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()],
            status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_UNSET),
        )
        for attributes in maps
    ]
    result = normalize_request(make_request(spans))
    assert result.received == len(spans)
    assert len(result.records) + result.rejected + result.skipped == len(spans)
    assert not any("could not be read" in e for e in result.errors), result.errors  # no unexpected exception
    for record in result.records:
        for count in (record.input_tokens, record.output_tokens, record.cached_input_tokens,
                      record.cache_creation_input_tokens, record.reasoning_tokens):
            assert 0 <= count <= MAX_TOKENS
        assert record.cached_input_tokens + record.cache_creation_input_tokens <= record.input_tokens
        assert record.reasoning_tokens <= record.output_tokens
        assert 0 < len(record.provider) <= 256 and 0 < len(record.model) <= 256
        assert len(record.tags) <= MAX_TAGS and all(0 < len(t) <= MAX_TAG_CHARS for t in record.tags)
        assert record.user_id is None or 0 < len(record.user_id) <= MAX_USER_CHARS
        assert record.credential_type in ("byok", "system")
        assert record.status in ("ok", "error", "incomplete")
        assert 2000 <= record.timestamp.year <= 2100
        assert len(record.trace_id) == 32 and len(record.span_id) == 16
        assert record.duration_ms is None or 0 <= record.duration_ms <= 24 * 3600 * 1000
        labels = (record.provider, record.model, record.request_model, record.user_id, *record.tags, record.api,
                  record.operation, record.service_tier, record.credential_id, record.error_type)
        assert not any(without_controls(label) for label in labels if label), labels
        assert record.api is None or len(record.api) <= 256
    records_to_table(result.records)  # the Arrow schema (types, non-null columns) accepts every record
