"""Bedrock model ids, in every form the instrumentation and other SDKs put on spans, price as the AWS catalog lists
them: bare ids, cross-region inference profiles (``us.``, ``eu.``, ``apac.``, ``global.``) and ARNs. A global profile
is priced as global, a regional one as regional; an unknown or opaque id is unpriced (NULL, counted), never $0."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from tokentrail.instrumentation._bedrock_usage import request_model
from tokentrail.processor.pricing.catalog import Pricer, catalog_price
from tokentrail.processor.pricing.lookup import resolve_name
from tokentrail.processor.pricing.overrides import NO_OVERRIDES
from tokentrail.processor.schema import PRICED, UNPRICED, UsageRecord

T = datetime(2025, 11, 1, 12, 0, tzinfo=UTC)
SONNET_35 = "anthropic.claude-3-5-sonnet-20240620-v1:0"
SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
ACCOUNT = "123456789012"

# (model id as sent, catalog model it must price as)
FORMS = [
    (SONNET_35, "regional.anthropic.claude-3-5-sonnet-20240620-v1:0"),
    (f"us.{SONNET_35}", "regional.anthropic.claude-3-5-sonnet-20240620-v1:0"),
    (f"eu.{SONNET_35}", "regional.anthropic.claude-3-5-sonnet-20240620-v1:0"),
    (f"apac.{SONNET_35}", "regional.anthropic.claude-3-5-sonnet-20240620-v1:0"),
    (f"us.{SONNET_45}", "regional.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    (f"global.{SONNET_45}", "global.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    (f"arn:aws:bedrock:us-east-1::foundation-model/{SONNET_35}", "regional.anthropic.claude-3-5-sonnet-20240620-v1:0"),
    (
        f"arn:aws:bedrock:us-east-1:{ACCOUNT}:inference-profile/us.{SONNET_35}",
        "regional.anthropic.claude-3-5-sonnet-20240620-v1:0",
    ),
    (
        f"arn:aws:bedrock:us-east-1:{ACCOUNT}:inference-profile/global.{SONNET_45}",
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
    ),
    ("amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),
    ("us.amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),
    ("eu.amazon.nova-lite-v1:0", "amazon.nova-lite-v1:0"),
    ("apac.amazon.nova-micro-v1:0", "amazon.nova-micro-v1:0"),
    ("meta.llama3-1-70b-instruct-v1:0", "meta.llama3-1-70b-instruct-v1:0"),
    ("us.meta.llama3-3-70b-instruct-v1:0", "meta.llama3-3-70b-instruct-v1:0"),
    ("mistral.mistral-large-2402-v1:0", "mistral.mistral-large-2402-v1:0"),
    ("mistral.mistral-7b-instruct-v0:2", "mistral.mistral-7b-instruct-v0:2"),
]


def record(model: str, provider: str = "aws.bedrock") -> UsageRecord:
    return UsageRecord(
        timestamp=T, trace_id="0" * 32, span_id="0" * 16, provider=provider, model=model, input_tokens=1_000,
        output_tokens=200,
        cached_input_tokens=100, cache_creation_input_tokens=50,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return Pricer(overrides=NO_OVERRIDES, auto_update=False)


@pytest.mark.parametrize(("model_id", "catalog_id"), FORMS)
@pytest.mark.parametrize("provider", ["aws.bedrock", "aws", "bedrock"])
def test_every_bedrock_id_form_prices_as_its_catalog_model(
    pricer: Pricer, model_id: str, catalog_id: str, provider: str
) -> None:
    for name in {model_id, request_model(model_id)}:  # as sent, and as our spans carry it
        match = resolve_name(provider, name)
        assert match is not None, name
        assert match.provider.id == "aws"
        assert match.model.id == catalog_id
        usage = record(name, provider)
        assert pricer.price(usage)
        assert usage.price_status == PRICED
        assert usage.market_cost is not None
        assert usage.market_cost > 0
        expected = catalog_price(  # the catalog library's own answer for the name
            "aws", match.ref.model, T, input_tokens=1_000, output_tokens=200, cached_input_tokens=100,
            cache_creation_input_tokens=50,
        )  # fmt: skip
        assert usage.market_cost == expected


def test_a_global_profile_is_priced_apart_from_a_regional_one(pricer: Pricer) -> None:
    regional = pricer.quote("aws.bedrock", f"us.{SONNET_45}", T, input_tokens=1_000_000, output_tokens=0)
    global_ = pricer.quote("aws.bedrock", f"global.{SONNET_45}", T, input_tokens=1_000_000, output_tokens=0)
    assert regional is not None and global_ is not None
    assert global_.market_cost < regional.market_cost  # AWS charges regional profiles a premium
    assert regional.market_cost == Decimal("3.3")
    assert global_.market_cost == Decimal("3")


@pytest.mark.parametrize(
    "model_id",
    [
        "anthropic.claude-nonexistent-v9:0",
        "us.anthropic.claude-nonexistent-v9:0",
        f"arn:aws:bedrock:us-east-1:{ACCOUNT}:inference-profile/us.anthropic.claude-nonexistent-v9:0",
        # An application inference profile names no model: only an overrides alias can price it.
        f"arn:aws:bedrock:us-east-1:{ACCOUNT}:application-inference-profile/a1b2c3d4e5f6",
    ],
)
def test_an_unknown_bedrock_model_is_unpriced_not_free(pricer: Pricer, model_id: str) -> None:
    usage = record(request_model(model_id))
    assert not pricer.price(usage)
    assert usage.price_status == UNPRICED
    assert usage.market_cost is None
    assert usage.total_cost is None
