"""Every model in the catalog: the fast path equals ``genai_prices.calc_price`` to the last digit, on every date a
price changes, with and without a service tier, with 5-minute and 1-hour cache writes and reasoning output. Plus the
semantics the catalog distinguishes: service tiers, 1-hour cache writes, reasoning rates, audio tokens, models priced
in units we do not record.

The sample is deterministic (seeded per model) so the suite stays fast and a failure reproduces; a hypothesis test
adds random models and usages on top."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import data_snapshot
from genai_prices.types import StartDateConstraint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokentrail.processor.pricing.catalog import Pricer, catalog_price
from tokentrail.processor.pricing.overrides import NO_OVERRIDES, parse_overrides
from tokentrail.processor.pricing.resolved import effective_price
from tokentrail.processor.schema import PRICED, UNPRICED, UsageColumns, UsageRecord, from_picos
from tokentrail.processor.storage.reprice import reprice_table

SNAPSHOT = data_snapshot.get_snapshot()
ALL_MODELS = [(p.id, m) for p in SNAPSHOT.providers for m in p.models]
BASE_DAY = date(2025, 10, 1)


@dataclass(slots=True, kw_only=True)
class RichRecord(UsageRecord):
    """A usage record with the optional fields the pricer reads when the schema has them."""

    service_tier: str | None = None
    cache_creation_1h_input_tokens: int = 0
    input_audio_tokens: int = 0
    cached_audio_input_tokens: int = 0
    output_audio_tokens: int = 0


def _tiers(model: object) -> list[str | None]:
    tiers: set[str] = set()
    for variant in getattr(model, "price_variants", None) or ():
        when = variant.when
        if "service_tier" in when:
            tiers.add(when["service_tier"])
        if when.get("processing") == "batch":
            tiers.add("batch")
        if when.get("speed") == "fast":
            tiers.add("fast")
    return [None, *sorted(tiers)]


def _days(model: object) -> list[date]:
    """The base day, and each day a price starts and the day before it."""
    days = {BASE_DAY}
    constraints = [c.constraint for c in model.prices] if isinstance(model.prices, list) else []  # type: ignore[attr-defined]  # a catalog ModelInfo
    constraints += [v.constraint for v in getattr(model, "price_variants", None) or ()]
    for c in constraints:
        if isinstance(c, StartDateConstraint):
            days |= {c.start_date, c.start_date - timedelta(days=1)}
    return sorted(days)


def _usage(rng: random.Random, one_hour: bool) -> dict[str, Any]:
    inp = rng.choice(
        [rng.randint(0, 5_000), rng.randint(0, 2_000_000), rng.randint(199_990, 200_010), rng.randint(271_990, 272_010)]
    )
    cached = rng.randint(0, inp)
    write = rng.randint(0, inp - cached)
    out = rng.randint(0, 200_000)
    return dict(
        input_tokens=inp,
        cached_input_tokens=cached,
        cache_creation_input_tokens=write,
        cache_creation_1h_input_tokens=rng.randint(0, write) if one_hour else 0,
        output_tokens=out,
        reasoning_tokens=rng.randint(1, out) if out else 0,  # part of the output
    )


def _reference(provider: str, model: str, when: datetime, tier: str | None, usage: dict[str, int]) -> Decimal | None:
    try:
        return catalog_price(provider, model, when, service_tier=tier, **usage)
    except (LookupError, ValueError):
        return None


def _check(pricer: Pricer, provider: str, model_id: str, when: datetime, tier: str | None, usage: dict[str, int]) -> str | None:
    """None when our price equals the library's for the name the pricer matched; else what differs."""
    quote = pricer.quote(provider, model_id, when, service_tier=tier, **usage)
    match = pricer.match(provider, model_id)
    if match is None:
        return None if quote is None and _reference(provider, model_id, when, tier, usage) is None else "match"
    reference = _reference(match.ref.provider, match.ref.model, when, tier, usage)
    if quote is None:
        if reference is None:
            return None
        entry = pricer._entry(provider, model_id, when.date(), tier)
        # Priced only in units a usage record does not carry (audio hours, characters, pages): unpriced, not $0.
        return None if entry.reason and "only per" in entry.reason else f"unpriced, library says {reference}"
    if reference is None or quote.market_cost != reference:
        return f"{quote.market_cost} != {reference}"
    return None


def test_every_catalog_model_prices_exactly_as_the_library_on_every_price_date() -> None:
    pricer = Pricer(overrides=NO_OVERRIDES)
    mismatches: list[str] = []
    checked = 0
    for provider, model in ALL_MODELS:
        rng = random.Random(f"{provider}/{model.id}")
        for day in _days(model):
            for tier in _tiers(model):
                for k in range(4):
                    when = datetime.combine(day, datetime.min.time(), UTC) + timedelta(seconds=rng.randrange(86_400))
                    usage = _usage(rng, one_hour=bool(k % 2))
                    problem = _check(pricer, provider, model.id, when, tier, usage)
                    checked += 1
                    if problem:
                        mismatches.append(f"{provider}/{model.id} at {when} tier={tier} {usage}: {problem}")
    assert checked > 4 * len(ALL_MODELS)
    assert not mismatches, f"{len(mismatches)} mismatches, e.g.:\n" + "\n".join(mismatches[:10])


