"""The usage record: the single source of truth for what one LLM call is, once it leaves a span.

Every other module (normalize, price, storage, report) reads field names and types from here. Money is exact:
``Decimal`` in Python and ``decimal128`` in Arrow/Parquet, never float.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from operator import attrgetter
from typing import Any, Final, Literal

import pyarrow as pa
from tokentrail.processor.errors import TokenTrailError

# 18 digits fits Parquet's INT64 physical type (compact, fast to sum) and still holds $999,999 per call.
# Scale 12 (pico-dollars) is exact for every per-token rate in the catalog (e.g. $0.01875/MTok = 18,750 p$).
COST_PRECISION: Final = 18
COST_SCALE: Final = 12
COST_TYPE: Final = pa.decimal128(COST_PRECISION, COST_SCALE)
COST_QUANTUM: Final = Decimal(1).scaleb(-COST_SCALE)
PICO_PER_USD: Final = 10**COST_SCALE  # a cost in integer pico-dollars is the column's unscaled value
MAX_COST_PICOS: Final = 10**COST_PRECISION  # exclusive: the column holds at most 18 digits

PriceStatus = Literal["priced", "unpriced", "no_usage"]
PRICED: Final = "priced"
UNPRICED: Final = "unpriced"  # no known price (unknown model, inconsistent counts): cost NULL, never $0
NO_USAGE: Final = "no_usage"  # the response carried no usage at all: the call was billed, its cost is unknown

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
    # The conversation (chat session, thread, agent run) the call belongs to, as the span said it
    # (``gen_ai.conversation.id`` or a dialect's session/thread id): what ``group_by=conversation`` reports by.
    conversation_id: str | None = None
    credential_type: str = "system"
    credential_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0
    # Parts of the counts above (never added to them): the cache writes kept for 1 hour (priced at the 1-hour rate
    # where the catalog has one), and the audio tokens of input and output (priced at audio rates).
    cache_creation_1h_input_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    service_tier: str | None = None  # as the response stated it, lower-cased ("flex", "priority", "batch", ...)
    total_cost: Decimal | None = None
    market_cost: Decimal | None = None
    # What the provider or gateway said the call cost, stored for comparison only: never used as a price.
    reported_cost: Decimal | None = None
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
        return self.timestamp.astimezone(UTC).strftime("%Y-%m-%d")


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
        pa.field("conversation_id", pa.string()),
        pa.field("credential_type", pa.string(), nullable=False),
        pa.field("credential_id", pa.string()),
        pa.field("input_tokens", pa.int64(), nullable=False),
        pa.field("output_tokens", pa.int64(), nullable=False),
        pa.field("cached_input_tokens", pa.int64(), nullable=False),
        pa.field("cache_creation_input_tokens", pa.int64(), nullable=False),
        pa.field("reasoning_tokens", pa.int64(), nullable=False),
        pa.field("cache_creation_1h_input_tokens", pa.int64(), nullable=False),
        pa.field("input_audio_tokens", pa.int64(), nullable=False),
        pa.field("output_audio_tokens", pa.int64(), nullable=False),
        pa.field("service_tier", pa.string()),
        pa.field("total_cost", COST_TYPE),
        pa.field("market_cost", COST_TYPE),
        pa.field("reported_cost", COST_TYPE),
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
COST_FIELDS: Final = ("total_cost", "market_cost", "reported_cost")

# Columns added after the first release, and what a file written before them means. Readers of older files use these
# (DuckDB: ``union_by_name = true`` reads a missing column as NULL; ``conform`` fills these values).
ADDED_COLUMNS: Final[dict[str, object]] = {
    "cache_creation_1h_input_tokens": 0,
    "input_audio_tokens": 0,
    "output_audio_tokens": 0,
    "service_tier": None,
    "reported_cost": None,
    "conversation_id": None,
}


class SchemaMismatch(TokenTrailError, ValueError):
    """A table that cannot be read as usage records (a required column is missing, null or of another type)."""


class CostOutOfRange(TokenTrailError, ValueError):
    """A cost the cost column cannot hold (18 digits: $999,999.999999999999 a call)."""


def conform(table: pa.Table) -> pa.Table:
    """``table`` in ``ARROW_SCHEMA``: columns in order and type, extra columns dropped, a column added after the file
    was written filled with its ``ADDED_COLUMNS`` value, a nullable column it lacks filled with nulls. Raises
    ``SchemaMismatch`` for a table that is not usage records."""
    if table.schema.equals(ARROW_SCHEMA, check_metadata=False):
        return table
    columns = []
    names = set(table.column_names)
    for schema_field in ARROW_SCHEMA:
        name = schema_field.name
        if name in names:
            column = table[name]
            if column.type != schema_field.type:
                try:
                    column = column.cast(schema_field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SchemaMismatch(f"column {name!r} cannot be {schema_field.type}: {exc}") from exc
            if not schema_field.nullable and column.null_count:
                if name not in ADDED_COLUMNS:
                    raise SchemaMismatch(f"column {name!r} must not contain nulls")
                column = column.fill_null(pa.scalar(ADDED_COLUMNS[name], schema_field.type))
        elif name in ADDED_COLUMNS:
            column = pa.array([ADDED_COLUMNS[name]] * table.num_rows, schema_field.type)
        elif schema_field.nullable:
            column = pa.nulls(table.num_rows, schema_field.type)
        else:
            raise SchemaMismatch(f"required column {name!r} is missing")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=ARROW_SCHEMA)


def to_cost(value: Decimal | None) -> Decimal | None:
    """The cost as the column stores it. Rounding happens only below a pico-dollar."""
    if value is None:
        return None
    return value.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)


def records_to_table(records: Sequence[UsageRecord]) -> pa.Table:
    """Column by column (``attrgetter`` loops in C, not a dict per row), costs rounded as stored."""
    columns: dict[str, list[Any]] = {name: list(map(attrgetter(name), records)) for name in FIELD_NAMES}
    for name in COST_FIELDS:
        columns[name] = [to_cost(v) for v in columns[name]]
    return pa.Table.from_pydict(columns, schema=ARROW_SCHEMA)


def table_to_records(table: pa.Table) -> list[UsageRecord]:
    """The inverse of ``records_to_table``, for tests and tools; costs come back as ``Decimal``."""
    out: list[UsageRecord] = []
    for row in table.select(list(FIELD_NAMES)).to_pylist():
        out.append(UsageRecord(**row))
    return out


# -- the receiver's working form: one sequence per column --------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_INT_COST: Final = pa.decimal128(19, 0)  # int64 -> decimal needs 19 digits
_COST_DIGITS: Final = pa.decimal128(COST_PRECISION, 0)  # COST_TYPE's unscaled values


def to_picos(value: Decimal | None) -> int | None:
    """A cost as integer pico-dollars (rounded like ``to_cost``), the unscaled value of the cost column."""
    if value is None:
        return None
    return int(value.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN).scaleb(COST_SCALE))


def from_picos(value: int | None) -> Decimal | None:
    return None if value is None else Decimal(value).scaleb(-COST_SCALE)


def micros_to_datetime(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def datetime_to_micros(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(microseconds=1)


class UsageColumns:
    """Usage records as one sequence per field (``FIELD_NAMES`` order): what the receiver works on, so no object is
    built per record. Two columns differ from ``UsageRecord``: ``timestamp`` holds integer microseconds since the
    epoch (UTC), and the costs (``COST_FIELDS``) integer pico-dollars or None, the unscaled values of their decimal
    columns, so Arrow builds both from integers (a decimal column from ``Decimal`` objects is several times slower:
    docs/ARCHITECTURE.md, Performance)."""

    __slots__ = ("data", "length")

    def __init__(self, data: dict[str, Sequence[Any]], length: int) -> None:
        self.data = data
        self.length = length

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[Any, ...]]) -> UsageColumns:
        """From row tuples in ``FIELD_NAMES`` order (timestamps and costs as above)."""
        if not rows:
            return cls({name: () for name in FIELD_NAMES}, 0)
        return cls(dict(zip(FIELD_NAMES, zip(*rows))), len(rows))

    @classmethod
    def from_records(cls, records: Sequence[UsageRecord]) -> UsageColumns:
        data: dict[str, Sequence[Any]] = {name: list(map(attrgetter(name), records)) for name in FIELD_NAMES}
        data["timestamp"] = [datetime_to_micros(t) for t in data["timestamp"]]
        for name in COST_FIELDS:
            data[name] = [to_picos(v) for v in data[name]]
        return cls(data, len(records))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, name: str) -> Sequence[Any]:
        return self.data[name]

    def __setitem__(self, name: str, values: Sequence[Any]) -> None:
        self.data[name] = values

    def take(self, indices: Sequence[int]) -> UsageColumns:
        """The rows at ``indices``, in that order."""
        return UsageColumns({name: [column[i] for i in indices] for name, column in self.data.items()}, len(indices))

    def to_table(self) -> pa.Table:
        """The columns as an Arrow table in ``ARROW_SCHEMA``, each built by ``pyarrow.array`` with its schema type
        (integer timestamps are microseconds). Raises ``CostOutOfRange`` for a cost the column cannot hold."""
        n = self.length
        arrays = []
        for schema_field in ARROW_SCHEMA:
            name, kind = schema_field.name, schema_field.type
            values = self.data[name]
            if n > 1 and values[0] == values[-1] and values.count(values[0]) == n:
                # One value for the whole batch (a service's calls to one model, no reported cost): built once, not
                # per row. The count is mostly a pointer comparison per row; first against last skips varied columns.
                value = values[0]
                if value is None:
                    arrays.append(pa.nulls(n, kind))
                elif name in COST_FIELDS:
                    arrays.append(pa.repeat(_cost_array(name, [value])[0], n))
                else:
                    arrays.append(pa.repeat(pa.scalar(value, kind), n))
            elif name in COST_FIELDS:
                arrays.append(_cost_array(name, values))
            else:
                arrays.append(pa.array(values, kind))
        return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)

    def to_records(self) -> list[UsageRecord]:
        data = dict(self.data)
        data["timestamp"] = [micros_to_datetime(t) for t in data["timestamp"]]
        for name in COST_FIELDS:
            data[name] = [from_picos(v) for v in data[name]]
        data["tags"] = [list(t) for t in data["tags"]]
        return [UsageRecord(**dict(zip(FIELD_NAMES, row))) for row in zip(*(data[name] for name in FIELD_NAMES))]


def _cost_array(name: str, picos: Sequence[int | None]) -> pa.Array:
    """A cost column from integer pico-dollars: int64, widened to a 19-digit decimal (what int64 needs), narrowed to
    18 digits (which checks every value fits) and read as the 12-digit scale: exact, and no ``Decimal`` per row."""
    try:
        return pa.array(picos, pa.int64()).cast(_INT_COST).cast(_COST_DIGITS).view(COST_TYPE)
    except (pa.ArrowInvalid, OverflowError) as exc:
        raise CostOutOfRange(f"{name} outside the cost column's range ({COST_PRECISION} digits): {exc}") from exc

