"""Re-pricing stored days: costs recomputed with the current catalog and overrides, price_version stamped, each day
swapped atomically (a crash leaves each day old or new), calls without usage kept unpriced; plus the read-only
queries (price versions of a period, unpriced models)."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from tokentrail.processor.pricing.catalog import PRICE_VERSION, USAGE_MISSING, Pricer
from tokentrail.processor.pricing.overrides import NO_OVERRIDES, parse_overrides
from tokentrail.processor.reports.report import ReportQuery, run_report
from tokentrail.processor.schema import NO_USAGE, PRICED, UNPRICED, UsageRecord, table_to_records, to_cost
from tokentrail.processor.storage import reprice as reprice_module
from tokentrail.processor.storage.compaction import read_day
from tokentrail.processor.storage.parquet import write_partitions
from tokentrail.processor.storage.reprice import price_versions, reprice, reprice_table, unpriced_models

DAY1, DAY2, DAY3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)
OLD = "genai-prices 0.0.1"
DISCOUNT = '[[rule]]\nprovider = "openai"\ndiscount_percent = 10\n'


def rec(day: date, i: int, **fields: Any) -> UsageRecord:
    base: dict[str, Any] = dict(
        timestamp=datetime.combine(day, datetime.min.time(), UTC) + timedelta(minutes=i),
        trace_id=f"{day.toordinal():016x}{i:016x}",
        span_id=f"{i:016x}",
        provider="openai",
        model="gpt-4o",
        input_tokens=10_000 + i,
        output_tokens=1_000,
        cached_input_tokens=4_000,
        market_cost=Decimal("999"),  # stale prices
        total_cost=Decimal("999"),
        price_status=PRICED,
        price_version=OLD,
    )
    base.update(fields)
    return UsageRecord(**base)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    usage = tmp_path / "usage"
    for n, day in enumerate((DAY1, DAY2, DAY3)):
        records = [rec(day, i) for i in range(5)]
        records += [
            rec(day, 10, credential_type="byok"),
            rec(day, 11, model="acme-llm-9", market_cost=None, total_cost=None, price_status=UNPRICED),
            rec(day, 12, input_tokens=0, output_tokens=0, cached_input_tokens=0, market_cost=None, total_cost=None,
                price_status=NO_USAGE, price_version=None),
            rec(day, 13, provider="anthropic", model="claude-haiku-4-5"),
        ]
        write_partitions(records, usage, "r1", n + 1)
    return tmp_path


def expected(r: UsageRecord, pricer: Pricer) -> tuple[object, ...]:
    fresh = UsageRecord(**{**{f: getattr(r, f) for f in r.__slots__}, "price_version": r.price_version if r.price_version == USAGE_MISSING else None})
    pricer.price(fresh)
    return (to_cost(fresh.market_cost), to_cost(fresh.total_cost), fresh.price_status, fresh.price_version)


def stored(data: Path, day: date) -> list[UsageRecord]:
    return sorted(table_to_records(read_day(data / "usage", day)), key=lambda r: r.timestamp)


def test_reprice_recomputes_every_cost_and_stamps_the_version(data: Path) -> None:
    pricer = Pricer(overrides=parse_overrides(DISCOUNT))
    results = reprice(data, DAY1, DAY2, pricer=pricer)
    assert [r.day for r in results] == [DAY1, DAY2]
    assert all(r.written and r.rows == 9 and r.changed == 7 for r in results)  # all but the two unpriced rows
    assert results[0].unpriced_before == results[0].unpriced_after == 2
    for day in (DAY1, DAY2):
        for r in stored(data, day):
            assert (r.market_cost, r.total_cost, r.price_status, r.price_version) == expected(r, pricer)
        by_model = {(r.model, r.credential_type): r for r in stored(data, day) if r.input_tokens}
        system = by_model[("gpt-4o", "system")]
        assert system.market_cost is not None
        assert system.total_cost == to_cost(system.market_cost * Decimal("0.9"))
        assert by_model[("gpt-4o", "byok")].total_cost == 0
        haiku = by_model[("claude-haiku-4-5", "system")]
        assert haiku.total_cost == haiku.market_cost  # the rule is OpenAI's only
        unknown = by_model[("acme-llm-9", "system")]
        assert (unknown.price_status, unknown.market_cost, unknown.total_cost) == (UNPRICED, None, None)
        assert unknown.price_version == pricer.price_version
    assert pricer.price_version.startswith(f"{PRICE_VERSION} overrides=")


def test_calls_without_usage_keep_their_marker_and_stay_unpriced(data: Path) -> None:
    reprice(data, DAY1, DAY1, pricer=Pricer(overrides=NO_OVERRIDES))
    missing = [r for r in stored(data, DAY1) if r.input_tokens == 0]
    assert len(missing) == 1
    assert (missing[0].price_version, missing[0].price_status, missing[0].total_cost) == (None, NO_USAGE, None)


def test_records_stored_with_the_older_usage_missing_marker_become_no_usage(tmp_path: Path) -> None:
    legacy = rec(DAY1, 1, input_tokens=0, output_tokens=0, cached_input_tokens=0, market_cost=None, total_cost=None,
                 price_status=UNPRICED, price_version=USAGE_MISSING)
    write_partitions([legacy, rec(DAY1, 2)], tmp_path / "usage", "r1", 1)
    assert unpriced_models(tmp_path, DAY1, DAY1, pricer=Pricer(overrides=NO_OVERRIDES))[0]["without_usage"] == 1
    (result,) = reprice(tmp_path, DAY1, DAY1, pricer=Pricer(overrides=NO_OVERRIDES))
    assert result.unpriced_before == result.unpriced_after == 1
    (missing,) = [r for r in stored(tmp_path, DAY1) if r.input_tokens == 0]
    assert (missing.price_status, missing.price_version, missing.market_cost, missing.total_cost) == (NO_USAGE, None, None, None)


def test_days_outside_the_range_are_untouched(data: Path) -> None:
    before = read_day(data / "usage", DAY3)
    reprice(data, DAY1, DAY2, pricer=Pricer(overrides=NO_OVERRIDES))
    assert read_day(data / "usage", DAY3).equals(before)


def test_a_dry_run_writes_nothing_and_says_what_would_change(data: Path) -> None:
    before = {day: read_day(data / "usage", day) for day in (DAY1, DAY2)}
    results = reprice(data, DAY1, DAY2, pricer=Pricer(overrides=NO_OVERRIDES), dry_run=True)
    assert [(r.day, r.changed, r.written) for r in results] == [(DAY1, 7, False), (DAY2, 7, False)]
    assert results[0].total_cost_before == Decimal(999 * 7)
    for day, table in before.items():
        assert read_day(data / "usage", day).equals(table)


def test_a_crash_mid_way_leaves_each_day_either_old_or_new(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = reprice_module.reprice_table

    def crash_on_second_day(table: pa.Table, pricer: Pricer) -> tuple[pa.Table, dict[str, object]]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("power cut")
        return real(table, pricer)

    monkeypatch.setattr(reprice_module, "reprice_table", crash_on_second_day)
    pricer = Pricer(overrides=NO_OVERRIDES)
    with pytest.raises(RuntimeError, match="power cut"):
        reprice(data, DAY1, DAY3, pricer=pricer)
    assert {r.price_version for r in stored(data, DAY1) if r.input_tokens} == {pricer.price_version}
    assert {r.price_version for r in stored(data, DAY2) if r.input_tokens} == {OLD}
    assert {r.price_version for r in stored(data, DAY3) if r.input_tokens} == {OLD}
    monkeypatch.setattr(reprice_module, "reprice_table", real)
    results = reprice(data, DAY1, DAY3, pricer=pricer)  # running it again finishes the job
    assert [r.changed for r in results] == [0, 7, 7]


def test_readers_see_a_day_entirely_old_or_entirely_new(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    for n in range(4):
        write_partitions([rec(DAY1, 100 * n + i) for i in range(100)], usage, "r1", n + 1)
    query = ReportQuery.from_params({"start_date": DAY1.isoformat(), "end_date": DAY1.isoformat(), "group_by": "none"})
    old_total = run_report(tmp_path, query)[0]["total_cost"]
    pricer = Pricer(overrides=NO_OVERRIDES)
    seen: list[Decimal] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(run_report(tmp_path, query)[0]["total_cost"])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        reprice(tmp_path, DAY1, DAY1, pricer=pricer)
    finally:
        done.set()
        reader.join()
    new_total = run_report(tmp_path, query)[0]["total_cost"]
    assert new_total != old_total
    assert set(seen) <= {old_total, new_total}


def test_reprice_table_leaves_other_columns_alone() -> None:
    records = [rec(DAY1, 1, user_id="u1", tags=["a"]), rec(DAY1, 2, model="nope")]
    from tokentrail.processor.schema import records_to_table

    table = records_to_table(records)
    out, stats = reprice_table(table, Pricer(overrides=NO_OVERRIDES))
    assert stats["rows"] == 2 and stats["unpriced_after"] == 1
    for name in table.column_names:
        if name not in ("market_cost", "total_cost", "price_status", "price_version"):
            assert out[name].equals(table[name]), name


# -- read-only queries -----------------------------------------------------------------------------------------------


def test_price_versions_say_which_prices_produced_a_period(data: Path) -> None:
    assert [(v["price_version"], v["requests"]) for v in price_versions(data, DAY1, DAY3)] == [
        (OLD, 24),
        (None, 3),  # calls without usage: never priced
    ]
    pricer = Pricer(overrides=NO_OVERRIDES)
    reprice(data, DAY2, DAY2, pricer=pricer)
    versions = {v["price_version"]: v for v in price_versions(data, DAY1, DAY3)}
    assert versions[OLD]["requests"] == 16
    assert (versions[OLD]["first_day"], versions[OLD]["last_day"]) == (DAY1, DAY3)
    assert versions[PRICE_VERSION]["requests"] == 8
    assert versions[PRICE_VERSION]["unpriced_requests"] == 1
    assert versions[PRICE_VERSION]["first_day"] == versions[PRICE_VERSION]["last_day"] == DAY2
    assert price_versions(data, date(2020, 1, 1), date(2020, 1, 2)) == []


def test_unpriced_models_lists_what_has_no_price_and_why(data: Path) -> None:
    rows = unpriced_models(data, DAY1, DAY3, pricer=Pricer(overrides=NO_OVERRIDES))
    by_model = {(r["provider"], r["model"]): r for r in rows}
    assert set(by_model) == {("openai", "acme-llm-9"), ("openai", "gpt-4o")}
    unknown = by_model[("openai", "acme-llm-9")]
    assert (unknown["requests"], unknown["input_tokens"], unknown["output_tokens"]) == (3, 3 * 10_011, 3_000)
    assert "no model 'acme-llm-9'" in unknown["reason"]
    assert by_model[("openai", "gpt-4o")]["reason"] == "3 call(s) reported no usage"
    custom = Pricer(overrides=parse_overrides('[[model]]\nprovider = "openai"\nmodel = "acme-llm-9"\ninput_mtok = 1\noutput_mtok = 2\n'))
    rows = unpriced_models(data, DAY1, DAY3, pricer=custom)
    assert "priceable now" in {(r["provider"], r["model"]): r for r in rows}[("openai", "acme-llm-9")]["reason"]
    reprice(data, DAY1, DAY3, pricer=custom)
    assert [(r["model"], r["requests"]) for r in unpriced_models(data, DAY1, DAY3, pricer=custom)] == [("gpt-4o", 3)]
