"""Gemini and Vertex AI model ids, in every form a call can carry, price as the ``genai-prices`` catalog lists them.

A Gemini call reaches the processor under ``gcp.gemini`` or ``gcp.vertex_ai`` (our instrumentation), ``google``
(other instrumentations), and with its model spelled many ways: as the application passed it (``models/…``, Vertex
``publishers/google/models/…`` and full resource names), as the SDK put it in the URL path (the bare id our spans
carry as the request model), and as the API answered it (``modelVersion``: a versioned, preview or resolved ``-latest``
id, which our spans carry as the response model and the record is priced by). Every form must reach the same catalog
price; the price itself is always the catalog library's own answer (``genai_prices.calc_price``), never a number
written here. Gemini 2.5 Pro's prices change above 200k input tokens, cache reads have their own rate, and thinking
is billed as output: each is checked at the exact price. An id the catalog does not know (a tuned model, Vertex's
per-character ``text-embedding-*``) is unpriced, loud, never $0.

The end-to-end half drives the real ``google-genai`` SDK through our instrumentation to a loopback server that
answers as Google does, with the ``modelVersion`` and ``usageMetadata`` each case needs (counts the fake provider
derives from the prompt cannot reach the 200k tier), then normalizes the spans and prices the records.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from google import genai
from google.genai import types
from google.oauth2.credentials import Credentials
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokentrail.instrumentation import semconv
from tokentrail.instrumentation._gemini import google_call
from tokentrail.processor.normalize.reader import normalize_request
from tokentrail.processor.pricing.catalog import Pricer
from tokentrail.processor.pricing.lookup import resolve_name
from tokentrail.processor.pricing.overrides import NO_OVERRIDES
from tokentrail.processor.schema import PRICED, UNPRICED, UsageRecord

from tests.helpers.spans import SYSTEM_KEY, genai_spans

T = datetime(2025, 11, 1, 12, 0, tzinfo=UTC)
PROVIDERS = ("gcp.gemini", "gcp.vertex_ai", "google")
RESOURCE = "projects/p/locations/us-central1/publishers/google/models"
TIER = 200_000  # Gemini 2.5 Pro: prompts of more than 200k tokens are billed at higher rates

# (model id as a call can carry it, catalog model it must price as)
FORMS = [
    # plain ids
    ("gemini-2.5-flash", "gemini-2.5-flash"),
    ("gemini-2.5-pro", "gemini-2.5-pro"),
    ("gemini-2.0-flash", "gemini-2.0-flash"),
    ("gemini-2.0-flash-lite", "gemini-2.0-flash-lite"),
    ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
    ("gemini-1.5-pro", "gemini-1.5-pro"),
    ("gemini-1.5-flash", "gemini-1.5-flash"),
    ("gemini-embedding-001", "gemini-embedding-001"),
    # the Gemini API's resource names
    ("models/gemini-2.5-flash", "gemini-2.5-flash"),
    ("models/gemini-2.5-pro", "gemini-2.5-pro"),
    ("models/gemini-embedding-001", "gemini-embedding-001"),
    ("models/gemini-2.0-flash-001", "gemini-2.0-flash"),
    ("models/gemini-flash-latest", "gemini-3.8-flash"),
    # Vertex AI's publisher and full resource names, in any location
    ("publishers/google/models/gemini-2.5-flash", "gemini-2.5-flash"),
    (f"{RESOURCE}/gemini-2.5-flash", "gemini-2.5-flash"),
    ("projects/p/locations/global/publishers/google/models/gemini-2.5-pro", "gemini-2.5-pro"),
    ("projects/p/locations/europe-west4/publishers/google/models/gemini-2.0-flash-001", "gemini-2.0-flash"),
    (f"{RESOURCE}/gemini-embedding-001", "gemini-embedding-001"),
    (f"{RESOURCE}/gemini-2.5-flash-001", "gemini-2.5-flash"),
    # stable versions (Vertex's ids and the modelVersion both APIs answer)
    ("gemini-2.0-flash-001", "gemini-2.0-flash"),
    ("gemini-2.0-flash-lite-001", "gemini-2.0-flash-lite"),
    ("gemini-1.5-pro-002", "gemini-1.5-pro"),
    ("gemini-1.5-flash-002", "gemini-1.5-flash"),
    ("gemini-2.5-flash-001", "gemini-2.5-flash"),
    ("gemini-2.5-flash-lite-001", "gemini-2.5-flash-lite"),
    ("gemini-2.5-pro-001", "gemini-2.5-pro"),
    # previews and dated snapshots, at the catalog's price of each
    ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash-preview"),
    ("gemini-2.5-flash-preview-04-17", "gemini-2.5-flash-preview"),
    ("gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash"),
    ("gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
    ("gemini-2.5-flash-lite-preview-09-2025", "gemini-2.5-flash-lite"),
    ("gemini-2.5-pro-preview-06-05", "gemini-2.5-pro"),
    ("gemini-2.0-flash-exp", "gemini-2.0-flash"),
    # -latest aliases (the unversioned ones follow whatever the catalog says they point to today)
    ("gemini-2.5-flash-latest", "gemini-2.5-flash"),
    ("gemini-2.0-flash-latest", "gemini-2.0-flash"),
    ("gemini-1.5-pro-latest", "gemini-1.5-pro"),
    ("gemini-1.5-flash-latest", "gemini-1.5-flash"),
    ("gemini-flash-latest", "gemini-3.8-flash"),
    ("gemini-flash-lite-latest", "gemini-3.5-flash-lite"),
    ("gemini-pro-latest", "gemini-3.1-pro-preview"),
]

UNKNOWN = [
    "tunedModels/my-model-123",  # a tuned model: only an overrides alias can price it
    "my-model-123",  # ... as our spans carry it (the path's last segment)
    "projects/p/locations/us-central1/endpoints/1234567890",  # a deployed Vertex endpoint names no model
    "gemini-9.9-ultra",
    "models/gemini-9.9-ultra-001",
    # Vertex's text embedding models are billed per character, not per token: the catalog has no token price.
    "text-embedding-005",
    f"{RESOURCE}/text-embedding-005",
    "text-multilingual-embedding-002",
]


def tokens(catalog_id: str) -> dict[str, int]:
    """A call's counts under the house rules: input inclusive of cache reads, output inclusive of thinking."""
    if "embedding" in catalog_id:
        return {"input_tokens": 1_000, "output_tokens": 0}
    return {"input_tokens": 10_000, "cached_input_tokens": 4_000, "output_tokens": 1_500, "reasoning_tokens": 500}


