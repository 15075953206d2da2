"""`tokentrail demo`: the whole pipeline on this machine, with nothing external.

It runs what a real deployment runs — the receiver (OTLP/gRPC → WAL → Parquet), an instrumented service using the
real OpenAI, Anthropic, Google Gen AI and AWS (boto3) SDKs, and the report — and swaps only the LLM providers for
fakes on loopback, so the numbers it prints are real prices of the token counts the fakes returned.

The data directory is the demo's own: it is marked with a ``.tokentrail-demo`` file, and only a marked directory is
ever emptied. A directory that is not empty and not marked (a real dataset, anything else) is refused, untouched.

``tokentrail demo --fake-provider`` runs only the fake provider, for trying the SDKs and the instrumentation on one's
own code without keys.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import anthropic
import boto3  # type: ignore[import-untyped]  # boto3 ships no types
import openai
from anthropic.types import MessageParam
from google import genai
from google.genai import types as genai_types
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from tokentrail.instrumentation import attribute, instrument, uninstrument
from tokentrail.processor import environment
from tokentrail.processor.demo.fake_bedrock import FakeBedrock
from tokentrail.processor.demo.fake_provider import FakeProvider
from tokentrail.processor.errors import TokenTrailError
from tokentrail.processor.ingest.receiver import Receiver
from tokentrail.processor.reports.formatting import format_table
from tokentrail.processor.reports.query import ReportQuery
from tokentrail.processor.reports.report import run_report

DEFAULT_DEMO_DIR = Path(environment.DEFAULT_DATA_DIR) / "demo"
DEFAULT_CALLS: Final = 40
# Written into every directory the demo uses; only a directory holding it is ever emptied by the next run.
DEMO_MARKER: Final = ".tokentrail-demo"
_MARKER_TEXT: Final = (
    "Written by `tokentrail demo`: this directory is the demo's, and the next `tokentrail demo` run with this\n"
    "--data-dir deletes everything in it. Delete this file to keep the directory from being emptied.\n"
)
ASYNC_CALLS: Final = 2  # of the --calls, made from async clients
UNKNOWN_MODEL_CALL: Final = 10  # the index of the call to UNKNOWN_MODEL (or the last OpenAI one before it)
FAKE_OPENAI_KEY: Final = "sk-fake-key"
FAKE_ANTHROPIC_KEY: Final = "sk-ant-fake-key"
FAKE_GEMINI_KEY: Final = "AIza-fake-key"
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
GEMINI_MODELS = ["gemini-2.5-flash", "gemini-2.5-pro"]
# Bedrock model ids as people pass them: a cross-region inference profile and a plain model id.
BEDROCK_MODELS = ["us.anthropic.claude-sonnet-4-5-20250929-v1:0", "amazon.nova-pro-v1:0"]
SYSTEM_GEMINI_KEY = "AIza-demo-system-gemini-0000000000"
SYSTEM_AWS_KEY_ID = "AKIADEMOSYSTEM000000"  # the access key id is the credential's identity, never the secret
CALLS_PER_CONVERSATION: Final = 4  # a customer's chat session makes a few calls in a row
UNKNOWN_MODEL = "acme-private-llm-1"  # not in any catalog: shows up as unpriced, never as $0


class DemoDirectoryError(TokenTrailError):
    """The --data-dir is not the demo's to empty: the demo refuses it and touches nothing."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tokentrail demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", type=Path,
        help=f"the demo's own directory (default {DEFAULT_DEMO_DIR}): created, or emptied if an earlier demo "
        f"marked it ({DEMO_MARKER}); any other non-empty directory is refused",
    )
    parser.add_argument("--calls", type=_positive,
                        help=f"how many LLM calls the demo service makes (default {DEFAULT_CALLS})")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--fake-provider", action="store_true",
        help="only run the fake OpenAI/Anthropic provider and print the base URLs to point the SDKs at (no keys "
        "needed), until Ctrl-C",
    )
    parser.add_argument("--port", type=_port, help="--fake-provider: the port (default: a free one)")
    args = parser.parse_args(argv)
    if args.fake_provider and (args.data_dir is not None or args.calls is not None):
        parser.error("--fake-provider runs only the provider: --data-dir and --calls do not apply")
    if not args.fake_provider and args.port is not None:
        parser.error("--port is the fake provider's: use it with --fake-provider")
    return args


def prepare_data_dir(data_dir: Path) -> None:
    """Make ``data_dir`` an empty directory marked as the demo's, or raise ``DemoDirectoryError`` having touched
    nothing. Never deletes what the demo did not create: only a directory holding the marker is emptied (its
    contents, not the directory itself, which may be a link or a mount point)."""
    marker = data_dir / DEMO_MARKER
    if not data_dir.exists() and not data_dir.is_symlink():
        data_dir.mkdir(parents=True)
    elif not data_dir.is_dir():
        raise DemoDirectoryError(f"{data_dir} is not a directory; give the demo a new or empty --data-dir")
    else:
        entries = list(os.scandir(data_dir))
        if entries and not (marker.is_file() and not marker.is_symlink()):
            raise DemoDirectoryError(
                f"refusing to use {data_dir}: it is not empty and not an earlier demo's (no {DEMO_MARKER} file in "
                "it), and the demo empties its directory; give a new or empty --data-dir"
            )
        for entry in entries:
            if entry.name == DEMO_MARKER:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    marker.write_text(_MARKER_TEXT)


