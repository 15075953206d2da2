"""The C column packer (``processor/_arrowpack.c``, via ``schema._packed``) builds exactly the Arrow arrays
``pyarrow.array`` builds, or declines (None) and leaves the column, and its errors, to ``pyarrow.array``."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokentrail.processor import schema


def test_the_packer_is_built() -> None:
    """CI has a C compiler: a silently skipped build would leave the receiver on the slow path unnoticed."""
    assert schema._arrowpack is not None


def agrees(values: list[Any], kind: pa.DataType) -> pa.Array | None:
    packed = schema._packed(values, kind, len(values))
    try:
        expected = pa.array(values, kind)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        assert packed is None, "the packer accepted a column pyarrow refuses"
        return None
    if packed is not None:
        packed.validate(full=True)
        assert packed.equals(expected), (packed, expected)
        assert packed.null_count == expected.null_count
    return packed


_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
_ANY = st.one_of(st.none(), _TEXT, st.integers(-(2**70), 2**70), st.booleans(), st.floats(), st.binary(max_size=4))


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(st.none(), _TEXT), min_size=1, max_size=40))
@example(values=["é", "日本", "", None, "a\x00b"])
def test_string_columns(values: list[Any]) -> None:
    assert agrees(values, pa.string()) is not None


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=40))
def test_int_and_timestamp_columns(values: list[Any]) -> None:
    assert agrees(values, pa.int64()) is not None
    assert agrees(values, pa.timestamp("us", tz="UTC")) is not None


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.floats()), min_size=1, max_size=40))
def test_float_columns(values: list[Any]) -> None:
    packed = schema._packed(values, pa.float64(), len(values))
    expected = pa.array(values, pa.float64())
    assert packed is not None
    assert packed.to_pylist() == pytest.approx(expected.to_pylist(), nan_ok=True) or packed.equals(expected)
    assert packed.null_count == expected.null_count


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.none(), st.lists(_TEXT, max_size=5), st.lists(_TEXT, max_size=5).map(tuple)), min_size=1, max_size=30
    )
)
@example(values=[[], ["plan:pro", "feature:chat"], None, ("x",)])
def test_tag_list_columns(values: list[Any]) -> None:
    assert agrees(values, pa.list_(pa.string())) is not None


@settings(max_examples=400, deadline=None)
@given(values=st.lists(_ANY, min_size=1, max_size=12))
@example(values=["ok", "\udcff"])  # a lone surrogate: pyarrow refuses, so must the packer
@example(values=[1, True])  # a bool in an int column: left to pyarrow
@example(values=[2**64])  # too large for int64
@example(values=[1.5, 2])  # an int in a float column
def test_mixed_columns_are_left_to_pyarrow_or_agree(values: list[Any]) -> None:
    for kind in (pa.string(), pa.int64(), pa.list_(pa.string())):
        agrees(values, kind)
    if all(v is None or type(v) is float for v in values):
        assert schema._packed(values, pa.float64(), len(values)) is not None
    elif any(v is not None and type(v) is not float for v in values):
        assert schema._packed(values, pa.float64(), len(values)) is None
