"""Attribute values decoded for the reader: ``any_value`` (the common encodings read in Python, a bounded memo of
short ones) gives what protobuf reads from the same bytes, and refuses what it refuses."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from tokentrail.processor.normalize.otlp import UNSET, BytesValue, InvalidValue, any_value, as_python

from tests.helpers.otlp import any_value as encode


@pytest.mark.parametrize(
    "value",
    ["chatcmpl-unique-0001", "", "é" * 40, "x" * 200, 0, -1, 2**63 - 1, True, 1.5, ["a", 1], {"k": "v"}, b"\x00", None],
)
def test_any_value_decodes_as_protobuf_reads_the_value(value: object) -> None:
    raw = encode(value).SerializeToString()
    expected = as_python(AnyValue.FromString(raw))
    for _ in range(2):  # decoded, then from the memo
        got = any_value(raw)
        if value is None:
            assert got is UNSET
        elif isinstance(expected, list):
            assert got == tuple(expected)  # arrays are tuples: decoded values are shared through the memo
        else:
            assert got == expected and type(got) is (BytesValue if isinstance(expected, bytes) else type(expected))


def test_a_short_string_with_invalid_utf8_is_refused() -> None:
    raw = b"\x0a\x03a\xffb"
    for _ in range(2):  # and never remembered
        with pytest.raises(InvalidValue):
            any_value(raw)
