"""Attribution: who and what a call was for, from code (context + baggage) and from the request itself."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import openai
import pytest
from opentelemetry import baggage, context, propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokentrail.instrumentation import attribute, current_attribution, semconv
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import SYSTEM_KEY, attrs, genai_spans, only_genai_span

MESSAGES: Any = [{"role": "user", "content": "hi"}]
pytestmark = pytest.mark.usefixtures("instrumented")


def chat(fake: FakeProvider, **extra: Any) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **extra)


async def async_chat(fake: FakeProvider, **extra: Any) -> None:
    async with openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key=SYSTEM_KEY, max_retries=0) as client:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **extra)


def test_context_manager_attributes_the_call(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with attribute(user="cust_42", tags=["customer:acme", "plan:pro"]):
        chat(fake)
    a = attrs(only_genai_span(exporter))
    assert a[semconv.USER_ID] == "cust_42"
    assert a[semconv.TOKENTRAIL_TAGS] == ("customer:acme", "plan:pro")
    assert semconv.TOKENTRAIL_ATTRIBUTION_DROPPED not in a


def test_a_conversation_becomes_gen_ai_conversation_id_and_an_inner_one_replaces_it(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    with attribute(user="cust_42", conversation="chat-7"):
        chat(fake)
        with attribute(conversation="chat-7/summary", tags=["feature:summary"]):
            chat(fake)
        with attribute(conversation="x" * 257):  # over the user id's limit: dropped, counted, the outer one kept
            chat(fake)
    first, inner, too_long = (attrs(span) for span in genai_spans(exporter))
    assert first[semconv.GEN_AI_CONVERSATION_ID] == "chat-7"
    assert (inner[semconv.GEN_AI_CONVERSATION_ID], inner[semconv.USER_ID]) == ("chat-7/summary", "cust_42")
    assert too_long[semconv.GEN_AI_CONVERSATION_ID] == "chat-7"
    assert too_long[semconv.TOKENTRAIL_ATTRIBUTION_DROPPED] == 1
    with attribute(user="u"):
        chat(fake)
    assert semconv.GEN_AI_CONVERSATION_ID not in attrs(genai_spans(exporter)[-1])


def test_a_conversation_crosses_services_in_baggage_but_never_reaches_the_provider(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    headers: dict[str, str] = {}
    with attribute(conversation="thread-42"):
        propagate.inject(headers)
    assert "tokentrail.conversation=thread-42" in headers["baggage"]
    token = context.attach(propagate.extract(headers))  # service B
    try:
        chat(fake)
        instrumented.get_tracer("some.other.instrumentation").start_span(
            "chat gpt-4o", attributes={semconv.GEN_AI_PROVIDER_NAME: "openai"}
        ).end()
    finally:
        context.detach(token)
    ours, foreign = (attrs(span) for span in exporter.get_finished_spans())
    assert ours[semconv.GEN_AI_CONVERSATION_ID] == foreign[semconv.GEN_AI_CONVERSATION_ID] == "thread-42"
    assert "thread-42" not in str(fake.last_call.headers)


def test_a_call_outside_any_scope_has_no_attribution(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    chat(fake)
    a = attrs(only_genai_span(exporter))
    assert semconv.USER_ID not in a and semconv.TOKENTRAIL_TAGS not in a


def test_nested_scopes_override_the_user_and_merge_the_tags(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    with attribute(user="outer", tags=["customer:acme"], credential="system"):
        with attribute(user="inner", tags=["feature:search", "customer:acme"]):
            chat(fake)
        chat(fake)
    inner, outer = (attrs(span) for span in genai_spans(exporter))
    assert inner[semconv.USER_ID] == "inner"
    assert inner[semconv.TOKENTRAIL_TAGS] == ("customer:acme", "feature:search")
    assert inner[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "system"  # kept from the outer scope
    assert outer[semconv.USER_ID] == "outer"
    assert outer[semconv.TOKENTRAIL_TAGS] == ("customer:acme",)


def test_decorator_attributes_calls_in_a_sync_function(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    @attribute(user="deco", tags=["feature:summary"])
    def summarise() -> str:
        chat(fake)
        return "done"

    assert summarise() == "done"
    assert summarise.__name__ == "summarise"
    a = attrs(only_genai_span(exporter))
    assert (a[semconv.USER_ID], a[semconv.TOKENTRAIL_TAGS]) == ("deco", ("feature:summary",))
    assert current_attribution().user is None  # nothing leaks out of the function


async def test_decorator_attributes_calls_in_an_async_function(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    @attribute(user="async-deco")
    async def answer() -> None:
        await async_chat(fake)

    await answer()
    assert attrs(only_genai_span(exporter))[semconv.USER_ID] == "async-deco"


async def test_async_with_attributes_the_call(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    async with attribute(user="awith"):
        await async_chat(fake)
    assert attrs(only_genai_span(exporter))[semconv.USER_ID] == "awith"


async def test_concurrent_tasks_keep_their_own_attribution(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    async def as_user(user: str) -> None:
        async with attribute(user=user, tags=[f"task:{user}"]):
            await asyncio.sleep(0)
            await async_chat(fake)

    await asyncio.gather(*(as_user(f"u{i}") for i in range(4)))
    pairs = {(attrs(s)[semconv.USER_ID], attrs(s)[semconv.TOKENTRAIL_TAGS]) for s in genai_spans(exporter)}
    assert pairs == {(f"u{i}", (f"task:u{i}",)) for i in range(4)}


def test_request_body_user_is_used_when_code_sets_none(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    chat(fake, user="body-user")
    assert attrs(only_genai_span(exporter))[semconv.USER_ID] == "body-user"


def test_request_body_safety_identifier_is_used_as_the_user(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    chat(fake, safety_identifier="hashed-user-1")
    assert attrs(only_genai_span(exporter))[semconv.USER_ID] == "hashed-user-1"


def test_explicit_context_wins_over_the_request_body(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with attribute(user="from-code"):
        chat(fake, user="from-body")
    assert attrs(only_genai_span(exporter))[semconv.USER_ID] == "from-code"


def test_reporting_headers_attribute_the_call(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    chat(fake, extra_headers={"ai-reporting-user": "hdr-user", "ai-reporting-tags": "team:ml, env:prod"})
    a = attrs(only_genai_span(exporter))
    assert a[semconv.USER_ID] == "hdr-user"
    assert a[semconv.TOKENTRAIL_TAGS] == ("team:ml", "env:prod")


def test_tags_beyond_ten_are_dropped_and_counted(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with attribute(tags=[f"t{i}" for i in range(12)]):
        chat(fake)
    a = attrs(only_genai_span(exporter))
    assert a[semconv.TOKENTRAIL_TAGS] == tuple(f"t{i}" for i in range(10))
    assert a[semconv.TOKENTRAIL_ATTRIBUTION_DROPPED] == 2


def test_invalid_tags_and_user_are_dropped_and_counted_without_raising(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    with attribute(user="u" * 257, tags=["ok", "", "x" * 65, 7, "y" * 64], credential="stolen"):  # type: ignore[list-item]  # invalid on purpose
        chat(fake)
    a = attrs(only_genai_span(exporter))
    assert semconv.USER_ID not in a
    assert a[semconv.TOKENTRAIL_TAGS] == ("ok", "y" * 64)
    assert a[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "system"  # the invalid explicit type did not override
    assert a[semconv.TOKENTRAIL_ATTRIBUTION_DROPPED] == 5  # user, three tags, credential


def test_a_user_of_exactly_256_characters_is_kept(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with attribute(user="u" * 256):
        chat(fake)
    assert attrs(only_genai_span(exporter))[semconv.USER_ID] == "u" * 256


def test_a_single_string_is_one_tag_not_its_characters() -> None:
    with attribute(tags="plan:pro") as attribution:
        assert attribution.tags == ("plan:pro",)


def test_attribution_is_carried_in_w3c_baggage() -> None:
    with attribute(user="cust_9", tags=["a,b", "plan:pro"], credential="byok"):
        entries = baggage.get_all()
    assert entries[semconv.BAGGAGE_USER] == "cust_9"
    assert entries[semconv.BAGGAGE_CREDENTIAL] == "byok"
    assert semconv.BAGGAGE_TAGS in entries


def test_attribution_crosses_services_in_w3c_baggage(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    # Service A sets the attribution and makes an outgoing request; the propagator writes the headers.
    headers: dict[str, str] = {}
    with attribute(user="edge-user", tags=["customer:acme", "a,b", "50%off"]):
        propagate.inject(headers)
    # Service B extracts them from its incoming request and makes the LLM call.
    token = context.attach(propagate.extract(headers))
    try:
        chat(fake)
    finally:
        context.detach(token)
    a = attrs(only_genai_span(exporter))
    assert a[semconv.USER_ID] == "edge-user"
    assert a[semconv.TOKENTRAIL_TAGS] == ("customer:acme", "a,b", "50%off")


def test_baggage_set_by_a_service_in_another_language_is_read(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    incoming = {"baggage": "tokentrail.user=u%201,tokentrail.tags=customer%3Aacme%2Cplan%3Apro"}
    token = context.attach(propagate.extract(incoming))
    try:
        chat(fake)
    finally:
        context.detach(token)
    a = attrs(only_genai_span(exporter))
    assert (a[semconv.USER_ID], a[semconv.TOKENTRAIL_TAGS]) == ("u 1", ("customer:acme", "plan:pro"))


def test_oversized_baggage_from_another_service_is_validated(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    ctx = baggage.set_baggage(semconv.BAGGAGE_USER, "x" * 300)
    ctx = baggage.set_baggage(semconv.BAGGAGE_CREDENTIAL, "admin", ctx)
    token = context.attach(ctx)
    try:
        chat(fake)
    finally:
        context.detach(token)
    a = attrs(only_genai_span(exporter))
    assert semconv.USER_ID not in a
    assert a[semconv.TOKENTRAIL_ATTRIBUTION_DROPPED] == 2


def test_the_span_processor_stamps_genai_spans_of_other_instrumentations(
    exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    tracer = instrumented.get_tracer("some.other.instrumentation")
    with attribute(user="cust_5", tags=["plan:free"]):
        tracer.start_span("chat gpt-4o", attributes={semconv.GEN_AI_PROVIDER_NAME: "openai"}).end()
        tracer.start_span("GET /", attributes={"http.request.method": "GET"}).end()
    genai, http = exporter.get_finished_spans()
    assert attrs(genai)[semconv.USER_ID] == "cust_5"
    assert attrs(genai)[semconv.TOKENTRAIL_TAGS] == ("plan:free",)
    assert semconv.USER_ID not in attrs(http)


def test_the_span_processor_keeps_values_the_span_already_has(
    exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    tracer = instrumented.get_tracer("some.other.instrumentation")
    with attribute(user="from-context"):
        tracer.start_span("chat", attributes={semconv.GEN_AI_SYSTEM: "openai", semconv.USER_ID: "own"}).end()
    (span,) = exporter.get_finished_spans()
    assert attrs(span)[semconv.USER_ID] == "own"


def test_raw_anthropic_metadata_user_id_is_the_user(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with httpx2.Client() as client:
        client.post(
            fake.base_url + "/v1/messages",
            json={"model": "claude-x", "max_tokens": 5, "messages": MESSAGES, "metadata": {"user_id": "meta-user"}},
        )
    assert attrs(only_genai_span(exporter))[semconv.USER_ID] == "meta-user"


# Precedence: explicit context > request headers > request body ------------------------------------------------

GATEWAY = {"providerOptions": {"gateway": {"user": "gw-user", "tags": ["team:ml", "env:body"]}}}


def test_the_body_user_is_used_when_nothing_else_says(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    chat(fake, extra_body=GATEWAY)
    a = attrs(only_genai_span(exporter))
    assert a[semconv.USER_ID] == "gw-user"
    assert a[semconv.TOKENTRAIL_TAGS] == ("team:ml", "env:body")


def test_the_header_user_overrides_the_body_user_and_tags_merge(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    chat(
        fake,
        user="body-user",
        extra_body=GATEWAY,
        extra_headers={"ai-reporting-user": "hdr-user", "ai-reporting-tags": "env:hdr,team:ml"},
    )
    a = attrs(only_genai_span(exporter))
    assert a[semconv.USER_ID] == "hdr-user"
    assert a[semconv.TOKENTRAIL_TAGS] == ("env:hdr", "team:ml", "env:body")  # deduplicated, headers first


def test_the_explicit_context_overrides_headers_and_body(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with attribute(user="ctx-user", tags=["plan:pro"]):
        chat(fake, extra_body=GATEWAY, extra_headers={"ai-reporting-user": "hdr-user", "ai-reporting-tags": "env:hdr"})
    a = attrs(only_genai_span(exporter))
    assert a[semconv.USER_ID] == "ctx-user"
    assert a[semconv.TOKENTRAIL_TAGS] == ("plan:pro", "env:hdr", "team:ml", "env:body")


def test_limits_apply_to_headers_and_body_and_are_counted(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    header_tags = ",".join(f"h{i}" for i in range(8))
    body = {"providerOptions": {"gateway": {"tags": ["b1", "b2", "b3", "x" * 65]}}}
    chat(fake, extra_body=body, extra_headers={"ai-reporting-user": "u" * 300, "ai-reporting-tags": header_tags})
    a = attrs(only_genai_span(exporter))
    assert a[semconv.TOKENTRAIL_TAGS] == (*(f"h{i}" for i in range(8)), "b1", "b2")
    # The over-long header user, one over-long tag, one tag over the limit of ten; the body has no user.
    assert a[semconv.TOKENTRAIL_ATTRIBUTION_DROPPED] == 3
    assert semconv.USER_ID not in a


def test_anthropic_metadata_user_id_yields_to_the_header(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with httpx2.Client() as client:
        client.post(
            fake.base_url + "/v1/messages",
            json={"model": "claude-x", "max_tokens": 5, "messages": MESSAGES, "metadata": {"user_id": "meta-user"}},
            headers={"ai-reporting-user": "hdr-user"},
        )
    assert attrs(only_genai_span(exporter))[semconv.USER_ID] == "hdr-user"


# Across services, over a real HTTP hop ---------------------------------------------------------------------------


class ServiceB:
    """A service on loopback that extracts the incoming trace context and then calls the LLM."""

    def __init__(self, fake: FakeProvider) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length") or 0))
                token = context.attach(propagate.extract(dict(self.headers.items())))
                try:
                    chat(fake)
                finally:
                    context.detach(token)
                self.send_response(204)
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/work"

    def __enter__(self) -> ServiceB:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_tags_set_in_service_a_reach_the_span_service_b_emits(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    with ServiceB(fake) as service_b:
        # Service A: the edge sets the attribution; its HTTP client propagation writes the headers.
        with attribute(user="edge-user", tags=["customer:acme", "plan:pro"], credential="byok"):
            headers: dict[str, str] = {}
            propagate.inject(headers)
            with httpx2.Client() as client:
                assert client.post(service_b.url, headers=headers, content=b"{}").status_code == 204
    a = attrs(only_genai_span(exporter))
    assert a[semconv.USER_ID] == "edge-user"
    assert a[semconv.TOKENTRAIL_TAGS] == ("customer:acme", "plan:pro")
    assert a[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "byok"
    # ...and the hop to service B (not an LLM call) carried the baggage, while the LLM provider never saw it.
    assert "tokentrail" not in fake.last_call.headers.get("baggage", "")


# Privacy: our baggage never reaches an LLM provider -------------------------------------------------------------


def test_baggage_propagated_by_the_anthropic_sdk_is_stripped_of_our_members(
    fake: FakeProvider, instrumented: TracerProvider
) -> None:
    import anthropic

    client = anthropic.Anthropic(
        base_url=fake.anthropic_base_url, api_key=SYSTEM_KEY, open_telemetry={"tracer_provider": instrumented}
    )
    ctx = baggage.set_baggage("session", "s-1")
    token = context.attach(ctx)
    try:
        with attribute(user="secret-user", tags=["customer:acme"]):
            client.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES)
    finally:
        context.detach(token)
    headers = fake.last_call.headers
    assert "traceparent" in headers  # the SDK did propagate
    assert headers["baggage"] == "session=s-1"  # other members kept
    assert "secret-user" not in str(headers) and "acme" not in str(headers)


def test_a_baggage_header_with_only_our_members_is_removed(fake: FakeProvider) -> None:
    with httpx2.Client() as client:
        client.post(
            fake.openai_base_url + "/chat/completions",
            json={"model": "m", "messages": MESSAGES},
            headers={"baggage": "tokentrail.user=u1,tokentrail.tags=a%2Cb"},
        )
    assert "baggage" not in fake.last_call.headers


def test_a_propagator_running_after_our_hook_finds_no_attribution_baggage(fake: FakeProvider) -> None:
    """As an HTTP instrumentation wrapped inside ours would: it injects while the request is being sent."""
    transport = httpx2.HTTPTransport()
    pool = transport._pool

    class Injecting:
        def handle_request(self, request: Any) -> object:  # the connection pool's own request type
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            request.headers.extend((name.encode(), value.encode()) for name, value in carrier.items())
            return pool.handle_request(request)

        def close(self) -> None:
            pool.close()

    transport._pool = Injecting()  # type: ignore[assignment]  # a stand-in pool, to see what is sent
    client = httpx2.Client(transport=transport)
    with attribute(user="secret-user"):
        client.post(fake.openai_base_url + "/chat/completions", json={"model": "m", "messages": MESSAGES})
        assert baggage.get_baggage(semconv.BAGGAGE_USER) == "secret-user"  # the application's context is intact
    client.close()
    assert "secret-user" not in str(fake.last_call.headers)


def test_requests_that_are_not_llm_calls_keep_their_baggage(fake: FakeProvider) -> None:
    with httpx2.Client() as client:
        response = client.post(fake.base_url + "/v1/nothing", headers={"baggage": "tokentrail.user=u1"}, json={})
    assert response.request.headers["baggage"] == "tokentrail.user=u1"
