"""Other GenAI instrumentations present: one logical call gives one GenAI span with usage, enriched by us.

Each test runs the real package (installed from PyPI) against the fake provider: OpenLLMetry, OpenInference,
pydantic-ai, the GenAI utility that the OpenTelemetry contrib instrumentations (openai-v2 and others) are built
on, and the contrib openai-v2 itself when its installed dependencies agree with each other.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tokentrail.instrumentation import attribute, semconv
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import SYSTEM_KEY, attrs, openai_tokens, usage_of

MESSAGES: Any = [{"role": "user", "content": "Say something about foxes."}]
pytestmark = pytest.mark.usefixtures("instrumented")


def client(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0)


def ours(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """Spans TokenTrail emitted itself."""
    return [s for s in exporter.get_finished_spans() if getattr(s.instrumentation_scope, "name", None) == semconv.INSTRUMENTATION_SCOPE]


def counted(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The spans a receiver counts as calls: GenAI spans with usage or ours (``tokentrail.api``), except aggregates
    (agents) and those marked as a duplicate of another span of the same call."""
    return [
        s
        for s in exporter.get_finished_spans()
        if (semconv.TOKENTRAIL_API in attrs(s) or any(k.startswith("gen_ai.usage.") for k in attrs(s)))
        and attrs(s).get(semconv.GEN_AI_OPERATION_NAME) != "invoke_agent"
        and not attrs(s).get(semconv.TOKENTRAIL_DUPLICATE)
    ]


def only_counted(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = counted(exporter)
    assert len(spans) == 1, [s.name for s in exporter.get_finished_spans()]
    assert ours(exporter) == []  # enriched, not duplicated
    return spans[0]


def assert_enriched(span: ReadableSpan, fake: FakeProvider, user: str = "cust_1") -> None:
    a = attrs(span)
    assert a[semconv.USER_ID] == user
    assert a[semconv.TOKENTRAIL_TAGS] == ("plan:pro",)
    assert a[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "system"
    assert a[semconv.TOKENTRAIL_CREDENTIAL_ID]
    assert a[semconv.TOKENTRAIL_API] == "chat.completions"
    for name, value in openai_tokens(usage_of(fake.last_call)).items():
        if name != semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS or name in a:
            assert a[name] == value, name


def _unwrap_left_over(package: str, wrapper_package: str) -> None:
    """Remove the wrapt wrappers that ``wrapper_package`` left on ``package``'s classes.

    OpenLLMetry's ``uninstrument()`` leaves its wrappers in place with openai 3 (its ``unwrap`` calls name the
    methods by a dotted path that finds nothing), and those wrappers would keep tracing into a shut-down provider
    in every later test. Real services instrument once and never uninstrument, so this is a test-only concern.
    """
    for name, module in list(sys.modules.items()):
        if not name.startswith(package) or module is None:
            continue
        for cls in [value for value in vars(module).values() if isinstance(value, type)]:
            for member, value in list(vars(cls).items()):
                wrapper = getattr(value, "_self_wrapper", None)
                if wrapper is not None and getattr(wrapper, "__module__", "").startswith(wrapper_package):
                    setattr(cls, member, value.__wrapped__)


@pytest.fixture
def openllmetry(instrumented: TracerProvider) -> Iterator[None]:
    instrumentor = pytest.importorskip("opentelemetry.instrumentation.openai").OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=instrumented)
    try:
        yield
    finally:
        instrumentor.uninstrument()
        _unwrap_left_over("openai.resources.", "opentelemetry.instrumentation.openai")


@pytest.fixture
def openinference(instrumented: TracerProvider) -> Iterator[None]:
    instrumentor = pytest.importorskip("openinference.instrumentation.openai").OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=instrumented)
    try:
        yield
    finally:
        instrumentor.uninstrument()


