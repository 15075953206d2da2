"""What a usage record costs, from the ``genai-prices`` catalog and the organisation's overrides.

Speed. ``genai_prices.calc_price`` runs at ~6k calls/s, slower than the receiver ingests. A flat price is linear in the
token counts we record, and a tiered price is linear within each tier (the library picks one tier for all tokens from
the inclusive input count). So a price is resolved once per (provider, model, UTC day, service tier): the library itself
prices a few probe usages per tier (through the very ``ModelInfo.calc_price`` that ``calc_price`` ends in, price context
included), and the per-record cost is plain arithmetic on those coefficients: integers in pico-dollars when every
coefficient is a whole number of them (the catalog's per-million prices have at most 6 decimals, so nearly always:
``price_columns``, the receiver's batch path), ``Decimal`` otherwise (``price``). The result is exact (no rounding at 28
digits for counts below 1e9), and ``tests/test_pricing_catalog.py`` proves equality with ``calc_price`` for every model
in the catalog, and of the batch path with ``price`` record by record. What is not piecewise linear (time-of-day prices,
a billed minimum) and records with audio tokens (whose valid combinations depend on which units a model prices) go to
the library for every record.

Names. A provider or model name the catalog does not know as it arrived is mapped by ``model_names`` (data in
``model_names.toml``) and the overrides file's aliases; the match is cached per (provider, model).

Two costs. ``market_cost`` is the list price (the catalog's, or a custom model's from the overrides file when the
catalog lacks the model); ``total_cost`` is what the organisation pays: the first matching override rule for system
credentials, the BYOK policy (0 by default) for keys customers brought. Nothing priceable is ever a silent $0: a
record the catalog cannot price keeps NULL costs and ``price_status = unpriced``; a call whose response carried
no usage is ``no_usage``, also with NULL costs, and no price version (nothing priced it).

Semantics. Input tokens are inclusive (cache reads and writes are part of them), output includes reasoning. Record
fields the schema has and ``price`` reads when the record type has them (a reprice row may lack older ones):
``service_tier`` (batch / flex / priority -> the catalog's ``price_context``), ``cache_creation_1h_input_tokens`` (the
part of the cache writes kept for 1 hour, priced at the catalog's 1-hour rate where it has one), ``input_audio_tokens``,
``cached_audio_input_tokens`` and ``output_audio_tokens`` (parts of input, cache reads and output).
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Final

import genai_prices
from genai_prices import Usage, calc_price
from genai_prices import data_snapshot as _snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices, TimeOfDateConstraint
from tokentrail.processor import environment
from tokentrail.processor.pricing.model_names import (
    PROVIDER_IDS,
    Candidate,
    candidates,
    canonical_provider,
    price_context,
)
from tokentrail.processor.pricing.overrides import (
    BYOK_LIST,
    NO_OVERRIDES,
    PRICING_ENV,
    CustomModel,
    Overrides,
    Rule,
    load_overrides,
)
from tokentrail.processor.schema import (
    MAX_COST_PICOS,
    NO_USAGE,
    PICO_PER_USD,
    PRICED,
    UNPRICED,
    UsageColumns,
    UsageRecord,
    to_picos,
)

__all__ = [
    "AUTO_UPDATE_ENV",
    "OPTIONAL_FIELDS",
    "PRICE_VERSION",
    "PRICING_ENV",
    "PROVIDER_IDS",
    "USAGE_MISSING",
    "NameMatch",
    "is_no_usage",
    "Pricer",
    "Quote",
    "canonical_provider",
    "catalog_knows",
    "catalog_model_ids",
    "catalog_price",
    "catalog_provider_ids",
    "load_overrides",
    "resolve_name",
    "start_auto_update",
    "stop_auto_update",
    "usage_of",
]

log = logging.getLogger(__name__)

AUTO_UPDATE_ENV: Final = environment.PRICES_AUTO_UPDATE
PRICE_VERSION: Final = f"genai-prices {genai_prices.__version__}"

# How records whose response carried no usage at all were marked before ``price_status = no_usage`` existed (in
# ``price_version``). Such stored records are read as ``no_usage``; nothing writes the marker any more.
USAGE_MISSING: Final = "usage-missing"

# Record fields the pricer uses when the record type has them (schema.py may add them; see the module docstring).
OPTIONAL_FIELDS: Final = (
    "service_tier",
    "cache_creation_1h_input_tokens",
    "input_audio_tokens",
    "cached_audio_input_tokens",
    "output_audio_tokens",
)

_UTC: Final = UTC
_MIDNIGHT: Final = time(0, tzinfo=_UTC)
_ZERO: Final = Decimal(0)
_EPOCH_DAY: Final = date(1970, 1, 1)
_US_PER_DAY: Final = 86_400_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=_UTC)
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
)


def usage_of(
    input_tokens: int,
    cached_input_tokens: int = 0,
    cache_creation_input_tokens: int = 0,
    output_tokens: int = 0,
    cache_creation_1h_input_tokens: int = 0,
    input_audio_tokens: int = 0,
    cached_audio_input_tokens: int = 0,
    output_audio_tokens: int = 0,
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
    cache_creation_1h_input_tokens: int = 0,
    input_audio_tokens: int = 0,
    cached_audio_input_tokens: int = 0,
    output_audio_tokens: int = 0,
    service_tier: str | None = None,
) -> Decimal:
    """The library's own answer for this exact name (slow path, and the reference the fast path is tested against).

    Raises ``LookupError`` for an unknown provider or model and ``ValueError`` for inconsistent usage."""
    result = calc_price(
        usage_of(
            input_tokens,
            cached_input_tokens,
            cache_creation_input_tokens,
            output_tokens,
            cache_creation_1h_input_tokens,
            input_audio_tokens,
            cached_audio_input_tokens,
            output_audio_tokens,
        ),
        model,
        provider_id=canonical_provider(provider),
        genai_request_timestamp=timestamp,
        price_context=price_context(service_tier),
    )
    return result.total_price


# -- names -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameMatch:
    """The catalog model a (provider, model) name was priced as, and how it was found."""

    provider: Provider
    model: ModelInfo
    ref: Candidate  # the name looked up (the one the catalog knew)

    @property
    def via(self) -> tuple[str, ...]:
        return self.ref.via


def _lookup(snapshot: Any, provider_id: str, model: str) -> tuple[Provider, ModelInfo] | None:
    try:
        return snapshot.find_provider_model(model, None, provider_id, None)
    except LookupError:
        return None


def resolve_name(
    provider: str, model: str, aliases: Mapping[tuple[str, str], tuple[str, str]] | None = None
) -> NameMatch | None:
    """The catalog model for a name as it arrived (``provider`` canonical or not), or None."""
    snapshot = _snapshot.get_snapshot()
    provider = canonical_provider(provider)
    alias = aliases.get((provider, model.lower())) if aliases else None
    for candidate in candidates(provider, model, alias=alias):
        found = _lookup(snapshot, candidate.provider, candidate.model)
        if found is not None:
            return NameMatch(found[0], found[1], candidate)
    return None


def catalog_knows(provider: str, model: str, aliases: Mapping[tuple[str, str], tuple[str, str]]) -> bool:
    return resolve_name(provider, model, aliases) is not None


def catalog_provider_ids() -> set[str]:
    return {p.id for p in _snapshot.get_snapshot().providers}


def catalog_model_ids(provider: str | None) -> list[str]:
    """Lowercased model ids of one catalog provider (with the providers it falls back to), or of all."""
    providers = _snapshot.get_snapshot().providers
    if provider is None:
        return [m.id.lower() for p in providers for m in p.models]
    by_id = {p.id: p for p in providers}
    chosen = by_id.get(provider)
    if chosen is None:
        return []
    ids = [m.id.lower() for m in chosen.models]
    for fallback in chosen.fallback_model_providers or ():
        if fallback in by_id:
            ids.extend(m.id.lower() for m in by_id[fallback].models)
    return ids


# -- resolved prices -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Linear:
    """One tier as per-token rates: cost = base + uncached*in + read*cr + write*(cw - w1h) + write_1h*w1h + out*o."""

    base: Decimal
    uncached_input: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    output: Decimal


@dataclass(frozen=True, slots=True)
class _Piecewise:
    """``pieces[k]`` applies when the inclusive input count exceeds exactly k of ``starts`` (the library's
    "cliff" rule: crossing a tier start re-prices every token)."""

    starts: tuple[int, ...]
    pieces: tuple[_Linear, ...]

    def piece(self, input_tokens: int) -> _Linear:
        return self.pieces[bisect.bisect_left(self.starts, input_tokens)] if self.starts else self.pieces[0]


# Entry kinds
_UNPRICED: Final = 0
_FAST: Final = 1  # piecewise linear coefficients
_LIBRARY: Final = 2  # the library per record
_CUSTOM: Final = 3  # a custom model's explicit prices (overrides file)


@dataclass(slots=True)
class _Entry:
    """Everything needed to price the records of one (provider, model, UTC day, service tier)."""

    kind: int
    match: NameMatch | None = None
    piecewise: _Piecewise | None = None
    context: Mapping[str, str] | None = None
    custom: CustomModel | None = None
    rule: Rule | None = None
    reason: str | None = None  # why a record is unpriced
    # The piecewise coefficients in integer pico-dollars per token, when every one of them is a whole number of
    # pico-dollars (the catalog's per-million prices have at most 6 decimals): costs are then integer arithmetic.
    picos: tuple[tuple[int, ...], tuple[tuple[int, int, int, int, int, int], ...]] | None = None


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


def _effective_price(match: NameMatch, when: datetime, context: Mapping[str, str] | None) -> ModelPrice:
    """The ModelPrice the library would use (it ignores the price context for a fallback provider's model)."""
    if context and not any(match.model is m for m in match.provider.models):
        return match.model.get_prices(when)
    return match.model.get_prices(when, context)


def _tier_starts(price: ModelPrice) -> tuple[int, ...]:
    starts = {t.start for v in price.__dict__.values() if isinstance(v, TieredPrices) for t in v.tiers}
    return tuple(sorted(starts))


def _library_cost(match: NameMatch, usage: Usage, when: datetime, context: Mapping[str, str] | None) -> Decimal:
    return match.model.calc_price(usage, match.provider, genai_request_timestamp=when, price_context=context).total_price


def _probe_piece(match: NameMatch, when: datetime, context: Mapping[str, str] | None, low: int) -> _Linear:
    """Rates of the tier whose inputs start at ``low`` (probes use ``low`` and ``low + 1`` input tokens)."""

    def f(i: int, cr: int, cw: int, w1h: int, o: int) -> Decimal:
        return _library_cost(match, usage_of(i, cr, cw, o, w1h), when, context)

    at_low = f(low, 0, 0, 0, 0)
    uncached = f(low + 1, 0, 0, 0, 0) - at_low
    return _Linear(
        base=at_low - uncached * low,
        uncached_input=uncached,
        cache_read=f(low + 1, 1, 0, 0, 0) - at_low,
        cache_write=f(low + 1, 0, 1, 0, 0) - at_low,
        cache_write_1h=f(low + 1, 0, 1, 1, 0) - at_low,
        output=f(low, 0, 0, 0, 1) - at_low,
    )


def _catalog_entry(match: NameMatch, day: date, context: Mapping[str, str] | None) -> _Entry:
    day_start = datetime.combine(day, _MIDNIGHT)
    try:
        price = _effective_price(match, day_start, context)
        keys = [k for k, v in price.__dict__.items() if v is not None and not k.startswith("_")]
        if keys and not any(k in _RECORDED_PRICE_KEYS for k in keys):
            return _Entry(
                _UNPRICED,
                match=match,
                reason=f"the catalog prices {match.provider.id}/{match.model.id} only per {', '.join(keys)}, "
                "which usage records do not carry",
            )
        if not _is_piecewise_linear(match.model, match.provider):
            return _Entry(_LIBRARY, match=match, context=context)
        starts = _tier_starts(price)
        # Tier k covers inputs in (starts[k-1], starts[k]]; its probes need two input counts inside it.
        lows = (0, *(s + 1 for s in starts))
        highs = (*starts, None)
        if any(hi is not None and lo + 1 > hi for lo, hi in zip(lows, highs)):
            return _Entry(_LIBRARY, match=match, context=context)
        pieces = tuple(_probe_piece(match, day_start, context, lo) for lo in lows)
        return _Entry(
            _FAST, match=match, piecewise=_Piecewise(starts, pieces), context=context, picos=_pico_pieces(starts, pieces)
        )
    except Exception:  # a catalog entry the probes cannot price: the library decides per record
        log.debug("price of %s/%s not linear; using the library per record", match.provider.id, match.model.id,
                  exc_info=True)
        return _Entry(_LIBRARY, match=match, context=context)


def _pico_pieces(
    starts: tuple[int, ...], pieces: tuple[_Linear, ...]
) -> tuple[tuple[int, ...], tuple[tuple[int, int, int, int, int, int], ...]] | None:
    out = []
    for piece in pieces:
        coefficients = []
        for value in (piece.base, piece.uncached_input, piece.cache_read, piece.cache_write, piece.cache_write_1h,
                      piece.output):
            scaled = value * PICO_PER_USD
            if scaled != scaled.to_integral_value():
                return None  # a rate below a pico-dollar per token: the Decimal path keeps it exact
            coefficients.append(int(scaled))
        out.append(tuple(coefficients))
    return starts, tuple(out)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Quote:
    """The list price of one call, as the catalog (or a custom model) states it."""

    market_cost: Decimal
    fast: bool  # True when computed from resolved coefficients, False when by the library


@dataclass(frozen=True, slots=True)
class _Counts:
    input: int
    cached: int
    write: int
    write_1h: int
    output: int
    audio_in: int = 0
    audio_cached: int = 0
    audio_out: int = 0

    def valid(self) -> bool:
        """Inclusive input: cache reads and writes are inside it, 1-hour writes inside the writes."""
        return (
            min(self.input, self.cached, self.write, self.write_1h, self.output) >= 0
            and self.cached + self.write <= self.input
            and self.write_1h <= self.write
            and min(self.audio_in, self.audio_cached, self.audio_out) >= 0
        )

    @property
    def audio(self) -> bool:
        return bool(self.audio_in or self.audio_cached or self.audio_out)

    def usage(self) -> Usage:
        return usage_of(
            self.input, self.cached, self.write, self.output, self.write_1h, self.audio_in, self.audio_cached,
            self.audio_out,
        )

    def components(self) -> tuple[int, int, int, int, int]:
        """(uncached input, cache reads, 5-minute writes, 1-hour writes, output), as explicit prices bill them."""
        return (self.input - self.cached - self.write, self.cached, self.write - self.write_1h, self.write_1h, self.output)


def _market(entry: _Entry, c: _Counts, when: datetime) -> tuple[Decimal, bool] | None:
    """The list price and whether the fast path produced it; None when unpriceable."""
    kind = entry.kind
    if kind == _FAST and not c.audio:
        if not c.valid():
            return None
        piece = entry.piecewise.piece(c.input)  # type: ignore[union-attr]
        write_5m = c.write - c.write_1h
        return (
            piece.base
            + piece.uncached_input * (c.input - c.cached - c.write)
            + piece.cache_read * c.cached
            + piece.cache_write * write_5m
            + piece.cache_write_1h * c.write_1h
            + piece.output * c.output
        ), True
    if kind == _FAST or kind == _LIBRARY:
        if not c.valid():
            return None
        try:
            return _library_cost(entry.match, c.usage(), when, entry.context), False  # type: ignore[arg-type]
        except (LookupError, ValueError):
            return None
    if kind == _CUSTOM:
        if not c.valid():
            return None
        return entry.custom.rates.cost(*c.components()), True  # type: ignore[union-attr]
    return None


class _Optional:
    """Which optional record fields a record type has (looked up once per type, not per record)."""

    __slots__ = ("tier", "write_1h", "audio_in", "audio_cached", "audio_out")

    def __init__(self, cls: type) -> None:
        self.tier = hasattr(cls, "service_tier")
        self.write_1h = hasattr(cls, "cache_creation_1h_input_tokens")
        self.audio_in = hasattr(cls, "input_audio_tokens")
        self.audio_cached = hasattr(cls, "cached_audio_input_tokens")
        self.audio_out = hasattr(cls, "output_audio_tokens")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class Pricer:
    """Prices records in place. Thread-safe: caches are only ever replaced or extended with complete entries.

    ``overrides``: an ``Overrides`` (``NO_OVERRIDES`` for none), a path to load, or None to read the path from
    ``TOKENTRAIL_PRICING`` (unset: no overrides). A bad file raises ``PricingConfigError`` here, at start.
    ``auto_update``: start the catalog's background updater (``TOKENTRAIL_PRICES_AUTO_UPDATE`` when None)."""

    def __init__(
        self,
        *,
        overrides: Overrides | str | os.PathLike[str] | None = None,
        auto_update: bool | None = None,
        cache_size: int = 16_384,
    ) -> None:
        if overrides is None:
            path = os.environ.get(PRICING_ENV, "").strip()
            overrides = load_overrides(path) if path else NO_OVERRIDES
        elif not isinstance(overrides, Overrides):
            overrides = load_overrides(Path(overrides))
        self.overrides: Overrides = overrides
        self._byok_list = overrides.byok == BYOK_LIST
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._optional: dict[type, _Optional] = {}
        if auto_update if auto_update is not None else _truthy(os.environ.get(AUTO_UPDATE_ENV)):
            start_auto_update()
        self._reset(_snapshot.get_snapshot())

    # -- catalog snapshot ------------------------------------------------------------------------------------------

    def _reset(self, snapshot: Any) -> None:
        """A new catalog snapshot (first use, or the auto-updater fetched one): forget everything resolved."""
        with self._lock:
            self._snapshot = snapshot
            self._names: dict[tuple[str, str], NameMatch | None] = {}
            self._entries: dict[tuple[str, str, date, str | None], _Entry] = {}
            version = PRICE_VERSION
            if getattr(snapshot, "from_auto_update", False):
                version += f" catalog={snapshot.timestamp:%Y-%m-%dT%H:%M:%S}"
            if self.overrides.version_tag:
                version += f" {self.overrides.version_tag}"
            self.price_version: str = version

    def _check_snapshot(self) -> None:
        snapshot = _snapshot.get_snapshot()
        if snapshot is not self._snapshot:
            log.info("price catalog changed; prices are resolved again (price_version follows)")
            self._reset(snapshot)

    # -- resolution ------------------------------------------------------------------------------------------------

    def match(self, provider: str, model: str) -> NameMatch | None:
        """The catalog model this name is priced as (cached per name)."""
        key = (provider, model)
        try:
            return self._names[key]
        except KeyError:
            pass
        found = resolve_name(provider, model, self.overrides.aliases)
        with self._lock:
            if len(self._names) >= self._cache_size:
                self._names.clear()  # model names come from spans: bound what a stream of random names can take
            self._names[key] = found
        return found

    def _entry(self, provider: str, model: str, day: date, tier: str | None) -> _Entry:
        key = (provider, model, day, tier)
        try:
            return self._entries[key]
        except KeyError:
            pass
        entry = self._make_entry(provider, model, day, tier)
        with self._lock:
            if len(self._entries) >= self._cache_size:
                self._entries.clear()
            self._entries[key] = entry
        return entry

    def _make_entry(self, provider: str, model: str, day: date, tier: str | None) -> _Entry:
        canonical = canonical_provider(provider)
        match = self.match(provider, model)
        names = [model.lower()]
        if match is not None:
            entry = _catalog_entry(match, day, price_context(tier))
            names += [match.ref.model.lower(), match.model.id.lower()]
        else:
            entry = _Entry(_UNPRICED, reason=f"the price catalog has no model {model!r} for provider {canonical!r}")
            alias = self.overrides.alias_for(canonical, model)
            tried = candidates(canonical, model, alias=alias)
            custom = self.overrides.custom_model_for(canonical, names, day)
            for c in tried:
                if custom is not None:
                    break
                custom = self.overrides.custom_model_for(c.provider, [c.model.lower()], day)
            if custom is not None:
                entry = _Entry(_CUSTOM, custom=custom)
        entry.rule = self.overrides.rule_for(canonical, dict.fromkeys(names), day)
        return entry

    # -- pricing ---------------------------------------------------------------------------------------------------

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
        cache_creation_1h_input_tokens: int = 0,
        input_audio_tokens: int = 0,
        cached_audio_input_tokens: int = 0,
        output_audio_tokens: int = 0,
        service_tier: str | None = None,
    ) -> Quote | None:
        """The list price, or None when it cannot be priced (unknown model, inconsistent usage)."""
        self._check_snapshot()
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=_UTC)  # as the library reads a naive timestamp: UTC
        entry = self._entry(provider, model, timestamp.astimezone(_UTC).date(), _tier_key(service_tier))
        counts = _Counts(
            input_tokens,
            cached_input_tokens,
            cache_creation_input_tokens,
            cache_creation_1h_input_tokens,
            output_tokens,
            input_audio_tokens,
            cached_audio_input_tokens,
            output_audio_tokens,
        )
        market = _market(entry, counts, timestamp)
        return None if market is None else Quote(*market)

    def price(self, record: UsageRecord) -> bool:
        """Sets market/total cost, price status and version; returns whether the record was priced.

        Never raises: a record that cannot be priced is kept with NULL costs and ``unpriced``, so every report
        counts it instead of showing $0."""
        self._check_snapshot()
        return self._price(record)

    def price_all(self, records: Iterable[UsageRecord]) -> int:
        """Prices every record; returns how many stayed unpriced."""
        self._check_snapshot()
        unpriced = 0
        price = self._price
        for record in records:
            if not price(record):
                unpriced += 1
        return unpriced

    def price_columns(self, columns: UsageColumns) -> int:
        """Prices every row of ``columns`` (``market_cost`` and ``total_cost`` in pico-dollars, ``price_status``,
        ``price_version``); returns how many stayed unpriced. The same prices as ``price`` gives each record: the
        common case (a piecewise-linear catalog price whose rates are whole pico-dollars) is integer arithmetic on
        coefficients resolved once per (provider, model, UTC day, service tier); everything else goes the way
        ``price`` goes and is converted at the end."""
        self._check_snapshot()
        n = len(columns)
        version = self.price_version
        market: list[int | None] = [None] * n
        total: list[int | None] = [None] * n
        status = [PRICED] * n
        versions: list[str | None] = [version] * n
        provider, model, timestamp, tier = columns["provider"], columns["model"], columns["timestamp"], columns["service_tier"]
        inp, cached, write, write_1h, out = (
            columns["input_tokens"],
            columns["cached_input_tokens"],
            columns["cache_creation_input_tokens"],
            columns["cache_creation_1h_input_tokens"],
            columns["output_tokens"],
        )
        audio_in, audio_out, credential, given = (
            columns["input_audio_tokens"],
            columns["output_audio_tokens"],
            columns["credential_type"],
            columns["price_status"],
        )
        byok_list = self._byok_list
        entries: dict[tuple[str, str, int, str | None], _Entry] = {}
        unpriced = 0
        bisect_left = bisect.bisect_left
        for i in range(n):
            if given[i] == NO_USAGE:
                status[i], versions[i] = NO_USAGE, None
                unpriced += 1
                continue
            key = (provider[i], model[i], timestamp[i] // _US_PER_DAY, tier[i])
            entry = entries.get(key)
            if entry is None:
                entry = entries[key] = self._entry(key[0], key[1], _EPOCH_DAY + timedelta(days=key[2]), _tier_key(key[3]))
            m: int | None = None
            picos = entry.picos
            c_in, c_read, c_write, c_1h, c_out = inp[i], cached[i], write[i], write_1h[i], out[i]
            if (
                picos is not None
                and not audio_in[i]
                and not audio_out[i]
                and c_read >= 0
                and c_write >= c_1h >= 0
                and c_read + c_write <= c_in
                and c_out >= 0
            ):
                starts, pieces = picos
                base, uncached, read, write5, write1, output = (
                    pieces[bisect_left(starts, c_in)] if starts else pieces[0]
                )
                m = (
                    base
                    + uncached * (c_in - c_read - c_write)
                    + read * c_read
                    + write5 * (c_write - c_1h)
                    + write1 * c_1h
                    + output * c_out
                )
                if credential[i] == "byok":
                    t = m if byok_list else 0
                elif entry.rule is None:
                    t = m
                elif entry.rule.factor is not None:
                    t = int((Decimal(m) * entry.rule.factor).to_integral_value(ROUND_HALF_EVEN))
                else:
                    counts = (c_in - c_read - c_write, c_read, c_write - c_1h, c_1h, c_out)
                    t = to_picos(entry.rule.total(Decimal(m).scaleb(-12), counts))  # type: ignore[assignment]
            else:
                priced = self._price_row(entry, columns, i)
                if priced is not None:
                    m, t = priced
            if m is None or not (-MAX_COST_PICOS < m < MAX_COST_PICOS) or not (-MAX_COST_PICOS < t < MAX_COST_PICOS):
                if m is not None:
                    log.warning("cost of a %s/%s call exceeds the cost column: unpriced", provider[i], model[i])
                status[i] = UNPRICED
                unpriced += 1
                continue
            market[i], total[i] = m, t
        columns["market_cost"], columns["total_cost"] = market, total
        columns["price_status"], columns["price_version"] = status, versions
        return unpriced

    def _price_row(self, entry: _Entry, columns: UsageColumns, i: int) -> tuple[int, int] | None:
        """One row the way ``_price`` prices a record (the library, custom models, audio, sub-pico rates)."""
        try:
            when = _EPOCH + timedelta(microseconds=columns["timestamp"][i])
            counts = _Counts(
                columns["input_tokens"][i],
                columns["cached_input_tokens"][i],
                columns["cache_creation_input_tokens"][i],
                columns["cache_creation_1h_input_tokens"][i],
                columns["output_tokens"][i],
                columns["input_audio_tokens"][i],
                0,
                columns["output_audio_tokens"][i],
            )
            market = _market(entry, counts, when)
            if market is None:
                return None
            if columns["credential_type"][i] == "byok":
                total = market[0] if self._byok_list else _ZERO
            elif entry.rule is not None:
                total = entry.rule.total(market[0], counts.components())
            else:
                total = market[0]
            return to_picos(market[0]), to_picos(total)  # type: ignore[return-value]
        except Exception:
            log.exception("pricing failed for %s/%s", columns["provider"][i], columns["model"][i])
            return None

    def _price(self, record: Any) -> bool:
        if record.price_status == NO_USAGE or record.price_version == USAGE_MISSING:
            # The response carried no usage: the call was billed, its cost is unknown. Never priced (zero tokens
            # would be a silent $0), so no price version produced anything.
            record.market_cost = record.total_cost = None
            record.price_status = NO_USAGE
            record.price_version = None
            return False
        try:
            cls = type(record)
            opt = self._optional.get(cls)
            if opt is None:
                opt = self._optional[cls] = _Optional(cls)
            ts = record.timestamp
            if ts.tzinfo is not _UTC:
                ts = ts.replace(tzinfo=_UTC) if ts.tzinfo is None else ts.astimezone(_UTC)
            day = ts.date()
            tier = _tier_key(record.service_tier) if opt.tier else None
            key = (record.provider, record.model, day, tier)
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entry(record.provider, record.model, day, tier)
            counts = _Counts(
                record.input_tokens,
                record.cached_input_tokens,
                record.cache_creation_input_tokens,
                (record.cache_creation_1h_input_tokens or 0) if opt.write_1h else 0,
                record.output_tokens,
                (record.input_audio_tokens or 0) if opt.audio_in else 0,
                (record.cached_audio_input_tokens or 0) if opt.audio_cached else 0,
                (record.output_audio_tokens or 0) if opt.audio_out else 0,
            )
            market = _market(entry, counts, ts)
            if market is None:
                total = None
            elif record.credential_type == "byok":
                # What this organisation pays: a BYOK call is billed to the customer's own key.
                total = market[0] if self._byok_list else _ZERO
            elif entry.rule is not None:
                total = entry.rule.total(market[0], counts.components())
            else:
                total = market[0]
        except Exception:
            log.exception("pricing failed for %s/%s", getattr(record, "provider", "?"), getattr(record, "model", "?"))
            market = total = None
        record.price_version = self.price_version
        if market is None:
            record.market_cost = record.total_cost = None
            record.price_status = UNPRICED
            return False
        record.market_cost = market[0]
        record.total_cost = total
        record.price_status = PRICED
        return True


def is_no_usage(price_status: str | None, price_version: str | None) -> bool:
    """A stored record of a call whose response carried no usage (``no_usage``, or the older marker)."""
    return price_status == NO_USAGE or price_version == USAGE_MISSING


# -- opt-in catalog updates -----------------------------------------------------------------------------------------

_update_lock = threading.Lock()
_updater: Any = None
_warned_offline = False
_quiet = threading.local()


class _QuietAfterFallback(logging.Filter):
    """The library logs "Successfully fetched ..." even when our fetch fell back: drop that one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_quiet, "skip_success", False) and record.getMessage().startswith("Successfully fetched"):
            _quiet.skip_success = False
            return False
        return True


def _updater_class() -> type:
    from genai_prices.update_prices import UpdatePrices

    class _FallbackUpdatePrices(UpdatePrices):  # type: ignore[misc]
        """The library's updater, except that a failed fetch keeps the prices in use (bundled or last fetched)
        and is reported once, not every interval."""

        def fetch(self) -> Any:
            global _warned_offline
            try:
                return super().fetch()
            except Exception as exc:
                if not _warned_offline:
                    _warned_offline = True
                    log.warning(
                        "price catalog update failed (%s: %s); using the %s price data (said once; retried every "
                        "%.0f s)",
                        type(exc).__name__,
                        exc,
                        "last fetched" if _snapshot.get_snapshot().from_auto_update else f"bundled {PRICE_VERSION}",
                        self.update_interval,
                    )
                _quiet.skip_success = True
                current = _snapshot.get_snapshot()
                return current if current.from_auto_update else None

    return _FallbackUpdatePrices


def start_auto_update(*, url: str | None = None, update_interval: float = 3600, wait: float | bool = False) -> Any:
    """Starts the catalog's background updater (idempotent); returns it. Prices never wait for it: until a fetch
    succeeds (and whenever one fails) the bundled or last fetched data stays in use, and ``Pricer`` re-resolves
    its prices when the data changes (``price_version`` then names the fetch time)."""
    global _updater
    with _update_lock:
        if _updater is None:
            logging.getLogger("genai-prices").addFilter(_QuietAfterFallback())
            kwargs: dict[str, Any] = {"update_interval": update_interval}
            if url is not None:
                kwargs["url"] = url
            _updater = _updater_class()(**kwargs)
            _updater.start()
            log.info("price catalog auto-update on (every %.0f s)", update_interval)
        updater = _updater
    if wait:
        try:
            updater.wait(30 if wait is True else wait)
        except Exception:  # reported once by fetch; prices go on with the data in use
            pass
    return updater


def stop_auto_update() -> None:
    """Stops the updater started by ``start_auto_update`` (fetched prices stay in use)."""
    global _updater
    with _update_lock:
        if _updater is not None:
            _updater.stop()
            _updater = None


def _tier_key(service_tier: str | None) -> str | None:
    """Only tiers that change the price context are part of a cache key (others price at standard rates)."""
    if not service_tier:
        return None
    key = service_tier.strip().lower()
    return key if price_context(key) is not None else None
