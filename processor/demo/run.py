"""`tokentrail demo`: the whole pipeline on this machine, with nothing external.

It runs what a real deployment runs — the receiver (OTLP/gRPC → WAL → Parquet), an instrumented service using the
real OpenAI and Anthropic SDKs, and the report — and swaps only the LLM provider for a fake on loopback, so the
numbers it prints are real prices of the token counts the fake returned.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path

import anthropic
import openai
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from tokentrail.instrumentation import attribute, instrument, uninstrument
from tokentrail.processor import environment
from tokentrail.processor.demo.fake_provider import FakeProvider
from tokentrail.processor.ingest.receiver import Receiver
from tokentrail.processor.reports.formatting import format_table
from tokentrail.processor.reports.query import ReportQuery
from tokentrail.processor.reports.report import run_report

DEFAULT_DEMO_DIR = Path(environment.DEFAULT_DATA_DIR) / "demo"
SYSTEM_OPENAI_KEY = "sk-demo-system-openai-000000000000"
SYSTEM_ANTHROPIC_KEY = "sk-ant-demo-system-000000000000"
# Keys "brought by customers" (BYOK): any key the service was not configured with.
CUSTOMER_KEYS = {"cust_acme": "sk-acme-own-key-1111111111", "cust_globex": "sk-ant-globex-own-2222222222"}

CUSTOMERS = [
    ("cust_acme", "plan:enterprise"),
    ("cust_globex", "plan:pro"),
    ("cust_initech", "plan:pro"),
    ("cust_hooli", "plan:free"),
    ("cust_umbrella", "plan:free"),
]
FEATURES = ["feature:chat", "feature:summarize", "feature:search"]
OPENAI_MODELS = ["gpt-4o-mini", "gpt-4.1", "gpt-4o"]
ANTHROPIC_MODELS = ["claude-sonnet-4-6", "claude-haiku-4-5"]
UNKNOWN_MODEL = "acme-private-llm-1"  # not in any catalog: shows up as unpriced, never as $0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tokentrail demo", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DEMO_DIR, help="emptied and reused on each run")
    parser.add_argument("--calls", type=int, default=40, help="how many LLM calls the demo service makes")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    data_dir: Path = args.data_dir
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    rng = random.Random(args.seed)

    with FakeProvider() as fake, Receiver(data_dir, grpc_port=0) as receiver:
        print(f"receiver      OTLP/gRPC on 127.0.0.1:{receiver.grpc_port}, data in {data_dir}/")
        print(f"fake provider {fake.base_url} (OpenAI Chat Completions + Anthropic Messages)")
        provider = TracerProvider(
            resource=Resource.create({"service.name": "demo-chat-service", "deployment.environment.name": "demo"})
        )
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{receiver.grpc_port}", insecure=True))
        )
        instrument(
            tracer_provider=provider,
            system_keys=[SYSTEM_OPENAI_KEY, SYSTEM_ANTHROPIC_KEY],
            fingerprint_salt="tokentrail-demo-salt",
        )
        try:
            made = _make_calls(args.calls, rng, fake, provider)
            made += asyncio.run(_make_async_calls(rng, fake, provider))
            provider.force_flush(10_000)
        finally:
            uninstrument()
            provider.shutdown()
        receiver.flush()
        print(f"made {made} LLM calls through the real openai and anthropic SDKs; receiver stats: {receiver.stats}")

    today = datetime.now(UTC).date().isoformat()
    for title, group_by in [
        ("by model", "model"),
        ("by tag (a request counts in each of its tags: rows do not add up to the total)", "tag"),
        ("by user", "user"),
        ("by day", "day"),
        ("by credential type", "credential_type"),
    ]:
        query = ReportQuery.from_params({"start_date": today, "end_date": today, "group_by": group_by})
        print(f"\n== cost {title} ==")
        print(format_table(run_report(data_dir, query)))

    files = sorted((data_dir / "usage").rglob("*.parquet"))
    print("\nParquet files (hive-partitioned by date; readable by DuckDB, Polars, Spark, pandas):")
    for path in files:
        print(f"  {path}")
    print(
        "\nTry:\n"
        f"  .venv/bin/tokentrail report --data-dir {data_dir} --start-date {today} --end-date {today}"
        " --group-by model,tag --format table\n"
        f"  .venv/bin/tokentrail serve --data-dir {data_dir}   # then GET "
        f"http://127.0.0.1:8787/v1/report?start_date={today}&end_date={today}&group_by=user"
    )
    return 0


def _pick_key(rng: random.Random, customer: str, system_key: str) -> str:
    """Some customers bring their own key on some calls: those calls are BYOK."""
    own = CUSTOMER_KEYS.get(customer)
    return own if own and rng.random() < 0.6 else system_key


def _make_calls(n: int, rng: random.Random, fake: FakeProvider, provider: TracerProvider) -> int:
    made = 0
    for i in range(n):
        customer, plan = rng.choice(CUSTOMERS)
        feature = rng.choice(FEATURES)
        stream = rng.random() < 0.4
        words = " ".join(rng.choice(["cost", "token", "budget", "margin", "spike"]) for _ in range(rng.randint(50, 4000)))
        chat: list[ChatCompletionMessageParam] = [{"role": "user", "content": words}]
        messages: list[MessageParam] = [{"role": "user", "content": words}]
        with attribute(user=customer, tags=[plan, feature]):
            if i % 2 == 0:
                model = UNKNOWN_MODEL if i == 10 else rng.choice(OPENAI_MODELS)
                openai_client = openai.OpenAI(
                    base_url=fake.openai_base_url, api_key=_pick_key(rng, customer, SYSTEM_OPENAI_KEY), max_retries=0
                )
                if stream:
                    for _ in openai_client.chat.completions.create(
                        model=model, messages=chat, stream=True, stream_options={"include_usage": True}
                    ):
                        pass
                else:
                    openai_client.chat.completions.create(model=model, messages=chat)
            else:
                model = rng.choice(ANTHROPIC_MODELS)
                anthropic_client = anthropic.Anthropic(
                    base_url=fake.anthropic_base_url,
                    api_key=_pick_key(rng, customer, SYSTEM_ANTHROPIC_KEY),
                    max_retries=0,
                    open_telemetry={"tracer_provider": provider},
                )
                if stream:
                    with anthropic_client.messages.stream(model=model, max_tokens=256, messages=messages) as events:
                        for _ in events.text_stream:
                            pass
                else:
                    anthropic_client.messages.create(model=model, max_tokens=256, messages=messages)
        made += 1
    return made


async def _make_async_calls(rng: random.Random, fake: FakeProvider, provider: TracerProvider) -> int:
    """A few calls from async clients, as an async web service would make them."""
    oa = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_OPENAI_KEY, max_retries=0)
    an = anthropic.AsyncAnthropic(
        base_url=fake.anthropic_base_url,
        api_key=SYSTEM_ANTHROPIC_KEY,
        max_retries=0,
        open_telemetry={"tracer_provider": provider},
    )
    with attribute(user="cust_initech", tags=["plan:pro", "feature:agent"]):
        await oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "async hi"}])
        await an.messages.create(
            model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "async hello"}]
        )
    return 2
