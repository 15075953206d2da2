"""What a usage record costs, from the ``genai-prices`` catalog.

``genai_prices.calc_price`` runs at ~6k calls/s, slower than the receiver ingests. A flat price is linear in the
four token counts we record, and a tiered price is linear within each tier (the library picks one tier for all
tokens from the inclusive input count). So a price is resolved once per (provider, model, UTC day): the library
itself prices a few probe usages per tier, and the per-record cost is plain ``Decimal`` arithmetic on those
coefficients. The result is exact (no rounding at 28 digits for counts below 1e9), and ``tests/test_pricing.py``
proves equality with ``calc_price``. What is not piecewise linear (time-of-day prices, a billed minimum) goes to
``calc_price`` for every record.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timezone
from decimal import Decimal
from typing import Final

import genai_prices
from genai_prices import Usage, calc_price
from genai_prices import data_snapshot as _snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices, TimeOfDateConstraint

from .schema import PRICED, UNPRICED, UsageRecord

__all__ = [
    "PRICE_VERSION",
    "PROVIDER_IDS",
    "USAGE_MISSING",
    "Pricer",
    "Quote",
    "canonical_provider",
    "catalog_price",
]

log = logging.getLogger(__name__)

PRICE_VERSION: Final = f"genai-prices {genai_prices.__version__}"

# Marks a record whose response carried no usage at all (set by normalize): it stays unpriced with NULL costs,
# because pricing zero tokens would report a silent $0 for a call that was billed.
USAGE_MISSING: Final = "usage-missing"

# OpenTelemetry `gen_ai.provider.name` / `gen_ai.system` values (current and older conventions, plus common
# spellings of other instrumentations) -> genai-prices provider ids. A name that is absent is used as given
# (lowercased): many instrumentations already emit the catalog's id ("openai", "groq", "deepseek", ...).
PROVIDER_IDS: Final[dict[str, str]] = {
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.openai": "azure",
    "az.ai.inference": "azure",
    "azure_openai": "azure",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "vertex_ai": "google",
    "gemini": "google",
    "aws.bedrock": "aws",
    "bedrock": "aws",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "together_ai": "together",
    "togetherai": "together",
    "fireworks_ai": "fireworks",
    "perplexity_ai": "perplexity",
    "cohere_ai": "cohere",
    "moonshot": "moonshotai",
}

_MIDNIGHT: Final = time(0, tzinfo=timezone.utc)
_ZERO: Final = Decimal(0)


def canonical_provider(name: str) -> str:
    """One provider vocabulary for records and reports, whichever instrumentation named it."""
    key = name.strip().lower()
    return PROVIDER_IDS.get(key, key)


@dataclass(frozen=True, slots=True)
class _Linear:
    """One tier as coefficients per token: cost = base + in*uncached + cr*read + cw*write + out*output."""

    base: Decimal
    uncached_input: Decimal
    cache_read: Decimal
    cache_write: Decimal
    output: Decimal


@dataclass(frozen=True, slots=True)
class _Piecewise:
    """``pieces[k]`` applies when the inclusive input count exceeds exactly k of ``starts`` (the library's
    "cliff" rule: crossing a tier start re-prices every token)."""

    starts: tuple[int, ...]
    pieces: tuple[_Linear, ...]

    def piece(self, input_tokens: int) -> _Linear:
        return self.pieces[bisect.bisect_left(self.starts, input_tokens)] if self.starts else self.pieces[0]


@dataclass(frozen=True, slots=True)
class _Fallback:
    """A price the linear path cannot represent: ask the library for every record."""

    provider_id: str


_Resolved = _Piecewise | _Fallback | None  # None: the catalog does not know this provider or model


@dataclass(frozen=True, slots=True)
class Quote:
    """The list price of one call, as the catalog states it."""

    market_cost: Decimal
    fast: bool  # True when computed from resolved coefficients, False when by calc_price


def _usage(input_tokens: int, cache_read: int, cache_write: int, output_tokens: int) -> Usage:
    return Usage(
        input_tokens=input_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=output_tokens,
    )


def catalog_price(
    provider: str,
    model: str,
    timestamp: datetime,
    *,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int = 0,
    cache_creation_input_tokens: int = 0,
) -> Decimal:
    """The library's own answer (slow path, and the reference the fast path is tested against).

    Raises ``LookupError`` for an unknown provider or model and ``ValueError`` for inconsistent usage."""
    result = calc_price(
        _usage(input_tokens, cached_input_tokens, cache_creation_input_tokens, output_tokens),
        model,
        provider_id=canonical_provider(provider),
        genai_request_timestamp=timestamp,
    )
    return result.total_price


def _is_piecewise_linear(model_info: ModelInfo, provider: Provider) -> bool:
    if provider.id == "groq" and model_info.id in ("whisper-large-v3", "whisper-large-v3-turbo"):
        return False  # the library bills a 10 s minimum: not linear
    if isinstance(model_info.prices, list) and any(
        isinstance(c.constraint, TimeOfDateConstraint) for c in model_info.prices
    ):
        return False  # off-peak prices change within a day
    return True


def _tier_starts(price: ModelPrice) -> tuple[int, ...]:
    starts = {t.start for v in price.__dict__.values() if isinstance(v, TieredPrices) for t in v.tiers}
    return tuple(sorted(starts))


def _probe_piece(price: ModelPrice, low: int) -> _Linear:
    """Coefficients of the tier whose inputs start at ``low`` (probes use ``low`` and ``low + 1`` input tokens)."""

    def f(i: int, cr: int, cw: int, o: int) -> Decimal:
        return price.calc_price(_usage(i, cr, cw, o))["total_price"]

    at_low = f(low, 0, 0, 0)
    uncached = f(low + 1, 0, 0, 0) - at_low
    return _Linear(
        base=at_low - uncached * low,
        uncached_input=uncached,
        cache_read=f(low + 1, 1, 0, 0) - at_low,
        cache_write=f(low + 1, 0, 1, 0) - at_low,
        output=f(low, 0, 0, 1) - at_low,
    )


def _resolve(provider_id: str, model: str, day_start: datetime) -> _Resolved:
    snapshot = _snapshot.get_snapshot()
    try:
        provider, model_info = snapshot.find_provider_model(model, None, provider_id, None)
    except LookupError:
        return None
    try:
        if not _is_piecewise_linear(model_info, provider):
            return _Fallback(provider_id)
        price = model_info.get_prices(day_start)
        starts = _tier_starts(price)
        # Tier k covers inputs in (starts[k-1], starts[k]]; its probes need two input counts inside it.
        lows = (0, *(s + 1 for s in starts))
        highs = (*starts, None)
        if any(hi is not None and lo + 1 > hi for lo, hi in zip(lows, highs)):
            return _Fallback(provider_id)
        return _Piecewise(starts, tuple(_probe_piece(price, lo) for lo in lows))
    except Exception:  # a catalog entry the probes cannot price: the library decides per record
        log.debug("price of %s/%s not linear; using calc_price per record", provider_id, model, exc_info=True)
        return _Fallback(provider_id)


class Pricer:
    """Prices records in place. Thread-safe: the cache is only ever replaced or extended with complete entries."""

    def __init__(self, *, cache_size: int = 16_384) -> None:
        self._cache: dict[tuple[str, str, str], _Resolved] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.price_version: str = PRICE_VERSION

    def _resolved(self, provider: str, model: str, timestamp: datetime) -> _Resolved:
        utc = timestamp.astimezone(timezone.utc)
        key = (provider, model, utc.strftime("%Y-%m-%d"))
        try:
            return self._cache[key]
        except KeyError:
            pass
        resolved = _resolve(canonical_provider(provider), model, datetime.combine(utc.date(), _MIDNIGHT))
        with self._lock:
            if len(self._cache) >= self._cache_size:
                # Model names come from spans: bound the memory a stream of random names can take.
                self._cache.clear()
            self._cache[key] = resolved
        return resolved

    def quote(
        self,
        provider: str,
        model: str,
        timestamp: datetime,
        *,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
    ) -> Quote | None:
        """The list price, or None when the catalog cannot price this call (unknown model, inconsistent usage)."""
        resolved = self._resolved(provider, model, timestamp)
        if resolved is None:
            return None
        if isinstance(resolved, _Piecewise):
            uncached = input_tokens - cached_input_tokens - cache_creation_input_tokens
            if uncached < 0 or output_tokens < 0 or cached_input_tokens < 0 or cache_creation_input_tokens < 0:
                return None  # input is inclusive of cache: more cached than input is not a valid usage
            piece = resolved.piece(input_tokens)
            cost = (
                piece.base
                + piece.uncached_input * uncached
                + piece.cache_read * cached_input_tokens
                + piece.cache_write * cache_creation_input_tokens
                + piece.output * output_tokens
            )
            return Quote(cost, True)
        try:
            result = calc_price(
                _usage(input_tokens, cached_input_tokens, cache_creation_input_tokens, output_tokens),
                model,
                provider_id=resolved.provider_id,
                genai_request_timestamp=timestamp,
            )
        except (LookupError, ValueError):
            return None
        return Quote(result.total_price, False)

    def price(self, record: UsageRecord) -> bool:
        """Sets market/total cost and price status; returns whether the record was priced.

        Never raises: a record that cannot be priced is kept with NULL costs and ``unpriced``, so every report
        counts it instead of showing $0."""
        if record.price_version == USAGE_MISSING:
            record.market_cost = record.total_cost = None
            record.price_status = UNPRICED
            return False
        try:
            quote = self.quote(
                record.provider,
                record.model,
                record.timestamp,
                input_tokens=record.input_tokens,
                output_tokens=record.output_tokens,
                cached_input_tokens=record.cached_input_tokens,
                cache_creation_input_tokens=record.cache_creation_input_tokens,
            )
        except Exception:
            log.exception("pricing failed for %s/%s", record.provider, record.model)
            quote = None
        record.price_version = self.price_version
        if quote is None:
            record.market_cost = record.total_cost = None
            record.price_status = UNPRICED
            return False
        record.market_cost = quote.market_cost
        # What this organisation pays: a BYOK call is billed to the customer's own key.
        record.total_cost = _ZERO if record.credential_type == "byok" else quote.market_cost
        record.price_status = PRICED
        return True

    def price_all(self, records: Iterable[UsageRecord]) -> int:
        """Prices every record; returns how many stayed unpriced."""
        unpriced = 0
        for record in records:
            if not self.price(record):
                unpriced += 1
        return unpriced
