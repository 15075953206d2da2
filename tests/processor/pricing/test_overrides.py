"""The overrides file: negotiated prices set total_cost (never market_cost), custom models get a list price, the BYOK
policy, effective dates, and validation that names the line of every problem before anything is priced."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from tokentrail.processor import environment
from tokentrail.processor.ingest.receiver import Receiver
from tokentrail.processor.pricing import overrides as pricing_overrides
from tokentrail.processor.pricing.catalog import PRICE_VERSION, Pricer, catalog_price
from tokentrail.processor.pricing.overrides import (
    BYOK_LIST,
    NO_OVERRIDES,
    PricingConfigError,
    load_overrides,
    parse_overrides,
)
from tokentrail.processor.schema import PRICED, UNPRICED, UsageRecord

T = datetime(2026, 3, 10, 12, tzinfo=UTC)
USAGE = dict(input_tokens=10_000, output_tokens=1_000, cached_input_tokens=4_000)


def record(**fields: object) -> UsageRecord:
    base: dict[str, object] = dict(timestamp=T, trace_id="0" * 32, span_id="1" * 16, provider="openai", model="gpt-4o", **USAGE)
    base.update(fields)
    return UsageRecord(**base)  # type: ignore[arg-type]  # fields of mixed types


def list_price(provider: str = "openai", model: str = "gpt-4o", when: datetime = T, **usage: int) -> Decimal:
    return catalog_price(provider, model, when, **(usage or USAGE))  # type: ignore[arg-type]  # fields of mixed types


def priced(overrides_text: str, **fields: object) -> UsageRecord:
    r = record(**fields)
    Pricer(overrides=parse_overrides(overrides_text)).price(r)
    return r


# -- what the organisation pays --------------------------------------------------------------------------------------


def test_a_discount_lowers_total_cost_and_leaves_market_cost_at_the_list_price() -> None:
    r = priced('[[rule]]\nprovider = "openai"\ndiscount_percent = 12.5\n')
    assert r.market_cost == list_price()
    assert r.total_cost == list_price() * Decimal("0.875")
    assert r.price_status == PRICED


def test_explicit_prices_set_total_cost_per_component() -> None:
    r = priced(
        """
[[rule]]
provider = "openai"
model = "gpt-4o"
input_mtok = "2.00"
cached_input_mtok = 0.5
output_mtok = 8
"""
    )
    # 6,000 uncached at $2, 4,000 cached at $0.50, 1,000 output at $8 per MTok
    assert r.total_cost == Decimal("0.012") + Decimal("0.002") + Decimal("0.008")
    assert r.market_cost == list_price()


def test_explicit_prices_default_cache_rates_to_the_input_rate_and_price_one_hour_writes() -> None:
    text = '[[rule]]\nprovider = "anthropic"\ninput_mtok = 2\noutput_mtok = 10\ncache_write_1h_mtok = 4\n'
    r = priced(text, provider="anthropic", model="claude-haiku-4-5", input_tokens=10**6, cached_input_tokens=10**5,
               cache_creation_input_tokens=2 * 10**5, output_tokens=0)
    # no cache discount assumed: every input token at $2 (1-hour writes: none on a record without that field)
    assert r.total_cost == Decimal(2)


def test_the_first_matching_rule_applies_and_globs_match_names_as_they_arrive_or_as_catalogued() -> None:
    text = """
[[rule]]
provider = "openai"
model = "gpt-4o-mini*"
discount_percent = 50
[[rule]]
provider = "openai"
discount_percent = 10
"""
    mini = priced(text, model="gpt-4o-mini-2024-07-18")
    other = priced(text, model="gpt-4o")
    assert mini.total_cost == mini.market_cost / 2  # type: ignore[operator]  # priced above: not None
    assert other.total_cost == other.market_cost * Decimal("0.9")  # type: ignore[operator]  # priced above: not None
    # the catalog id matches too: "openai/gpt-4o-mini" arrived prefixed, catalogued as gpt-4o-mini
    prefixed = priced(text, model="openai/gpt-4o-mini")
    assert prefixed.total_cost == prefixed.market_cost / 2  # type: ignore[operator]  # priced above: not None


def test_a_rule_applies_only_within_its_effective_dates() -> None:
    text = '[[rule]]\nprovider = "openai"\ndiscount_percent = 20\nstart_date = 2026-03-01\nend_date = "2026-03-31"\n'
    inside = priced(text, timestamp=datetime(2026, 3, 31, 23, 59, tzinfo=UTC))
    before = priced(text, timestamp=datetime(2026, 2, 28, 23, 59, tzinfo=UTC))
    after = priced(text, timestamp=datetime(2026, 4, 1, 0, 0, tzinfo=UTC))
    assert inside.total_cost == inside.market_cost * Decimal("0.8")  # type: ignore[operator]  # priced above: not None
    assert before.total_cost == before.market_cost
    assert after.total_cost == after.market_cost


def test_a_provider_rule_does_not_reach_the_same_model_sold_by_another_provider() -> None:
    text = '[[rule]]\nprovider = "anthropic"\ndiscount_percent = 30\n'
    bedrock = priced(text, provider="aws", model="us.anthropic.claude-3-5-sonnet-20240620-v1:0")
    assert bedrock.total_cost == bedrock.market_cost


# -- BYOK ------------------------------------------------------------------------------------------------------------


def test_byok_costs_nothing_by_default_even_with_a_rule() -> None:
    r = priced('[[rule]]\nprovider = "openai"\ndiscount_percent = 10\n', credential_type="byok")
    assert r.total_cost == Decimal(0) and r.market_cost == list_price()


def test_byok_policy_list_price() -> None:
    overrides = parse_overrides('[byok]\ntotal_cost = "list"\n')
    assert overrides.byok == BYOK_LIST
    r = priced('[byok]\ntotal_cost = "list"\n', credential_type="byok")
    assert r.total_cost == r.market_cost == list_price()


def test_byok_with_an_unknown_model_stays_unpriced_whatever_the_policy() -> None:
    r = priced('[byok]\ntotal_cost = "list"\n', credential_type="byok", model="acme-9")
    assert (r.price_status, r.total_cost, r.market_cost) == (UNPRICED, None, None)


# -- custom models ---------------------------------------------------------------------------------------------------

CUSTOM = """
[[model]]
provider = "acme"
model = "acme-llm-9*"
input_mtok = 1
cached_input_mtok = 0.1
output_mtok = 3
note = "in-house"

