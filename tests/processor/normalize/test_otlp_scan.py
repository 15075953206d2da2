"""The receiver's C scanner (``processor/_otlpscan.c``, via ``normalize.normalize_bytes``) reads a serialized Export
request exactly as the protobuf path does, or hands it back (``None``) for the protobuf path to decide: it never
accepts what protobuf rejects, never loses a warning protobuf would give, and never reads a field differently.

The normalizer-level equivalence over every dialect is in ``test_normalize_equivalence.py`` (each of its examples
also goes through the scanner); here: the wire format itself, bent and broken."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from tokentrail.processor.normalize.otlp import InvalidRequest, parse_export_request
from tokentrail.processor.normalize.reader import NormalizeResult, normalize_bytes, normalize_request

from tests.helpers.otlp import T0_NS, genai_attributes, key_values, make_request, make_span


def test_the_scanner_is_built() -> None:
    """CI has a C compiler: a silently skipped build would leave the receiver on the slow path unnoticed."""
    from tokentrail.processor.normalize import _otlpscan

    assert callable(_otlpscan.scan)


def protobuf_path(data: bytes) -> tuple[NormalizeResult | None, list[str]]:
    """What the receiver did before the scanner: (result, parse warnings), or (None, []) for an invalid request."""
    try:
        request, warnings = parse_export_request(data)
    except InvalidRequest:
        return None, []
    return normalize_request(request), warnings


def same(a: NormalizeResult, b: NormalizeResult) -> None:
    assert (a.received, a.skipped, a.rejected, a.dropped_fields) == (b.received, b.skipped, b.rejected, b.dropped_fields)
    assert a.errors == b.errors
    assert a.warnings == b.warnings
    assert a.rows == b.rows


def check(data: bytes) -> NormalizeResult | None:
    """The scanner's contract on ``data``; returns what it gave."""
    scanned = normalize_bytes(data)
    expected, warnings = protobuf_path(data)
    if expected is None:
        assert scanned is None, "the scanner accepted a request protobuf rejects"
    elif warnings:
        assert scanned is None, "the scanner accepted a request protobuf only reads leniently (its warnings would be lost)"
    elif scanned is not None:
        same(scanned, expected)
    return scanned


def rich_request(n: int = 3) -> ExportTraceServiceRequest:
    """Every part of the schema: resource and scope attributes, events, links, status messages, trace state, flags,
    dropped counts, several resources and scopes, a non-GenAI span."""
    spans = []
    for i in range(n):
        span = make_span(genai_attributes(gen_ai__response__id=f"chatcmpl-{i}", user__id=f"cust_{i}"))
        span.trace_state = "vendor=1"
        span.flags = 0x101
        span.kind = Span.SPAN_KIND_CLIENT
        span.dropped_attributes_count = 2
        span.events.add(time_unix_nano=T0_NS, name="gen_ai.choice", attributes=key_values({"index": 0, "ok": True}))
        span.links.add(trace_id=os.urandom(16), span_id=os.urandom(8), trace_state="a=b", attributes=key_values({"x": "y"}))
        span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR if i == 1 else Status.STATUS_CODE_OK, message="fine"))
        spans.append(span)
    plain = Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="GET /health", start_time_unix_nano=T0_NS,
                 attributes=key_values({"http.request.method": "GET"}))
    request = make_request([*spans, plain])
    request.resource_spans[0].scope_spans[0].scope.CopyFrom(
        InstrumentationScope(name="tokentrail", version="1.0", attributes=key_values({"k": "v"}))
    )
    request.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.27.0"
    second = ResourceSpans(
        resource=Resource(attributes=key_values({"service.name": "search", "deployment.environment": "staging"})),
        scope_spans=[
            ScopeSpans(spans=[make_span(genai_attributes(gen_ai__response__id="chatcmpl-b1"))]),
            ScopeSpans(spans=[make_span(genai_attributes(gen_ai__response__id="chatcmpl-b2", user__id=None))]),
        ],
    )
    request.resource_spans.append(second)
    request.resource_spans.append(ResourceSpans())  # no resource at all
    return request


def test_a_rich_request_is_read_exactly_as_protobuf_reads_it() -> None:
    data = rich_request().SerializeToString()
    scanned = check(data)
    assert scanned is not None and len(scanned.rows) == 5 and scanned.received == 6
    services = {row[4] for row in scanned.rows}
    assert services == {"checkout", "search"}


def test_an_empty_request_and_empty_parts() -> None:
    for request in (ExportTraceServiceRequest(), make_request([]), make_request([Span()])):
        assert check(request.SerializeToString()) is not None


