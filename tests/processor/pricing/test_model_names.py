"""Names in the wild -> catalog models: the data table (processor/model_names.toml) row by row, then names as real
instrumentations and gateways send them, end to end through the pricer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from genai_prices import data_snapshot
from tokentrail.processor.pricing import model_names
from tokentrail.processor.pricing.catalog import Pricer, catalog_price
from tokentrail.processor.pricing.lookup import resolve_name
from tokentrail.processor.pricing.model_names import (
    CREATORS,
    GATEWAYS,
    PROVIDER_IDS,
    REWRITES,
    SERVICE_TIERS,
    TABLE,
    candidates,
    canonical_provider,
    load_table,
    price_context,
)
from tokentrail.processor.pricing.overrides import NO_OVERRIDES, parse_overrides

T = datetime(2025, 10, 1, 12, tzinfo=UTC)
CATALOG_IDS = {p.id for p in data_snapshot.get_snapshot().providers}


# -- the table, row by row -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "target"), sorted(PROVIDER_IDS.items()))
def test_each_provider_row_targets_a_catalog_provider_or_a_gateway(name: str, target: str) -> None:
    assert target in CATALOG_IDS or target in GATEWAYS
    assert canonical_provider(name) == target
    assert canonical_provider(name.upper()) == target  # names are compared lowercased


def test_gateways_are_not_catalog_providers_and_fall_back_to_one() -> None:
    assert not GATEWAYS & CATALOG_IDS
    assert TABLE.fallback_provider in CATALOG_IDS


@pytest.mark.parametrize(("creator", "row"), sorted(CREATORS.items()))
def test_each_creator_row_targets_a_catalog_provider(creator: str, row: model_names.Creator) -> None:
    assert row.provider in CATALOG_IDS
    assert "{model}" in row.model


@pytest.mark.parametrize(
    ("rewrite", "example"), [(rw, ex) for rw in REWRITES for ex in rw.examples], ids=lambda v: getattr(v, "name", None)
)
def test_each_rewrite_maps_its_examples_exactly(rewrite: model_names.Rewrite, example: tuple[str, str, str, str]) -> None:
    provider, model, new_provider, new_model = example
    assert rewrite.apply(provider, model, CREATORS) == (new_provider, new_model)


@pytest.mark.parametrize("rewrite", REWRITES, ids=lambda rw: rw.name)
def test_each_rewrite_has_examples_and_a_known_target_provider(rewrite: model_names.Rewrite) -> None:
    assert rewrite.examples
    assert rewrite.provider in (None, "{creator}") or rewrite.provider in CATALOG_IDS
    for allowed in rewrite.when_provider or ():
        assert allowed == "{creator}" or allowed in CATALOG_IDS or allowed in GATEWAYS


@pytest.mark.parametrize(("tier", "context"), sorted(SERVICE_TIERS.items()))
def test_each_service_tier_row_names_a_context_the_catalog_uses(tier: str, context: dict[str, str]) -> None:
    used = {
        (key, value)
        for p in data_snapshot.get_snapshot().providers
        for m in p.models
        for v in m.price_variants or ()
        for key, value in v.when.items()
    }
    assert set(context.items()) & used, f"{tier}: no catalog model has a variant for {context}"
    assert price_context(tier.upper()) == context


def test_an_unknown_or_missing_service_tier_prices_at_standard_rates() -> None:
    assert price_context(None) is None
    assert price_context("") is None
    assert price_context("scale") is None


def test_the_packaged_table_parses_the_same_as_the_loaded_one() -> None:
    assert load_table() == TABLE


# -- provider names as instrumentations send them --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("otel_name", "catalog_id"),
    [
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("gcp.gemini", "google"),
        ("gcp.vertex_ai", "google"),
        ("gcp.gen_ai", "google"),
        ("azure.ai.openai", "azure"),
        ("azure.ai.inference", "azure"),
        ("az.ai.openai", "azure"),
        ("aws.bedrock", "aws"),
        ("x_ai", "x-ai"),
        ("mistral_ai", "mistral"),
        ("groq", "groq"),
        ("deepseek", "deepseek"),
        ("openrouter", "openrouter"),
        ("perplexity", "perplexity"),
        ("cohere", "cohere"),
        ("Anthropic", "anthropic"),  # OpenLLMetry capitalises
        ("openai.chat", "openai"),  # Vercel AI SDK ai.model.provider
        ("openai.responses", "openai"),
        ("anthropic.messages", "anthropic"),
        ("google.generative-ai", "google"),
        ("google.vertex.chat", "google"),
        ("amazon-bedrock", "aws"),
        ("xai.chat", "x-ai"),
        ("mistral.chat", "mistral"),
        ("google-gla", "google"),  # pydantic-ai
        ("gateway", "vercel"),
        ("ibm.watsonx.ai", "ibm.watsonx.ai"),  # no catalog provider: kept as given, unpriced, listed
        ("acme-cloud", "acme-cloud"),
    ],
)
def test_otel_and_instrumentation_provider_names(otel_name: str, catalog_id: str) -> None:
    assert canonical_provider(otel_name) == catalog_id


# -- model names in the wild, end to end -----------------------------------------------------------------------------

WILD_NAMES = [
    # (provider on the span, model on the span, catalog provider, catalog model id, rewrites taken)
    ("openai", "gpt-4o", "openai", "gpt-4o", ()),
    ("openai", "gpt-4o-2024-08-06", "openai", "gpt-4o", ()),
    ("openai", "gpt-4o-2024-05-13", "openai", "gpt-4o-2024-05-13", ()),  # a snapshot with its own price
    ("openai", "openai/gpt-4o", "openai", "gpt-4o", ("creator-prefix",)),
    ("openai", "ft:gpt-4o-mini-2024-07-18:acme::abc123", "openai", "ft:gpt-4o-mini", ()),
    ("anthropic", "claude-sonnet-4-5-20250929", "anthropic", "claude-sonnet-4-5", ()),
    ("anthropic", "anthropic/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", ("creator-prefix",)),
    ("anthropic", "claude-sonnet-4.5", "anthropic", "claude-sonnet-4-5", ()),
    # The AnthropicBedrock client reports provider "anthropic" with a Bedrock id: AWS bills it.
    (
        "anthropic",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "aws",
        "regional.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ("bedrock-model-id",),
    ),
    ("aws.bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", "aws", "regional.anthropic.claude-3-5-sonnet-20240620-v1:0", ()),
    ("aws.bedrock", "us.anthropic.claude-3-5-sonnet-20240620-v1:0", "aws", "regional.anthropic.claude-3-5-sonnet-20240620-v1:0", ()),
    ("aws.bedrock", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", "aws", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", ()),
    (
        "aws.bedrock",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0",
        "aws",
        "regional.anthropic.claude-3-5-sonnet-20240620-v1:0",
        (),
    ),
    ("aws.bedrock", "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0", "aws", "amazon.nova-pro-v1:0", ()),
    ("aws.bedrock", "us.amazon.nova-pro-v1:0", "aws", "amazon.nova-pro-v1:0", ()),
    ("gcp.gemini", "gemini-2.5-pro", "google", "gemini-2.5-pro", ()),
    ("gcp.gemini", "models/gemini-2.5-flash", "google", "gemini-2.5-flash", ("models-prefix",)),
    (
        "gcp.vertex_ai",
        "projects/acme/locations/us-central1/publishers/google/models/gemini-2.5-pro",
        "google",
        "gemini-2.5-pro",
        ("vertex-resource-name",),
    ),
    ("gcp.vertex_ai", "claude-sonnet-4-5@20250929", "google", "claude-sonnet-4-5", ()),
    ("gcp.gen_ai", "gemini-2.5-flash-lite", "google", "gemini-2.5-flash-lite", ()),
    ("google", "google/gemini-2.5-pro", "google", "gemini-2.5-pro", ("creator-prefix",)),
    ("azure.ai.openai", "gpt-4o-mini", "azure", "gpt-4o-mini", ()),
    ("azure.ai.openai", "gpt-4o-2024-08-06", "azure", "gpt-4o", ()),
    ("azure.ai.inference", "deepseek-r1", "azure", "deepseek-reasoner", ()),
    ("openrouter", "openai/gpt-4o", "openrouter", "openai/gpt-4o", ()),
    ("openrouter", "anthropic/claude-sonnet-4.5", "openrouter", "anthropic/claude-sonnet-4.5", ()),
    ("openrouter", "x-ai/grok-4", "x-ai", "grok-4-0709", ("creator-prefix",)),
    ("openrouter", "openai/gpt-4o:nitro", "openrouter", "openai/gpt-4o", ("openrouter-routing-variant",)),
    ("openrouter", "openai/gpt-oss-120b:free", "openrouter", "openai/gpt-oss-120b:free", ()),  # listed free: $0
    ("gateway", "anthropic/claude-sonnet-4.5", "anthropic", "claude-sonnet-4-5", ("creator-prefix",)),
    ("gateway", "openai/gpt-5", "openai", "gpt-5", ("creator-prefix",)),
    ("gateway", "xai/grok-4", "x-ai", "grok-4-0709", ("creator-prefix",)),
    ("gateway", "amazon/nova-pro", "aws", "amazon.nova-pro-v1:0", ("creator-prefix",)),
    ("gateway", "google/gemini-2.5-flash", "google", "gemini-2.5-flash", ("creator-prefix",)),
    ("gateway", "meta-llama/llama-3.3-70b-instruct", "openrouter", "meta-llama/llama-3.3-70b-instruct", ("gateway-via-openrouter",)),
    ("vercel", "mistral/mistral-large-latest", "mistral", "mistral-large", ("creator-prefix",)),
    ("litellm", "anthropic/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", ()),  # the library splits litellm names
    ("x_ai", "grok-4", "x-ai", "grok-4-0709", ()),
    ("xai", "grok-3-mini", "x-ai", "grok-3-mini", ()),
    ("mistral_ai", "mistral-large-latest", "mistral", "mistral-large", ()),
    ("groq", "llama-3.3-70b-versatile", "groq", "llama-3.3-70b-versatile", ()),
    ("groq", "openai/gpt-oss-120b", "groq", "openai/gpt-oss-120b", ()),  # the host's own price, not OpenAI's
    ("deepseek", "deepseek-chat", "deepseek", "deepseek-chat", ()),
    ("cohere", "command-r-plus", "cohere", "command-r-plus", ()),
    ("together_ai", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", ()),
    ("fireworks_ai", "accounts/fireworks/models/llama-v3p1-8b-instruct", "fireworks", "llama-v3p1-8b-instruct", ()),
    ("perplexity", "sonar-pro", "perplexity", "sonar-pro", ()),
    ("moonshot", "kimi-k2-0905-preview", "moonshotai", "kimi-k2-0905-preview", ()),
    ("openai.chat", "gpt-4o-mini", "openai", "gpt-4o-mini", ()),
    ("anthropic.messages", "claude-haiku-4-5", "anthropic", "claude-haiku-4-5", ()),
    ("google-gla", "gemini-2.5-flash", "google", "gemini-2.5-flash", ()),
]


@pytest.mark.parametrize(("provider", "model", "catalog_provider", "catalog_model", "via"), WILD_NAMES)
def test_wild_model_names_resolve_to_the_catalog_model(
    provider: str, model: str, catalog_provider: str, catalog_model: str, via: tuple[str, ...]
) -> None:
    match = resolve_name(provider, model)
    assert match is not None
    assert (match.provider.id, match.model.id, match.via) == (catalog_provider, catalog_model, via)


@pytest.mark.parametrize(("provider", "model", "catalog_provider", "catalog_model", "via"), WILD_NAMES)
def test_a_mapped_name_costs_what_the_library_says_for_the_name_it_mapped_to(
    provider: str, model: str, catalog_provider: str, catalog_model: str, via: tuple[str, ...]
) -> None:
    pricer = Pricer(overrides=NO_OVERRIDES)
    usage: dict[str, Any] = dict(input_tokens=12_345, output_tokens=678, cached_input_tokens=2_000)
    quote = pricer.quote(canonical_provider(provider), model, T, **usage)
    match = resolve_name(provider, model)
    assert quote is not None and match is not None
    assert quote.market_cost == catalog_price(match.ref.provider, match.ref.model, T, **usage)


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("ibm.watsonx.ai", "ibm/granite-13b-chat-v2"),  # no catalog provider
        ("acme-cloud", "gpt-4o"),  # an unknown provider is never guessed to be OpenAI
        # A host serving another creator's model has its own prices: never priced at the creator's.
        ("together", "deepseek-ai/DeepSeek-V3-not-listed"),
        ("openrouter", "openai/gpt-4o:free"),  # ":free" is not the model's price and is not listed
        ("azure", "prod-chat-deployment"),  # a deployment name without an alias
        ("aws.bedrock", "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"),
    ],
)
def test_names_nobody_can_map_stay_unpriced(provider: str, model: str) -> None:
    assert resolve_name(provider, model) is None
    assert Pricer(overrides=NO_OVERRIDES).quote(canonical_provider(provider), model, T, input_tokens=1, output_tokens=1) is None


def test_azure_deployments_and_application_profiles_map_through_overrides_aliases() -> None:
    overrides = parse_overrides(
        """
