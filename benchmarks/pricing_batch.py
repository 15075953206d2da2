"""Pricing: records priced per second by our cached fast path, as a ratio against `genai_prices.calc_price` per record
on the same records in the same process (the library is the reference; docs/ARCHITECTURE.md, Performance, asks for ≥
20×), and the same with an overrides file (discount, explicit prices, BYOK at list price): `ratio_with_overrides`."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

from tokentrail.processor.pricing.catalog import Pricer, catalog_price
from tokentrail.processor.pricing.overrides import NO_OVERRIDES, parse_overrides
from tokentrail.processor.schema import UsageRecord

# A realistic overrides file: a negotiated discount, explicit prices for one model, BYOK at list price.
OVERRIDES = """
[byok]
total_cost = "list"
[[rule]]
provider = "anthropic"
model = "claude-haiku-4-5"
input_mtok = 0.9
output_mtok = 4.5
[[rule]]
provider = "openai"
discount_percent = 12.5
"""

MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4.1"),
    ("openai", "gpt-4o"),
    ("anthropic", "claude-sonnet-4-6"),
    ("anthropic", "claude-haiku-4-5"),
    ("google", "gemini-2.5-pro"),  # tiered by prompt length
]


def make_records(n: int, seed: int = 1) -> list[UsageRecord]:
    rng = random.Random(seed)
    ts = datetime(2026, 11, 20, 12, tzinfo=UTC)
    out = []
    for i in range(n):
        provider, model = rng.choice(MODELS)
        inp = rng.randint(10, 300_000)
        out.append(
            UsageRecord(
                timestamp=ts,
                trace_id=f"{i:032x}",
                span_id=f"{i:016x}",
                provider=provider,
                model=model,
                input_tokens=inp,
                cached_input_tokens=rng.randint(0, inp // 2),
                output_tokens=rng.randint(1, 4000),
                credential_type="byok" if i % 5 == 0 else "system",
            )
        )
    return out


def run(n: int = 50_000, reference_n: int = 3_000) -> dict[str, float]:
    records = make_records(n)
    with_overrides = make_records(n)
    overridden = Pricer(overrides=parse_overrides(OVERRIDES), auto_update=False)
    overridden.price_all(with_overrides[:100])
    t0 = time.perf_counter()
    overridden.price_all(with_overrides)
    ours_with_overrides = (time.perf_counter() - t0) / n

    pricer = Pricer(overrides=NO_OVERRIDES, auto_update=False)
    pricer.price_all(records[:100])  # resolve each model once, as a running receiver already has
    t0 = time.perf_counter()
    pricer.price_all(records)
    ours = (time.perf_counter() - t0) / n

    sample = records[:reference_n]
    t0 = time.perf_counter()
    reference_costs = [
        catalog_price(
            r.provider,
            r.model,
            r.timestamp,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            cached_input_tokens=r.cached_input_tokens,
            cache_creation_input_tokens=r.cache_creation_input_tokens,
        )
        for r in sample
    ]
    reference = (time.perf_counter() - t0) / reference_n
    mismatches = sum(1 for r, cost in zip(sample, reference_costs) if r.market_cost != cost)
    mismatches += sum(1 for r, cost in zip(with_overrides, reference_costs) if r.market_cost != cost)
    return {
        "records_per_s": 1 / ours,
        "calc_price_per_s": 1 / reference,
        "ratio_vs_calc_price": reference / ours,
        "ratio_with_overrides": reference / ours_with_overrides,
        "mismatches_in_sample": float(mismatches),
    }