# -- the encodings protobuf accepts but a naive reader might not ---------------------------------------------------


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v >> 7 else 0))
        v >>= 7
        if not v:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    tag = _varint(number << 3 | wire)
    return tag + (_varint(len(payload)) + payload if wire == 2 else payload)


def _wrap_span(span_bytes: bytes, resource: bytes = b"") -> bytes:
    scope = _field(2, 2, span_bytes)
    resource_spans = (_field(1, 2, resource) if resource else b"") + _field(2, 2, scope)
    return _field(1, 2, resource_spans)


def test_unknown_fields_repeated_keys_and_repeated_resources_read_as_protobuf_reads_them() -> None:
    span = make_span(genai_attributes()).SerializeToString()
    unknown = _field(99, 0, b"\x05") + _field(98, 2, b"anything") + _field(97, 5, b"\x00\x00\x00\x00")
    # Two values for one key (the last wins) and a second span name (the last wins).
    repeated = _field(9, 2, KeyValue(key="user.id", value=AnyValue(string_value="cust_last")).SerializeToString())
    renamed = _field(5, 2, b"chat renamed")
    merged_resource = (
        Resource(attributes=key_values({"service.name": "first"})).SerializeToString()
    )
    data = _wrap_span(span + unknown + repeated + renamed, merged_resource)
    data += _field(
        1, 2, _field(1, 2, Resource(attributes=key_values({"deployment.environment.name": "eu"})).SerializeToString())
    )
    scanned = check(data)
    assert scanned is not None
    assert scanned.rows[0][FIELD("user_id")] == "cust_last"
    assert scanned.rows[0][FIELD("service")] == "first"

    # ``resource`` twice in one ResourceSpans: protobuf merges the two (attribute lists concatenated).
    resource_a = _field(1, 2, Resource(attributes=key_values({"service.name": "a"})).SerializeToString())
    resource_b = _field(1, 2, Resource(attributes=key_values({"deployment.environment.name": "b"})).SerializeToString())
    scope = _field(2, 2, _field(2, 2, span))
    scanned = check(_field(1, 2, resource_a + scope + resource_b))
    assert scanned is not None and scanned.rows[0][FIELD("service")] == "a" and scanned.rows[0][FIELD("environment")] == "b"


def test_an_attribute_with_an_unknown_field_is_left_to_protobuf() -> None:
    """protobuf keeps a map entry that carries an unknown field out of the map (found by fuzzing: the attribute was
    in the scanner's span and not in protobuf's); such requests go the protobuf way."""
    span = make_span(genai_attributes()).SerializeToString()
    entry = _field(1, 2, b"tokentrail.api") + _field(6, 2, b"\x0a\x04chat")  # the value under field 6, unknown
    data = _wrap_span(span + _field(9, 2, entry))
    assert normalize_bytes(data) is None
    result, warnings = protobuf_path(data)
    assert result is not None and not warnings


def FIELD(name: str) -> int:  # noqa: N802 - reads as a constant lookup
    from tokentrail.processor.schema import FIELD_NAMES

    return FIELD_NAMES.index(name)


def test_invalid_utf8_where_protobuf_checks_it_goes_to_the_protobuf_path() -> None:
    """Invalid UTF-8 in a string field anywhere (even where the normalizer never looks) makes protobuf read the
    request leniently, with a warning; the scanner must leave those requests to it."""
    base = make_span(genai_attributes())
    bad = "@@@"  # replaced by three bytes of invalid UTF-8 (same length: every length prefix stays right)
    cases: list[tuple[str, Any]] = [
        ("event name", lambda s: s.events.add(name=bad)),
        ("link trace state", lambda s: s.links.add(trace_id=os.urandom(16), span_id=os.urandom(8), trace_state=bad)),
        ("status message", lambda s: s.status.CopyFrom(Status(message=bad))),
        ("span trace state", lambda s: setattr(s, "trace_state", bad)),
        ("span name", lambda s: setattr(s, "name", bad)),
        ("event attribute value", lambda s: s.events.add(name="e", attributes=key_values({"k": bad}))),
    ]
    for what, mutate in cases:
        span = Span()
        span.CopyFrom(base)
        mutate(span)
        data = make_request([span]).SerializeToString(deterministic=True)
        assert data.count(b"@@@") == 1
        data = data.replace(b"@@@", b"\xff\xfe\xfd")
        assert normalize_bytes(data) is None, what
        result, warnings = protobuf_path(data)
        assert result is not None and warnings, what


