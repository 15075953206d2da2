"""The usage record is the contract between every stage: these tests pin what it promises."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
from tokentrail.processor.schema import (
    ARROW_SCHEMA,
    COST_TYPE,
    FIELD_NAMES,
    UsageRecord,
    records_to_table,
    table_to_records,
    to_cost,
)


def record(**overrides: object) -> UsageRecord:
    base: dict[str, object] = dict(
        timestamp=datetime(2026, 11, 29, 12, 30, 1, 123456, tzinfo=UTC),
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        provider="openai",
        model="gpt-4o-mini",
    )
    base.update(overrides)
    return UsageRecord(**base)  # type: ignore[arg-type]


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
