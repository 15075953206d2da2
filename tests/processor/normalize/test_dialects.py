"""Every GenAI dialect, from the real libraries where they are installable: each instrumentation calls the fake
provider for real (in its own process, see ``dialect_producers.py``), its spans are encoded exactly as its OTLP
exporter would send them, and the normalizer must turn each call into one record whose tokens match what the
provider said — inclusive input, reasoning inside output, no aggregate span counted. (The same spans, stored, are
golden fixtures: ``test_golden.py`` pins every field of every record.)"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tokentrail.processor.demo.fake_provider import FakeCall
from tokentrail.processor.normalize.reader import NormalizeResult, normalize_request
from tokentrail.processor.schema import UsageRecord

from tests.helpers.dialect_producers import produce_all


class Produced:
    def __init__(self, request: ExportTraceServiceRequest, calls: list[FakeCall]) -> None:
        self.request = request
        self.result: NormalizeResult = normalize_request(request)
        self.calls = calls  # what the provider served this producer, in order

    @property
    def records(self) -> list[UsageRecord]:
        return self.result.records

    def call_of(self, record: UsageRecord) -> FakeCall:
        """The call behind a record: the calls are made one after another, so their spans end (and their records
        come) in the same order; a record that carries a response id must name that very call."""
        call = self.calls[self.records.index(record)]
        if record.response_id is not None:
            assert record.response_id == call.response_id
        return call

    def truth(self, record: UsageRecord) -> dict[str, Any]:
        """What the provider said about this record's call."""
        usage = self.call_of(record).usage
        assert usage is not None
        return usage


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Produced]:
    out = tmp_path_factory.mktemp("dialects")
    return {
        name: Produced(ExportTraceServiceRequest.FromString(data), calls)
        for name, (data, calls) in produce_all(out).items()
    }


def openai_truth(usage: dict[str, Any]) -> tuple[int, int, int, int]:
    """(input incl. cache, output, cache read, reasoning) as OpenAI's usage object states them."""
    return (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["prompt_tokens_details"]["cached_tokens"],
        usage["completion_tokens_details"]["reasoning_tokens"],
    )


def anthropic_truth(usage: dict[str, Any]) -> tuple[int, int, int, int]:
    """(input incl. cache, output, cache read, cache write): Anthropic's input EXCLUDES both caches."""
    read, write = usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]
    return usage["input_tokens"] + read + write, usage["output_tokens"], read, write


def test_every_producer_counts_every_call_exactly_once_and_rejects_nothing(produced: dict[str, Produced]) -> None:
    for name, p in produced.items():
        assert p.result.rejected == 0, (name, p.result.errors)
        assert len(p.calls) >= 2, name
        assert len(p.records) == len(p.calls), (name, [(r.source, r.response_id) for r in p.records])
        for record in p.records:
            call = p.call_of(record)
            assert (record.model, record.request_model) == (call.model, call.model), name
            assert record.provider == ("anthropic" if "/messages" in call.path else "openai"), name


def test_a_streamed_call_without_usage_is_a_no_usage_record_in_every_dialect(produced: dict[str, Produced]) -> None:
    """Chat Completions streams without stream_options.include_usage carry no usage: the call is still counted,
    as ``no_usage`` (never priced as $0), by every instrumentation that saw it."""
    without_usage = 0
    for name, p in produced.items():
        for record in p.records:
            call = p.call_of(record)
            if call.usage is None:
                without_usage += 1
                assert call.stream and not call.include_usage, name
                assert record.price_status == "no_usage", name
                assert (record.input_tokens, record.output_tokens) == (0, 0), name
            else:
                assert record.price_status != "no_usage", name
    # Every producer over the OpenAI SDK made one such call (ours asks for the usage only when told to inject it).
    assert without_usage == sum(1 for name in produced if name not in ("anthropic-sdk", "openllmetry-anthropic", "pydantic-ai"))


@pytest.mark.parametrize("mode", ["openai-v2", "openai-v2-latest"])
def test_official_openai_v2_instrumentation_in_both_modes(produced: dict[str, Produced], mode: str) -> None:
    p = produced[mode]
    for record in p.records[:2]:  # the third is the stream without usage
        prompt, completion, _cached, _reasoning = openai_truth(p.truth(record))
        assert record.source == "otel-genai"
        assert (record.provider, record.model) == ("openai", "gpt-4o-mini")
        # openai-v2 reports no cached or reasoning detail: the inclusive totals are still exact.
        assert (record.input_tokens, record.output_tokens) == (prompt, completion)
    names = {kv.key for rs in p.request.resource_spans for ss in rs.scope_spans for s in ss.spans for kv in s.attributes}
    # The default mode names the provider the old way, the latest-experimental mode the new way.
    assert ("gen_ai.system" in names) == (mode == "openai-v2")
    assert ("gen_ai.provider.name" in names) == (mode == "openai-v2-latest")


