"""The usage record: the single source of truth for what one LLM call is, once it leaves a span.

Every other module (normalize, price, storage, report) reads field names and types from here. Money is exact:
``Decimal`` in Python and ``decimal128`` in Arrow/Parquet, never float.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final, Literal

import pyarrow as pa

# 18 digits fits Parquet's INT64 physical type (compact, fast to sum) and still holds $999,999 per call.
# Scale 12 (pico-dollars) is exact for every per-token rate in the catalog (e.g. $0.01875/MTok = 18,750 p$).
COST_PRECISION: Final = 18
COST_SCALE: Final = 12
COST_TYPE: Final = pa.decimal128(COST_PRECISION, COST_SCALE)
COST_QUANTUM: Final = Decimal(1).scaleb(-COST_SCALE)

PriceStatus = Literal["priced", "unpriced"]
PRICED: Final = "priced"
UNPRICED: Final = "unpriced"

Status = Literal["ok", "error", "incomplete"]
CURRENCY: Final = "USD"

# The partition column lives only in the path (date=YYYY-MM-DD/): no user value ever becomes a path.
PARTITION_COLUMN: Final = "date"


@dataclass(slots=True, kw_only=True)
class UsageRecord:
    """One billable LLM call. Token counts follow the OTel convention: input includes cached, output includes
    reasoning, so nothing is ever added twice."""

    timestamp: datetime  # UTC, start of the call
    trace_id: str
    span_id: str
    response_id: str | None = None
    service: str | None = None
    environment: str | None = None
    source: str = "tokentrail"  # which span dialect produced the record
    api: str | None = None
    operation: str | None = None
    provider: str
    model: str
    request_model: str | None = None
    user_id: str | None = None
    tags: list[str] = field(default_factory=list)
    credential_type: str = "system"
    credential_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0
    total_cost: Decimal | None = None
    market_cost: Decimal | None = None
    currency: str = CURRENCY
    price_status: str = UNPRICED
    price_version: str | None = None
    duration_ms: float | None = None
    streamed: bool = False
    status: str = "ok"
    error_type: str | None = None

    @property
    def identity(self) -> tuple[str, str]:
        """One call, one record: (provider, response id) when the provider gave one, else the span."""
        if self.response_id:
            return (self.provider, self.response_id)
        return ("span", f"{self.trace_id}:{self.span_id}")

    @property
    def day(self) -> str:
        return self.timestamp.astimezone(timezone.utc).strftime("%Y-%m-%d")


ARROW_SCHEMA: Final = pa.schema(
    [
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("span_id", pa.string(), nullable=False),
        pa.field("response_id", pa.string()),
        pa.field("service", pa.string()),
        pa.field("environment", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("api", pa.string()),
        pa.field("operation", pa.string()),
        pa.field("provider", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("request_model", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("tags", pa.list_(pa.string()), nullable=False),
        pa.field("credential_type", pa.string(), nullable=False),
        pa.field("credential_id", pa.string()),
        pa.field("input_tokens", pa.int64(), nullable=False),
        pa.field("output_tokens", pa.int64(), nullable=False),
        pa.field("cached_input_tokens", pa.int64(), nullable=False),
        pa.field("cache_creation_input_tokens", pa.int64(), nullable=False),
        pa.field("reasoning_tokens", pa.int64(), nullable=False),
        pa.field("total_cost", COST_TYPE),
        pa.field("market_cost", COST_TYPE),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("price_status", pa.string(), nullable=False),
        pa.field("price_version", pa.string()),
        pa.field("duration_ms", pa.float64()),
        pa.field("streamed", pa.bool_(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error_type", pa.string()),
    ]
)

FIELD_NAMES: Final = tuple(f.name for f in dataclasses.fields(UsageRecord))
assert FIELD_NAMES == tuple(ARROW_SCHEMA.names), "UsageRecord and ARROW_SCHEMA must list the same fields in order"

TOKEN_FIELDS: Final = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
)


def to_cost(value: Decimal | None) -> Decimal | None:
    """The cost as the column stores it. Rounding happens only below a pico-dollar."""
    if value is None:
        return None
    return value.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)


def records_to_table(records: list[UsageRecord]) -> pa.Table:
    """Column-wise conversion: one Python list per column is ~10x faster than row dicts."""
    columns: dict[str, list[object]] = {name: [] for name in FIELD_NAMES}
    for record in records:
        for name in FIELD_NAMES:
            columns[name].append(getattr(record, name))
    columns["total_cost"] = [to_cost(v) for v in columns["total_cost"]]  # type: ignore[arg-type]
    columns["market_cost"] = [to_cost(v) for v in columns["market_cost"]]  # type: ignore[arg-type]
    return pa.Table.from_pydict(columns, schema=ARROW_SCHEMA)


def table_to_records(table: pa.Table) -> list[UsageRecord]:
    """The inverse of ``records_to_table``, for tests and tools; costs come back as ``Decimal``."""
    out: list[UsageRecord] = []
    for row in table.select(list(FIELD_NAMES)).to_pylist():
        out.append(UsageRecord(**row))
    return out
