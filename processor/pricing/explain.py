"""Explain a number: which catalog model a call was priced as, at which rates, each component, and the total.

``explain(...)`` uses the pricer's own resolved prices (so it shows exactly what a record with this usage gets)
and checks the list price against ``genai_prices.calc_price`` for the matched name; ``Explanation.text()`` is what
``tokentrail prices explain`` prints and ``to_dict()`` its ``--format json``.

It takes every token kind the pricer prices: inclusive input with its cache reads and (1-hour) cache writes, output
with its reasoning part (a line of its own at the catalog's reasoning rate where there is one), and the audio parts of
input, cache reads and output (priced by the library, not broken down into lines).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokentrail.processor.pricing.catalog import Pricer, catalog_price
from tokentrail.processor.pricing.model_names import canonical_provider, price_context
from tokentrail.processor.pricing.overrides import BYOK_LIST
from tokentrail.processor.pricing.resolved import (
    KIND_CUSTOM,
    KIND_FAST,
    KIND_LIBRARY,
    Counts,
    effective_price,
    list_price,
    probe_piece,
    tier_key,
    tier_starts,
)

__all__ = ["Component", "Explanation", "explain"]

_MILLION = Decimal(1_000_000)
# How the usage row of ``text()`` names each count, in order; a part follows its whole.
_USAGE_LABELS = (
    ("input_tokens", "input"),
    ("cached_input_tokens", "cache reads"),
    ("cache_creation_input_tokens", "cache writes"),
    ("cache_creation_1h_input_tokens", "1-hour cache writes"),
    ("input_audio_tokens", "input audio"),
    ("cached_audio_input_tokens", "cached audio"),
    ("output_tokens", "output"),
    ("reasoning_tokens", "reasoning"),
    ("output_audio_tokens", "output audio"),
)


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    tokens: int | None  # None for a per-request fee
    usd_per_mtok: Decimal | None
    cost: Decimal

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tokens": self.tokens,
            "usd_per_mtok": _num(self.usd_per_mtok),
            "cost": _num(self.cost),
        }


@dataclass
class Explanation:
    provider_given: str
    provider: str
    model_given: str
    at: datetime
    service_tier: str | None
    usage: dict[str, int]
    credential_type: str
    price_version: str
    catalog_model: str | None = None  # "openai/gpt-4o"
    catalog_name: str | None = None
    matched_by: tuple[str, ...] = ()
    catalog_prices: str | None = None  # the library's own statement of the prices in effect
    price_context: dict[str, str] | None = None
    tier: str | None = None
    method: str | None = None  # "fast", "library" or "custom"
    components: list[Component] = field(default_factory=list)
    market_cost: Decimal | None = None
    library_cost: Decimal | None = None  # genai_prices.calc_price for the matched name (None for custom models)
    override: str | None = None
    total_components: list[Component] = field(default_factory=list)  # when an override sets explicit prices
    total_cost: Decimal | None = None
    notes: list[str] = field(default_factory=list)
    unpriced_reason: str | None = None

    @property
    def agrees_with_library(self) -> bool | None:
        if self.library_cost is None or self.market_cost is None:
            return None
        return self.library_cost == self.market_cost

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "provider_given": self.provider_given,
            "model": self.model_given,
            "at": self.at.isoformat(),
            "service_tier": self.service_tier,
            "price_context": self.price_context,
            "credential_type": self.credential_type,
            "usage": self.usage,
            "catalog_model": self.catalog_model,
            "catalog_name": self.catalog_name,
            "matched_by": list(self.matched_by),
            "catalog_prices": self.catalog_prices,
            "tier": self.tier,
            "method": self.method,
            "components": [c.to_dict() for c in self.components],
            "market_cost": _num(self.market_cost),
            "calc_price": _num(self.library_cost),
            "agrees_with_calc_price": self.agrees_with_library,
            "override": self.override,
            "total_components": [c.to_dict() for c in self.total_components],
            "total_cost": _num(self.total_cost),
            "price_status": "priced" if self.market_cost is not None else "unpriced",
            "unpriced_reason": self.unpriced_reason,
            "notes": self.notes,
            "price_version": self.price_version,
        }

    def text(self) -> str:
        lines: list[str] = []

        def row(label: str, value: str) -> None:
            lines.append(f"{label:<16}{value}")

        given = "" if self.provider_given.strip().lower() == self.provider else f" (as given: {self.provider_given})"
        row("Provider", f"{self.provider}{given}")
        if self.catalog_model:
            how = "rewritten by " + " -> ".join(self.matched_by) if self.matched_by else "the name as it arrived"
            name = f' "{self.catalog_name}"' if self.catalog_name else ""
            row("Model", f"{self.model_given} -> catalog {self.catalog_model}{name} ({how})")
        else:
            row("Model", self.model_given)
        row("At", f"{self.at.isoformat()} (prices of UTC day {self.at.astimezone(UTC).date()})")
        tier = self.service_tier or "standard"
        if self.service_tier and self.price_context is None:
            tier += " (the catalog has no variant for it: standard prices)"
        elif self.price_context:
            tier += f" (price context {self.price_context})"
        row("Service tier", tier)
        row("Credential", self.credential_type)
        row("Usage", ", ".join(f"{label} {self.usage[key]:,}" for key, label in _USAGE_LABELS if key in self.usage))
        if self.catalog_prices is not None:
            row("Catalog prices", self.catalog_prices or "none listed: the model is free")
        if self.tier:
            row("Tier", self.tier)
        if self.market_cost is None:
            lines.append("")
            row("Market cost", f"UNPRICED: {self.unpriced_reason or 'no price'} (stored with NULL cost, never $0)")
            lines.extend(f"Note: {n}" for n in self.notes)
            row("Price version", self.price_version)
            return "\n".join(lines) + "\n"
        lines.append("")
        lines.extend(_table(self.components))
        check = ""
        if self.agrees_with_library is True:
            check = "  = genai_prices.calc_price"
        elif self.agrees_with_library is False:
            check = f"  != genai_prices.calc_price {_fmt(self.library_cost)}  (MISMATCH: please report)"
        lines.append(f"{'Market cost (list price)':<48}{_fmt(self.market_cost):>18}{check}")
        if self.override:
            row("Override", self.override)
            if self.total_components:
                lines.extend(_table(self.total_components))
        lines.append(f"{'Total cost (what you pay)':<48}{_fmt(self.total_cost):>18}")
        lines.extend(f"Note: {n}" for n in self.notes)
        row("Price version", self.price_version)
        return "\n".join(lines) + "\n"


def _table(components: list[Component]) -> list[str]:
    out = [f"  {'component':<22}{'tokens':>12}{'USD/MTok':>12}{'cost (USD)':>18}"]
    for c in components:
        tokens = f"{c.tokens:,}" if c.tokens is not None else "1 request"
        rate = _fmt(c.usd_per_mtok) if c.usd_per_mtok is not None else ""
        out.append(f"  {c.name:<22}{tokens:>12}{rate:>12}{_fmt(c.cost):>18}")
    return out


def _fmt(value: Decimal | None) -> str:
    """Exact, without trailing zeros (a cost is never rounded for display)."""
    if value is None:
        return "-"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _num(value: Decimal | None) -> str | None:
    return None if value is None else _fmt(value)


def _rate_components(
    rates: tuple[Decimal, Decimal, Decimal, Decimal, Decimal],
    counts: Counts,
    base: Decimal = Decimal(0),
    reasoning_rate: Decimal | None = None,
) -> list[Component]:
    """Per-token rates (uncached, read, write 5m, write 1h, output) -> components, skipping zero-token lines that
    have no effect. With a ``reasoning_rate`` (the catalog prices reasoning separately) the reasoning part of the
    output is a line of its own and "output" is the rest."""
    uncached, cached, write_5m, write_1h, output = counts.components()
    if reasoning_rate is not None:
        output -= counts.reasoning
    names = ("uncached input", "cache read", "cache write (5 min)", "cache write (1 h)", "output")
    out = []
    if base:
        out.append(Component("request fee", None, None, base))
    for name, tokens, rate in zip(names, (uncached, cached, write_5m, write_1h, output), rates):
        if tokens == 0 and name.startswith("cache"):
            continue
        out.append(Component(name, tokens, rate * _MILLION, rate * tokens))
    if reasoning_rate is not None and counts.reasoning:
        out.append(Component("reasoning output", counts.reasoning, reasoning_rate * _MILLION, reasoning_rate * counts.reasoning))
    return out


def explain(
    pricer: Pricer,
    provider: str,
    model: str,
    at: datetime,
    *,
    input_tokens: int = 0,
    cached_input_tokens: int = 0,
    cache_creation_input_tokens: int = 0,
    cache_creation_1h_input_tokens: int = 0,
    output_tokens: int = 0,
    input_audio_tokens: int = 0,
    cached_audio_input_tokens: int = 0,
    output_audio_tokens: int = 0,
    reasoning_tokens: int = 0,
    service_tier: str | None = None,
    credential_type: str = "system",
) -> Explanation:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    canonical = canonical_provider(provider)
    entry = pricer.resolve(canonical, model, at.astimezone(UTC).date(), service_tier)
    counts = Counts(
        input_tokens,
        cached_input_tokens,
        cache_creation_input_tokens,
        cache_creation_1h_input_tokens,
        output_tokens,
        input_audio_tokens,
        cached_audio_input_tokens,
        output_audio_tokens,
        reasoning_tokens,
    )
    usage = {
        "input_tokens": input_tokens,
        "cached_input_tokens": cached_input_tokens,
        "cache_creation_input_tokens": cache_creation_input_tokens,
        "cache_creation_1h_input_tokens": cache_creation_1h_input_tokens,
        "output_tokens": output_tokens,
        "reasoning_tokens": reasoning_tokens,
        "input_audio_tokens": input_audio_tokens,
        "cached_audio_input_tokens": cached_audio_input_tokens,
        "output_audio_tokens": output_audio_tokens,
    }
    context = price_context(tier_key(service_tier))
    ex = Explanation(
        provider_given=provider,
        provider=canonical,
        model_given=model,
        at=at,
        service_tier=service_tier,
        usage={k: v for k, v in usage.items() if v or k in ("input_tokens", "output_tokens")},
        credential_type=credential_type,
        price_version=pricer.price_version,
        price_context=dict(context) if context else None,
    )
    match = entry.match
    if match is not None:
        ex.catalog_model = f"{match.provider.id}/{match.model.id}"
        ex.catalog_name = match.model.name
        ex.matched_by = match.via
        price = effective_price(match, at, context)
        ex.catalog_prices = str(price)
        starts = tier_starts(price)
        if starts:
            above = [s for s in starts if input_tokens > s]
            ex.tier = (
                f"input {input_tokens:,} tokens > {above[-1]:,}: the tier above {above[-1]:,} prices every token"
                if above
                else f"input {input_tokens:,} tokens: base prices (tiers start above {', '.join(f'{s:,}' for s in starts)})"
            )
    if not counts.valid():
        ex.unpriced_reason = (
            "inconsistent usage: cache reads plus writes exceed the (inclusive) input, or 1-hour writes exceed writes"
        )
        return ex
    if not counts.valid(entry.reasoning):
        ex.unpriced_reason = (
            "inconsistent usage: reasoning tokens exceed the output tokens they are part of (the catalog prices "
            "reasoning separately)"
        )
        return ex
    market = list_price(entry, counts, at)
    if market is None:
        ex.unpriced_reason = entry.reason or "the price catalog cannot price this usage"
        return ex
    ex.market_cost = market[0]
    if entry.kind == KIND_CUSTOM:
        custom = entry.custom
        assert custom is not None
        ex.method = "custom"
        ex.catalog_model = None
        ex.notes.append(f"list price from the overrides file: {custom.describe()}")
        ex.components = _rate_components(custom.rates.per_token, counts)
        if counts.reasoning:
            ex.notes.append("reasoning tokens are part of the output, at the output rate (explicit prices have no reasoning rate)")
    elif match is not None:
        ex.method = "fast" if market[1] else "library"
        ex.library_cost = catalog_price(match.ref.provider, match.ref.model, at, service_tier=service_tier, **usage)
        if counts.audio:
            ex.notes.append("audio tokens are priced by the library per record; components are not broken down")
        else:
            low = 0
            if entry.kind == KIND_FAST and entry.piecewise is not None:
                starts = entry.piecewise.starts
                above = [s for s in starts if input_tokens > s]
                low = above[-1] + 1 if above else 0
                piece = entry.piecewise.piece(input_tokens)
            else:  # the library prices this model per record (e.g. by time of day): rates at this very moment
                starts = tier_starts(effective_price(match, at, context))
                above = [s for s in starts if input_tokens > s]
                low = above[-1] + 1 if above else 0
                piece = probe_piece(match, at, context, low)
            rates = (piece.uncached_input, piece.cache_read, piece.cache_write, piece.cache_write_1h, piece.output)
            ex.components = _rate_components(rates, counts, piece.base, piece.reasoning if entry.reasoning else None)
            if sum((c.cost for c in ex.components), Decimal(0)) != ex.market_cost:
                ex.notes.append("this price is not linear in the tokens (e.g. a billed minimum): the total is the library's")
        if counts.reasoning and not entry.reasoning:
            ex.notes.append(
                "reasoning tokens are part of the output and priced at the output rate (the catalog has no separate "
                "reasoning price for this model)"
            )
        if entry.kind == KIND_LIBRARY:
            ex.notes.append("prices of this model change within a day (or are otherwise not flat): priced by the library per record")
    # What this organisation pays
    if credential_type == "byok":
        if pricer.overrides.byok == BYOK_LIST:
            ex.override, ex.total_cost = "BYOK call, policy \"list\": the organisation pays the list price", ex.market_cost
        else:
            ex.override, ex.total_cost = "BYOK call: billed to the customer's own key, the organisation pays 0", Decimal(0)
    elif entry.rule is not None:
        ex.override = entry.rule.describe()
        ex.total_cost = entry.rule.total(ex.market_cost, counts.components())
        if entry.rule.rates is not None:
            ex.total_components = _rate_components(entry.rule.rates.per_token, counts)
    else:
        ex.total_cost = ex.market_cost
    return ex
