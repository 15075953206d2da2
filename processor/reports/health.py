"""Whether a deployment works, judged from what it stored: the facts ``tokentrail doctor`` reads from the dataset,
the data directory's filesystem and the price catalog, each turned into one ``Check`` with a status and, when it is
not OK, the fix in plain words.

The receiver's status file and its port belong to ``ingest``, which reports may not import: ``cli.doctor`` checks
those and builds the same ``Check``. Every query goes through ``dataset.scan_dataset`` (the reports' files, pruning
and retry); costs come back exact.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from genai_prices import data_snapshot as _snapshot
from tokentrail.instrumentation.semconv import API_CHAT_COMPLETIONS, ENV_STREAM_USAGE, ENV_SYSTEM_KEYS
from tokentrail.processor import environment
from tokentrail.processor.pricing.catalog import PRICE_VERSION, USAGE_MISSING, Pricer
from tokentrail.processor.pricing.overrides import PricingConfigError
from tokentrail.processor.pricing.resolved import KIND_UNPRICED
from tokentrail.processor.reports.dataset import (
    USAGE_DIR,
    USAGE_SOURCE,
    NoDatasetError,
    exact_cost,
    require_dataset,
    scan_dataset,
)
from tokentrail.processor.schema import NO_USAGE, PRICED, UNPRICED
from tokentrail.processor.storage.dataset import dataset_days

__all__ = [
    "DEFAULT_CATALOG_MAX_AGE_DAYS",
    "DEFAULT_HOURS",
    "DEFAULT_LOOKBACK_DAYS",
    "DEFAULT_MIN_FREE_PERCENT",
    "FAIL",
    "OK",
    "SKIP",
    "WARN",
    "Check",
    "bundled_catalog_date",
    "UsageFacts",
    "Window",
    "byok_check",
    "catalog_check",
    "clock_check",
    "dataset_check",
    "disk_check",
    "load_pricer",
    "no_usage_check",
    "services_check",
    "skipped",
    "unpriced_check",
    "usage_facts",
    "worst",
]

OK: Final = "OK"
WARN: Final = "WARN"
FAIL: Final = "FAIL"
SKIP: Final = "SKIP"  # a check that cannot be made (no dataset to read): said, never shown as OK

DEFAULT_HOURS: Final = 24
DEFAULT_LOOKBACK_DAYS: Final = 7
DEFAULT_MIN_FREE_PERCENT: Final = 10
DEFAULT_CATALOG_MAX_AGE_DAYS: Final = 60
CLOCK_TOLERANCE: Final = timedelta(minutes=5)  # a host's clock this far ahead is skew, not the time an Export takes
# Shares from which a check warns, in percent of the window's calls (BYOK also of its market cost).
UNPRICED_WARN_PERCENT: Final = 1
NO_USAGE_WARN_PERCENT: Final = 1
BYOK_WARN_PERCENT: Final = 50
TOP: Final = 5  # how many (provider, model) pairs or services a line names
_US_PER_SECOND: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the doctor's answer: ``fix`` says what to do when ``status`` is not OK."""

    name: str
    status: str
    summary: str
    fix: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary, "fix": self.fix,
                "details": self.details}


def skipped(name: str, why: str) -> Check:
    return Check(name, SKIP, f"not checked: {why}")


@dataclass(frozen=True, slots=True)
class Window:
    """The period judged: the last ``hours`` before ``now`` for shares and liveness, the last ``lookback_days`` to
    find services that sent before and stopped."""

    now: datetime
    hours: int = DEFAULT_HOURS
    lookback_days: int = DEFAULT_LOOKBACK_DAYS

    @property
    def start(self) -> datetime:
        return self.now - timedelta(hours=self.hours)

    @property
    def late(self) -> datetime:
        """The newest timestamp that is not in the future (clock skew beyond the tolerance)."""
        return self.now + CLOCK_TOLERANCE

    @property
    def lookback(self) -> datetime:
        return self.now - timedelta(days=self.lookback_days)