@st.composite
def usages(draw: st.DrawFn) -> dict[str, int]:
    inp = draw(st.one_of(st.integers(0, 5_000), st.integers(0, 1_000_000_000), st.integers(199_990, 272_010)))
    cached = draw(st.integers(0, inp))
    write = draw(st.integers(0, inp - cached))
    out = draw(st.integers(0, 1_000_000))
    return dict(
        input_tokens=inp,
        cached_input_tokens=cached,
        cache_creation_input_tokens=write,
        cache_creation_1h_input_tokens=draw(st.integers(0, write)),
        output_tokens=out,
        reasoning_tokens=draw(st.integers(0, out)),
    )


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return Pricer(overrides=NO_OVERRIDES)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chosen=st.sampled_from(ALL_MODELS),
    usage=usages(),
    when=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)),
    tier=st.sampled_from([None, "batch", "flex", "priority", "fast", "default"]),
)
def test_random_catalog_models_and_usages_price_exactly(
    pricer: Pricer, chosen: tuple[str, object], usage: dict[str, int], when: datetime, tier: str | None
) -> None:
    provider, model = chosen
    assert _check(pricer, provider, model.id, when, tier, usage) is None  # type: ignore[attr-defined]  # a catalog ModelInfo


# -- semantics -------------------------------------------------------------------------------------------------------


def rich(**fields: object) -> RichRecord:
    base: dict[str, object] = dict(
        timestamp=datetime(2026, 11, 20, 12, tzinfo=UTC),
        trace_id="0" * 32,
        span_id="1" * 16,
        provider="openai",
        model="gpt-5",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
    )
    base.update(fields)
    return RichRecord(**base)  # type: ignore[arg-type]  # fields of mixed types


def test_service_tier_on_the_record_selects_the_catalogs_price_variant(pricer: Pricer) -> None:
    standard, flex, batch, unknown = rich(), rich(service_tier="flex"), rich(service_tier="batch"), rich(service_tier="scale")
    for r in (standard, flex, batch, unknown):
        assert pricer.price(r)
    # gpt-5 after 2026-10-12: $1.25 + $10 per MTok standard, flex is half.
    assert standard.market_cost == Decimal("11.25")
    assert flex.market_cost == Decimal("5.625")
    assert batch.market_cost == catalog_price("openai", "gpt-5", batch.timestamp, input_tokens=10**6, output_tokens=10**6, service_tier="batch")
    assert batch.market_cost is not None and standard.market_cost is not None
    assert batch.market_cost < standard.market_cost
    assert unknown.market_cost == standard.market_cost  # a tier the catalog does not price: standard rates
    fast = rich(provider="anthropic", model="claude-fable-5-2", service_tier="fast")
    plain = rich(provider="anthropic", model="claude-fable-5-2")
    assert pricer.price(fast) and pricer.price(plain)
    assert fast.market_cost == 2 * plain.market_cost  # type: ignore[operator]  # priced above: not None


def test_one_hour_cache_writes_are_priced_at_the_one_hour_rate(pricer: Pricer) -> None:
    # claude-haiku-4-5: input $1, cache write $1.25 (5 min) and $2 (1 h) per MTok.
    five = rich(provider="anthropic", model="claude-haiku-4-5", input_tokens=10**6, cache_creation_input_tokens=10**6, output_tokens=0)
    hour = rich(
        provider="anthropic",
        model="claude-haiku-4-5",
        input_tokens=10**6,
        cache_creation_input_tokens=10**6,
        cache_creation_1h_input_tokens=400_000,
        output_tokens=0,
    )
    assert pricer.price(five) and pricer.price(hour)
    assert five.market_cost == Decimal("1.25")
    assert hour.market_cost == Decimal("0.6") * Decimal("1.25") + Decimal("0.4") * 2
    bad = rich(provider="anthropic", model="claude-haiku-4-5", cache_creation_input_tokens=10, cache_creation_1h_input_tokens=11)
    assert not pricer.price(bad)  # more 1-hour writes than writes: inconsistent, never guessed


