"""Record fields that change or check the price: service tier, 1-hour cache writes, audio tokens, a reported cost,
and ``price_status = no_usage``. Read from every source that states them, priced end to end through the receiver,
and readable from Parquet files written before the fields existed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from tokentrail.processor.ingest.receiver import Receiver
from tokentrail.processor.normalize.reader import normalize_request
from tokentrail.processor.pricing.catalog import Pricer, catalog_price
from tokentrail.processor.pricing.overrides import NO_OVERRIDES
from tokentrail.processor.reports.report import ReportQuery, run_report
from tokentrail.processor.schema import (
    ADDED_COLUMNS,
    ARROW_SCHEMA,
    NO_USAGE,
    PRICED,
    UsageRecord,
    conform,
    records_to_table,
    table_to_records,
)
from tokentrail.processor.storage.compaction import compact_day, read_day
from tokentrail.processor.storage.parquet import day_dir_name, write_partitions
from tokentrail.processor.storage.reprice import reprice

from tests.helpers.otlp import genai_attributes, make_request, make_span

WHEN = datetime(2026, 11, 20, 12, tzinfo=UTC)  # gpt-5 has flex and batch prices by then
WHEN_NS = int(WHEN.timestamp()) * 10**9


def one(attrs: dict, **span_kwargs: Any) -> UsageRecord:
    result = normalize_request(make_request([make_span(attrs, **span_kwargs)]))
    assert result.rejected == 0, result.errors
    (record,) = result.records
    return record


def warnings_of(attrs: dict) -> list[str]:
    return normalize_request(make_request([make_span(attrs)])).warnings


# -- service tier -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tokentrail.service_tier", "Flex"),
        ("openai.response.service_tier", "flex"),
        ("gen_ai.openai.response.service_tier", " FLEX "),
    ],
)
def test_the_service_tier_is_read_from_each_spelling_lower_cased(key: str, value: str) -> None:
    assert one(genai_attributes({key: value})).service_tier == "flex"


def test_our_service_tier_wins_over_other_instrumentations_and_absent_is_null() -> None:
    attrs = genai_attributes({"openai.response.service_tier": "default", "tokentrail.service_tier": "priority"})
    assert one(attrs).service_tier == "priority"
    assert one(genai_attributes()).service_tier is None


# -- 1-hour cache writes ------------------------------------------------------------------------------------------


def test_one_hour_cache_writes_are_a_part_of_the_cache_writes_never_added() -> None:
    record = one(
        genai_attributes(
            {
                "gen_ai.usage.input_tokens": 5000,
                "gen_ai.usage.cache_read.input_tokens": 0,
                "gen_ai.usage.cache_creation.input_tokens": 3000,
                "tokentrail.usage.cache_creation.1h.input_tokens": 2000,
            }
        )
    )
    assert (record.input_tokens, record.cache_creation_input_tokens, record.cache_creation_1h_input_tokens) == (
        5000,
        3000,
        2000,
    )


def test_the_anthropic_sdk_span_states_its_one_hour_writes() -> None:
    attrs = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 10_000,  # the SDK's inclusive total
        "gen_ai.usage.output_tokens": 100,
        "gen_ai.usage.cache_write.input_tokens": 4000,
        "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": 1500,
    }
    record = one(attrs, name="anthropic.messages.create")
    assert record.source == "anthropic-sdk"
    assert (record.cache_creation_input_tokens, record.cache_creation_1h_input_tokens) == (4000, 1500)


def test_more_one_hour_writes_than_writes_are_capped_with_a_warning() -> None:
    attrs = genai_attributes(
        {"gen_ai.usage.cache_creation.input_tokens": 100, "tokentrail.usage.cache_creation.1h.input_tokens": 300}
    )
    assert one(attrs).cache_creation_1h_input_tokens == 100
    assert any("1-hour cache writes 300 exceed" in w for w in warnings_of(attrs))


def test_a_one_hour_count_that_is_not_an_integer_rejects_the_span() -> None:
    attrs = genai_attributes({"tokentrail.usage.cache_creation.1h.input_tokens": "12"})
    result = normalize_request(make_request([make_span(attrs)]))
    assert result.rejected == 1 and "must be an integer" in result.errors[0]


# -- audio tokens -------------------------------------------------------------------------------------------------


def test_audio_tokens_from_our_attributes_and_from_openinference() -> None:
    ours = one(
        genai_attributes({"tokentrail.usage.input_audio_tokens": 700, "tokentrail.usage.output_audio_tokens": 90})
    )
    assert (ours.input_audio_tokens, ours.output_audio_tokens, ours.input_tokens, ours.output_tokens) == (700, 90, 1200, 300)
    oi = one(
        {
            "openinference.span.kind": "LLM",
            "llm.provider": "openai",
            "llm.model_name": "gpt-4o-audio-preview",
            "llm.token_count.prompt": 1000,
            "llm.token_count.completion": 200,
            "llm.token_count.prompt_details.audio": 400,
            "llm.token_count.completion_details.audio": 150,
        }
    )
    assert (oi.source, oi.input_audio_tokens, oi.output_audio_tokens) == ("openinference", 400, 150)


def test_audio_tokens_above_their_total_are_capped() -> None:
    record = one(genai_attributes({"tokentrail.usage.output_audio_tokens": 999}))
    assert record.output_audio_tokens == record.output_tokens == 300


# -- reported cost ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"tokentrail.usage.reported_cost": 0.0123}, Decimal("0.0123")),
        ({"gen_ai.usage.cost": "0.000056"}, Decimal("0.000056")),
        ({"gen_ai.usage.cost": 2}, Decimal(2)),
        ({"tokentrail.usage.reported_cost": 0.5, "gen_ai.usage.cost": 0.7}, Decimal("0.5")),
    ],
)
def test_a_reported_cost_is_stored_exactly_as_stated(attrs: dict, expected: Decimal) -> None:
    record = one(genai_attributes(attrs))
    assert record.reported_cost == expected
    assert record.market_cost is None  # stored for comparison only: pricing is the pricer's


def test_openinference_reports_its_total_cost() -> None:
    record = one(
        {
            "openinference.span.kind": "LLM",
            "llm.provider": "openai",
            "llm.model_name": "gpt-4o",
            "llm.token_count.prompt": 10,
            "llm.token_count.completion": 2,
            "llm.cost.total": 0.00045,
        }
    )
    assert record.reported_cost == Decimal("0.00045")


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"gateway": {"cost": "0.00001155", "marketCost": "0.00001155"}}, Decimal("0.00001155")),
        ({"openrouter": {"usage": {"cost": 0.000231, "promptTokens": 10}}}, Decimal("0.000231")),
        ({"openai": {"cachedPromptTokens": 0}}, None),
    ],
)
def test_the_vercel_ai_sdk_provider_metadata_carries_gateway_and_openrouter_costs(
    metadata: dict, expected: Decimal | None
) -> None:
    attrs = {
        "ai.operationId": "ai.generateText.doGenerate",
        "ai.model.provider": "openai.chat",
        "ai.model.id": "gpt-4o-mini",
        "ai.usage.promptTokens": 10,
        "ai.usage.completionTokens": 2,
        "ai.response.providerMetadata": json.dumps(metadata),
    }
    record = one(attrs, name="ai.generateText.doGenerate")
    assert record.source == "vercel-ai"
    assert record.reported_cost == expected


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf"), "twelve", 10.0**7, True])
def test_a_reported_cost_that_is_not_an_amount_is_dropped_with_a_warning(bad: object) -> None:
    attrs = genai_attributes({"gen_ai.usage.cost": bad})
    assert one(attrs).reported_cost is None
    assert any("reported cost" in w for w in warnings_of(attrs))


# -- no usage -----------------------------------------------------------------------------------------------------


def test_a_call_without_usage_is_no_usage_with_null_costs_and_no_price_version() -> None:
    attrs = genai_attributes(
        {"gen_ai.usage.input_tokens": None, "gen_ai.usage.output_tokens": None, "tokentrail.usage.missing": True}
    )
    record = one(attrs)
    assert not Pricer(overrides=NO_OVERRIDES).price(record)
    assert (record.price_status, record.price_version, record.market_cost, record.total_cost) == (NO_USAGE, None, None, None)


# -- end to end through the receiver ------------------------------------------------------------------------------


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path, grpc_port=0, receiver_id="fields-r1", flush_interval=3600) as r:
        yield r


def _span(attrs: dict) -> Span:
    return make_span(attrs, trace_id=os.urandom(16), span_id=os.urandom(8), start_ns=WHEN_NS)


def test_service_tiers_and_one_hour_writes_are_priced_end_to_end(receiver: Receiver, tmp_path: Path) -> None:
    openai = {"gen_ai.request.model": "gpt-5", "gen_ai.response.model": "gpt-5", "gen_ai.usage.input_tokens": 200_000,
              "gen_ai.usage.output_tokens": 50_000, "gen_ai.usage.cache_read.input_tokens": 0}
    anthropic = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.response.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 100_000,
        "gen_ai.usage.output_tokens": 1000,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.cache_creation.input_tokens": 60_000,
        "tokentrail.usage.cache_creation.1h.input_tokens": 40_000,
        "tokentrail.api": "anthropic.messages",
    }
    spans = {
        "standard": _span(genai_attributes(openai)),
        "flex": _span(genai_attributes({**openai, "openai.response.service_tier": "flex"})),
        "batch": _span(genai_attributes({**openai, "tokentrail.service_tier": "batch"})),
        "1h": _span(genai_attributes(anthropic)),
        "5m": _span(genai_attributes({**anthropic, "tokentrail.usage.cache_creation.1h.input_tokens": None})),
        "no usage": _span(genai_attributes({"gen_ai.usage.input_tokens": None, "gen_ai.usage.output_tokens": None})),
    }
    outcome = receiver.export(make_request(list(spans.values())))
    assert (outcome.accepted, outcome.rejected, outcome.unpriced) == (6, 0, 1)
    receiver.flush()
    rows = {r.span_id: r for r in table_to_records(read_day(tmp_path / "usage", WHEN.date()))}
    got = {name: rows[span.span_id.hex()] for name, span in spans.items()}

    for name, tier in (("standard", None), ("flex", "flex"), ("batch", "batch")):
        r = got[name]
        assert (r.service_tier, r.price_status) == (tier, PRICED)
        assert r.market_cost == catalog_price("openai", "gpt-5", WHEN, input_tokens=200_000, output_tokens=50_000,
                                              service_tier=tier)
    standard, flex, batch = (got[n].market_cost for n in ("standard", "flex", "batch"))
    assert standard is not None and flex is not None and batch is not None
    assert flex < standard
    assert batch < standard

    one_hour, five_minutes = got["1h"], got["5m"]
    assert (one_hour.cache_creation_input_tokens, one_hour.cache_creation_1h_input_tokens) == (60_000, 40_000)
    assert one_hour.market_cost == catalog_price(
        "anthropic", "claude-sonnet-4-5", WHEN, input_tokens=100_000, output_tokens=1000,
        cache_creation_input_tokens=60_000, cache_creation_1h_input_tokens=40_000,
    )
    assert one_hour.market_cost is not None and five_minutes.market_cost is not None
    assert one_hour.market_cost > five_minutes.market_cost  # 1-hour writes cost more than 5-minute ones

    missing = got["no usage"]
    assert (missing.price_status, missing.price_version, missing.market_cost) == (NO_USAGE, None, None)
    query = ReportQuery.from_params({"start_date": WHEN.date().isoformat(), "end_date": WHEN.date().isoformat(),
                                     "group_by": "none"})
    (total,) = run_report(tmp_path, query)
    assert (total["request_count"], total["unpriced_request_count"]) == (6, 1)  # counted, never a silent $0


# -- files written before the fields existed ----------------------------------------------------------------------

OLD_COLUMNS = [f for f in ARROW_SCHEMA if f.name not in ADDED_COLUMNS]


def _write_old_file(usage: Path, day: date, records: list[UsageRecord], name: str) -> None:
    table = records_to_table(records).select([f.name for f in OLD_COLUMNS])
    directory = usage / day_dir_name(day.isoformat())
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / name)


def _record(i: int, **fields: Any) -> UsageRecord:
    base: dict[str, Any] = dict(timestamp=WHEN.replace(minute=i), trace_id=f"{i:032x}", span_id=f"{i:016x}",
                                   provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=100)
    base.update(fields)
    record = UsageRecord(**base)
    Pricer(overrides=NO_OVERRIDES).price(record)
    return record


def test_files_without_the_new_columns_are_read_with_their_defaults(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    _write_old_file(usage, WHEN.date(), [_record(1), _record(2)], "part-old-000000000001.parquet")
    write_partitions([_record(3, service_tier="flex", cache_creation_1h_input_tokens=0, reported_cost=Decimal("0.01"))],
                     usage, "new", 1)

    table = read_day(usage, WHEN.date())
    assert table.schema.equals(ARROW_SCHEMA)
    rows = sorted(table_to_records(table), key=lambda r: r.timestamp)
    assert [(r.service_tier, r.cache_creation_1h_input_tokens, r.input_audio_tokens, r.reported_cost) for r in rows] == [
        (None, 0, 0, None),
        (None, 0, 0, None),
        ("flex", 0, 0, Decimal("0.01")),
    ]
    # The report reads old and new files together (DuckDB union_by_name), re-pricing and compaction too.
    query = ReportQuery.from_params({"start_date": WHEN.date().isoformat(), "end_date": WHEN.date().isoformat(),
                                     "group_by": "none"})
    assert run_report(tmp_path, query)[0]["request_count"] == 3
    (result,) = reprice(tmp_path, WHEN.date(), WHEN.date(), pricer=Pricer(overrides=NO_OVERRIDES))
    assert result.rows == 3
    compact_day(usage, WHEN.date())
    assert read_day(usage, WHEN.date()).num_rows == 3


def test_conform_fills_added_columns_and_refuses_tables_that_are_not_records() -> None:
    old = records_to_table([_record(1)]).select([f.name for f in OLD_COLUMNS])
    assert conform(old).column("cache_creation_1h_input_tokens").to_pylist() == [0]
    with pytest.raises(ValueError, match="required column 'model'"):
        conform(old.drop_columns(["model"]))
    nulls = old.append_column("input_audio_tokens", pa.nulls(1, pa.int64()))
    assert conform(nulls).column("input_audio_tokens").to_pylist() == [0]
