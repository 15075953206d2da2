"""Normalization: every GenAI span dialect becomes one usage record with inclusive input tokens; bad spans are
rejected one by one and never cost their batch. Also the ingest dedupe window."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from tokentrail.processor.normalize.reader import normalize_request
from tokentrail.processor.schema import NO_USAGE
from tokentrail.processor.storage.dedupe import DedupeWindow

from tests.helpers.otlp import T0_NS, genai_attributes, make_request, make_span


def one(attrs: dict, **span_kwargs: Any):  # noqa: ANN201
    result = normalize_request(make_request([make_span(attrs, **span_kwargs)]))
    assert result.rejected == 0, result.errors
    (record,) = result.records
    return record


def test_our_span_becomes_one_record_with_attribution() -> None:
    record = one(genai_attributes())
    assert record.source == "tokentrail"
    assert record.api == "chat.completions"
    assert record.operation == "chat"
    assert record.provider == "openai"
    assert record.model == "gpt-4o-2024-08-06"
    assert record.request_model == "gpt-4o"
    assert record.user_id == "cust_42"
    assert record.tags == ["plan:pro", "feature:chat"]
    assert record.credential_type == "system"
    assert record.credential_id == "fp_abc123"
    assert (record.input_tokens, record.output_tokens, record.cached_input_tokens) == (1200, 300, 1000)
    assert record.service == "checkout" and record.environment == "prod"
    assert record.status == "ok" and record.streamed is False


def test_cached_tokens_are_never_added_to_an_inclusive_input_count() -> None:
    record = one(
        genai_attributes(
            {
                "gen_ai.usage.input_tokens": 5000,
                "gen_ai.usage.cache_read.input_tokens": 3000,
                "gen_ai.usage.cache_creation.input_tokens": 1500,
            }
        )
    )
    assert record.input_tokens == 5000
    assert record.cached_input_tokens == 3000
    assert record.cache_creation_input_tokens == 1500


def test_otel_semconv_span_with_legacy_system_name_and_cache_write_alias() -> None:
    attrs = {
        "gen_ai.system": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 20,
        "gen_ai.usage.cache_write.input_tokens": 40,
        "gen_ai.usage.reasoning.output_tokens": 5,
    }
    record = one(attrs)
    assert record.source == "otel-genai"
    assert record.provider == "openai"
    assert record.model == "gpt-4o-mini" and record.request_model == "gpt-4o-mini"
    assert record.cache_creation_input_tokens == 40
    assert record.reasoning_tokens == 5
    assert record.api is None


def test_anthropic_sdk_native_span_is_its_own_dialect_with_inclusive_input() -> None:
    # As anthropic 2.x writes it: input_tokens already = input + cache reads + cache writes.
    attrs = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "gen_ai.response.id": "msg_01XYZ",
        "gen_ai.usage.input_tokens": 2100,
        "gen_ai.usage.cache_read.input_tokens": 1500,
        "gen_ai.usage.cache_write.input_tokens": 500,
        "gen_ai.usage.output_tokens": 80,
        "gen_ai.request.stream": True,
    }
    record = one(attrs, name="anthropic.messages.create")
    assert record.source == "anthropic-sdk"
    assert record.api == "anthropic.messages"
    assert record.provider == "anthropic"
    assert record.response_id == "msg_01XYZ"
    assert (record.input_tokens, record.cached_input_tokens, record.cache_creation_input_tokens) == (2100, 1500, 500)
    assert record.output_tokens == 80
    assert record.streamed is True


def test_anthropic_compaction_tokens_are_billed_on_top_of_the_main_usage() -> None:
    attrs = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 10,
        "anthropic.usage.compaction.input_tokens": 400,
        "anthropic.usage.compaction.output_tokens": 50,
    }
    record = one(attrs, name="anthropic.messages.create")
    assert (record.input_tokens, record.output_tokens) == (1400, 60)


def test_anthropic_sdk_span_gets_attribution_stamped_by_our_instrumentation() -> None:
    attrs = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-haiku-4-5",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 1,
        "user.id": "u1",
        "tokentrail.tags": ["team:a"],
        "tokentrail.credential.type": "byok",
    }
    record = one(attrs, name="anthropic.messages.create")
    assert record.source == "anthropic-sdk"
    assert (record.user_id, record.tags, record.credential_type) == ("u1", ["team:a"], "byok")


def test_provider_names_map_to_catalog_ids() -> None:
    assert one(genai_attributes({"gen_ai.provider.name": "azure.ai.openai"})).provider == "azure"
    assert one(genai_attributes({"gen_ai.provider.name": "gcp.gemini"})).provider == "google"
    assert one(genai_attributes({"gen_ai.provider.name": "aws.bedrock"})).provider == "aws"
    assert one(genai_attributes({"gen_ai.provider.name": "x_ai"})).provider == "x-ai"


def test_timestamp_is_span_start_in_utc_microseconds_and_duration_from_end() -> None:
    record = one(genai_attributes(), start_ns=T0_NS + 123_456_789, duration_ns=2_500_000_000)
    assert record.timestamp == datetime(2025, 6, 1, 12, 0, 0, 123_456, tzinfo=UTC)
    assert record.duration_ms == pytest.approx(2500.0)


def test_trace_and_span_ids_are_lowercase_hex() -> None:
    record = one(genai_attributes(), trace_id=bytes(range(16)), span_id=bytes(range(8)))
    assert record.trace_id == "000102030405060708090a0b0c0d0e0f"
    assert record.span_id == "0001020304050607"


def test_error_status_or_error_type_marks_the_record_error() -> None:
    assert one(genai_attributes(), status_code=Status.STATUS_CODE_ERROR).status == "error"
    record = one(genai_attributes({"error.type": "RateLimitError"}))
    assert (record.status, record.error_type) == ("error", "RateLimitError")


def test_incomplete_stream_is_marked_incomplete_and_streamed() -> None:
    record = one(genai_attributes({"tokentrail.stream.incomplete": True, "gen_ai.request.stream": True}))
    assert record.status == "incomplete"
    assert record.streamed is True


def test_missing_usage_keeps_the_record_with_zero_tokens_and_no_price() -> None:
    attrs = genai_attributes(
        {
            "tokentrail.usage.missing": True,
            "gen_ai.usage.input_tokens": None,
            "gen_ai.usage.output_tokens": None,
            "gen_ai.usage.cache_read.input_tokens": None,
            "gen_ai.usage.reasoning.output_tokens": None,
        }
    )
    record = one(attrs)
    assert (record.input_tokens, record.output_tokens) == (0, 0)
    assert record.price_status == NO_USAGE
    assert record.price_version is None  # nothing priced it
    assert record.total_cost is None and record.market_cost is None


def test_credential_type_defaults_to_system_and_unknown_values_fall_back_to_it() -> None:
    assert one(genai_attributes({"tokentrail.credential.type": None})).credential_type == "system"
    assert one(genai_attributes({"tokentrail.credential.type": "BYOK"})).credential_type == "byok"
    assert one(genai_attributes({"tokentrail.credential.type": "weird"})).credential_type == "system"


def test_legacy_deployment_environment_resource_attribute_is_read() -> None:
    request = make_request(
        [make_span(genai_attributes())], resource={"service.name": "svc", "deployment.environment": "staging"}
    )
    (record,) = normalize_request(request).records
    assert (record.service, record.environment) == ("svc", "staging")


def test_non_genai_spans_are_skipped_not_rejected() -> None:
    spans = [
        make_span({"http.request.method": "GET", "url.path": "/health"}, name="GET /health"),
        make_span({}, name="db.query"),
        make_span(genai_attributes()),
    ]
    result = normalize_request(make_request(spans))
    assert (len(result.records), result.skipped, result.rejected, result.received) == (1, 2, 0, 3)


def test_agent_spans_that_repeat_their_calls_totals_are_skipped() -> None:
    attrs = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 9999,
        "gen_ai.usage.output_tokens": 99,
    }
    result = normalize_request(make_request([make_span(attrs, name="invoke_agent support")]))
    assert (result.records, result.skipped) == ([], 1)


def test_span_with_usage_but_no_model_is_rejected_and_the_rest_of_the_batch_kept() -> None:
    spans = [
        make_span(genai_attributes()),
        make_span(genai_attributes({"gen_ai.request.model": None, "gen_ai.response.model": None})),
        make_span(genai_attributes({"gen_ai.provider.name": None})),
        make_span(genai_attributes()),
    ]
    result = normalize_request(make_request(spans))
    assert len(result.records) == 2
    assert result.rejected == 2
    assert any("no model" in e for e in result.errors)
    assert any("no provider" in e for e in result.errors)


@pytest.mark.parametrize(
    ("value", "reason"),
    [(-1, "out of range"), (2_000_000_000, "out of range"), ("12", "must be an integer"), (1.5, "must be an integer")],
)
def test_invalid_token_count_rejects_only_that_span(value: object, reason: str) -> None:
    spans = [make_span(genai_attributes({"gen_ai.usage.output_tokens": value})), make_span(genai_attributes())]
    result = normalize_request(make_request(spans))
    assert len(result.records) == 1
    assert result.rejected == 1
    assert reason in result.errors[0]


def test_integral_double_token_count_is_accepted() -> None:
    assert one(genai_attributes({"gen_ai.usage.output_tokens": 42.0})).output_tokens == 42


def test_dedupe_window_drops_a_record_already_seen() -> None:
    request = make_request([make_span(genai_attributes(), trace_id=b"\x01" * 16, span_id=b"\x02" * 8)])
    window = DedupeWindow()
    first = window.filter(normalize_request(request).records)
    again = window.filter(normalize_request(request).records)
    assert (len(first), len(again)) == (1, 0)


def test_dedupe_identity_is_provider_and_response_id_across_instrumentations() -> None:
    ours = make_span(genai_attributes({"gen_ai.provider.name": "anthropic", "gen_ai.response.id": "msg_1"}))
    native = make_span(
        {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.response.id": "msg_1",
            "gen_ai.usage.input_tokens": 1,
        },
        name="anthropic.messages.create",
    )
    window = DedupeWindow()
    assert len(window.filter(normalize_request(make_request([ours, native])).records)) == 1


def test_dedupe_window_is_bounded_and_forgets_the_oldest() -> None:
    window = DedupeWindow(max_size=2)
    records = normalize_request(make_request([make_span(genai_attributes()) for _ in range(3)])).records
    window.filter(records)
    assert len(window) == 2
    assert len(window.filter(records[:1])) == 1  # the oldest aged out, so it counts as new


def test_aborted_claim_is_forgotten_so_a_retry_is_accepted() -> None:
    window = DedupeWindow()
    records = normalize_request(make_request([make_span(genai_attributes())])).records
    claim = window.claim(records)
    claim.abort()
    assert len(window.filter(records)) == 1