def test_openllmetry_openai_with_association_properties(produced: dict[str, Produced]) -> None:
    p = produced["openllmetry-openai"]
    plain, streamed, _without_usage = p.records
    assert {r.source for r in p.records} == {"openllmetry"}
    prompt, completion, cached, reasoning = openai_truth(p.truth(plain))
    assert (plain.input_tokens, plain.output_tokens, plain.cached_input_tokens, plain.reasoning_tokens) == (
        prompt,
        completion,
        cached,
        reasoning,
    )
    assert (streamed.streamed, plain.streamed) == (True, False)
    prompt, completion, cached, _ = openai_truth(p.truth(streamed))
    assert (streamed.input_tokens, streamed.output_tokens, streamed.cached_input_tokens) == (prompt, completion, cached)
    for record in p.records:
        assert record.user_id == "cust_ll"
        assert record.tags == ["plan:pro"]


def test_openllmetry_anthropic_input_is_inclusive_of_both_caches(produced: dict[str, Produced]) -> None:
    p = produced["openllmetry-anthropic"]
    plain = p.records[0]
    assert (plain.source, plain.provider) == ("openllmetry", "anthropic")
    total, output, read, write = anthropic_truth(p.truth(plain))
    assert (plain.input_tokens, plain.output_tokens, plain.cached_input_tokens, plain.cache_creation_input_tokens) == (
        total,
        output,
        read,
        write,
    )
    streamed = p.records[1]
    total, _output, read, write = anthropic_truth(p.truth(streamed))
    # Input and caches are exact; OpenLLMetry 0.62 sums message_start's output count into the final cumulative one
    # (one token too many on streams): we store what the span states, we do not second-guess an instrumentation.
    assert (streamed.input_tokens, streamed.cached_input_tokens, streamed.cache_creation_input_tokens) == (total, read, write)


def test_openinference_counts_details_and_reads_user_tags_and_metadata(produced: dict[str, Produced]) -> None:
    p = produced["openinference"]
    plain, streamed, _without_usage = p.records
    prompt, completion, cached, reasoning = openai_truth(p.truth(plain))
    assert plain.source == "openinference"
    assert (plain.input_tokens, plain.output_tokens, plain.cached_input_tokens, plain.reasoning_tokens) == (
        prompt,
        completion,
        cached,
        reasoning,
    )
    assert plain.response_id == p.calls[0].response_id  # read from the start of the output payload
    assert (plain.streamed, streamed.streamed) == (False, True)
    for record in p.records:
        assert (record.provider, record.model, record.user_id) == ("openai", "gpt-4o-mini", "cust_oi")
        assert record.tags == ["plan:pro", "feature:chat", "team:search"]


def test_pydantic_ai_counts_chat_spans_never_the_agent_runs_aggregate(produced: dict[str, Produced]) -> None:
    p = produced["pydantic-ai"]
    assert p.result.skipped == 2  # the two `invoke_agent` spans carrying gen_ai.aggregated_usage.*
    for record in p.records:
        prompt, completion, cached, reasoning = openai_truth(p.truth(record))
        assert record.source == "pydantic-ai"
        assert (record.input_tokens, record.output_tokens, record.cached_input_tokens, record.reasoning_tokens) == (
            prompt,
            completion,
            cached,
            reasoning,
        )


def test_anthropic_sdk_native_spans(produced: dict[str, Produced]) -> None:
    p = produced["anthropic-sdk"]
    for record in p.records:
        total, output, read, write = anthropic_truth(p.truth(record))
        assert record.source == "anthropic-sdk"
        assert (record.input_tokens, record.output_tokens, record.cached_input_tokens, record.cache_creation_input_tokens) == (
            total,
            output,
            read,
            write,
        )
    assert [r.streamed for r in p.records] == [False, True]


def test_the_same_call_seen_by_two_instrumentations_has_one_identity(produced: dict[str, Produced]) -> None:
    """Every dialect that carries the provider's response id gives the (provider, id) identity dedupe uses."""
    for name, p in produced.items():
        for record in p.records:
            if record.response_id:
                assert record.identity == (record.provider, record.response_id), name