[aliases.azure]
"prod-chat-deployment" = "gpt-4o-2024-08-06"
[aliases."aws.bedrock"]
"arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3" = "anthropic.claude-3-haiku-20240307-v1:0"
[aliases.acme-gw]
"house-model" = { provider = "anthropic", model = "claude-haiku-4-5" }
"""
    )
    pricer = Pricer(overrides=overrides)
    azure = pricer.match("azure", "prod-chat-deployment")
    assert azure is not None and (azure.provider.id, azure.model.id, azure.via) == ("azure", "gpt-4o", ("alias",))
    profile = pricer.match("aws", "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3")
    assert profile is not None and profile.provider.id == "aws" and "claude-3-haiku" in profile.model.id
    house = pricer.match("acme-gw", "House-Model")
    assert house is not None and (house.provider.id, house.model.id) == ("anthropic", "claude-haiku-4-5")
    quote = pricer.quote("azure", "prod-chat-deployment", T, input_tokens=1000, output_tokens=10)
    assert quote is not None and quote.market_cost == catalog_price("azure", "gpt-4o", T, input_tokens=1000, output_tokens=10)


def test_candidates_are_bounded_and_start_with_the_name_as_it_arrived() -> None:
    found = candidates("vercel", "openai/gpt-4o-2031-01-01")
    assert found[0].model == "openai/gpt-4o-2031-01-01" and found[0].via == ()
    assert [c.via for c in found[1:]] == sorted((c.via for c in found[1:]), key=len)  # breadth-first
    assert len(candidates("vercel", "a/" * 40 + "b-2031-01-01", limit=5)) <= 5