@dataclass(frozen=True, slots=True)
class ServiceFacts:
    service: str | None
    recent: int  # calls in the window
    newest: datetime | None  # newest call not in the future
    future: int  # calls dated after now + tolerance
    furthest: datetime | None


@dataclass(frozen=True, slots=True)
class CallGroup:
    service: str | None
    provider: str
    model: str
    api: str | None
    streamed: bool
    credential_type: str
    price_status: str  # legacy "usage-missing" records read as no_usage, as every report reads them
    requests: int
    market_cost: Decimal


@dataclass(frozen=True, slots=True)
class UsageFacts:
    """What the dataset says about the window."""

    services: tuple[ServiceFacts, ...]
    groups: tuple[CallGroup, ...]
    price_version: str | None  # of the newest priced call in the lookback: the catalog the receiver prices with

    @property
    def newest(self) -> datetime | None:
        times = [s.newest for s in self.services if s.newest is not None]
        return max(times) if times else None

    @property
    def requests(self) -> int:
        return sum(g.requests for g in self.groups)


def _us(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def _moment(us: int | None) -> datetime | None:
    return None if us is None else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def usage_facts(data_dir: str | os.PathLike[str], window: Window) -> UsageFacts:
    """Three queries over the dataset: calls per service (lookback, future included), calls per kind in the
    window, and the price version of the newest priced call."""
    bounds = {"start": _us(window.start), "late": _us(window.late), "lookback": _us(window.lookback)}
    _, service_rows = scan_dataset(
        data_dir, window.lookback.date(), date.max,
        "SELECT service, COUNT(*) FILTER (WHERE u >= $start AND u <= $late) AS recent, "
        "MAX(u) FILTER (WHERE u <= $late) AS newest, COUNT(*) FILTER (WHERE u > $late) AS future, "
        f'MAX(u) AS furthest FROM (SELECT epoch_us("timestamp") AS u, service FROM {USAGE_SOURCE}) AS r '
        "WHERE u >= $lookback GROUP BY service ORDER BY service NULLS LAST",
        bounds,
    )
    services = tuple(
        ServiceFacts(service, int(recent), _moment(newest), int(future), _moment(furthest))
        for service, recent, newest, future, furthest in service_rows
    )
    _, group_rows = scan_dataset(
        data_dir, window.start.date(), window.late.date(),
        "SELECT service, provider, model, api, streamed, credential_type, "
        "CASE WHEN price_version = $missing THEN $no_usage ELSE price_status END AS status, "
        f"COUNT(*) AS requests, SUM(market_cost) AS market_cost FROM {USAGE_SOURCE} "
        'WHERE epoch_us("timestamp") BETWEEN $start AND $late GROUP BY ALL',
        {"start": bounds["start"], "late": bounds["late"], "missing": USAGE_MISSING, "no_usage": NO_USAGE},
    )
    groups = tuple(
        CallGroup(service, provider, model, api, bool(streamed), credential_type, status, int(requests),
                  exact_cost(market_cost))
        for service, provider, model, api, streamed, credential_type, status, requests, market_cost in group_rows
    )
    _, version_rows = scan_dataset(
        data_dir, window.lookback.date(), window.late.date(),
        f"SELECT price_version FROM {USAGE_SOURCE} WHERE price_status = $priced AND price_version IS NOT NULL "
        'AND epoch_us("timestamp") BETWEEN $lookback AND $late ORDER BY "timestamp" DESC LIMIT 1',
        {"priced": PRICED, "lookback": bounds["lookback"], "late": bounds["late"]},
    )
    return UsageFacts(services, groups, version_rows[0][0] if version_rows else None)


# -- the checks ----------------------------------------------------------------------------------------------------


def _percent(part: int | Decimal, whole: int | Decimal) -> str:
    if not whole:
        return "0%"
    return f"{(Decimal(part) * 100 / Decimal(whole)).quantize(Decimal('0.1'))}%"


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{seconds // 86400} days"


def _ago(moment: datetime, now: datetime) -> str:
    return f"{_duration((now - moment).total_seconds())} ago"


def _usd(value: Decimal) -> str:
    """Every digit there is, and at least cents: $60.00, $0.000000000002 (never rounded)."""
    text = format(value.normalize(), "f")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _name(service: str | None) -> str:
    return service if service is not None else "(no service.name)"


def dataset_check(data_dir: str | os.PathLike[str]) -> Check:
    """FAIL when the data directory holds no dataset (``require_dataset``'s message says what was expected)."""
    try:
        path = require_dataset(data_dir)
    except NoDatasetError as exc:
        return Check("dataset", FAIL, str(exc),
                     f"point --data-dir (or {environment.DATA_DIR}) at the directory `tokentrail serve --data-dir` "
                     "writes, or start a receiver there")
    days = dataset_days(path / USAGE_DIR)
    if not days:
        return Check("dataset", OK, f"{path / USAGE_DIR} exists and holds no day yet", details={"days": 0})
    return Check("dataset", OK, f"{len(days)} day(s) of usage, {days[0]} to {days[-1]}",
                 details={"days": len(days), "first_day": days[0].isoformat(), "last_day": days[-1].isoformat()})


def services_check(facts: UsageFacts, window: Window) -> Check:
    """Calls per service in the window; a service that sent in the lookback and not in the window stopped."""
    seen = [s for s in facts.services if s.newest is not None]
    details = {
        "hours": window.hours,
        "services": [{"service": s.service, "calls": s.recent, "newest": s.newest} for s in seen],
    }
    if not seen:
        return Check(
            "services", WARN, f"no LLM call stored in the last {window.lookback_days} days", (
                "check that each service is instrumented (instrument() or opentelemetry-instrument), exports spans "
                "(OTEL_EXPORTER_OTLP_ENDPOINT) to the Collector or the receiver, and that the Collector forwards "
                "GenAI spans to `tokentrail serve` (otel-collector.yaml)"
            ), details)
    live = [s for s in seen if s.recent]
    stopped = [s for s in seen if not s.recent]
    unnamed = [s for s in live if s.service is None or s.service.startswith("unknown_service")]
    parts = [", ".join(f"{_name(s.service)} {s.recent}" for s in live[:TOP]) + f" call(s) in the last {window.hours} h"
             if live else f"no call in the last {window.hours} h"]
    if len(live) > TOP:
        parts[0] += f" (and {len(live) - TOP} more services)"
    fixes = []
    if stopped:
        parts.append("stopped: " + ", ".join(
            f"{_name(s.service)} (last call {_when(s.newest)}, {_ago(s.newest, window.now)})"
            for s in stopped[:TOP] if s.newest is not None))
        fixes.append(
            "for each stopped service: is it running and still calling LLMs? If so, its spans no longer arrive: "
            "check its OTEL_EXPORTER_OTLP_ENDPOINT, the Collector's pipeline to `tokentrail serve`, and its log for "
            "export errors")
    if unnamed:
        fixes.append("calls without a service name: set OTEL_SERVICE_NAME (or service.name in "
                     "OTEL_RESOURCE_ATTRIBUTES) in each service")
    return Check("services", WARN if fixes else OK, "; ".join(parts), "; ".join(fixes) or None, details)


def _top_pairs(groups: Iterable[CallGroup]) -> list[tuple[tuple[str, str], int]]:
    counts: Counter[tuple[str, str]] = Counter()
    for g in groups:
        counts[(g.provider, g.model)] += g.requests
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def unpriced_check(facts: UsageFacts, window: Window, pricer: Pricer | None) -> Check:
    """Unpriced calls (NULL cost, never $0) over the window, the (provider, model) pairs with most of them, and why
    each is unpriced by the catalog and overrides in use here (``pricer``; None when the overrides are invalid)."""
    total = facts.requests
    unpriced = [g for g in facts.groups if g.price_status == UNPRICED]
    count = sum(g.requests for g in unpriced)
    pairs = _top_pairs(unpriced)
    listed = []
    for (provider, model), n in pairs[:TOP]:
        entry = {"provider": provider, "model": model, "calls": n, "reason": None}
        if pricer is not None:
            resolved = pricer.resolve(provider, model, window.now.date())
            entry["reason"] = (resolved.reason or "no price") if resolved.kind == KIND_UNPRICED else (
                "priced by the catalog and overrides here now: re-price the stored days (`tokentrail reprice`), or "
                "its counts were refused (`tokentrail prices unpriced` says which)")
        listed.append(entry)
    details = {"calls": total, "unpriced": count, "pairs": listed}
    summary = f"{count} of {total} call(s) unpriced ({_percent(count, total)}) in the last {window.hours} h"
    if not count:
        return Check("unpriced", OK, summary, details=details)
    summary += ": " + ", ".join(f"{e['provider']}/{e['model']} {e['calls']}" for e in listed)
    if count * 100 <= UNPRICED_WARN_PERCENT * total:
        return Check("unpriced", OK, summary, details=details)
    first = listed[0]
    return Check(
        "unpriced", WARN, summary, (
            f"unpriced calls cost NULL in every report. Why {first['provider']}/{first['model']}: "
            f"{first['reason'] or 'see `tokentrail prices unpriced`'}. A name only your organisation uses (an "
            f"Azure deployment, a gateway alias) needs an alias in the overrides file ([aliases.<provider>] in "
            f"{environment.PRICING}); a spelling any user may send belongs in pricing/model_names.toml; a model the "
            f"catalog lacks needs a [[model]] price. `tokentrail prices explain --provider {first['provider']} "
            f"--model {first['model']}` shows how a name is priced; then `tokentrail reprice` re-prices stored days"
        ), details)


def no_usage_check(facts: UsageFacts, window: Window) -> Check:
    """Calls whose response carried no usage (billed, cost unknown); Chat Completions streams are the usual cause."""
    total = facts.requests
    missing = [g for g in facts.groups if g.price_status == NO_USAGE]
    count = sum(g.requests for g in missing)
    streams = [g for g in missing if g.streamed and g.api == API_CHAT_COMPLETIONS]
    stream_count = sum(g.requests for g in streams)
    stream_services = sorted({_name(g.service) for g in streams})
    details = {"calls": total, "no_usage": count, "chat_completions_streams": stream_count,
               "services": sorted({_name(g.service) for g in missing}),
               "pairs": [{"provider": p, "model": m, "calls": n} for (p, m), n in _top_pairs(missing)[:TOP]]}
    summary = f"{count} of {total} call(s) without usage ({_percent(count, total)}) in the last {window.hours} h"
    if count:
        summary += f", {stream_count} of them Chat Completions streams"
    if not count or count * 100 <= NO_USAGE_WARN_PERCENT * total:
        return Check("no_usage", OK, summary, details=details)
    fixes = []
    if stream_count:
        fixes.append(
            f"Chat Completions streams report usage only when the request sets stream_options.include_usage "
            f"({', '.join(stream_services[:TOP])}): set {ENV_STREAM_USAGE}=inject in those services (the "
            f"instrumentation then asks for it), or pass stream_options={{\"include_usage\": true}} yourself")
    if stream_count < count:
        fixes.append(
            "other calls came back without usage: check that the provider or gateway between returns it (some "
            "proxies strip it) and that the instrumentation sees the whole response (a stream read to its end)")
    return Check("no_usage", WARN, summary, "; ".join(fixes), details)


def byok_check(facts: UsageFacts, window: Window) -> Check:
    """Calls on keys customers brought (BYOK): their total_cost follows the overrides' BYOK policy (0 by default)."""
    total = facts.requests
    market = sum((g.market_cost for g in facts.groups), Decimal(0))
    byok = [g for g in facts.groups if g.credential_type == "byok"]
    count = sum(g.requests for g in byok)
    byok_market = sum((g.market_cost for g in byok), Decimal(0))
    details = {"calls": total, "byok_calls": count, "market_cost": market, "byok_market_cost": byok_market}
    summary = (f"{count} of {total} call(s) on customers' keys ({_percent(count, total)}), {_usd(byok_market)} of "
               f"{_usd(market)} market cost ({_percent(byok_market, market)}) in the last {window.hours} h")
    high = count * 100 > BYOK_WARN_PERCENT * total or (market and byok_market * 100 > BYOK_WARN_PERCENT * market)
    if not high:
        return Check("byok", OK, summary, details=details)
    return Check(
        "byok", WARN, summary, (
            "BYOK calls are priced by the BYOK policy: their total_cost is 0 unless the overrides file says "
            "[byok] total_cost = \"list\" (market_cost keeps the list price). If these are your own keys, the "
            "application marks them as customers': check its instrument(byok_keys=..., byok=...) and "
            f"TOKENTRAIL_UNKNOWN_KEYS=byok (with it, list your own keys in {ENV_SYSTEM_KEYS})"
        ), details)


def clock_check(facts: UsageFacts, window: Window) -> Check:
    """Calls dated in the future: a host whose clock is ahead (they count on the wrong day and hour)."""
    ahead = [s for s in facts.services if s.future]
    count = sum(s.future for s in ahead)
    details = {"future_calls": count, "tolerance_seconds": int(CLOCK_TOLERANCE.total_seconds()),
               "services": [{"service": s.service, "calls": s.future, "furthest": s.furthest} for s in ahead]}
    if not count:
        return Check("clock", OK, f"no call dated more than {int(CLOCK_TOLERANCE.total_seconds()) // 60} min "
                     "after now", details=details)
    furthest = max(s.furthest for s in ahead if s.furthest is not None)
    summary = (f"{count} call(s) dated in the future, up to {_when(furthest)} "
               f"({_duration((furthest - window.now).total_seconds())} ahead): "
               + ", ".join(f"{_name(s.service)} {s.future}" for s in ahead[:TOP]))
    return Check("clock", WARN, summary, (
        "the clocks of the hosts running these services are ahead: synchronise them (NTP, chrony); their calls "
        "count on the day and hour their clock said"
    ), details)


def disk_check(data_dir: str | os.PathLike[str], min_free_percent: int) -> Check:
    """Free space on the data directory's filesystem: a full disk makes the receiver refuse Exports."""
    path = Path(data_dir)
    if not path.is_dir():
        return skipped("disk", f"{path} is not a directory")
    usage = shutil.disk_usage(path)
    percent = _percent(usage.free, usage.total)
    details = {"free_bytes": usage.free, "total_bytes": usage.total, "min_free_percent": min_free_percent}
    summary = f"{_gib(usage.free)} free of {_gib(usage.total)} ({percent}) on the data dir's filesystem"
    if usage.free * 100 >= min_free_percent * usage.total:
        return Check("disk", OK, summary, details=details)
    return Check("disk", WARN, summary + f", under {min_free_percent}%", (
        "free space, move the data dir to a larger disk, or compact old days (`tokentrail compact`); when the "
        "disk fills, the receiver refuses Exports (retryably) and the Collector queues them"
    ), details)


def _gib(size: int) -> str:
    return f"{Decimal(size) / (1 << 30):.1f} GiB"


def load_pricer() -> tuple[Pricer | None, str | None]:
    """The pricer a receiver started here would use (``TOKENTRAIL_PRICING``, no auto-update: the doctor never
    fetches), or the overrides file's error."""
    try:
        return Pricer(auto_update=False), None
    except PricingConfigError as exc:
        return None, str(exc)


def _start_dates(value: object) -> Iterable[date]:
    """Every ``start_date`` of a catalog price tree (conditional prices, variants and their prices)."""
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _start_dates(item)
        return
    start = getattr(getattr(value, "constraint", None), "start_date", None)
    if isinstance(start, date):
        yield start
    nested = getattr(value, "prices", None)
    if isinstance(nested, (list, tuple)):
        yield from _start_dates(nested)


def bundled_catalog_date(today: date) -> date | None:
    """The newest price date up to ``today`` in the catalog installed here: the bundled data carries no snapshot
    date, and its newest dated price is the closest lower bound (prices announced for later days are skipped)."""
    dates = [
        d
        for provider in _snapshot.get_snapshot().providers
        for model in provider.models
        for d in (*_start_dates(model.prices), *_start_dates(model.price_variants or ()))
        if d <= today
    ]
    return max(dates) if dates else None


def catalog_check(
    facts: UsageFacts | None, now: datetime, max_age_days: int, overrides_error: str | None
) -> Check:
    """The age of the catalog in use: the receiver's fetched one (``catalog=`` in the newest price_version) or the
    one bundled with genai-prices here; and whether the overrides file loads."""
    stored = facts.price_version if facts is not None else None
    details: dict[str, Any] = {"price_version": stored, "installed": PRICE_VERSION, "max_age_days": max_age_days}
    if overrides_error is not None:
        return Check("catalog", FAIL, f"the overrides file does not load: {overrides_error}",
                     f"fix it (`tokentrail prices check` lists every problem with its line); a receiver refuses to "
                     f"start with it ({environment.PRICING})", details)
    fetched = _fetched_date(stored)
    if fetched is not None:
        age = (now.date() - fetched).days
        details.update(source="auto-update", catalog_date=fetched, age_days=age)
        summary = f"the receiver prices with a catalog fetched {fetched} ({age} day(s) old)"
        if age <= max_age_days:
            return Check("catalog", OK, summary, details=details)
        return Check("catalog", WARN, summary + f", older than {max_age_days} days", (
            f"the receiver's catalog updater ({environment.PRICES_AUTO_UPDATE}=1) has not fetched since then: its log "
            "says \"price catalog update failed\" with the reason (network, proxy); restart it once it can reach the "
            "catalog, then `tokentrail reprice --update-catalog --start-date ...` re-prices stored days"
        ), details)
    bundled = bundled_catalog_date(now.date())
    bundled_age = (now.date() - bundled).days if bundled is not None else None
    details.update(source="bundled", catalog_date=bundled, age_days=bundled_age)
    summary = (f"{PRICE_VERSION} bundled catalog, newest price dated {bundled} ({bundled_age} day(s) old)"
               if bundled is not None else f"{PRICE_VERSION} bundled catalog, with no dated price: its age is unknown")
    if stored is not None and not stored.startswith(PRICE_VERSION):
        summary += f"; the newest stored call was priced with {stored}"
    if bundled_age is not None and bundled_age <= max_age_days:
        return Check("catalog", OK, summary, details=details)
    return Check("catalog", WARN, summary + (f", older than {max_age_days} days" if bundled is not None else ""), (
        f"set {environment.PRICES_AUTO_UPDATE}=1 where `tokentrail serve` runs (it fetches the newest catalog at start "
        "and every hour, keeping the bundled one when offline), or upgrade genai-prices (pip install -U genai-prices) "
        "and restart; then `tokentrail reprice --update-catalog --start-date ...` re-prices stored days"
    ), details)


def _fetched_date(price_version: str | None) -> date | None:
    """The day in ``catalog=YYYY-MM-DDTHH:MM:SS`` (``Pricer`` adds it for a fetched catalog), or None."""
    for part in (price_version or "").split():
        if part.startswith("catalog="):
            try:
                return datetime.fromisoformat(part.removeprefix("catalog=")).date()
            except ValueError:
                return None
    return None


def worst(checks: Sequence[Check]) -> str:
    """FAIL if any check failed, else WARN if any warned, else OK (skipped checks do not count)."""
    statuses = {c.status for c in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK
