"""What a usage record costs, from the ``genai-prices`` catalog and the organisation's overrides.

Speed. ``genai_prices.calc_price`` per record is slower than the receiver ingests (docs/ARCHITECTURE.md, Performance:
``python -m benchmarks pricing_batch`` measures both). A flat price is linear in the token counts we record, and a
tiered price is linear within each tier (the library picks one tier for all tokens from the inclusive input count). So
a price is resolved once per (provider, model, UTC day, service tier): the library itself prices a few probe usages
per tier (through the very ``ModelInfo.calc_price`` that ``calc_price`` ends in, price context included), and the
per-record cost is plain arithmetic on those coefficients: integers in pico-dollars when every coefficient is a whole
number of them (the catalog's per-million prices have at most 6 decimals, so nearly always: ``price_columns``, the
receiver's batch path), ``Decimal`` otherwise (``price``). The result is exact (no rounding at 28 digits for counts
below 1e9), and ``tests/processor/pricing/test_catalog.py`` proves equality with ``calc_price`` for every model in the
catalog, and of the batch path with ``price`` record by record. What is not piecewise linear (time-of-day prices, a
billed minimum) and records with audio tokens (whose valid combinations depend on which units a model prices) go to
the library for every record. The resolution and the per-record arithmetic are ``pricing.resolved``; this module
caches them per key and applies the overrides.

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
``cached_audio_input_tokens`` and ``output_audio_tokens`` (parts of input, cache reads and output), and
``reasoning_tokens`` (the part of the output that is reasoning: the library's ``output_reasoning_tokens``, priced at the
catalog's reasoning rate, ``output_reasoning_mtok``, where it has one, e.g. perplexity ``sonar-deep-research``, and at
the output rate otherwise; explicit prices from the overrides file have no reasoning rate and bill it as output).
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Final

import genai_prices
from genai_prices import calc_price
from genai_prices import data_snapshot as _snapshot
from tokentrail.processor import environment
from tokentrail.processor.pricing.lookup import NameMatch, resolve_name
from tokentrail.processor.pricing.model_names import candidates, canonical_provider, price_context
from tokentrail.processor.pricing.overrides import (
    BYOK_LIST,
    NO_OVERRIDES,
    Overrides,
    load_overrides,
)
from tokentrail.processor.pricing.resolved import (
    KIND_CUSTOM,
    KIND_UNPRICED,
    Counts,
    Entry,
    catalog_entry,
    list_price,
    tier_key,
    usage_of,
)
from tokentrail.processor.pricing.updates import start_auto_update
from tokentrail.processor.schema import (
    MAX_COST_PICOS,
    NO_USAGE,
    PRICED,
    UNPRICED,
    UsageColumns,
    UsageRecord,
    to_picos,
)

__all__ = [
    "OPTIONAL_FIELDS",
    "PRICE_VERSION",
    "USAGE_MISSING",
    "Pricer",
    "Quote",
    "catalog_price",
    "is_no_usage",
]

log = logging.getLogger(__name__)

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
    "reasoning_tokens",
)

_UTC: Final = UTC
_MIDNIGHT: Final = time(0, tzinfo=_UTC)
_ZERO: Final = Decimal(0)
_EPOCH_DAY: Final = date(1970, 1, 1)
_US_PER_DAY: Final = 86_400_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=_UTC)


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
    reasoning_tokens: int = 0,
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
            reasoning_tokens,
        ),
        model,
        provider_id=canonical_provider(provider),
        genai_request_timestamp=timestamp,
        price_context=price_context(service_tier),
    )
    return result.total_price


@dataclass(frozen=True, slots=True)
class Quote:
    """The list price of one call, as the catalog (or a custom model) states it."""

    market_cost: Decimal
    fast: bool  # True when computed from resolved coefficients, False when by the library



class _Optional:
    """Which optional record fields a record type has (looked up once per type, not per record)."""

    __slots__ = ("tier", "write_1h", "audio_in", "audio_cached", "audio_out", "reasoning")

    def __init__(self, cls: type) -> None:
        self.tier = hasattr(cls, "service_tier")
        self.write_1h = hasattr(cls, "cache_creation_1h_input_tokens")
        self.audio_in = hasattr(cls, "input_audio_tokens")
        self.audio_cached = hasattr(cls, "cached_audio_input_tokens")
        self.audio_out = hasattr(cls, "output_audio_tokens")
        self.reasoning = hasattr(cls, "reasoning_tokens")


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
            path = os.environ.get(environment.PRICING, "").strip()
            overrides = load_overrides(path) if path else NO_OVERRIDES
        elif not isinstance(overrides, Overrides):
            overrides = load_overrides(Path(overrides))
        self.overrides: Overrides = overrides
        self._byok_list = overrides.byok == BYOK_LIST
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._optional: dict[type, _Optional] = {}
        if auto_update if auto_update is not None else _truthy(os.environ.get(environment.PRICES_AUTO_UPDATE)):
            start_auto_update()
        self._reset(_snapshot.get_snapshot())

    # -- catalog snapshot ------------------------------------------------------------------------------------------

    def _reset(self, snapshot: Any) -> None:
        """A new catalog snapshot (first use, or the auto-updater fetched one): forget everything resolved."""
        with self._lock:
            self._snapshot = snapshot
            self._names: dict[tuple[str, str], NameMatch | None] = {}
            self._entries: dict[tuple[str, str, date, str | None], Entry] = {}
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

    def resolve(self, provider: str, model: str, day: date, service_tier: str | None = None) -> Entry:
        """The resolved price that records of this provider, model, UTC day and tier get (``explain`` shows it)."""
        self._check_snapshot()
        return self._entry(provider, model, day, tier_key(service_tier))

    def _entry(self, provider: str, model: str, day: date, tier: str | None) -> Entry:
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

    def _make_entry(self, provider: str, model: str, day: date, tier: str | None) -> Entry:
        canonical = canonical_provider(provider)
        match = self.match(provider, model)
        names = [model.lower()]
        if match is not None:
            entry = catalog_entry(match, day, price_context(tier))
            names += [match.ref.model.lower(), match.model.id.lower()]
        else:
            entry = Entry(KIND_UNPRICED, reason=f"the price catalog has no model {model!r} for provider {canonical!r}")
            alias = self.overrides.alias_for(canonical, model)
            tried = candidates(canonical, model, alias=alias)
            custom = self.overrides.custom_model_for(canonical, names, day)
            for c in tried:
                if custom is not None:
                    break
                custom = self.overrides.custom_model_for(c.provider, [c.model.lower()], day)
            if custom is not None:
                entry = Entry(KIND_CUSTOM, custom=custom)
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
        reasoning_tokens: int = 0,
        service_tier: str | None = None,
    ) -> Quote | None:
        """The list price, or None when it cannot be priced (unknown model, inconsistent usage)."""
        self._check_snapshot()
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=_UTC)  # as the library reads a naive timestamp: UTC
        entry = self._entry(provider, model, timestamp.astimezone(_UTC).date(), tier_key(service_tier))
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
        market = list_price(entry, counts, timestamp)
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
        audio_in, audio_out, reasoning, credential, given = (
            columns["input_audio_tokens"],
            columns["output_audio_tokens"],
            columns["reasoning_tokens"],
            columns["credential_type"],
            columns["price_status"],
        )
        byok_list = self._byok_list
        entries: dict[tuple[str, str, int, str | None], Entry] = {}
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
                entry = entries[key] = self._entry(key[0], key[1], _EPOCH_DAY + timedelta(days=key[2]), tier_key(key[3]))
            m: int | None = None
            picos = entry.picos
            c_in, c_read, c_write, c_1h, c_out, c_r = inp[i], cached[i], write[i], write_1h[i], out[i], reasoning[i]
            if (
                picos is not None
                and not audio_in[i]
                and not audio_out[i]
                and c_read >= 0
                and c_write >= c_1h >= 0
                and c_read + c_write <= c_in
                and c_out >= 0
                and c_r >= 0
                and (c_r <= c_out or not entry.reasoning)
            ):
                starts, pieces = picos
                base, uncached, read, write5, write1, output, reason = (
                    pieces[bisect_left(starts, c_in)] if starts else pieces[0]
                )
                m = (
                    base
                    + uncached * (c_in - c_read - c_write)
                    + read * c_read
                    + write5 * (c_write - c_1h)
                    + write1 * c_1h
                    + output * (c_out - c_r)
                    + reason * c_r
                )
                if credential[i] == "byok":
                    t = m if byok_list else 0
                elif entry.rule is None:
                    t = m
                elif entry.rule.factor is not None:
                    t = int((Decimal(m) * entry.rule.factor).to_integral_value(ROUND_HALF_EVEN))
                else:
                    counts = (c_in - c_read - c_write, c_read, c_write - c_1h, c_1h, c_out)
                    t = to_picos(entry.rule.total(Decimal(m).scaleb(-12), counts))
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

    def _price_row(self, entry: Entry, columns: UsageColumns, i: int) -> tuple[int, int] | None:
        """One row the way ``_price`` prices a record (the library, custom models, audio, sub-pico rates)."""
        try:
            when = _EPOCH + timedelta(microseconds=columns["timestamp"][i])
            counts = Counts(
                columns["input_tokens"][i],
                columns["cached_input_tokens"][i],
                columns["cache_creation_input_tokens"][i],
                columns["cache_creation_1h_input_tokens"][i],
                columns["output_tokens"][i],
                columns["input_audio_tokens"][i],
                0,
                columns["output_audio_tokens"][i],
                columns["reasoning_tokens"][i],
            )
            market = list_price(entry, counts, when)
            if market is None:
                return None
            if columns["credential_type"][i] == "byok":
                total = market[0] if self._byok_list else _ZERO
            elif entry.rule is not None:
                total = entry.rule.total(market[0], counts.components())
            else:
                total = market[0]
            return to_picos(market[0]), to_picos(total)  # type: ignore[return-value]  # not None: both are Decimals
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
            tier = tier_key(record.service_tier) if opt.tier else None
            key = (record.provider, record.model, day, tier)
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entry(record.provider, record.model, day, tier)
            counts = Counts(
                record.input_tokens,
                record.cached_input_tokens,
                record.cache_creation_input_tokens,
                (record.cache_creation_1h_input_tokens or 0) if opt.write_1h else 0,
                record.output_tokens,
                (record.input_audio_tokens or 0) if opt.audio_in else 0,
                (record.cached_audio_input_tokens or 0) if opt.audio_cached else 0,
                (record.output_audio_tokens or 0) if opt.audio_out else 0,
                (record.reasoning_tokens or 0) if opt.reasoning else 0,
            )
            market = list_price(entry, counts, ts)
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
