"""The whole pipeline, on real parts: the real OpenAI and Anthropic SDKs → our instrumentation → OTLP/gRPC →
the receiver → Parquet → the DuckDB report. Nothing of ours is mocked; the only fake is the LLM provider,
a real HTTP server on loopback whose recorded usage is the truth every number is checked against."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypedDict

import pytest
from anthropic import Anthropic, AsyncAnthropic
from genai_prices import Usage, calc_price
from openai import AsyncOpenAI, OpenAI
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from tokentrail.instrumentation import attribute, instrument, uninstrument
from tokentrail.processor.demo.fake_provider import FakeCall, FakeProvider
from tokentrail.processor.ingest.receiver import Receiver
from tokentrail.processor.reports.report import ReportQuery, run_report

from tests.helpers.receiver import read_usage

SYSTEM_KEY = "sk-system-0123456789abcdef"
CUSTOMER_KEY = "sk-customer-byok-fedcba9876543210"


@dataclass
class Pipeline:
    fake: FakeProvider
    receiver: Receiver
    provider: TracerProvider
    data_dir: Path

    def land(self) -> list[dict[str, Any]]:
        """Push every finished span through OTLP and the receiver onto disk, then read back all records."""
        assert self.provider.force_flush(10_000)
        self.receiver.flush()
        return read_usage(self.data_dir)

    def openai(self, key: str = SYSTEM_KEY) -> OpenAI:
        return OpenAI(base_url=self.fake.openai_base_url, api_key=key, max_retries=0)

    def async_openai(self, key: str = SYSTEM_KEY) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.fake.openai_base_url, api_key=key, max_retries=0)

    def anthropic(self, key: str = SYSTEM_KEY) -> Anthropic:
        return Anthropic(
            base_url=self.fake.anthropic_base_url,
            api_key=key,
            max_retries=0,
            open_telemetry={"tracer_provider": self.provider},
        )

    def async_anthropic(self, key: str = SYSTEM_KEY) -> AsyncAnthropic:
        return AsyncAnthropic(
            base_url=self.fake.anthropic_base_url,
            api_key=key,
            max_retries=0,
            open_telemetry={"tracer_provider": self.provider},
        )


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    with FakeProvider() as fake, Receiver(tmp_path, grpc_port=0) as receiver:
        provider = TracerProvider(resource=Resource.create({"service.name": "e2e-service"}))
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{receiver.grpc_port}", insecure=True)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        instrument(
            tracer_provider=provider, system_keys=[SYSTEM_KEY], byok_keys=[CUSTOMER_KEY], fingerprint_salt="e2e-salt"
        )
        try:
            yield Pipeline(fake, receiver, provider, tmp_path)
        finally:
            uninstrument()
            provider.shutdown()


def expected_tokens(call: FakeCall) -> dict[str, int]:
    """The fake provider's usage in the provider's own dialect, converted to inclusive OTel semantics."""
    usage = call.usage
    assert usage is not None, "the fake's response carried no usage"
    if call.path.endswith("/chat/completions"):
        return {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
            "cached_input_tokens": usage["prompt_tokens_details"]["cached_tokens"],
            "cache_creation_input_tokens": 0,
            "reasoning_tokens": usage["completion_tokens_details"]["reasoning_tokens"],
        }
    read = usage.get("cache_read_input_tokens") or 0
    write = usage.get("cache_creation_input_tokens") or 0
    return {
        "input_tokens": usage["input_tokens"] + read + write,  # Anthropic's input excludes cache traffic
        "output_tokens": usage["output_tokens"],
        "cached_input_tokens": read,
        "cache_creation_input_tokens": write,
        "reasoning_tokens": 0,
    }


def library_price(record: dict[str, Any]) -> Decimal:
    usage = Usage(
        input_tokens=record["input_tokens"],
        cache_read_tokens=record["cached_input_tokens"],
        cache_write_tokens=record["cache_creation_input_tokens"],
        output_tokens=record["output_tokens"],
    )
    result = calc_price(
        usage, record["model"], provider_id=record["provider"], genai_request_timestamp=record["timestamp"]
    )
    return result.total_price


def assert_landed_as(
    record: dict[str, Any], call: FakeCall, *, provider: str, user: str, tags: list[str], credential: str
) -> None:
    for name, value in expected_tokens(call).items():
        assert record[name] == value, name
    assert record["provider"] == provider
    assert record["model"] == call.model
    assert record["user_id"] == user
    assert sorted(record["tags"]) == sorted(tags)
    assert record["credential_type"] == credential
    assert record["service"] == "e2e-service"
    assert record["price_status"] == "priced"
    assert record["market_cost"] == library_price(record)
    assert record["market_cost"] > 0
    if credential == "byok":
        assert record["total_cost"] == 0
    else:
        assert record["total_cost"] == record["market_cost"]


class Attribution(TypedDict):
    user: str
    tags: list[str]


CTX: Attribution = {"user": "cust_42", "tags": ["plan:pro", "feature:chat"]}


def test_openai_chat_lands_one_priced_record(pipeline: Pipeline) -> None:
    with attribute(**CTX, credential="system"):
        pipeline.openai().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
        )
    (record,) = pipeline.land()
    assert_landed_as(record, pipeline.fake.calls[-1], provider="openai", credential="system", **CTX)
    assert record["streamed"] is False


def test_openai_chat_stream_with_include_usage_lands_one_priced_record(pipeline: Pipeline) -> None:
    with attribute(**CTX):
        stream = pipeline.openai().chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "stream me a story"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert chunks
    (record,) = pipeline.land()
    assert_landed_as(record, pipeline.fake.calls[-1], provider="openai", credential="system", **CTX)
    assert record["streamed"] is True


async def test_async_openai_chat_and_stream_land_priced_records(pipeline: Pipeline) -> None:
    client = pipeline.async_openai(key=CUSTOMER_KEY)
    with attribute(**CTX):
        await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi again"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for _ in stream:
            pass
    records = pipeline.land()
    assert len(records) == 2
    by_stream = {r["streamed"]: r for r in records}
    calls = {c.stream: c for c in pipeline.fake.calls}
    for streamed in (False, True):
        # A key the application named as a customer's (byok_keys) is BYOK: total cost 0.
        assert_landed_as(by_stream[streamed], calls[streamed], provider="openai", credential="byok", **CTX)


def test_anthropic_message_lands_one_priced_record_with_inclusive_input(pipeline: Pipeline) -> None:
    with attribute(**CTX):
        pipeline.anthropic().messages.create(
            model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "hello claude"}]
        )
    (record,) = pipeline.land()
    call = pipeline.fake.calls[-1]
    assert_landed_as(record, call, provider="anthropic", credential="system", **CTX)
    assert call.usage is not None
    assert record["input_tokens"] > call.usage["input_tokens"]  # the cache traffic was added, not lost


def test_anthropic_stream_lands_one_record_with_final_cumulative_output(pipeline: Pipeline) -> None:
    with attribute(**CTX, credential="byok"):
        with pipeline.anthropic().messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "stream please"}]
        ) as stream:
            for _ in stream.text_stream:
                pass
    (record,) = pipeline.land()
    assert_landed_as(record, pipeline.fake.calls[-1], provider="anthropic", credential="byok", **CTX)
    assert record["streamed"] is True


async def test_async_anthropic_message_and_stream_land_priced_records(pipeline: Pipeline) -> None:
    client = pipeline.async_anthropic()
    with attribute(**CTX):
        await client.messages.create(
            model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "one"}]
        )
        stream = await client.messages.create(
            model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "two"}], stream=True
        )
        async for _ in stream:
            pass
    records = pipeline.land()
    assert len(records) == 2
    by_stream = {r["streamed"]: r for r in records}
    calls = {c.stream: c for c in pipeline.fake.calls}
    for streamed in (False, True):
        assert_landed_as(by_stream[streamed], calls[streamed], provider="anthropic", credential="system", **CTX)


def test_anthropic_without_its_native_spans_still_lands_one_record(pipeline: Pipeline) -> None:
    client = Anthropic(
        base_url=pipeline.fake.anthropic_base_url, api_key=SYSTEM_KEY, max_retries=0, open_telemetry=False
    )
    with attribute(**CTX):
        client.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    (record,) = pipeline.land()
    assert_landed_as(record, pipeline.fake.calls[-1], provider="anthropic", credential="system", **CTX)
    assert record["source"] == "tokentrail"


def test_unknown_model_lands_unpriced_and_is_counted_in_the_report(pipeline: Pipeline) -> None:
    with attribute(user="cust_7"):
        pipeline.openai().chat.completions.create(
            model="acme-private-llm-9", messages=[{"role": "user", "content": "who prices me?"}]
        )
        pipeline.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    records = pipeline.land()
    unknown = next(r for r in records if r["model"] == "acme-private-llm-9")
    assert unknown["price_status"] == "unpriced"
    assert unknown["total_cost"] is None and unknown["market_cost"] is None
    assert unknown["input_tokens"] > 0  # the tokens are kept even when the price is not known

    today = datetime.now(UTC).date()
    query = ReportQuery.from_params(
        {"start_date": str(today - timedelta(days=1)), "end_date": str(today + timedelta(days=1)), "group_by": "model"}
    )
    rows = {row["model"]: row for row in run_report(pipeline.data_dir, query)}
    assert rows["acme-private-llm-9"]["unpriced_request_count"] == 1
    assert rows["acme-private-llm-9"]["request_count"] == 1
    assert rows["gpt-4o-mini"]["unpriced_request_count"] == 0
    assert rows["gpt-4o-mini"]["total_cost"] == next(r for r in records if r["model"] == "gpt-4o-mini")["total_cost"]


def test_the_same_span_exported_twice_is_counted_once(pipeline: Pipeline) -> None:
    """An exporter or collector retry re-sends a batch: the report must not double count it."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    pipeline.provider.add_span_processor(SimpleSpanProcessor(memory))
    with attribute(**CTX):
        pipeline.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert len(pipeline.land()) == 1
    spans = memory.get_finished_spans()
    resend = OTLPSpanExporter(endpoint=f"127.0.0.1:{pipeline.receiver.grpc_port}", insecure=True)
    try:
        resend.export(spans)
        resend.export(spans)
    finally:
        resend.shutdown()
    assert len(pipeline.land()) == 1


def test_no_api_key_reaches_the_stored_records(pipeline: Pipeline) -> None:
    with attribute(**CTX):
        pipeline.openai(key=CUSTOMER_KEY).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "secret?"}]
        )
        pipeline.anthropic(key=CUSTOMER_KEY).messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "secret?"}]
        )
    records = pipeline.land()
    assert len(records) == 2
    blob = b"".join(p.read_bytes() for p in (pipeline.data_dir).rglob("*") if p.is_file())
    for secret in (CUSTOMER_KEY, SYSTEM_KEY, CUSTOMER_KEY[3:15], "secret?"):
        assert secret.encode() not in blob
    ids = {r["credential_id"] for r in records}
    assert len(ids) == 1 and None not in ids  # one customer key, one stable fingerprint