def test_audio_tokens_are_priced_at_audio_rates_by_the_library(pricer: Pricer) -> None:
    when = datetime(2026, 11, 20, 12, tzinfo=UTC)
    usage: dict[str, Any] = dict(input_tokens=10_000, output_tokens=2_000, input_audio_tokens=4_000, output_audio_tokens=1_500, cached_input_tokens=3_000, cached_audio_input_tokens=1_000)
    quote = pricer.quote("openai", "gpt-realtime", when, **usage)
    assert quote is not None and not quote.fast
    assert quote.market_cost == catalog_price("openai", "gpt-realtime", when, **usage)
    text_only = pricer.quote("openai", "gpt-realtime", when, input_tokens=10_000, output_tokens=2_000, cached_input_tokens=3_000)
    assert text_only is not None and text_only.fast and text_only.market_cost < quote.market_cost
    r = rich(model="gpt-realtime", input_tokens=10_000, output_tokens=2_000, input_audio_tokens=4_000, output_audio_tokens=1_500)
    assert pricer.price(r)
    assert r.market_cost == catalog_price("openai", "gpt-realtime", r.timestamp, input_tokens=10_000, output_tokens=2_000, input_audio_tokens=4_000, output_audio_tokens=1_500)


def test_a_model_priced_only_in_units_we_do_not_record_is_unpriced_not_zero(pricer: Pricer) -> None:
    r = rich(model="whisper-1", input_tokens=0, output_tokens=120)
    assert not pricer.price(r)
    assert (r.price_status, r.market_cost, r.total_cost) == (UNPRICED, None, None)
    reason = pricer._entry("openai", "whisper-1", r.timestamp.date(), None).reason
    assert reason is not None and "audio_hours" in reason


def test_a_model_the_catalog_lists_as_free_costs_zero(pricer: Pricer) -> None:
    r = rich(provider="openrouter", model="openai/gpt-oss-120b:free")
    assert pricer.price(r)
    assert (r.price_status, r.market_cost) == (PRICED, Decimal(0))


def test_reasoning_tokens_are_inside_output_and_never_priced_twice(pricer: Pricer) -> None:
    with_reasoning = rich(output_tokens=1000, reasoning_tokens=800)
    without = rich(output_tokens=1000)
    assert pricer.price(with_reasoning) and pricer.price(without)
    assert with_reasoning.market_cost == without.market_cost


# The catalog models with a reasoning price (the library's ``output_reasoning_mtok``), read from the catalog itself.
REASONING_PRICED = [
    (provider, model.id)
    for provider, model in ALL_MODELS
    for price in ([c.prices for c in model.prices] if isinstance(model.prices, list) else [model.prices])
    if getattr(price, "output_reasoning_mtok", None) is not None
]


def test_the_catalog_prices_reasoning_separately_for_some_models() -> None:
    assert ("perplexity", "sonar-deep-research") in REASONING_PRICED  # the model of issue 11: so the tests below bite


@pytest.mark.parametrize(("provider", "model"), REASONING_PRICED)
def test_reasoning_is_billed_at_the_catalogs_reasoning_rate_where_it_has_one(pricer: Pricer, provider: str, model: str) -> None:
    when = datetime(2026, 1, 5, 10, tzinfo=UTC)
    match = pricer.match(provider, model)
    assert match is not None
    price = effective_price(match, when, None)
    rates: list[Decimal] = []
    for rate in (price.input_mtok, price.output_mtok, price.output_reasoning_mtok):
        assert isinstance(rate, Decimal), "flat prices expected: computed by hand below"
        rates.append(rate / 1_000_000)
    in_rate, out_rate, reasoning_rate = rates
    assert reasoning_rate != out_rate
    # Reasoning is part of the output: the rest of the output at the output rate, reasoning at the reasoning rate.
    by_hand = 1_000 * in_rate + (10_000 - 8_000) * out_rate + 8_000 * reasoning_rate
    usage: dict[str, Any] = dict(input_tokens=1_000, output_tokens=10_000, reasoning_tokens=8_000)
    assert catalog_price(provider, model, when, **usage) == by_hand
    quote = pricer.quote(provider, model, when, **usage)
    assert quote is not None and quote.fast and quote.market_cost == by_hand
    records = [rich(provider=provider, model=model, timestamp=when, **usage), rich(provider=provider, model=model, timestamp=when, **usage)]
    assert pricer.price(records[0]) and records[0].market_cost == by_hand
    columns = UsageColumns.from_records(records[1:])
    assert pricer.price_columns(columns) == 0 and from_picos(columns["market_cost"][0]) == by_hand
    # The stored form (reprice reads only the fields the pricer names) prices reasoning too.
    table, _ = reprice_table(UsageColumns.from_records(records[1:]).to_table(), pricer)
    assert table["market_cost"].to_pylist() == [by_hand]
    # More reasoning than output: the library refuses it, so the record is unpriced, never guessed.
    assert pricer.quote(provider, model, when, input_tokens=1_000, output_tokens=10, reasoning_tokens=11) is None
    with pytest.raises(ValueError):
        catalog_price(provider, model, when, input_tokens=1_000, output_tokens=10, reasoning_tokens=11)


