"""What no call can be (issue 13): usage beyond the per-call limits, a duration of years, a label of a megabyte or
with control characters. Hand-built spans (tests/helpers/otlp.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from tokentrail.processor import environment
from tokentrail.processor.normalize.limits import (
    DEFAULT_MAX_INPUT_TOKENS_PER_CALL,
    DEFAULT_MAX_OUTPUT_TOKENS_PER_CALL,
    CallLimits,
    LimitsError,
    limits_from_environment,
    load_call_limits,
)
from tokentrail.processor.normalize.reader import NormalizeResult, normalize_request
from tokentrail.processor.schema import UsageRecord

from tests.helpers.otlp import genai_attributes, make_request, make_span

MIB = "x" * (1 << 20)
HOUR_NS = 3600 * 10**9


def normalize(*spans: Span, limits: CallLimits | None = None) -> NormalizeResult:
    return normalize_request(make_request(list(spans)), limits)


def span(changes: dict[str, Any] | None = None, **kwargs: Any) -> Span:
    return make_span(genai_attributes(changes), trace_id=os.urandom(16), span_id=os.urandom(8), **kwargs)


def o1_pro(input_tokens: int, output_tokens: int) -> Span:
    return span(
        {
            "gen_ai.request.model": "o1-pro",
            "gen_ai.response.model": "o1-pro",
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "gen_ai.usage.cache_read.input_tokens": 0,
        }
    )


def kept(result: NormalizeResult) -> UsageRecord:
    assert result.rejected == 0, result.errors
    (record,) = result.records
    return record


# -- usage per call ----------------------------------------------------------------------------------------------


def test_a_billion_tokens_on_o1_pro_is_rejected_not_billed_and_the_batch_kept() -> None:
    result = normalize(o1_pro(10**9, 10**9), span())
    assert (len(result.records), result.rejected) == (1, 1)
    assert result.records[0].model == "gpt-4o-2024-08-06"
    assert "1000000000 input tokens, more than one call can have" in result.errors[0]
    assert environment.MAX_INPUT_TOKENS_PER_CALL in result.errors[0]


@pytest.mark.parametrize(
    ("input_tokens", "output_tokens", "variable"),
    [
        (DEFAULT_MAX_INPUT_TOKENS_PER_CALL + 1, 0, environment.MAX_INPUT_TOKENS_PER_CALL),
        (1200, DEFAULT_MAX_OUTPUT_TOKENS_PER_CALL + 1, environment.MAX_OUTPUT_TOKENS_PER_CALL),
    ],
)
def test_usage_beyond_the_default_limits_is_rejected(input_tokens: int, output_tokens: int, variable: str) -> None:
    result = normalize(o1_pro(input_tokens, output_tokens))
    assert (len(result.records), result.rejected) == (0, 1)
    assert variable in result.errors[0]


def test_usage_at_the_default_limits_is_a_call() -> None:
    record = kept(normalize(o1_pro(DEFAULT_MAX_INPUT_TOKENS_PER_CALL, DEFAULT_MAX_OUTPUT_TOKENS_PER_CALL)))
    assert (record.input_tokens, record.output_tokens) == (50_000_000, 10_000_000)


def test_the_input_limit_counts_cached_input_added_to_an_exclusive_count() -> None:
    # Anthropic's convention: the cache is added to the input (house rule), and the sum is what one call read.
    result = normalize(
        span({"gen_ai.usage.input_tokens": 10, "gen_ai.usage.cache_read.input_tokens": 60_000_000}),
    )
    assert result.rejected == 1 and "60000010 input tokens" in result.errors[0]


def test_limits_given_to_the_normalizer_are_the_ones_applied() -> None:
    limits = CallLimits(max_input_tokens=1000, max_output_tokens=100)
    result = normalize(span(), o1_pro(900, 100), limits=limits)  # the default span has 1200 input tokens
    assert [r.model for r in result.records] == ["o1-pro"]
    assert result.errors == [
        "span 'chat gpt-4o' has 1200 input tokens, more than one call can have "
        "(at most 1000: TOKENTRAIL_MAX_INPUT_TOKENS_PER_CALL)"
    ]


@pytest.fixture
def loaded_limits() -> Iterator[None]:
    yield
    load_call_limits()  # back to what the environment says (the defaults, in tests)


@pytest.mark.usefixtures("loaded_limits")
def test_limits_from_the_environment_are_read_once_and_used_by_default() -> None:
    variables = {environment.MAX_INPUT_TOKENS_PER_CALL: " 1_000 ", environment.MAX_OUTPUT_TOKENS_PER_CALL: "100"}
    assert load_call_limits(variables) == CallLimits(1000, 100)
    assert normalize(span()).rejected == 1  # 1200 input tokens
    assert kept(normalize(o1_pro(1000, 100))).input_tokens == 1000


def test_unset_or_empty_variables_mean_the_defaults() -> None:
    assert limits_from_environment({}) == CallLimits(50_000_000, 10_000_000)
    assert limits_from_environment({environment.MAX_OUTPUT_TOKENS_PER_CALL: ""}) == CallLimits()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "'lots' is not a whole number of tokens"),
        ("1e6", "'1e6' is not a whole number of tokens"),
        ("0", "=0 is out of range [1, 1000000000]"),
        ("-5", "=-5 is out of range"),
        ("2000000000", "=2000000000 is out of range"),
    ],
)
@pytest.mark.usefixtures("loaded_limits")
def test_a_bad_limit_variable_is_an_error_naming_it(value: str, message: str) -> None:
    for variable in (environment.MAX_INPUT_TOKENS_PER_CALL, environment.MAX_OUTPUT_TOKENS_PER_CALL):
        with pytest.raises(LimitsError) as caught:
            load_call_limits({variable: value})
        assert str(caught.value).startswith(variable) and message in str(caught.value)


# -- duration ----------------------------------------------------------------------------------------------------


def test_a_span_of_years_keeps_its_call_without_a_duration() -> None:
    result = normalize(span(duration_ns=527 * 365 * 24 * HOUR_NS))
    record = kept(result)
    assert record.duration_ms is None and record.input_tokens == 1200
    assert "duration dropped: 4616520 hours, longer than any call (24 h)" in result.warnings[0]


def test_a_day_long_call_keeps_its_duration() -> None:
    result = normalize(span(duration_ns=24 * HOUR_NS))
    assert kept(result).duration_ms == 24 * 3600 * 1000 and not result.warnings


def test_a_span_ending_before_it_starts_says_why_it_has_no_duration() -> None:
    result = normalize(span(duration_ns=-1))
    assert kept(result).duration_ms is None
    assert result.warnings == ["span 'chat gpt-4o': duration dropped: end time before start time"]


# -- labels --------------------------------------------------------------------------------------------------


def test_a_megabyte_api_is_dropped_like_any_other_label() -> None:
    result = normalize(span({"tokentrail.api": MIB}))
    record = kept(result)
    assert record.api is None and record.input_tokens == 1200
    assert result.warnings == ["span 'chat gpt-4o': api dropped: 1048576 characters (at most 256)"]


def test_control_characters_are_removed_from_user_tags_and_names_with_a_warning() -> None:
    dirty = {
        "user.id": "cust\x0042",
        "tokentrail.tags": ["plan:\x07pro", "feature:chat"],
        "gen_ai.response.model": "gpt-4o-2024-08-06\x00",
        "tokentrail.api": "chat.\x1bcompletions",
    }
    for _ in range(2):  # the second time the same values are met: still removed, still said
        result = normalize(span(dirty))
        record = kept(result)
        assert (record.user_id, record.tags) == ("cust42", ["plan:pro", "feature:chat"])
        assert (record.model, record.api) == ("gpt-4o-2024-08-06", "chat.completions")
        assert sorted(result.warnings) == [
            f"attribute {key!r}: control characters removed"
            for key in ("gen_ai.response.model", "tokentrail.api", "tokentrail.tags", "user.id")
        ]


def test_a_user_id_of_control_characters_only_is_no_user() -> None:
    assert kept(normalize(span({"user.id": "\x00\x00"}))).user_id is None


def test_other_non_printable_characters_are_kept() -> None:
    result = normalize(span({"user.id": "José\u00a0Smith"}))  # a no-break space is not a control character
    assert kept(result).user_id == "José\u00a0Smith" and not result.warnings


def test_control_characters_are_removed_from_metadata_attribution() -> None:
    attrs = {
        "ai.model.provider": "openai.chat",
        "ai.model.id": "gpt-4o-mini",
        "ai.operationId": "ai.generateText.doGenerate",
        "ai.telemetry.metadata.userId": "cust\x00_v",
        "ai.telemetry.metadata.tags": ["feature:\x00support"],
        "ai.usage.promptTokens": 10,
        "ai.usage.completionTokens": 5,
    }
    result = normalize(make_span(attrs, name="ai.generateText.doGenerate", trace_id=os.urandom(16)))
    record = kept(result)
    assert (record.user_id, record.tags) == ("cust_v", ["feature:support"])
    assert result.warnings == [
        "span 'ai.generateText.doGenerate': control characters removed from the user id; "
        "control characters removed from 1 tag(s)"
    ]


def test_control_characters_are_removed_from_the_service_name() -> None:
    request = make_request([span()], resource={"service.name": "check\x00out", "deployment.environment.name": "prod"})
    result = normalize_request(request)
    assert (kept(result).service, kept(result).environment) == ("checkout", "prod")
    assert result.warnings == ["service.name: control characters removed"]
