"""The usage record is the contract between every stage: these tests pin what it promises."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokentrail.processor.schema import (
    ARROW_SCHEMA,
    COST_TYPE,
    FIELD_NAMES,
    MAX_COST_PICOS,
    CostOutOfRange,
    UsageColumns,
    UsageRecord,
    records_to_table,
    table_to_records,
    to_cost,
)


def record(**overrides: object) -> UsageRecord:
    base: dict[str, Any] = dict(
        timestamp=datetime(2026, 11, 29, 12, 30, 1, 123456, tzinfo=UTC),
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        provider="openai",
        model="gpt-4o-mini",
    )
    base.update(overrides)
    return UsageRecord(**base)


def test_costs_are_stored_as_decimal_columns_never_float() -> None:
    assert pa.types.is_decimal(ARROW_SCHEMA.field("total_cost").type)
    assert pa.types.is_decimal(ARROW_SCHEMA.field("market_cost").type)
    assert ARROW_SCHEMA.field("total_cost").type == COST_TYPE


def test_a_record_survives_the_round_trip_through_arrow_exactly() -> None:
    original = record(
        tags=["plan:pro", "feature:chat"],
        total_cost=Decimal("0.000000000001"),
        market_cost=Decimal("123.456789012345"),
        input_tokens=1000,
        cached_input_tokens=200,
    )
    (back,) = table_to_records(records_to_table([original]))
    assert back == original


def test_unpriced_costs_stay_null_rather_than_zero() -> None:
    table = records_to_table([record()])
    assert table.column("total_cost").null_count == 1
    assert table.column("market_cost").null_count == 1
    assert table.column("price_status")[0].as_py() == "unpriced"


def test_costs_round_only_below_a_picodollar() -> None:
    assert to_cost(Decimal("0.0000001875")) == Decimal("0.0000001875")
    assert to_cost(Decimal("0.0000000000015")) == Decimal("0.000000000002")  # half-even at the 13th digit
    assert to_cost(None) is None


def test_identity_prefers_the_provider_response_id_over_the_span() -> None:
    assert record(response_id="chatcmpl-1").identity == ("openai", "chatcmpl-1")
    assert record().identity == ("span", "0af7651916cd43dd8448eb211c80319c:b7ad6b7169203331")


def test_the_record_and_the_arrow_schema_list_the_same_fields() -> None:
    assert FIELD_NAMES == tuple(ARROW_SCHEMA.names)
    assert "date" not in FIELD_NAMES  # the partition lives in the path only


# -- the receiver's column form -------------------------------------------------------------------------------------

_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=8)
_OPTIONAL_TEXT = st.one_of(st.none(), _TEXT)
_COST = st.one_of(st.none(), st.decimals(min_value=-999_999, max_value=999_999, places=12, allow_nan=False))
_COUNT = st.integers(0, 2**40)


@st.composite
def records(draw: st.DrawFn) -> list[UsageRecord]:
    """Batches whose columns are sometimes one value throughout (the receiver builds those once) and sometimes not."""
    n = draw(st.integers(1, 6))
    same = draw(st.booleans())

    def column(strategy: st.SearchStrategy[Any]) -> list[Any]:
        if same:
            return [draw(strategy)] * n
        return [draw(strategy) for _ in range(n)]

    timestamps = column(st.datetimes(min_value=datetime(1969, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
    users, tags, models = column(_OPTIONAL_TEXT), column(st.lists(_TEXT, max_size=3)), column(_TEXT)
    inputs, cached = column(_COUNT), column(_COUNT)
    totals, markets, reported = column(_COST), column(_COST), column(_COST)
    durations, streamed = column(st.one_of(st.none(), st.floats(0, 1e9))), column(st.booleans())
    return [
        record(
            timestamp=timestamps[i],
            span_id=f"{i:016x}",
            user_id=users[i],
            tags=tags[i],
            model=models[i],
            input_tokens=inputs[i],
            cached_input_tokens=cached[i],
            total_cost=totals[i],
            market_cost=markets[i],
            reported_cost=reported[i],
            duration_ms=durations[i],
            streamed=streamed[i],
        )
        for i in range(n)
    ]


@settings(max_examples=200, deadline=None)
@given(batch=records())
def test_the_column_form_makes_the_same_table_as_the_records(batch: list[UsageRecord]) -> None:
    """The receiver builds its table from ``UsageColumns`` (integer microseconds and pico-dollars, one value built
    once when a column holds only one): the same table, value for value, as ``records_to_table``."""
    expected = records_to_table(batch)
    table = UsageColumns.from_records(batch).to_table()
    table.validate(full=True)
    assert table.schema.equals(ARROW_SCHEMA)
    assert table.equals(expected)
    assert UsageColumns.from_records(batch).to_records() == table_to_records(expected)


def test_a_batch_of_one_value_per_column_is_the_same_table() -> None:
    batch = [record(span_id=f"{i:016x}", user_id=None, tags=["a", "é"], total_cost=Decimal("0.5")) for i in range(4)]
    assert UsageColumns.from_records(batch).to_table().equals(records_to_table(batch))


def test_a_cost_the_column_cannot_hold_is_refused_with_its_column_named() -> None:
    columns = UsageColumns.from_records([record(), record(span_id="00000000000000ff")])
    columns["market_cost"] = [None, MAX_COST_PICOS]  # $1,000,000: one digit too many
    with pytest.raises(CostOutOfRange, match="market_cost"):
        columns.to_table()
    columns["market_cost"] = [MAX_COST_PICOS - 1, -(MAX_COST_PICOS - 1)]
    assert columns.to_table()["market_cost"].to_pylist() == [Decimal("999999.999999999999"), Decimal("-999999.999999999999")]


def test_a_value_of_the_wrong_type_is_refused_not_converted() -> None:
    columns = UsageColumns.from_records([record(), record(span_id="00000000000000ff")])
    columns["input_tokens"] = [1, "2"]
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        columns.to_table()