def record(
    model: str, provider: str, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> UsageRecord:
    return UsageRecord(
        timestamp=T, trace_id="0" * 32, span_id="0" * 16, provider=provider, model=model, input_tokens=input_tokens,
        output_tokens=output_tokens, cached_input_tokens=cached_input_tokens, reasoning_tokens=reasoning_tokens,
    )  # fmt: skip


def library_price(
    catalog_id: str, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0, reasoning_tokens: int = 0
) -> Decimal:
    """``genai_prices.calc_price`` for the catalog model itself: input inclusive of cache reads, and thinking inside
    the output, as the library counts them (``reasoning_tokens`` is only the part of the output that was thinking:
    Gemini has no rate of its own for it)."""
    usage = Usage(input_tokens=input_tokens, cache_read_tokens=cached_input_tokens, output_tokens=output_tokens)
    return calc_price(usage, catalog_id, provider_id="google", genai_request_timestamp=T).total_price


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return Pricer(overrides=NO_OVERRIDES, auto_update=False)


# Names ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model_id", "catalog_id"), FORMS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_gemini_id_form_prices_as_its_catalog_model(
    pricer: Pricer, model_id: str, catalog_id: str, provider: str
) -> None:
    # As the application names the model, and as our spans carry it: the model segment of the path the SDK sends
    # (a bare id goes under models/; the SDK calls below check this against the real SDK).
    called = google_call(f"/v1beta/{model_id if '/' in model_id else 'models/' + model_id}:generateContent")
    assert called is not None and called.model is not None, model_id
    for name in {model_id, called.model}:
        match = resolve_name(provider, name)
        assert match is not None, name
        assert (match.provider.id, match.model.id) == ("google", catalog_id), name
        counts = tokens(catalog_id)
        usage = record(name, provider, **counts)
        assert pricer.price(usage), name
        assert usage.price_status == PRICED
        expected = library_price(catalog_id, **counts)
        assert usage.market_cost == expected > 0, name
        assert usage.total_cost == usage.market_cost


@pytest.mark.parametrize("model_id", UNKNOWN)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_unknown_google_model_is_unpriced_not_free(pricer: Pricer, model_id: str, provider: str) -> None:
    assert resolve_name(provider, model_id) is None
    usage = record(model_id, provider, input_tokens=1_000, output_tokens=100)
    assert not pricer.price(usage)
    assert usage.price_status == UNPRICED
    assert usage.market_cost is None
    assert usage.total_cost is None


# Prices: the 200k tier, cache reads, thinking ------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", ["gemini-2.5-pro", f"{RESOURCE}/gemini-2.5-pro", "models/gemini-2.5-pro"])
def test_gemini_2_5_pro_prices_each_side_of_its_200k_tier(pricer: Pricer, model_id: str) -> None:
    def quote(input_tokens: int, output_tokens: int, cached: int = 0) -> Decimal:
        found = pricer.quote(
            "gcp.vertex_ai", model_id, T, input_tokens=input_tokens, output_tokens=output_tokens,
            cached_input_tokens=cached,
        )  # fmt: skip
        assert found is not None
        expected = library_price(
            "gemini-2.5-pro", input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached
        )
        assert found.market_cost == expected > 0
        return found.market_cost

    at, above = quote(TIER, 0), quote(TIER + 1, 0)
    assert above / (TIER + 1) > at / TIER  # every input token costs more once the prompt passes 200k
    # Output and cache reads change rate with the prompt's size, not their own.
    assert quote(TIER + 1, 1_000) - above > quote(TIER, 1_000) - at
    assert quote(TIER + 1, 0, cached=100_000) < above  # a cache read is still cheaper above the tier ...
    assert above - quote(TIER + 1, 0, cached=100_000) != at - quote(TIER, 0, cached=100_000)  # ... at its own rate


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cache_reads_are_priced_at_the_cache_rate(pricer: Pricer, provider: str) -> None:
    full = pricer.quote(provider, "gemini-2.5-flash", T, input_tokens=100_000, output_tokens=100)
    cached = pricer.quote(
        provider, "gemini-2.5-flash", T, input_tokens=100_000, output_tokens=100, cached_input_tokens=90_000
    )
    assert full is not None and cached is not None
    assert cached.market_cost == library_price(
        "gemini-2.5-flash", input_tokens=100_000, cached_input_tokens=90_000, output_tokens=100
    )
    assert Decimal(0) < cached.market_cost < full.market_cost


@pytest.mark.parametrize("provider", PROVIDERS)
def test_thinking_tokens_are_priced_as_output(pricer: Pricer, provider: str) -> None:
    """Thoughts are inside the output count (candidates + thoughts) and cost what the same output costs."""
    thinking = pricer.quote(
        provider, "gemini-2.5-flash", T, input_tokens=1_000, output_tokens=5_000, reasoning_tokens=4_000
    )
    answer_only = pricer.quote(provider, "gemini-2.5-flash", T, input_tokens=1_000, output_tokens=1_000)
    plain = pricer.quote(provider, "gemini-2.5-flash", T, input_tokens=1_000, output_tokens=5_000)
    assert thinking is not None and answer_only is not None and plain is not None
    assert thinking.market_cost == plain.market_cost == library_price(
        "gemini-2.5-flash", input_tokens=1_000, output_tokens=5_000
    )
    assert thinking.market_cost > answer_only.market_cost


# End to end: the real SDK, our spans, the processor's reader, the price ---------------------------------------------


class _Google(BaseHTTPRequestHandler):
    """Answers as Google's APIs do, with the model version and usage of the case under test."""

    server: _GoogleServer

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        self.server.paths.append(self.path)
        method = self.path.partition("?")[0].rpartition(":")[2]
        answer = self.server.answer
        payload: dict[str, Any]
        if method == "predict":  # Vertex AI's text embedding models: a token count per instance
            statistics = {"truncated": False, "token_count": answer["usageMetadata"]["promptTokenCount"]}
            payload = {"predictions": [{"embeddings": {"values": [0.1, 0.2], "statistics": statistics}}]}
        elif method == "embedContent":
            payload = {"embedding": {"values": [0.1, 0.2]}, "usageMetadata": answer["usageMetadata"]}
        else:
            candidate = {"content": {"role": "model", "parts": [{"text": "Hello."}]}, "finishReason": "STOP"}
            payload = {"candidates": [candidate], "usageMetadata": answer["usageMetadata"], "responseId": "r-1"}
            if answer.get("modelVersion"):
                payload["modelVersion"] = answer["modelVersion"]
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
        pass


class _GoogleServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Google)
        self.paths: list[str] = []
        self.answer: dict[str, Any] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def google_server() -> Iterator[_GoogleServer]:
    server = _GoogleServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


_alive: list[genai.Client] = []  # a collected genai.Client closes its HTTP client: kept until the test ends


@pytest.fixture
def google(google_server: _GoogleServer, instrumented: Any) -> Iterator[_GoogleServer]:
    google_server.paths.clear()
    yield google_server
    _alive.clear()


def sdk_client(server: _GoogleServer, backend: str) -> genai.Client:
    options = types.HttpOptions(base_url=server.base_url)
    if backend == "vertex":
        made = genai.Client(
            vertexai=True,
            project="p",
            location="us-central1",
            credentials=Credentials(token="ya29.test-oauth-token"),
            http_options=options,
        )
    else:
        made = genai.Client(api_key=SYSTEM_KEY, http_options=options)
    _alive.append(made)
    return made


def priced_record(exporter: InMemorySpanExporter, pricer: Pricer) -> UsageRecord:
    result = normalize_request(encode_spans(exporter.get_finished_spans()))
    assert result.rejected == 0, result.errors
    (only,) = result.records
    pricer.price(only)
    return only


USAGE = {"promptTokenCount": 1_200, "candidatesTokenCount": 300, "totalTokenCount": 1_500}