[[model]]
provider = "openai"
model = "gpt-4o"                 # the catalog prices it: its list price stays the catalog's
input_mtok = 100
output_mtok = 100
"""


def test_a_custom_model_gets_a_list_price_and_a_rule_can_discount_it() -> None:
    r = priced(CUSTOM, provider="acme", model="acme-llm-9-turbo")
    assert r.price_status == PRICED
    assert r.market_cost == r.total_cost == Decimal("0.006") + Decimal("0.0004") + Decimal("0.003")
    discounted = priced(CUSTOM + '[[rule]]\nprovider = "acme"\ndiscount_percent = 50\n', provider="acme", model="acme-llm-9")
    assert discounted.total_cost == discounted.market_cost / 2  # type: ignore[operator]  # priced above: not None


def test_a_custom_model_never_replaces_the_catalog_list_price(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        r = priced(CUSTOM)
    assert r.market_cost == list_price()
    assert "the catalog prices openai/gpt-4o" in caplog.text


def test_a_custom_model_outside_its_dates_is_unpriced() -> None:
    text = '[[model]]\nprovider = "acme"\nmodel = "m"\ninput_mtok = 1\noutput_mtok = 1\nstart_date = 2027-01-01\n'
    assert priced(text, provider="acme", model="m").price_status == UNPRICED


# -- version, loading, environment -----------------------------------------------------------------------------------


def test_price_version_names_the_overrides_file_by_hash(tmp_path: Path) -> None:
    path = tmp_path / "pricing.toml"
    path.write_text('[[rule]]\nprovider = "openai"\ndiscount_percent = 5\n')
    pricer = Pricer(overrides=path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert pricer.price_version == f"{PRICE_VERSION} overrides={digest[:12]}"
    r = record()
    pricer.price(r)
    assert r.price_version == pricer.price_version
    assert Pricer(overrides=NO_OVERRIDES).price_version == PRICE_VERSION


def test_pricer_reads_the_overrides_path_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pricing.toml"
    path.write_text('[[rule]]\nprovider = "openai"\ndiscount_percent = 25\n')
    monkeypatch.setenv(environment.PRICING, str(path))
    r = record()
    Pricer().price(r)
    assert r.total_cost == r.market_cost * Decimal("0.75")  # type: ignore[operator]  # priced above: not None
    monkeypatch.delenv(environment.PRICING)
    assert Pricer().overrides is NO_OVERRIDES


def test_a_bad_file_in_the_environment_stops_the_pricer_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pricing.toml"
    path.write_text('[[rule]]\nprovider = "openai"\ndiscount_percent = 101\n')
    monkeypatch.setenv(environment.PRICING, str(path))
    with pytest.raises(PricingConfigError, match=rf"{path}:3: discount_percent must be 0 to 100"):
        Pricer()
    monkeypatch.setenv(environment.PRICING, str(tmp_path / "missing.toml"))
    with pytest.raises(PricingConfigError, match="cannot read"):
        Pricer()


def test_the_receiver_refuses_to_start_with_a_bad_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pricing.toml"
    path.write_text("[[rule]]\nprovider = 'openai'\n")
    monkeypatch.setenv(environment.PRICING, str(path))
    with pytest.raises(PricingConfigError, match="needs discount_percent or explicit prices"):
        Receiver(tmp_path / "data", grpc_port=0)


# -- validation: every problem, with its line ------------------------------------------------------------------------

BAD = """\
[byok]
total_cost = "free"
colour = 1

[aliases.azure]
"prod" = "gpt-9000"

[[rule]]
provider = "opnai"
discount_percent = 10

[[rule]]
provider = "openai"
model = "gpt-4o"
discount_percent = 120

[[rule]]
provider = "anthropic"
discount_percent = 10
input_mtok = 3
output_mtok = 15

[[rule]]
provider = "openai"
model = "gpt-4o"
input_mtok = 1
output_mtok = -2
start_date = 2026-05-01
end_date = 2026-04-01

[[rule]]
provider = "anthropic"
discount_percent = 5

[[rule]]
provider = "anthropic"
model = "claude-haiku-4-5"
discount_percent = 7

[[model]]
provider = "acme"
input_mtok = 1

[[model]]
provider = "acme"
model = "m1"
input_mtok = "x"
output_mtok = 1
start_date = 2026-01-01T00:00:00

[[rule]]
model = "gpt-4o-mini"
discount_percent = 3
modell = "x"

[[rule]]
provider = "openai"
model = "gpt-nonexistent-7"
discount_percent = 3

[[rule]]
provider = "openai"
input_mtok = 1

