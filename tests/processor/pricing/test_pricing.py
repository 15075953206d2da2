"""Pricing: the fast path equals genai-prices exactly; BYOK costs the organisation nothing; what cannot be priced
is stored with NULL cost and counted, never as $0."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from genai_prices import data_snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokentrail.processor.pricing.catalog import PRICE_VERSION, USAGE_MISSING, Pricer, catalog_price
from tokentrail.processor.pricing.model_names import GATEWAYS, PROVIDER_IDS, canonical_provider
from tokentrail.processor.pricing.overrides import NO_OVERRIDES
from tokentrail.processor.schema import NO_USAGE, PRICED, UNPRICED, UsageRecord

T = datetime(2025, 10, 1, 12, 30, tzinfo=UTC)

# Real catalog models: flat, date-conditional and tiered, OpenAI and Anthropic (with cache reads and writes), and a
# few others reached through OTel provider names.
CATALOG_MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4.1"),
    ("openai", "gpt-5"),
    ("openai", "o3"),  # date-conditional prices
    ("openai", "gpt-5.4"),  # tiered
    ("openai", "text-embedding-3-small"),
    ("anthropic", "claude-sonnet-4-0"),
    ("anthropic", "claude-3-5-haiku-latest"),
    ("anthropic", "claude-opus-4-1"),
    ("anthropic", "claude-haiku-4-5"),
    ("anthropic", "claude-sonnet-4-5"),  # tiered
    ("anthropic", "claude-sonnet-4-6"),  # date-conditional and tiered
    ("gcp.gemini", "gemini-2.5-pro"),  # tiered
    ("gcp.vertex_ai", "gemini-2.5-flash"),
    ("azure.ai.openai", "gpt-4o-mini"),
    ("aws.bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
    ("deepseek", "deepseek-chat"),  # time-of-day prices: slow path
]


@st.composite
def usages(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """Inclusive input with cache reads and writes inside it, around tier boundaries too."""
    input_tokens = draw(
        st.one_of(
            st.integers(0, 5_000),
            st.integers(0, 2_000_000),
            st.integers(199_990, 200_010),
            st.integers(271_990, 272_010),
            st.integers(0, 1_000_000_000),
        )
    )
    cache_read = draw(st.integers(0, input_tokens))
    cache_write = draw(st.integers(0, input_tokens - cache_read))
    output = draw(st.integers(0, 1_000_000))
    return input_tokens, cache_read, cache_write, output


timestamps = st.datetimes(
    min_value=datetime(2024, 6, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return Pricer(overrides=NO_OVERRIDES, auto_update=False)  # whatever the developer's shell has set


@pytest.mark.parametrize(("provider", "model"), CATALOG_MODELS)
def test_catalog_models_resolve(provider: str, model: str) -> None:
    assert catalog_price(provider, model, T, input_tokens=1000, output_tokens=100) > 0


@pytest.mark.parametrize(("provider", "model"), CATALOG_MODELS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(usage=usages(), when=timestamps)
def test_fast_price_equals_calc_price_exactly(
    pricer: Pricer, provider: str, model: str, usage: tuple[int, int, int, int], when: datetime
) -> None:
    input_tokens, cache_read, cache_write, output = usage
    kwargs: dict[str, Any] = dict(
        input_tokens=input_tokens,
        output_tokens=output,
        cached_input_tokens=cache_read,
        cache_creation_input_tokens=cache_write,
    )
    quote = pricer.quote(provider, model, when, **kwargs)
    assert quote is not None
    assert quote.market_cost == catalog_price(provider, model, when, **kwargs)


def test_flat_and_tiered_prices_take_the_fast_path_and_time_of_day_prices_do_not(pricer: Pricer) -> None:
    usage: dict[str, Any] = dict(input_tokens=300_000, output_tokens=10, cached_input_tokens=1000)
    assert pricer.quote("openai", "gpt-4o", T, **usage).fast  # type: ignore[union-attr]  # these models are priced
    assert pricer.quote("anthropic", "claude-sonnet-4-5", T, **usage).fast  # type: ignore[union-attr]  # these models are priced
    assert not pricer.quote("deepseek", "deepseek-chat", T, **usage).fast  # type: ignore[union-attr]  # these models are priced


def record(**overrides: object) -> UsageRecord:
    fields: dict[str, object] = dict(
        timestamp=T,
        trace_id="0" * 32,
        span_id="1" * 16,
        provider="openai",
        model="gpt-4o",
        input_tokens=10_000,
        output_tokens=1_000,
        cached_input_tokens=4_000,
    )
    fields.update(overrides)
    return UsageRecord(**fields)  # type: ignore[arg-type]  # fields of mixed types


def test_system_credential_pays_the_list_price(pricer: Pricer) -> None:
    r = record()
    assert pricer.price(r)
    # gpt-4o: $2.50/MTok input, $1.25/MTok cached input, $10/MTok output
    expected = Decimal("6000") * Decimal("2.5") / 10**6 + Decimal("4000") * Decimal("1.25") / 10**6 + Decimal("0.01")
    assert r.market_cost == expected
    assert r.total_cost == r.market_cost
    assert r.price_status == PRICED
    assert r.price_version == PRICE_VERSION == f"genai-prices {genai_prices.__version__}"


def test_byok_total_cost_is_zero_and_market_cost_is_the_list_price(pricer: Pricer) -> None:
    r = record(credential_type="byok")
    assert pricer.price(r)
    assert r.total_cost == Decimal(0)
    assert r.market_cost is not None and r.market_cost > 0


def test_unknown_model_is_unpriced_with_null_costs_not_zero(pricer: Pricer) -> None:
    r = record(model="acme-private-llm-9")
    assert not pricer.price(r)
    assert r.price_status == UNPRICED
    assert r.total_cost is None and r.market_cost is None
    assert r.price_version == PRICE_VERSION


def test_unknown_provider_is_unpriced(pricer: Pricer) -> None:
    r = record(provider="acme-cloud")
    assert not pricer.price(r)
    assert (r.price_status, r.total_cost, r.market_cost) == (UNPRICED, None, None)


def test_byok_with_unknown_model_is_unpriced_not_zero(pricer: Pricer) -> None:
    r = record(model="acme-private-llm-9", credential_type="byok")
    pricer.price(r)
    assert (r.total_cost, r.market_cost) == (None, None)


def test_record_without_usage_stays_unpriced(pricer: Pricer) -> None:
    r = record(input_tokens=0, output_tokens=0, cached_input_tokens=0, price_status=NO_USAGE)
    assert not pricer.price(r)
    assert (r.price_status, r.total_cost, r.market_cost, r.price_version) == (NO_USAGE, None, None, None)
    legacy = record(input_tokens=0, output_tokens=0, cached_input_tokens=0, price_version=USAGE_MISSING)
    assert not pricer.price(legacy)  # stored before no_usage existed
    assert (legacy.price_status, legacy.total_cost, legacy.price_version) == (NO_USAGE, None, None)


def test_more_cached_than_input_tokens_is_unpriced_not_guessed(pricer: Pricer) -> None:
    r = record(input_tokens=100, cached_input_tokens=500)
    assert not pricer.price(r)
    assert r.price_status == UNPRICED


def test_prices_follow_the_request_date(pricer: Pricer) -> None:
    # o3's price changed on 2025-06-10; each day is resolved on its own.
    before = pricer.quote("openai", "o3", datetime(2025, 6, 1, tzinfo=UTC), input_tokens=10**6, output_tokens=0)
    after = pricer.quote("openai", "o3", datetime(2025, 6, 20, tzinfo=UTC), input_tokens=10**6, output_tokens=0)
    assert before is not None and after is not None
    assert before.market_cost != after.market_cost


def test_price_all_returns_the_unpriced_count(pricer: Pricer) -> None:
    records = [record(), record(model="nope"), record(credential_type="byok")]
    assert pricer.price_all(records) == 1


def test_every_mapped_provider_id_exists_in_the_catalog_or_is_a_gateway() -> None:
    ids = {p.id for p in data_snapshot.get_snapshot().providers}
    assert set(PROVIDER_IDS.values()) - GATEWAYS <= ids
    assert not GATEWAYS & ids


@pytest.mark.parametrize(
    ("otel_name", "catalog_id"),
    [
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("azure.ai.openai", "azure"),
        ("gcp.gemini", "google"),
        ("gcp.vertex_ai", "google"),
        ("aws.bedrock", "aws"),
        ("x_ai", "x-ai"),
        ("mistral_ai", "mistral"),
        ("Groq", "groq"),
    ],
)
def test_otel_provider_names_map_to_catalog_ids(otel_name: str, catalog_id: str) -> None:
    assert canonical_provider(otel_name) == catalog_id


def test_resolution_is_cached_per_provider_model_and_day(pricer: Pricer) -> None:
    fresh = Pricer(overrides=NO_OVERRIDES)
    fresh.quote("openai", "gpt-4o", T, input_tokens=1, output_tokens=1)
    fresh.quote("openai", "gpt-4o", T + timedelta(hours=5), input_tokens=2, output_tokens=2)
    fresh.quote("openai", "gpt-4o", T + timedelta(days=1), input_tokens=2, output_tokens=2)
    assert len(fresh._entries) == 2
