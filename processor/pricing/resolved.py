"""A price resolved once per (provider, model, UTC day, service tier), and the cost of one call from it.

The library prices a few probe usages per tier of a piecewise-linear catalog price; the coefficients that come out
(``Linear`` per tier, in pico-dollars too when every one is a whole number of them) make the per-record cost plain
arithmetic (``list_price``). What is not piecewise linear goes to the library per record (``KIND_LIBRARY``); a custom
model's explicit prices come from the overrides file (``KIND_CUSTOM``). ``Pricer`` caches the ``Entry`` of each key;
``explain`` shows one.

Token kinds priced: inclusive input (cache reads, 5-minute and 1-hour cache writes inside it), output, reasoning
output, and the audio parts of input, cache reads and output. Reasoning follows the library: ``output_reasoning_tokens``
is a part of ``output_tokens`` (as in our records), billed at ``output_reasoning_mtok`` instead of the output rate
where the catalog has that price, and ignored otherwise (a reasoning token is then an output token like any other, at
the output rate). So a model without a reasoning price costs the same whatever the reasoning count, and one with it
rejects (unpriced) a reasoning count above the output, as the library does.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Final

from genai_prices import Usage
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices, TimeOfDateConstraint
from tokentrail.processor.pricing.lookup import NameMatch
from tokentrail.processor.pricing.model_names import price_context
from tokentrail.processor.pricing.overrides import CustomModel, Rule
from tokentrail.processor.schema import PICO_PER_USD

__all__ = [
    "KIND_CUSTOM",
    "KIND_FAST",
    "KIND_LIBRARY",
    "KIND_UNPRICED",
    "Counts",
    "Entry",
    "Linear",
    "Piecewise",
    "catalog_entry",
    "effective_price",
    "library_cost",
    "list_price",
    "probe_piece",
    "tier_key",
    "tier_starts",
    "usage_of",
]

log = logging.getLogger(__name__)

_MIDNIGHT: Final = time(0, tzinfo=UTC)
# The catalog price keys of the usage we record. A model priced only in other units (audio hours, characters,
# pages) cannot be priced from a usage record: it is unpriced, not $0. A model with no price at all is free ($0).
_RECORDED_PRICE_KEYS: Final = (
    "input_mtok",
    "output_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "cache_write_1h_mtok",
    "input_audio_mtok",
    "output_audio_mtok",
    "cache_audio_read_mtok",
    "output_reasoning_mtok",
)
# The one reasoning price key the library applies to the usage we record (``output_reasoning_tokens``).
_REASONING_PRICE_KEY: Final = "output_reasoning_mtok"


def usage_of(
    input_tokens: int,
    cached_input_tokens: int = 0,
    cache_creation_input_tokens: int = 0,
    output_tokens: int = 0,
    cache_creation_1h_input_tokens: int = 0,
    input_audio_tokens: int = 0,
    cached_audio_input_tokens: int = 0,
    output_audio_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> Usage:
    """The library's usage for one record. Every key is explicit (0 when absent) so the library never has to infer
    a count; the reference (``catalog_price``) and the fast path price the same usage."""
    return Usage(
        input_tokens=input_tokens,
        cache_read_tokens=cached_input_tokens,
        cache_write_tokens=cache_creation_input_tokens,
        cache_write_1h_tokens=cache_creation_1h_input_tokens,
        output_tokens=output_tokens,
        input_audio_tokens=input_audio_tokens,
        cache_audio_read_tokens=cached_audio_input_tokens,
        output_audio_tokens=output_audio_tokens,
        output_reasoning_tokens=reasoning_tokens,
    )


@dataclass(frozen=True, slots=True)
class Linear:
    """One tier as per-token rates: cost = base + uncached*in + read*cr + write*(cw - w1h) + write_1h*w1h
    + out*(o - r) + reasoning*r, reasoning tokens ``r`` being part of the output ``o``. ``reasoning`` equals ``output``
    unless the catalog prices reasoning separately."""

    base: Decimal
    uncached_input: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    output: Decimal
    reasoning: Decimal


@dataclass(frozen=True, slots=True)
class Piecewise:
    """``pieces[k]`` applies when the inclusive input count exceeds exactly k of ``starts`` (the library's
    "cliff" rule: crossing a tier start re-prices every token)."""

    starts: tuple[int, ...]
    pieces: tuple[Linear, ...]

    def piece(self, input_tokens: int) -> Linear:
        return self.pieces[bisect.bisect_left(self.starts, input_tokens)] if self.starts else self.pieces[0]


# Entry kinds
KIND_UNPRICED: Final = 0
KIND_FAST: Final = 1  # piecewise linear coefficients
KIND_LIBRARY: Final = 2  # the library per record
KIND_CUSTOM: Final = 3  # a custom model's explicit prices (overrides file)


@dataclass(slots=True)
class Entry:
    """Everything needed to price the records of one (provider, model, UTC day, service tier)."""

    kind: int
    match: NameMatch | None = None
    piecewise: Piecewise | None = None
    context: Mapping[str, str] | None = None
    custom: CustomModel | None = None
    rule: Rule | None = None
    reason: str | None = None  # why a record is unpriced
    # The catalog prices reasoning output separately: a reasoning count above the output (or below 0) is inconsistent,
    # as the library says. Without a reasoning price the library ignores the count, and so do we.
    reasoning: bool = False
    # The piecewise coefficients in integer pico-dollars per token, when every one of them is a whole number of
    # pico-dollars (the catalog's per-million prices have at most 6 decimals): costs are then integer arithmetic.
    picos: tuple[tuple[int, ...], tuple[tuple[int, int, int, int, int, int, int], ...]] | None = None


def _is_piecewise_linear(model_info: ModelInfo, provider: Provider) -> bool:
    if provider.id == "groq" and model_info.id in ("whisper-large-v3", "whisper-large-v3-turbo"):
        return False  # the library bills a 10 s minimum: not linear
    if isinstance(model_info.prices, list) and any(
        isinstance(c.constraint, TimeOfDateConstraint) for c in model_info.prices
    ):
        return False  # off-peak prices change within a day
    if any(isinstance(v.constraint, TimeOfDateConstraint) for v in model_info.price_variants or ()):
        return False
    return True


def effective_price(match: NameMatch, when: datetime, context: Mapping[str, str] | None) -> ModelPrice:
    """The ModelPrice the library would use (it ignores the price context for a fallback provider's model)."""
    if context and not any(match.model is m for m in match.provider.models):
        return match.model.get_prices(when)
    return match.model.get_prices(when, context)


def tier_starts(price: ModelPrice) -> tuple[int, ...]:
    starts = {t.start for v in price.__dict__.values() if isinstance(v, TieredPrices) for t in v.tiers}
    return tuple(sorted(starts))


def library_cost(match: NameMatch, usage: Usage, when: datetime, context: Mapping[str, str] | None) -> Decimal:
    return match.model.calc_price(usage, match.provider, genai_request_timestamp=when, price_context=context).total_price


def probe_piece(match: NameMatch, when: datetime, context: Mapping[str, str] | None, low: int) -> Linear:
    """Rates of the tier whose inputs start at ``low`` (probes use ``low`` and ``low + 1`` input tokens)."""

    def f(i: int, cr: int, cw: int, w1h: int, o: int, r: int = 0) -> Decimal:
        return library_cost(match, usage_of(i, cr, cw, o, w1h, reasoning_tokens=r), when, context)

    at_low = f(low, 0, 0, 0, 0)
    uncached = f(low + 1, 0, 0, 0, 0) - at_low
    return Linear(
        base=at_low - uncached * low,
        uncached_input=uncached,
        cache_read=f(low + 1, 1, 0, 0, 0) - at_low,
        cache_write=f(low + 1, 0, 1, 0, 0) - at_low,
        cache_write_1h=f(low + 1, 0, 1, 1, 0) - at_low,
        output=f(low, 0, 0, 0, 1) - at_low,
        reasoning=f(low, 0, 0, 0, 1, 1) - at_low,  # one output token, which is a reasoning token
    )


def catalog_entry(match: NameMatch, day: date, context: Mapping[str, str] | None) -> Entry:
    day_start = datetime.combine(day, _MIDNIGHT)
    try:
        price = effective_price(match, day_start, context)
        keys = [k for k, v in price.__dict__.items() if v is not None and not k.startswith("_")]
        if keys and not any(k in _RECORDED_PRICE_KEYS for k in keys):
            return Entry(
                KIND_UNPRICED,
                match=match,
                reason=f"the catalog prices {match.provider.id}/{match.model.id} only per {', '.join(keys)}, "
                "which usage records do not carry",
            )
        reasoning = getattr(price, _REASONING_PRICE_KEY, None) is not None
        if not _is_piecewise_linear(match.model, match.provider):
            return Entry(KIND_LIBRARY, match=match, context=context, reasoning=reasoning)
        starts = tier_starts(price)
        # Tier k covers inputs in (starts[k-1], starts[k]]; its probes need two input counts inside it.
        lows = (0, *(s + 1 for s in starts))
        highs = (*starts, None)
        if any(hi is not None and lo + 1 > hi for lo, hi in zip(lows, highs)):
            return Entry(KIND_LIBRARY, match=match, context=context, reasoning=reasoning)
        pieces = tuple(probe_piece(match, day_start, context, lo) for lo in lows)
        return Entry(
            KIND_FAST,
            match=match,
            piecewise=Piecewise(starts, pieces),
            context=context,
            picos=_pico_pieces(starts, pieces),
            reasoning=reasoning,
        )
    except Exception:  # a catalog entry the probes cannot price: the library decides per record
        log.debug("price of %s/%s not linear; using the library per record", match.provider.id, match.model.id,
                  exc_info=True)
        return Entry(KIND_LIBRARY, match=match, context=context)


def _pico_pieces(
    starts: tuple[int, ...], pieces: tuple[Linear, ...]
) -> tuple[tuple[int, ...], tuple[tuple[int, int, int, int, int, int, int], ...]] | None:
    out: list[tuple[int, int, int, int, int, int, int]] = []
    for piece in pieces:
        scaled = [value * PICO_PER_USD for value in (piece.base, piece.uncached_input, piece.cache_read,
                                                     piece.cache_write, piece.cache_write_1h, piece.output,
                                                     piece.reasoning)]
        if any(s != s.to_integral_value() for s in scaled):
            return None  # a rate below a pico-dollar per token: the Decimal path keeps it exact
        base, uncached, read, write, write_1h, output, reasoning = (int(s) for s in scaled)
        out.append((base, uncached, read, write, write_1h, output, reasoning))
    return starts, tuple(out)


@dataclass(frozen=True, slots=True)
class Counts:
    input: int
    cached: int
    write: int
    write_1h: int
    output: int
    audio_in: int = 0
    audio_cached: int = 0
    audio_out: int = 0
    reasoning: int = 0  # part of output

    def valid(self, reasoning_priced: bool = False) -> bool:
        """Inclusive input: cache reads and writes are inside it, 1-hour writes inside the writes. Reasoning is part
        of the output; a count above it is inconsistent only where the catalog prices reasoning (elsewhere the
        library ignores the count, so the record costs what its output costs)."""
        return (
            min(self.input, self.cached, self.write, self.write_1h, self.output, self.reasoning) >= 0
            and self.cached + self.write <= self.input
            and self.write_1h <= self.write
            and min(self.audio_in, self.audio_cached, self.audio_out) >= 0
            and (self.reasoning <= self.output or not reasoning_priced)
        )

    @property
    def audio(self) -> bool:
        return bool(self.audio_in or self.audio_cached or self.audio_out)

    def usage(self) -> Usage:
        return usage_of(
            self.input, self.cached, self.write, self.output, self.write_1h, self.audio_in, self.audio_cached,
            self.audio_out, self.reasoning,
        )

    def components(self) -> tuple[int, int, int, int, int]:
        """(uncached input, cache reads, 5-minute writes, 1-hour writes, output), as explicit prices bill them
        (reasoning at the output rate: the overrides file has no reasoning price)."""
        return (self.input - self.cached - self.write, self.cached, self.write - self.write_1h, self.write_1h, self.output)


def list_price(entry: Entry, c: Counts, when: datetime) -> tuple[Decimal, bool] | None:
    """The list price and whether the fast path produced it; None when unpriceable."""
    kind = entry.kind
    if kind == KIND_FAST and not c.audio:
        if not c.valid(entry.reasoning):
            return None
        piece = entry.piecewise.piece(c.input)  # type: ignore[union-attr]  # a KIND_FAST entry always has one
        write_5m = c.write - c.write_1h
        return (
            piece.base
            + piece.uncached_input * (c.input - c.cached - c.write)
            + piece.cache_read * c.cached
            + piece.cache_write * write_5m
            + piece.cache_write_1h * c.write_1h
            + piece.output * (c.output - c.reasoning)
            + piece.reasoning * c.reasoning
        ), True
    if kind == KIND_FAST or kind == KIND_LIBRARY:
        if not c.valid(entry.reasoning):
            return None
        try:
            match = entry.match
            return library_cost(match, c.usage(), when, entry.context), False  # type: ignore[arg-type]  # set for both
        except (LookupError, ValueError):
            return None
    if kind == KIND_CUSTOM:
        if not c.valid():
            return None
        return entry.custom.rates.cost(*c.components()), True  # type: ignore[union-attr]  # a KIND_CUSTOM entry has one
    return None


def tier_key(service_tier: str | None) -> str | None:
    """Only tiers that change the price context are part of a cache key (others price at standard rates)."""
    if not service_tier:
        return None
    key = service_tier.strip().lower()
    return key if price_context(key) is not None else None