# (backend, model the application passes, modelVersion the API answers or None, what the span's request model is,
#  catalog model)
SDK_CASES = [
    ("gemini", "gemini-2.5-flash", "gemini-2.5-flash", "gemini-2.5-flash", "gemini-2.5-flash"),
    ("gemini", "models/gemini-2.5-pro", "gemini-2.5-pro", "gemini-2.5-pro", "gemini-2.5-pro"),
    ("gemini", "gemini-2.0-flash", "gemini-2.0-flash-001", "gemini-2.0-flash", "gemini-2.0-flash"),
    ("gemini", "gemini-2.5-flash-lite", None, "gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
    ("gemini", "gemini-flash-latest", "gemini-2.5-flash-preview-09-2025", "gemini-flash-latest", "gemini-2.5-flash"),
    ("gemini", "gemini-2.5-flash-preview-05-20", "gemini-2.5-flash-preview-05-20", "gemini-2.5-flash-preview-05-20",
     "gemini-2.5-flash-preview"),
    ("vertex", "gemini-2.5-flash", "gemini-2.5-flash", "gemini-2.5-flash", "gemini-2.5-flash"),
    ("vertex", "gemini-2.0-flash", "gemini-2.0-flash-001", "gemini-2.0-flash", "gemini-2.0-flash"),
    ("vertex", "publishers/google/models/gemini-2.5-pro", "gemini-2.5-pro", "gemini-2.5-pro", "gemini-2.5-pro"),
    ("vertex", f"{RESOURCE}/gemini-2.5-flash", "gemini-2.5-flash", "gemini-2.5-flash", "gemini-2.5-flash"),
    ("vertex", "gemini-1.5-pro-002", "gemini-1.5-pro-002", "gemini-1.5-pro-002", "gemini-1.5-pro"),
    ("vertex", "gemini-2.5-flash-lite", "gemini-2.5-flash-lite-001", "gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
]  # fmt: skip


@pytest.mark.parametrize(("backend", "model", "version", "span_model", "catalog_id"), SDK_CASES)
def test_an_sdk_call_prices_as_its_catalog_model(
    google: _GoogleServer,
    exporter: InMemorySpanExporter,
    pricer: Pricer,
    backend: str,
    model: str,
    version: str | None,
    span_model: str,
    catalog_id: str,
) -> None:
    google.answer = {"modelVersion": version, "usageMetadata": USAGE}
    sdk_client(google, backend).models.generate_content(model=model, contents="Hello?")

    (span,) = genai_spans(exporter)
    attributes = dict(span.attributes or {})
    assert attributes[semconv.GEN_AI_PROVIDER_NAME] == ("gcp.vertex_ai" if backend == "vertex" else "gcp.gemini")
    assert attributes[semconv.GEN_AI_REQUEST_MODEL] == span_model
    assert attributes.get(semconv.GEN_AI_RESPONSE_MODEL) == version
    found = priced_record(exporter, pricer)
    assert (found.provider, found.model) == ("google", version or span_model)
    assert found.price_status == PRICED
    assert found.market_cost == library_price(catalog_id, input_tokens=1_200, output_tokens=300) > 0


def test_a_long_cached_thinking_call_prices_above_the_tier_with_cache_and_thoughts(
    google: _GoogleServer, exporter: InMemorySpanExporter, pricer: Pricer
) -> None:
    """``promptTokenCount`` includes ``cachedContentTokenCount``; thoughts sit outside ``candidatesTokenCount``."""
    google.answer = {
        "modelVersion": "gemini-2.5-pro",
        "usageMetadata": {
            "promptTokenCount": 250_000,
            "cachedContentTokenCount": 100_000,
            "candidatesTokenCount": 800,
            "thoughtsTokenCount": 1_200,
            "totalTokenCount": 252_000,
        },
    }
    sdk_client(google, "vertex").models.generate_content(model="gemini-2.5-pro", contents="The long document ...")
    found = priced_record(exporter, pricer)
    assert (found.input_tokens, found.cached_input_tokens) == (250_000, 100_000)
    assert (found.output_tokens, found.reasoning_tokens) == (2_000, 1_200)
    assert found.price_status == PRICED
    expected = library_price("gemini-2.5-pro", input_tokens=250_000, cached_input_tokens=100_000, output_tokens=2_000)
    assert found.market_cost == expected
    below = library_price("gemini-2.5-pro", input_tokens=TIER, cached_input_tokens=100_000, output_tokens=2_000)
    assert found.market_cost > below * 250_000 / TIER  # the whole call at the higher rates, not just the excess


@pytest.mark.parametrize(
    ("backend", "model", "span_model"),
    [
        ("gemini", "tunedModels/my-model-123", "my-model-123"),
        ("vertex", "text-embedding-005", "text-embedding-005"),
    ],
)
def test_an_sdk_call_to_an_unknown_model_is_unpriced_not_free(
    google: _GoogleServer,
    exporter: InMemorySpanExporter,
    pricer: Pricer,
    backend: str,
    model: str,
    span_model: str,
) -> None:
    google.answer = {"modelVersion": None, "usageMetadata": USAGE}
    client = sdk_client(google, backend)
    if "embedding" in model:
        client.models.embed_content(model=model, contents=["Hello?"])
    else:
        client.models.generate_content(model=model, contents="Hello?")
    assert google.paths, "the SDK made no call"
    found = priced_record(exporter, pricer)
    assert found.model == span_model
    assert found.input_tokens == USAGE["promptTokenCount"]  # the usage was read: only the price is missing
    assert found.price_status == UNPRICED
    assert found.market_cost is None and found.total_cost is None
