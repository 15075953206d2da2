"""Attribute values decoded for the reader: ``any_values`` (the memo read inline, short strings decoded without the
general decoder) gives exactly what ``any_value`` gives, value by value, and refuses what it refuses."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from tokentrail.processor.normalize.otlp import UNSET, InvalidValue, any_value, any_values

from tests.helpers.otlp import any_value as encode


@pytest.mark.parametrize(
    "value",
    ["chatcmpl-unique-0001", "", "é" * 40, "x" * 200, 0, -1, 2**63 - 1, True, 1.5, ["a", 1], {"k": "v"}, b"\x00", None],
)
def test_any_values_decodes_as_any_value(value: object) -> None:
    raw = encode(value).SerializeToString()
    (got,) = any_values([raw])
    assert got == any_value(raw)
    assert type(got) is type(any_value(raw))
    if value is None:
        assert got is UNSET


def test_a_short_string_with_invalid_utf8_is_refused_as_any_value_refuses_it() -> None:
    raw = b"\x0a\x03a\xffb"
    with pytest.raises(InvalidValue):
        any_value(raw)
    with pytest.raises(InvalidValue):
        any_values([AnyValue(int_value=1).SerializeToString(), raw])
