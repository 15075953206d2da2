"""Span attributes read as the sender encoded them. The receiver's request class keeps each attribute as its raw
``KeyValue`` encoding (``otlp.fast_request_class``): what protobuf would have checked at parse (UTF-8 keys, a
well-formed entry) and how it reads an unusual layout (fields reordered or repeated, unknown fields, duplicate keys)
must come out as the standard message reads them."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tokentrail.processor.normalize.otlp import InvalidRequest, attribute_entry, parse_export_request
from tokentrail.processor.normalize.reader import NormalizeResult, normalize_request

from tests.helpers.otlp import genai_attributes, make_request, make_span

MARKER = b"tt.marker.attribute"  # an extra attribute's key in the encoded request, replaced by the raw bytes


def _with_raw_attribute(entry: bytes) -> bytes:
    """A one-span request whose span carries, besides its GenAI attributes, one attribute encoded as ``entry``."""
    request = make_request([make_span(genai_attributes({"user.id": "cust_1", MARKER.decode(): "x"}))])
    data = request.SerializeToString()
    placeholder = b"\x0a" + bytes([len(MARKER)]) + MARKER + b"\x12\x03\x0a\x01x"
    assert data.count(placeholder) == 1
    return _replace_length_delimited(data, placeholder, entry)


def _replace_length_delimited(data: bytes, old: bytes, new: bytes) -> bytes:
    """Re-encodes the request with ``old`` (a whole attribute) replaced by ``new``: the span and its parents'
    lengths change, so the message is rebuilt from the standard classes around the raw span bytes."""
    request = ExportTraceServiceRequest.FromString(data)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span_bytes = span.SerializeToString().replace(b"\x4a" + _varint(len(old)) + old, b"\x4a" + _varint(len(new)) + new)
    scope = b"\x12" + _varint(len(span_bytes)) + span_bytes
    resource = request.resource_spans[0].resource.SerializeToString()
    resource_spans = b"\x0a" + _varint(len(resource)) + resource + b"\x12" + _varint(len(scope)) + scope
    return b"\x0a" + _varint(len(resource_spans)) + resource_spans


def _varint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def _read(data: bytes) -> tuple[NormalizeResult, list[str]]:
    request, warnings = parse_export_request(data)
    return normalize_request(request), warnings


def _standard_user(entry: bytes) -> str | None:
    """The user id the standard message gives the span (the last ``user.id`` wins, as in a dict)."""
    span = ExportTraceServiceRequest.FromString(_with_raw_attribute(entry)).resource_spans[0].scope_spans[0].spans[0]
    users = [kv.value.string_value for kv in span.attributes if kv.key == "user.id"]
    return users[-1] if users else None


@pytest.mark.parametrize(
    "entry",
    [
        b"\x0a\x07user.id\x12\x03\x0a\x01a",  # the usual layout
        b"\x12\x03\x0a\x01a\x0a\x07user.id",  # value before key
        b"\x0a\x07user.id\x12\x03\x0a\x01a\x18\x01",  # an unknown field after the value
        b"\x0a\x07user.id\x12\x03\x0a\x01b\x12\x03\x0a\x01a",  # the value field twice: merged, the last string wins
        b"\x0a\x05other\x0a\x07user.id\x12\x03\x0a\x01a",  # the key field twice: the last wins
    ],
)
def test_an_attribute_in_any_valid_layout_reads_as_the_standard_message_reads_it(entry: bytes) -> None:
    result, warnings = _read(_with_raw_attribute(entry))
    assert warnings == [] and result.warnings == []
    (record,) = result.records
    assert record.user_id == _standard_user(entry) == "a"


def test_a_later_duplicate_key_replaces_an_earlier_one() -> None:
    result, _ = _read(_with_raw_attribute(b"\x0a\x07user.id\x12\x03\x0a\x01z"))
    assert [r.user_id for r in result.records] == ["z"]


def test_an_attribute_key_with_invalid_utf8_is_dropped_with_a_warning_and_the_call_kept() -> None:
    result, warnings = _read(_with_raw_attribute(b"\x0a\x04k\xff\xfeq\x12\x03\x0a\x01a"))
    assert warnings == []  # the request class does not look inside attributes at parse: the reader notices
    assert result.warnings == ["attribute 'k\ufffd\ufffdq' dropped: invalid UTF-8"]
    assert result.dropped_fields == 1
    (record,) = result.records
    assert record.user_id == "cust_1"


@pytest.mark.parametrize("entry", [b"\x0a\x09user", b"\x0a\x07user.id\x13", b"\x0a\x07user.id\x12\x05\x0a\x01"])
def test_an_attribute_that_is_not_a_key_value_encoding_makes_the_request_invalid(entry: bytes) -> None:
    data = _with_raw_attribute(entry)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the standard class refuses it too: any DecodeError
        ExportTraceServiceRequest.FromString(data)
    with pytest.raises(InvalidRequest, match="malformed"):
        _read(data)


def test_attribute_entry_splits_key_and_value_encoding() -> None:
    assert attribute_entry(b"\x0a\x01k\x12\x02\x10\x01") == ("k", b"\x10\x01")
    assert attribute_entry(b"\x0a\x01k") == ("k", b"")
    assert attribute_entry(b"") == ("", b"")