# OpenLLMetry ---------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("openllmetry")
def test_openllmetry_chat_span_is_enriched_not_duplicated(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with attribute(user="cust_1", tags=["plan:pro"]):
        client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    span = only_counted(exporter)
    assert span.name == "openai.chat"
    assert_enriched(span, fake)


@pytest.mark.usefixtures("openllmetry")
def test_openllmetry_stream_span_is_enriched_not_duplicated(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with attribute(user="cust_1", tags=["plan:pro"]):
        stream = client(fake).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        for _ in stream:
            pass
    assert_enriched(only_counted(exporter), fake)


@pytest.fixture
def openllmetry_anthropic(instrumented: TracerProvider) -> Iterator[None]:
    instrumentor = pytest.importorskip("opentelemetry.instrumentation.anthropic").AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=instrumented)
    try:
        yield
    finally:
        instrumentor.uninstrument()
        _unwrap_left_over("anthropic.resources.", "opentelemetry.instrumentation.anthropic")


@pytest.mark.usefixtures("openllmetry_anthropic")
@pytest.mark.parametrize("native", [False, True], ids=["sdk-spans-off", "sdk-spans-on"])
@pytest.mark.parametrize("stream", [False, True])
def test_openllmetry_anthropic_span_that_is_never_current_is_marked_as_the_duplicate(
    native: bool, stream: bool, fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    """OpenLLMetry's Anthropic span is not made current, so nothing links it to the request: it is recognised as
    the request's one open twin (same parent, provider and model) and marked, and the call counts once."""
    import anthropic

    options: dict[str, Any] = {"open_telemetry": {"tracer_provider": instrumented} if native else False}
    client = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key=SYSTEM_KEY, max_retries=0, **options)
    with attribute(user="cust_1", tags=["plan:pro"]):
        result = client.messages.create(model="claude-x", max_tokens=20, messages=MESSAGES, stream=stream)
        if stream:
            for _ in result:
                pass
    (counted_span,) = counted(exporter)
    assert counted_span.name == ("anthropic.messages.create" if native else "chat claude-x")
    assert attrs(counted_span)[semconv.USER_ID] == "cust_1"
    (twin,) = [s for s in exporter.get_finished_spans() if s.name == "anthropic.chat"]
    assert attrs(twin)[semconv.TOKENTRAIL_DUPLICATE] is True


@pytest.mark.usefixtures("openllmetry_anthropic")
async def test_concurrent_alike_calls_leave_unlinked_spans_unmarked_rather_than_guess(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    import asyncio

    import anthropic

    client = anthropic.AsyncAnthropic(base_url=fake.anthropic_base_url, api_key=SYSTEM_KEY, open_telemetry=False)

    async def one() -> None:
        await client.messages.create(model="claude-x", max_tokens=20, messages=MESSAGES)

    await asyncio.gather(one(), one(), one())
    ids = [attrs(s)[semconv.GEN_AI_RESPONSE_ID] for s in counted(exporter)]
    # Never fewer calls than were made; a twin left unmarked carries its call's response id, for the receiver's
    # dedupe on (provider, response id) to collapse.
    assert len(set(ids)) == 3 and len(ids) >= 3
    ours_ids = {attrs(s)[semconv.GEN_AI_RESPONSE_ID] for s in counted(exporter) if s.name != "anthropic.chat"}
    assert ours_ids == set(ids)


# OpenInference --------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("openinference")
def test_openinference_llm_span_gets_the_genai_attributes_it_lacks(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    with attribute(user="cust_1", tags=["plan:pro"]):
        client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    span = only_counted(exporter)
    a = attrs(span)
    assert (span.name, a["openinference.span.kind"]) == ("ChatCompletion", "LLM")
    assert_enriched(span, fake)
    # OpenInference writes llm.* attributes only; the receiver reads the GenAI ones we add.
    assert a[semconv.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[semconv.GEN_AI_REQUEST_MODEL] == a[semconv.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini"
    assert a[semconv.GEN_AI_RESPONSE_ID] == fake.last_call.response_id


@pytest.mark.usefixtures("openinference")
def test_openinference_embedding_span_is_enriched(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    client(fake).embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    span = only_counted(exporter)
    a = attrs(span)
    assert (span.name, a[semconv.TOKENTRAIL_API]) == ("CreateEmbeddings", "embeddings")
    assert a[semconv.GEN_AI_OPERATION_NAME] == "embeddings"
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(fake.last_call)["prompt_tokens"]


@pytest.mark.usefixtures("openinference")
def test_a_foreign_stream_without_usage_is_marked_usage_missing(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    for _ in client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
        pass
    a = attrs(only_counted(exporter))
    assert a[semconv.TOKENTRAIL_USAGE_MISSING] is True
    assert semconv.GEN_AI_USAGE_INPUT_TOKENS not in a


# Two instrumentations of the same call, nested ------------------------------------------------------------------


@pytest.mark.usefixtures("openllmetry", "openinference")
def test_nested_instrumentations_enrich_the_innermost_and_mark_the_outer_as_duplicate(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    with attribute(user="cust_1", tags=["plan:pro"]):
        client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    inner = only_counted(exporter)
    assert_enriched(inner, fake)
    (outer,) = [s for s in exporter.get_finished_spans() if attrs(s).get(semconv.TOKENTRAIL_DUPLICATE)]
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert {inner.name, outer.name} == {"ChatCompletion", "openai.chat"}


# The contrib instrumentations' GenAI utility, and openai-v2 built on it ----------------------------------------


def test_a_genai_utility_inference_span_is_enriched(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    handler = pytest.importorskip("opentelemetry.util.genai.handler").TelemetryHandler(tracer_provider=instrumented)
    with attribute(user="cust_1", tags=["plan:pro"]):
        with handler.inference("openai", request_model="gpt-4o-mini"):
            with httpx2.Client() as http:
                http.post(
                    fake.openai_base_url + "/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": MESSAGES},
                    headers={"authorization": f"Bearer {SYSTEM_KEY}"},
                ).raise_for_status()
    span = only_counted(exporter)
    assert span.name == "chat gpt-4o-mini" and getattr(span.instrumentation_scope, "name", None) != semconv.INSTRUMENTATION_SCOPE
    assert_enriched(span, fake)


def test_openai_v2_span_is_enriched_not_duplicated(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")
    if not hasattr(pytest.importorskip("opentelemetry.util.genai.handler").TelemetryHandler, "start_inference"):
        pytest.skip("opentelemetry-instrumentation-openai-v2 needs an older opentelemetry-util-genai")
    instrumentor = openai_v2.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=instrumented)
    try:
        with attribute(user="cust_1", tags=["plan:pro"]):
            client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        instrumentor.uninstrument()
    assert_enriched(only_counted(exporter), fake)


# pydantic-ai ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat.completions", "responses"])
def test_a_pydantic_ai_agent_run_gives_one_counted_call_span(
    api: str, fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    agent_class: Any = pytest.importorskip("pydantic_ai").Agent
    instrumented_models = pytest.importorskip("pydantic_ai.models.instrumented")
    openai_models = pytest.importorskip("pydantic_ai.models.openai")
    openai_provider = pytest.importorskip("pydantic_ai.providers.openai").OpenAIProvider
    model_class = openai_models.OpenAIChatModel if api == "chat.completions" else openai_models.OpenAIResponsesModel
    model = model_class("gpt-4o-mini", provider=openai_provider(base_url=fake.openai_base_url, api_key=SYSTEM_KEY))
    agent = agent_class(model)
    agent.instrument = instrumented_models.InstrumentationSettings(tracer_provider=instrumented)
    with attribute(user="cust_1", tags=["plan:pro"]):
        agent.run_sync("hello")
    span = only_counted(exporter)
    a = attrs(span)
    assert (span.name, span.kind, a[semconv.TOKENTRAIL_API]) == ("chat gpt-4o-mini", SpanKind.CLIENT, api)
    assert a[semconv.USER_ID] == "cust_1"
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] > 0


# An HTTP-level span between the call span and the transport -----------------------------------------------------


def test_the_call_span_behind_an_http_client_span_is_enriched(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    """As with opentelemetry-instrumentation-httpx wrapped outside our hook: its span is current, the call span
    is its parent."""
    tracer = instrumented.get_tracer("some.genai.instrumentation")
    http_tracer = instrumented.get_tracer("some.http.instrumentation")
    with tracer.start_as_current_span(
        "chat gpt-4o-mini",
        kind=SpanKind.CLIENT,
        attributes={semconv.GEN_AI_OPERATION_NAME: "chat", semconv.GEN_AI_PROVIDER_NAME: "openai"},
    ):
        with http_tracer.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes={"http.request.method": "POST"}):
            with httpx2.Client() as http:
                http.post(fake.openai_base_url + "/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES})
    span = only_counted(exporter)
    assert span.name == "chat gpt-4o-mini"
    assert attrs(span)[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage_of(fake.last_call)["prompt_tokens"]


def test_an_agent_span_is_not_a_call_span(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    tracer = instrumented.get_tracer("some.agent.framework")
    with tracer.start_as_current_span("invoke_agent a", attributes={semconv.GEN_AI_OPERATION_NAME: "invoke_agent"}):
        client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    (span,) = ours(exporter)
    assert attrs(span)[semconv.TOKENTRAIL_API] == "chat.completions"


def test_a_foreign_span_keeps_the_values_it_set_itself(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    tracer = instrumented.get_tracer("some.genai.instrumentation")
    with tracer.start_as_current_span(
        "chat x",
        kind=SpanKind.CLIENT,
        attributes={semconv.GEN_AI_SYSTEM: "corp-openai", semconv.GEN_AI_REQUEST_MODEL: "x"},
    ) as current:
        client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        current.set_attribute(semconv.GEN_AI_USAGE_INPUT_TOKENS, 999)  # its own count, set after the body
    a = attrs(only_counted(exporter))
    assert a[semconv.GEN_AI_SYSTEM] == "corp-openai" and semconv.GEN_AI_PROVIDER_NAME not in a
    assert a[semconv.GEN_AI_REQUEST_MODEL] == "x"
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 999


def test_no_span_is_current_after_a_foreign_call(fake: FakeProvider, instrumented: TracerProvider) -> None:
    tracer = instrumented.get_tracer("some.genai.instrumentation")
    with tracer.start_as_current_span("chat", kind=SpanKind.CLIENT, attributes={semconv.GEN_AI_PROVIDER_NAME: "openai"}) as span:
        client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert trace.get_current_span() is span