def test_invalid_utf8_in_a_span_attribute_value_is_read_and_dropped_as_protobuf_does() -> None:
    """Span attribute values stay encodings until read (both paths): a bad one costs the attribute, with a
    warning, not the request."""
    span = make_span(genai_attributes(user__id="@@@"))
    data = make_request([span]).SerializeToString().replace(b"@@@", b"\xff\xfe\xfd")
    scanned = check(data)
    assert scanned is not None and scanned.rows and scanned.warnings


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05\x12",  # truncated length
        b"\x0b\x0c",  # a group
        b"\x0a\x02\x12\x80",  # truncated varint inside
        b"\x08\x01",  # resource_spans as a varint (a known field with the wrong wire type)
        b"\x0f",  # wire type 7
        b"\x00\x00",  # field number 0
        b"\x0a" + b"\xff" * 11,  # a varint longer than ten bytes
    ],
    ids=["truncated", "group", "truncated-varint", "wrong-wire-type", "bad-wire-type", "field-zero", "long-varint"],
)
def test_malformed_bytes_are_left_to_protobuf(data: bytes) -> None:
    assert normalize_bytes(data) is None
    check(data)


# -- property: bent bytes -----------------------------------------------------------------------------------------

_BASE = [rich_request(2).SerializeToString(), make_request([make_span(genai_attributes())]).SerializeToString()]


@st.composite
def bent_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_BASE)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "truncate":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete" and data:
            del data[at : at + draw(st.integers(1, 3))]
        elif action == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0x80, 0xFF, 0xC0, 0xED, 0xF4, 0x0A, 0x12]))
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=bent_bytes())
def test_bent_requests_are_read_as_protobuf_reads_them_or_left_to_it(data: bytes) -> None:
    check(data)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_never_crash_and_never_disagree(data: bytes) -> None:
    check(data)


# -- attribute values decoded in C ----------------------------------------------------------------------------------


def _scanned_value(raw: bytes) -> object:
    from tokentrail.processor.normalize._otlpscan import scan

    entry = _field(1, 2, b"k") + _field(2, 2, raw)
    span = _field(9, 2, entry)
    [(_, [scanned])] = scan(_wrap_span(span))
    return scanned.attributes["k"]


def _python_decoded(raw: bytes) -> tuple[str, object]:
    from tokentrail.processor.normalize.otlp import InvalidValue, any_value

    try:
        value = any_value(raw)
    except InvalidValue as exc:
        return "invalid", str(exc)
    return type(value).__name__, value


_VALUE_ENCODINGS = st.one_of(
    st.binary(max_size=24),
    st.text(max_size=40).map(lambda t: b"\x0a" + _varint(len(t.encode())) + t.encode()),
    st.binary(max_size=12).map(lambda b: b"\x0a" + _varint(len(b)) + b),  # often invalid UTF-8
    st.integers(0, 2**70).map(lambda v: b"\x18" + _varint(v)),  # past 64 bits too
    st.integers(0, 2**70).map(lambda v: b"\x10" + _varint(v)),
    st.binary(min_size=8, max_size=8).map(lambda b: b"\x21" + b),
    st.lists(st.sampled_from([b"\x0a\x01a", b"\x18\x05", b"\x10\x01", b"\x21" + bytes(8)]), max_size=3).map(b"".join),
)


@settings(max_examples=1500, deadline=None)
@given(raw=_VALUE_ENCODINGS)
@example(raw=b"\x10" + _varint(2**64))  # a bool whose only set bits lie past 64: true, as Python reads it
@example(raw=b"\x18" + _varint(2**64 + 5))  # an int past 64 bits: masked to 64
@example(raw=b"\x0a\x03\xed\xa0\x80")  # a surrogate: invalid UTF-8
@example(raw=b"\x0a\x02\xc0\x80")  # an overlong encoding
@example(raw=b"\x0a\x80\x01" + b"a" * 128)  # a string longer than the cache's slots
def test_values_the_scanner_decodes_equal_what_any_value_decodes(raw: bytes) -> None:
    """Whatever the encoding, the scanner's value read the way the normalizer reads it (``bytes`` still to decode)
    is what ``otlp.any_value`` gives: same type, same value, or the same error."""
    value = _scanned_value(raw)
    got = _python_decoded(value) if type(value) is bytes else (type(value).__name__, value)
    expected = _python_decoded(raw)
    if expected[0] == "float" and expected[1] != expected[1]:  # NaN
        assert got[0] == "float" and got[1] != got[1]
    else:
        assert got == expected