def serve_fake_provider(port: int) -> int:
    """``--fake-provider``: the fake on loopback until Ctrl-C, with what to set so an application's own OpenAI,
    Anthropic or google-genai SDK calls it (each SDK reads these variables)."""
    with FakeProvider(port=port) as fake:
        print(
            f"fake provider on {fake.base_url} (loopback only; Ctrl-C to stop): OpenAI Chat Completions, "
            "Responses, Completions, Embeddings, Anthropic Messages and Gemini generateContent, streamed or not, with "
            "realistic usage.\n"
            "Point the SDKs at it (any key works):\n"
            f"  export OPENAI_BASE_URL={fake.openai_base_url} OPENAI_API_KEY={FAKE_OPENAI_KEY}\n"
            f"  export ANTHROPIC_BASE_URL={fake.anthropic_base_url} ANTHROPIC_API_KEY={FAKE_ANTHROPIC_KEY}\n"
            f"  export GOOGLE_GEMINI_BASE_URL={fake.gemini_base_url} GEMINI_API_KEY={FAKE_GEMINI_KEY}",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)  # the server runs in its own thread; this one waits for Ctrl-C
        except KeyboardInterrupt:
            pass
    print("fake provider stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.fake_provider:
        return serve_fake_provider(args.port or 0)
    data_dir: Path = args.data_dir if args.data_dir is not None else DEFAULT_DEMO_DIR
    calls: int = args.calls if args.calls is not None else DEFAULT_CALLS
    try:
        prepare_data_dir(data_dir)
    except DemoDirectoryError as exc:
        print(f"tokentrail demo: {exc}", file=sys.stderr)
        return 1
    rng = random.Random(args.seed)
    async_calls = min(ASYNC_CALLS, calls)

    with FakeProvider() as fake, FakeBedrock() as bedrock, Receiver(data_dir, grpc_port=0) as receiver:
        print(f"receiver      OTLP/gRPC on 127.0.0.1:{receiver.grpc_port}, data in {data_dir}/")
        print(f"fake provider {fake.base_url} (OpenAI Chat Completions, Anthropic Messages, Gemini generateContent)")
        print(f"fake Bedrock  {bedrock.base_url} (bedrock-runtime Converse)")
        provider = TracerProvider(
            resource=Resource.create({"service.name": "demo-chat-service", "deployment.environment.name": "demo"})
        )
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{receiver.grpc_port}", insecure=True))
        )
        instrument(
            tracer_provider=provider,
            system_keys=[SYSTEM_OPENAI_KEY, SYSTEM_ANTHROPIC_KEY, SYSTEM_GEMINI_KEY, SYSTEM_AWS_KEY_ID],
            byok_keys=list(CUSTOMER_KEYS.values()),  # the keys customers brought (any other key is the service's)
            fingerprint_salt="tokentrail-demo-salt",
        )
        try:
            made = _make_calls(calls - async_calls, rng, Fakes(fake, bedrock), provider)
            made += asyncio.run(_make_async_calls(async_calls, fake, provider))
            provider.force_flush(10_000)
        finally:
            uninstrument()
            provider.shutdown()
        receiver.flush()
        print(f"made {made} LLM calls through the real openai, anthropic, google-genai and boto3 SDKs; "
              f"receiver stats: {receiver.stats}")

    today = datetime.now(UTC).date().isoformat()
    for title, group_by in [
        ("by model", "model"),
        ("by tag (a request counts in each of its tags: rows do not add up to the total)", "tag"),
        ("by user", "user"),
        ("by day", "day"),
        ("by credential type", "credential_type"),
        ("by provider", "provider"),
        ("of the 5 costliest conversations", "conversation"),
    ]:
        top = {"order_by": "total_cost", "limit": "5"} if group_by == "conversation" else {}
        query = ReportQuery.from_params({"start_date": today, "end_date": today, "group_by": group_by, **top})
        print(f"\n== cost {title} ==")
        print(format_table(run_report(data_dir, query), totals=True))

    files = sorted((data_dir / "usage").rglob("*.parquet"))
    print("\nParquet files (hive-partitioned by date; readable by DuckDB, Polars, Spark, pandas):")
    for path in files:
        print(f"  {path}")
    print(
        "\nTry:\n"
        f"  .venv/bin/tokentrail report --data-dir {data_dir} --start-date {today} --end-date {today}"
        " --group-by model,tag --format table\n"
        f"  .venv/bin/tokentrail serve --data-dir {data_dir}   # then GET "
        f"http://127.0.0.1:8787/v1/report?start_date={today}&end_date={today}&group_by=user\n"
        f"  and open the dashboard: http://127.0.0.1:8787/?start_date={today}&end_date={today}&bucket=hour"
    )
    return 0


