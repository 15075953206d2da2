"""``tokentrail prices explain|unpriced|check|versions`` and ``tokentrail reprice``, through the real CLI entry point."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import data_snapshot
from tokentrail.processor import environment
from tokentrail.processor.cli import main as cli
from tokentrail.processor.pricing.catalog import PRICE_VERSION, USAGE_MISSING, Pricer, catalog_price
from tokentrail.processor.pricing.explain import explain
from tokentrail.processor.pricing.overrides import NO_OVERRIDES
from tokentrail.processor.reports.formatting import usd
from tokentrail.processor.schema import PRICED, UNPRICED, UsageRecord
from tokentrail.processor.storage.parquet import write_partitions

AT = "2026-01-05T10:00:00Z"
WHEN = datetime(2026, 1, 5, 10, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(environment.PRICING, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def explain_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, "prices", "explain", "--at", AT, "--format", "json", *argv)
    return code, json.loads(out)


# -- explain ---------------------------------------------------------------------------------------------------------


def test_explain_prints_the_catalog_model_rates_components_and_total(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "prices", "explain", "--provider", "openai", "--model", "gpt-4o-2024-08-06", "--at", AT,
        "--input", "10000", "--cached", "4000", "--output", "1000",
    )
    assert code == 0
    assert "catalog openai/gpt-4o" in out
    assert "$2.5/input MTok" in out  # the library's own statement of the prices in effect
    lines = {line.split()[0] + " " + line.split()[1]: line for line in out.splitlines() if line.startswith("  ") and len(line.split()) >= 4}
    assert lines["uncached input"].split()[2:] == ["6,000", "2.5", "0.015"]
    assert lines["cache read"].split()[2:] == ["4,000", "1.25", "0.005"]
    assert "Market cost (list price)" in out and "0.03  = genai_prices.calc_price" in out
    assert f"Price version   {PRICE_VERSION}" in out


def test_explain_json_components_add_up_to_calc_price_for_a_tiered_price(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = explain_json(
        capsys, "--provider", "anthropic", "--model", "claude-sonnet-4-5-20250929", "--input", "300000",
        "--cached", "100000", "--cache-write", "50000", "--cache-write-1h", "20000", "--output", "2000",
    )
    assert code == 0
    expected = catalog_price(
        "anthropic", "claude-sonnet-4-5-20250929", WHEN, input_tokens=300_000, cached_input_tokens=100_000,
        cache_creation_input_tokens=50_000, cache_creation_1h_input_tokens=20_000, output_tokens=2_000,
    )
    assert Decimal(result["market_cost"]) == Decimal(result["calc_price"]) == expected
    assert sum(Decimal(c["cost"]) for c in result["components"]) == expected
    assert [c["name"] for c in result["components"]] == [
        "uncached input", "cache read", "cache write (5 min)", "cache write (1 h)", "output",
    ]
    assert "tier above 200,000" in result["tier"]
    assert result["agrees_with_calc_price"] is True and result["method"] == "fast"


def test_explain_names_the_rewrites_and_the_override(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pricing = tmp_path / "pricing.toml"
    pricing.write_text('[[rule]]\nprovider = "vercel"\ndiscount_percent = 20\nnote = "gateway credits"\n')
    code, result = explain_json(
        capsys, "--provider", "gateway", "--model", "anthropic/claude-haiku-4-5", "--input", "1000", "--output", "100",
        "--pricing", str(pricing),
    )
    assert code == 0
    assert (result["provider"], result["catalog_model"], result["matched_by"]) == ("vercel", "anthropic/claude-haiku-4-5", ["creator-prefix"])
    assert f"{pricing}:1" in result["override"] and "20% off" in result["override"] and "gateway credits" in result["override"]
    assert Decimal(result["total_cost"]) == Decimal(result["market_cost"]) * Decimal("0.8")
    assert "overrides=" in result["price_version"]


def test_explain_explicit_prices_show_the_components_you_pay(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pricing = tmp_path / "pricing.toml"
    pricing.write_text('[[rule]]\nprovider = "openai"\nmodel = "gpt-4o"\ninput_mtok = 2\noutput_mtok = 8\n')
    code, out, _ = run(
        capsys, "prices", "explain", "--provider", "openai", "--model", "gpt-4o", "--at", AT, "--input", "1000000",
        "--output", "1000000", "--pricing", str(pricing),
    )
    assert code == 0
    assert "Override        rule at" in out
    assert out.rstrip().splitlines()[-2].split()[-1] == "10"  # total cost: $2 + $8


def test_explain_byok_service_tier_and_custom_models(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, result = explain_json(capsys, "--provider", "openai", "--model", "gpt-4o", "--input", "100", "--credential-type", "byok")
    assert code == 0 and result["total_cost"] == "0" and Decimal(result["market_cost"]) > 0
    later = "2026-11-20T10:00:00Z"
    code, out, _ = run(capsys, "prices", "explain", "--provider", "openai", "--model", "gpt-5", "--at", later,
                       "--input", "1000000", "--service-tier", "flex", "--format", "json")
    flex = json.loads(out)
    assert flex["price_context"] == {"service_tier": "flex"} and flex["market_cost"] == "0.625"
    pricing = tmp_path / "pricing.toml"
    pricing.write_text('[[model]]\nprovider = "acme"\nmodel = "acme-llm"\ninput_mtok = 1\noutput_mtok = 3\n')
    code, result = explain_json(capsys, "--provider", "acme", "--model", "acme-llm", "--input", "1000000", "--output", "1000000",
                                "--pricing", str(pricing))
    assert code == 0 and result["method"] == "custom" and result["market_cost"] == "4" and result["calc_price"] is None


def test_explain_an_unpriceable_call_says_why_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "prices", "explain", "--provider", "acme-cloud", "--model", "mystery", "--input", "5")
    assert code == 1
    assert "UNPRICED" in out and "never $0" in out
    code, out, err = run(capsys, "prices", "explain", "--provider", "openai", "--model", "gpt-4o", "--input", "5", "--cached", "6")
    assert code == 2 and out == "" and "--cached (6) plus --cache-write (0) exceed --input (5)" in err


def test_explain_prices_reasoning_at_the_catalogs_reasoning_rate(capsys: pytest.CaptureFixture[str]) -> None:
    # perplexity sonar-deep-research: the catalog prices reasoning output ($3/MTok) apart from output ($8/MTok).
    code, result = explain_json(
        capsys, "--provider", "perplexity", "--model", "sonar-deep-research", "--input", "1000", "--output", "10000",
        "--reasoning", "8000",
    )
    assert code == 0
    expected = catalog_price("perplexity", "sonar-deep-research", WHEN, input_tokens=1_000, output_tokens=10_000, reasoning_tokens=8_000)
    assert expected != catalog_price("perplexity", "sonar-deep-research", WHEN, input_tokens=1_000, output_tokens=10_000)
    assert Decimal(result["market_cost"]) == Decimal(result["calc_price"]) == expected
    assert result["usage"]["reasoning_tokens"] == 8_000
    components = {c["name"]: c for c in result["components"]}
    assert (components["output"]["tokens"], components["reasoning output"]["tokens"]) == (2_000, 8_000)
    assert components["reasoning output"]["usd_per_mtok"] == "3" and components["output"]["usd_per_mtok"] == "8"
    assert sum(Decimal(c["cost"]) for c in result["components"]) == expected
    code, out, _ = run(capsys, "prices", "explain", "--provider", "perplexity", "--model", "sonar-deep-research", "--at", AT,
                       "--input", "1000", "--output", "10000", "--reasoning", "8000")
    assert code == 0 and "output 10,000, reasoning 8,000" in out and "reasoning output" in out


def test_explain_reasoning_without_a_reasoning_price_is_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = explain_json(capsys, "--provider", "openai", "--model", "o3", "--input", "1000", "--output", "10000",
                                "--reasoning", "8000")
    assert code == 0
    assert Decimal(result["market_cost"]) == catalog_price("openai", "o3", WHEN, input_tokens=1_000, output_tokens=10_000)
    assert [c["name"] for c in result["components"]] == ["uncached input", "output"]
    assert any("output rate" in n for n in result["notes"])


def test_explain_takes_one_hour_cache_writes_and_audio(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = explain_json(
        capsys, "--provider", "anthropic", "--model", "claude-haiku-4-5", "--input", "1000000", "--cache-write", "1000000",
        "--cache-write-1h", "400000",
    )
    assert code == 0 and result["usage"]["cache_creation_1h_input_tokens"] == 400_000
    assert {c["name"]: c["tokens"] for c in result["components"]}["cache write (1 h)"] == 400_000
    assert Decimal(result["market_cost"]) == catalog_price(
        "anthropic", "claude-haiku-4-5", WHEN, input_tokens=10**6, output_tokens=0, cache_creation_input_tokens=10**6,
        cache_creation_1h_input_tokens=400_000,
    ) != catalog_price("anthropic", "claude-haiku-4-5", WHEN, input_tokens=10**6, output_tokens=0, cache_creation_input_tokens=10**6)
    audio = ["--input", "10000", "--cached", "3000", "--input-audio", "4000", "--cached-audio", "1000", "--output", "2000",
             "--output-audio", "1500"]
    code, result = explain_json(capsys, "--provider", "openai", "--model", "gpt-realtime", *audio)
    assert code == 0 and result["method"] == "library"
    assert result["usage"] == {"input_tokens": 10_000, "cached_input_tokens": 3_000, "input_audio_tokens": 4_000,
                               "cached_audio_input_tokens": 1_000, "output_tokens": 2_000, "output_audio_tokens": 1_500}
    assert Decimal(result["market_cost"]) == catalog_price(
        "openai", "gpt-realtime", WHEN, input_tokens=10_000, cached_input_tokens=3_000, input_audio_tokens=4_000,
        cached_audio_input_tokens=1_000, output_tokens=2_000, output_audio_tokens=1_500,
    ) != catalog_price("openai", "gpt-realtime", WHEN, input_tokens=10_000, cached_input_tokens=3_000, output_tokens=2_000)
    code, out, _ = run(capsys, "prices", "explain", "--provider", "openai", "--model", "gpt-realtime", "--at", AT, *audio)
    assert code == 0
    assert "input audio 4,000, cached audio 1,000, output 2,000, output audio 1,500" in out


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        (["--output", "10", "--reasoning", "11"], "--reasoning (11) exceeds --output (10)"),
        (["--input", "10", "--cache-write", "5", "--cache-write-1h", "6"], "--cache-write-1h (6) exceeds --cache-write (5)"),
        (["--input", "10", "--input-audio", "11"], "--input-audio (11) exceeds --input (10)"),
        (["--input", "10", "--cached", "2", "--input-audio", "5", "--cached-audio", "3"], "--cached-audio (3) exceeds --cached (2)"),
        (["--input", "10", "--cached", "5", "--input-audio", "2", "--cached-audio", "3"], "--cached-audio (3) exceeds --input-audio (2)"),
        (["--output", "10", "--output-audio", "11"], "--output-audio (11) exceeds --output (10)"),
        (["--input", "10", "--cached", "6", "--cache-write", "5"], "--cached (6) plus --cache-write (5) exceed --input (10)"),
    ],
)
def test_explain_a_part_larger_than_its_whole_is_an_error(
    capsys: pytest.CaptureFixture[str], counts: list[str], message: str
) -> None:
    code, out, err = run(capsys, "prices", "explain", "--provider", "openai", "--model", "gpt-4o", "--at", AT, *counts)
    assert (code, out) == (2, "")
    assert message in err


def test_explain_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "prices", "explain", "--provider", "openai", "--model", "gpt-4o", "--input", "-5")[0] == 2
    assert run(capsys, "prices", "explain", "--provider", "openai", "--model", "gpt-4o", "--at", "yesterday")[0] == 2


def test_explain_equals_calc_price_across_a_sample_of_the_catalog() -> None:
    pricer = Pricer(overrides=NO_OVERRIDES)
    models = [(p.id, m.id) for p in data_snapshot.get_snapshot().providers for m in p.models]
    rng = random.Random(7)
    checked = 0
    sample = rng.sample(models, 150) + [("perplexity", "sonar-deep-research"), ("openrouter", "perplexity/sonar-deep-research")]
    for provider, model in sample:
        inp = rng.randint(0, 400_000)
        cached = rng.randint(0, inp)
        out = rng.randint(0, 9_000)
        result = explain(pricer, provider, model, WHEN, input_tokens=inp, cached_input_tokens=cached, output_tokens=out,
                         reasoning_tokens=rng.randint(0, out))
        if result.market_cost is None:
            continue
        checked += 1
        assert result.agrees_with_library, (provider, model)
        if result.method == "fast":
            assert sum((c.cost for c in result.components), Decimal(0)) == result.market_cost, (provider, model)
    assert checked > 100


# -- unpriced, versions ----------------------------------------------------------------------------------------------


def _rec(i: int, **fields: Any) -> UsageRecord:
    base: dict[str, Any] = dict(
        timestamp=datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=i), trace_id=f"{i:032x}",
        span_id=f"{i:016x}", provider="openai", model="gpt-4o", input_tokens=100, output_tokens=10,
        market_cost=Decimal("0.001"), total_cost=Decimal("0.001"), price_status=PRICED, price_version="genai-prices 0.0.1",
    )
    base.update(fields)
    return UsageRecord(**base)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    unpriced = dict(market_cost=None, total_cost=None, price_status=UNPRICED)
    write_partitions(
        [
            _rec(0),
            _rec(1, model="acme-llm-9", **unpriced),
            _rec(2, model="acme-llm-9", input_tokens=5, **unpriced),
            _rec(30, provider="ibm.watsonx.ai", model="granite-3", **unpriced),
            _rec(31, input_tokens=0, output_tokens=0, price_version=USAGE_MISSING, **unpriced),
        ],
        tmp_path / "usage",
        "r1",
        1,
    )
    return tmp_path


def test_prices_unpriced_lists_models_with_requests_tokens_and_reasons(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    code, out, _ = run(capsys, "prices", "unpriced", "--data-dir", str(data), "--start-date", "2026-03-01", "--end-date", "2026-03-02")
    assert code == 0
    assert "4 unpriced call(s)" in out
    lines = out.splitlines()
    assert lines[1].split()[:5] == ["provider", "model", "requests", "input_tokens", "output_tokens"]
    assert lines[2].split()[:5] == ["openai", "acme-llm-9", "2", "105", "20"]
    assert "reported no usage" in out and "ibm.watsonx.ai" in out
    code, out, _ = run(capsys, "prices", "unpriced", "--data-dir", str(data), "--start-date", "2026-03-02", "--end-date", "2026-03-02", "--format", "json")
    rows = json.loads(out)
    assert {(r["provider"], r["model"], r["requests"]) for r in rows} == {("ibm.watsonx.ai", "granite-3", 1), ("openai", "gpt-4o", 1)}
    code, out, _ = run(capsys, "prices", "unpriced", "--data-dir", str(data), "--start-date", "2020-01-01", "--end-date", "2020-01-01")
    assert code == 0 and "no unpriced calls" in out


def test_prices_versions(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    code, out, _ = run(capsys, "prices", "versions", "--data-dir", str(data), "--start-date", "2026-03-01", "--end-date", "2026-03-02", "--format", "json")
    assert code == 0
    assert [(r["price_version"], r["requests"]) for r in json.loads(out)] == [("genai-prices 0.0.1", 4), (USAGE_MISSING, 1)]
    exact = {r["price_version"]: r["total_cost"] for r in json.loads(out)}
    code, out, _ = run(capsys, "prices", "versions", "--data-dir", str(data), "--start-date", "2026-03-01", "--end-date", "2026-03-02")
    # For people, money as every table shows it: dollars, to the cent or to a cost's first significant digits.
    priced = next(line for line in out.splitlines() if line.startswith("genai-prices 0.0.1"))
    assert usd(Decimal(str(exact["genai-prices 0.0.1"]))) in priced.split()


# -- check -----------------------------------------------------------------------------------------------------------


def test_prices_check(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[[rule]]\nprovider = "openai"\ndiscount_percent = 10\n')
    code, out, _ = run(capsys, "prices", "check", str(good))
    assert code == 0 and "ok (1 rule(s)" in out and "10% off" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nprovider = "openai"\ndiscount_percent = 10\n\n[[rule]]\nprovider = "opnai"\ndiscount_percent = 5\n')
    code, _, err = run(capsys, "prices", "check", str(bad))
    assert code == 1 and f"{bad}:6: provider 'opnai'" in err
    monkeypatch.setenv(environment.PRICING, str(good))
    assert run(capsys, "prices", "check")[0] == 0
    monkeypatch.delenv(environment.PRICING)
    assert run(capsys, "prices", "check")[0] == 2


# -- reprice ---------------------------------------------------------------------------------------------------------


def test_reprice_cli(capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path) -> None:
    base = ["reprice", "--data-dir", str(data), "--start-date", "2026-03-01", "--end-date", "2026-03-02"]
    code, out, _ = run(capsys, *base, "--dry-run")
    assert code == 0 and "2026-03-01: 3 record(s), 1 would change" in out and "dry run" in out
    assert "total cost $" in out and " -> $" in out  # money for people; --json stays exact
    pricing = tmp_path / "pricing.toml"
    pricing.write_text('[[model]]\nprovider = "openai"\nmodel = "acme-llm-9"\ninput_mtok = 1\noutput_mtok = 2\n')
    code, out, _ = run(capsys, *base, "--pricing", str(pricing), "--json")
    assert code == 0
    days = [json.loads(line) for line in out.splitlines()]
    assert [(d["day"], d["rows"], d["unpriced_before"], d["unpriced_after"]) for d in days] == [
        ("2026-03-01", 3, 2, 0),
        ("2026-03-02", 2, 2, 2),
    ]
    assert "overrides=" in days[0]["price_version"]
    code, out, _ = run(capsys, "prices", "unpriced", "--data-dir", str(data), "--start-date", "2026-03-01", "--end-date", "2026-03-02", "--format", "json")
    assert {r["model"] for r in json.loads(out)} == {"granite-3", "gpt-4o"}
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\nprovider = 'openai'\n")
    code, _, err = run(capsys, *base, "--pricing", str(bad))
    assert code == 2 and f"{bad}:1:" in err
    code, _, err = run(capsys, "reprice", "--data-dir", str(data), "--start-date", "2026-03-05", "--end-date", "2026-03-01")
    assert code == 2 and "after" in err
    code, out, _ = run(capsys, "reprice", "--data-dir", str(data), "--start-date", "2020-01-01", "--end-date", "2020-01-02")
    assert code == 0 and "no records" in out