def test_without_a_reasoning_price_the_reasoning_count_changes_nothing(pricer: Pricer) -> None:
    """As in the library, which ignores the count (even one above the output) where it has no reasoning price."""
    when = datetime(2026, 1, 5, 10, tzinfo=UTC)
    for reasoning in (0, 800, 1_000, 1_200):
        usage: dict[str, Any] = dict(input_tokens=5_000, output_tokens=1_000, reasoning_tokens=reasoning)
        quote = pricer.quote("openai", "o3", when, **usage)
        assert quote is not None and quote.fast
        assert quote.market_cost == catalog_price("openai", "o3", when, **usage) == catalog_price(
            "openai", "o3", when, input_tokens=5_000, output_tokens=1_000
        )
        columns = UsageColumns.from_records([rich(provider="openai", model="o3", timestamp=when, **usage)])
        pricer.price_columns(columns)
        assert from_picos(columns["market_cost"][0]) == quote.market_cost
    assert pricer.quote("openai", "o3", when, input_tokens=5, output_tokens=10, reasoning_tokens=-1) is None


# -- the receiver's batch path ---------------------------------------------------------------------------------------

BATCH_OVERRIDES = """
[byok]
total_cost = "list"
[[rule]]
provider = "anthropic"
model = "claude-haiku-4-5"
input_mtok = 0.9
output_mtok = 4.5
cache_write_1h_mtok = 1.8
[[rule]]
provider = "openai"
discount_percent = 12.5
[[rule]]
provider = "google"
discount_percent = 33.3333333
[[model]]
provider = "acme"
model = "acme-llm-*"
input_mtok = 1.25
output_mtok = 3.123457
"""


def _batch(rng: random.Random) -> list[UsageRecord]:
    """Records over every catalog model, with tiers, 1-hour writes, audio, BYOK, unknown models, no usage and counts
    the library refuses, in one batch as the receiver prices them."""
    records: list[UsageRecord] = []
    models = ALL_MODELS + [("acme", type("M", (), {"id": "acme-llm-9"})()), ("openai", type("M", (), {"id": "no-such-model"})())]
    for i, (provider, model) in enumerate(models):
        tiers = _tiers(model) if hasattr(model, "prices") else [None]
        for k in range(3):
            when = datetime.combine(BASE_DAY + timedelta(days=rng.randrange(-400, 400)), datetime.min.time(), UTC)
            usage = _usage(rng, one_hour=bool(k % 2))
            if k == 2 and i % 5 == 0:
                usage.update(input_audio_tokens=rng.randint(0, usage["input_tokens"]), output_audio_tokens=rng.randint(0, 50))
            if i % 17 == 0 and k == 1:
                usage["cached_input_tokens"] = usage["input_tokens"] + 1  # inconsistent: unpriced, never guessed
            if i % 13 == 0 and k == 0:
                usage["reasoning_tokens"] = usage["output_tokens"] + 1  # unpriced where the catalog prices reasoning
            records.append(
                UsageRecord(
                    timestamp=when + timedelta(seconds=rng.randrange(86_400)),
                    trace_id=f"{len(records):032x}",
                    span_id=f"{len(records):016x}",
                    provider=provider,
                    model=model.id,
                    credential_type=rng.choice(["system", "system", "byok"]),
                    service_tier=rng.choice(tiers),
                    price_status="no_usage" if rng.random() < 0.02 else UNPRICED,
                    **usage,
                )
            )
    return records


@pytest.mark.parametrize("overrides", ["none", "overrides"])
def test_pricing_a_batch_of_columns_gives_every_record_the_price_pricing_it_alone_gives(overrides: str) -> None:
    chosen = NO_OVERRIDES if overrides == "none" else parse_overrides(BATCH_OVERRIDES)
    records = _batch(random.Random(7))
    columns = UsageColumns.from_records(records)
    unpriced = Pricer(overrides=chosen).price_columns(columns)
    alone = Pricer(overrides=chosen)
    assert unpriced == sum(1 for r in records if not alone.price(r))
    mismatches = []
    for i, r in enumerate(records):
        got = (from_picos(columns["market_cost"][i]), from_picos(columns["total_cost"][i]), columns["price_status"][i],
               columns["price_version"][i])
        # The costs in their stored form (pico-dollars)
        want = (*(None if v is None else v.quantize(Decimal("1E-12")) for v in (r.market_cost, r.total_cost)),
                r.price_status, r.price_version)
        if got != want:
            mismatches.append(f"{r.provider}/{r.model} {r}: {got} != {want}")
    assert not mismatches, f"{len(mismatches)} mismatches, e.g.:\n" + "\n".join(mismatches[:5])
    assert {"priced", "unpriced", "no_usage"} <= set(columns["price_status"])