[surprise]
x = 1
"""


def test_every_problem_is_reported_at_once_with_its_line() -> None:
    with pytest.raises(PricingConfigError) as info:
        parse_overrides(BAD, source="pricing.toml")
    errors = info.value.errors
    expected = [
        ("pricing.toml:2:", 'total_cost must be "zero"'),
        ("pricing.toml:3:", "unknown key in [byok]: 'colour'"),
        ("pricing.toml:6:", "alias 'prod' -> azure/gpt-9000: the catalog has no such model"),
        ("pricing.toml:9:", "provider 'opnai' is not in the price catalog and no [[model]] uses it (did you mean 'openai'?)"),
        ("pricing.toml:15:", "discount_percent must be 0 to 100, got 120"),
        ("pricing.toml:17:", "has both discount_percent and explicit prices"),
        ("pricing.toml:27:", "output_mtok must be a finite number ≥ 0"),
        ("pricing.toml:29:", "end_date 2026-04-01 is before start_date 2026-05-01"),
        ("pricing.toml:35:", "this rule never applies: the rule at line 31 matches every call it would"),
        ("pricing.toml:40:", "[[model]] needs provider and model"),
        ("pricing.toml:47:", "input_mtok must be a number, got 'x'"),
        ("pricing.toml:49:", "start_date must be a date (YYYY-MM-DD, a UTC day), not a date and time"),
        ("pricing.toml:54:", "unknown key in [[rule]]: 'modell' (did you mean 'model'?"),
        ("pricing.toml:58:", "model 'gpt-nonexistent-7' is not in the price catalog for provider 'openai'"),
        ("pricing.toml:61:", "explicit prices needs output_mtok"),
        ("pricing.toml:65:", "unknown top-level key: 'surprise'"),
    ]
    for prefix, fragment in expected:
        assert any(e.startswith(prefix) and fragment in e for e in errors), (prefix, fragment, errors)
    assert [int(e.split(":")[1]) for e in errors] == sorted(int(e.split(":")[1]) for e in errors)


def test_a_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[rule]]\nprovider = "openai"\ndiscount_percent = \n')
    with pytest.raises(PricingConfigError, match=rf"^invalid pricing overrides:\n  {path}:3: TOML syntax error"):
        load_overrides(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[[rule]]\ndiscount_percent = 5\n", "needs provider, model or both"),
        ('[[rule]]\nprovider = "openai"\ndiscount_percent = true\n', "discount_percent must be a number"),
        ('[[rule]]\nprovider = "openai"\ndiscount_percent = nan\n', "finite number"),
        ('[[model]]\nprovider = "acme"\nmodel = "m"\n', "[[model]] needs prices"),
        ('[[model]]\nprovider = "acme"\nmodel = "m"\noutput_mtok = 1\n', "needs input_mtok"),
        ('[aliases.azure]\n"x" = 5\n', "alias 'x' must be a model name"),
        ("rule = 5\n", "'rule' must be an array of tables"),
        ('byok = "zero"\n', "'byok' must be a table"),
        ('[[rule]]\nprovider = ""\ndiscount_percent = 1\n', "provider must be a non-empty string"),
    ],
)
def test_validation_messages(text: str, fragment: str) -> None:
    with pytest.raises(PricingConfigError) as info:
        parse_overrides(text)
    assert any(fragment in e for e in info.value.errors), info.value.errors


def test_a_valid_file_parses_completely() -> None:
    overrides = parse_overrides(
        """
[byok]
total_cost = "zero"
[aliases.azure]
"prod-chat" = "gpt-4o-2024-08-06"
[[rule]]
provider = "openai"
model = "gpt-4o-mini*"
discount_percent = 15
start_date = 2026-01-01
note = "MSA"
[[rule]]
provider = "gcp.vertex_ai"
discount_percent = 5
[[model]]
provider = "acme"
model = "acme-llm"
input_mtok = 1
output_mtok = 2
""",
        source="ok.toml",
    )
    assert len(overrides.rules) == 2 and len(overrides.models) == 1
    assert overrides.rules[1].provider == "google"  # OTel names are accepted and canonicalised
    assert overrides.rules[0].start == date(2026, 1, 1) and overrides.rules[0].note == "MSA"
    assert overrides.alias_for("azure", "PROD-CHAT") == ("azure", "gpt-4o-2024-08-06")
    assert "ok.toml" in overrides.rules[0].describe() and "15% off" in overrides.rules[0].describe()


def test_the_documented_example_is_a_valid_file() -> None:
    doc = pricing_overrides.__doc__ or ""
    example = doc.split("Example::\n", 1)[1].split("\n\n``market_cost``", 1)[0]
    overrides = parse_overrides("\n".join(line[4:] for line in example.splitlines()))
    assert len(overrides.rules) == 2 and len(overrides.models) == 1 and overrides.aliases