def _pick_key(rng: random.Random, customer: str, system_key: str) -> str:
    """Some customers bring their own key on some calls: those calls are BYOK."""
    own = CUSTOMER_KEYS.get(customer)
    return own if own and rng.random() < 0.6 else system_key


class Fakes:
    """The fake providers the demo service calls (one server for the HTTP APIs, one for Bedrock), and the Gemini and
    Bedrock clients, each made once as a service would (a boto3 client loads its service model when made)."""

    def __init__(self, http: FakeProvider, bedrock: FakeBedrock) -> None:
        self.http = http
        self.bedrock = bedrock
        self._bedrock_client: Any = None
        self._gemini_client: genai.Client | None = None

    def gemini_client(self) -> genai.Client:
        if self._gemini_client is None:  # kept: a dropped genai.Client closes its HTTP client
            self._gemini_client = genai.Client(
                api_key=SYSTEM_GEMINI_KEY, http_options=genai_types.HttpOptions(base_url=self.http.gemini_base_url)
            )
        return self._gemini_client

    def bedrock_client(self) -> Any:
        if self._bedrock_client is None:
            self._bedrock_client = boto3.client(
                "bedrock-runtime", endpoint_url=self.bedrock.base_url, region_name="us-east-1",
                aws_access_key_id=SYSTEM_AWS_KEY_ID, aws_secret_access_key="demo-secret-never-stored",
            )
        return self._bedrock_client


def _make_calls(n: int, rng: random.Random, fakes: Fakes, provider: TracerProvider) -> int:
    """Even calls go to OpenAI; odd ones in turn to Anthropic, Gemini (google-genai) and Bedrock (boto3). Each
    customer's calls come in conversations of a few calls (``attribute(conversation=...)``)."""
    fake = fakes.http
    made = 0
    # One call goes to a model no catalog knows (an OpenAI one: even index), however few calls there are.
    unknown_at = min(UNKNOWN_MODEL_CALL, (n - 1) // 2 * 2)
    sessions: dict[str, int] = {}
    for i in range(n):
        customer, plan = rng.choice(CUSTOMERS)
        turn = sessions[customer] = sessions.get(customer, -1) + 1
        conversation = f"{customer}-chat-{turn // CALLS_PER_CONVERSATION + 1}"
        feature = rng.choice(FEATURES)
        stream = rng.random() < 0.4
        words = " ".join(rng.choice(["cost", "token", "budget", "margin", "spike"]) for _ in range(rng.randint(50, 4000)))
        chat: list[ChatCompletionMessageParam] = [{"role": "user", "content": words}]
        messages: list[MessageParam] = [{"role": "user", "content": words}]
        with attribute(user=customer, tags=[plan, feature], conversation=conversation):
            if i % 2 == 1 and i // 2 % 3 == 1:
                _gemini_call(fakes.gemini_client(), rng, words, stream)
            elif i % 2 == 1 and i // 2 % 3 == 2:
                _bedrock_call(fakes.bedrock_client(), rng, words, stream)
            elif i % 2 == 0:
                model = UNKNOWN_MODEL if i == unknown_at else rng.choice(OPENAI_MODELS)
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


def _gemini_call(client: genai.Client, rng: random.Random, words: str, stream: bool) -> None:
    model = rng.choice(GEMINI_MODELS)
    if stream:
        for _ in client.models.generate_content_stream(model=model, contents=words):
            pass
    else:
        client.models.generate_content(model=model, contents=words)


def _bedrock_call(client: Any, rng: random.Random, words: str, stream: bool) -> None:
    model = rng.choice(BEDROCK_MODELS)
    messages: Any = [{"role": "user", "content": [{"text": words}]}]
    if stream:
        for _ in client.converse_stream(modelId=model, messages=messages)["stream"]:
            pass
    else:
        client.converse(modelId=model, messages=messages)


async def _make_async_calls(n: int, fake: FakeProvider, provider: TracerProvider) -> int:
    """``n`` (at most ASYNC_CALLS) calls from async clients, as an async web service would make them."""
    oa = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_OPENAI_KEY, max_retries=0)
    an = anthropic.AsyncAnthropic(
        base_url=fake.anthropic_base_url,
        api_key=SYSTEM_ANTHROPIC_KEY,
        max_retries=0,
        open_telemetry={"tracer_provider": provider},
    )
    made = 0
    with attribute(user="cust_initech", tags=["plan:pro", "feature:agent"], conversation="cust_initech-agent-1"):
        if made < n:
            await oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "async hi"}])
            made += 1
        if made < n:
            await an.messages.create(
                model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "async hello"}]
            )
            made += 1
    return made
