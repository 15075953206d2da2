"""Providers: recognised by host with the OpenTelemetry well-known names, by configured base URL, or left alone."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokentrail.instrumentation import instrument, semconv
from tokentrail.instrumentation._endpoints import providers_from_env, recognise
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import SYSTEM_KEY, TEST_SALT, attrs, only_genai_span

MESSAGES: Any = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "url, provider, api",
    [
        ("https://api.openai.com/v1/chat/completions", "openai", "chat.completions"),
        ("https://api.openai.com/v1/responses", "openai", "responses"),
        ("https://api.openai.com/v1/completions", "openai", "completions"),
        ("https://api.openai.com/v1/embeddings", "openai", "embeddings"),
        ("https://api.anthropic.com/v1/messages", "anthropic", "anthropic.messages"),
        ("https://res.openai.azure.com/openai/deployments/d/chat/completions", "azure.ai.openai", "chat.completions"),
        ("https://res.openai.azure.com/openai/v1/responses", "azure.ai.openai", "responses"),
        ("https://res.cognitiveservices.azure.com/openai/deployments/d/embeddings", "azure.ai.openai", "embeddings"),
        ("https://res.services.ai.azure.com/models/chat/completions", "azure.ai.inference", "chat.completions"),
        ("https://generativelanguage.googleapis.com/v1beta/openai/chat/completions", "gcp.gemini", "chat.completions"),
        ("https://generativelanguage.googleapis.com/v1beta/openai/embeddings", "gcp.gemini", "embeddings"),
        ("https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/l/endpoints/openapi/chat/completions", "gcp.vertex_ai", "chat.completions"),
        ("https://bedrock-runtime.us-west-2.amazonaws.com/openai/v1/chat/completions", "aws.bedrock", "chat.completions"),
        ("https://api.groq.com/openai/v1/chat/completions", "groq", "chat.completions"),
        ("https://api.groq.com/openai/v1/responses", "groq", "responses"),
        ("https://api.mistral.ai/v1/chat/completions", "mistral_ai", "chat.completions"),
        ("https://api.mistral.ai/v1/embeddings", "mistral_ai", "embeddings"),
        ("https://api.deepseek.com/chat/completions", "deepseek", "chat.completions"),
        ("https://api.deepseek.com/anthropic/v1/messages", "deepseek", "anthropic.messages"),
        ("https://api.x.ai/v1/chat/completions", "x_ai", "chat.completions"),
        ("https://api.x.ai/v1/responses", "x_ai", "responses"),
        ("https://openrouter.ai/api/v1/chat/completions", "openrouter", "chat.completions"),
        ("https://api.together.xyz/v1/chat/completions", "together_ai", "chat.completions"),
        ("https://api.fireworks.ai/inference/v1/chat/completions", "fireworks", "chat.completions"),
        ("https://ai-gateway.vercel.sh/v1/chat/completions", "vercel", "chat.completions"),
        ("https://ai-gateway.vercel.sh/v1/messages", "vercel", "anthropic.messages"),
        ("https://api.perplexity.ai/chat/completions", "perplexity", "chat.completions"),
        ("https://api.cohere.ai/compatibility/v1/chat/completions", "cohere", "chat.completions"),
        ("http://localhost:8000/v1/chat/completions", "openai", "chat.completions"),
        ("http://localhost:8000/v1/messages", "anthropic", "anthropic.messages"),
        ("http://localhost:11434/v1/responses", "openai", "responses"),
    ],
)
def test_provider_and_api_are_recognised_by_host_and_path(url: str, provider: str, api: str) -> None:
    endpoint = recognise("POST", httpx2.URL(url))
    assert endpoint is not None and (endpoint.provider, endpoint.api) == (provider, api)


def test_operations_follow_the_api() -> None:
    operations = {
        path: recognise("POST", httpx2.URL("https://api.openai.com/v1" + path)).operation  # type: ignore[union-attr]  # these paths are all recognised
        for path in ("/chat/completions", "/responses", "/completions", "/embeddings")
    }
    assert operations == {
        "/chat/completions": "chat",
        "/responses": "chat",
        "/completions": "text_completion",
        "/embeddings": "embeddings",
    }


@pytest.mark.parametrize(
    "method, url",
    [
        ("POST", "https://api.openai.com/v1/responses/resp_1/cancel"),
        ("GET", "https://api.openai.com/v1/responses"),
        ("POST", "https://api.openai.com/v1/threads/thread_1/messages"),
        ("POST", "https://api.openai.com/v1/responses/input_tokens"),
        ("POST", "https://sqs.us-east-1.amazonaws.com/v1/messages"),  # not Bedrock: an unknown host, path only
    ],
)
def test_other_endpoints_of_llm_hosts_are_not_calls(method: str, url: str) -> None:
    endpoint = recognise(method, httpx2.URL(url))
    assert endpoint is None or not endpoint.known_host


def test_an_azure_deployment_url_keeps_the_deployment_apart_from_the_model() -> None:
    url = httpx2.URL("https://res.openai.azure.com/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21")
    endpoint = recognise("POST", url)
    assert endpoint is not None
    assert (endpoint.deployment, endpoint.api_version) == ("prod-4o", "2024-10-21")


@pytest.mark.usefixtures("instrumented")
def test_azure_openai_through_the_sdk_prefers_the_response_model(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    base = fake.base_url
    instrument(
        tracer_provider=instrumented, providers={base: "azure.ai.openai"}, system_keys=[SYSTEM_KEY], fingerprint_salt=TEST_SALT
    )
    azure = openai.AzureOpenAI(
        azure_endpoint=base, azure_deployment="prod-4o", api_version="2024-10-21", api_key=SYSTEM_KEY, max_retries=0
    )
    azure.chat.completions.create(model="gpt-4o-2024-08-06", messages=MESSAGES)
    a = attrs(only_genai_span(exporter))
    assert a[semconv.GEN_AI_PROVIDER_NAME] == "azure.ai.openai"
    assert a[semconv.TOKENTRAIL_AZURE_DEPLOYMENT] == "prod-4o"
    assert a[semconv.TOKENTRAIL_AZURE_API_VERSION] == "2024-10-21"
    assert a[semconv.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-08-06"
    assert a[semconv.TOKENTRAIL_CREDENTIAL_TYPE] == "system"  # Azure's api-key header is read


@pytest.mark.usefixtures("instrumented")
def test_an_azure_request_without_a_model_is_named_by_its_deployment(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    base = fake.base_url
    instrument(tracer_provider=instrumented, providers={base: "azure.ai.openai"}, fingerprint_salt=TEST_SALT)
    with httpx2.Client() as http:
        http.post(base + "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21", json={"messages": MESSAGES})
    span = only_genai_span(exporter)
    assert span.name == "chat prod-4o"
    assert attrs(span)[semconv.GEN_AI_REQUEST_MODEL] == "prod-4o"


def test_tokentrail_providers_env_accepts_pairs_and_json() -> None:
    pairs = "http://localhost:11434/v1=ollama, http://gpu-box:8000/v1?x=1=vllm"
    assert providers_from_env({semconv.ENV_PROVIDERS: pairs}) == {
        "http://localhost:11434/v1": "ollama",
        "http://gpu-box:8000/v1?x=1": "vllm",
    }
    assert providers_from_env({semconv.ENV_PROVIDERS: '{"http://litellm:4000": "litellm"}'}) == {
        "http://litellm:4000": "litellm"
    }
    assert providers_from_env({semconv.ENV_PROVIDERS: "garbage"}) == {}
    assert providers_from_env({}) == {}


@pytest.mark.usefixtures("instrumented")
def test_local_servers_are_named_by_the_tokentrail_providers_env(
    fake: FakeProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch, instrumented: TracerProvider
) -> None:
    base = fake.openai_base_url
    clean_env.setenv(semconv.ENV_PROVIDERS, f"{base}=vllm")
    instrument(tracer_provider=instrumented, fingerprint_salt=TEST_SALT)
    openai.OpenAI(base_url=base, api_key=SYSTEM_KEY).chat.completions.create(model="m", messages=MESSAGES)
    assert attrs(only_genai_span(exporter))[semconv.GEN_AI_PROVIDER_NAME] == "vllm"


@pytest.mark.usefixtures("instrumented")
def test_instrument_providers_win_over_the_env(
    fake: FakeProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch, instrumented: TracerProvider
) -> None:
    base = fake.openai_base_url
    clean_env.setenv(semconv.ENV_PROVIDERS, f"{base}=vllm")
    instrument(tracer_provider=instrumented, providers={base: "litellm"}, fingerprint_salt=TEST_SALT)
    openai.OpenAI(base_url=base, api_key=SYSTEM_KEY).chat.completions.create(model="m", messages=MESSAGES)
    assert attrs(only_genai_span(exporter))[semconv.GEN_AI_PROVIDER_NAME] == "litellm"


@pytest.mark.usefixtures("instrumented")
def test_a_configured_server_needs_no_model_to_be_a_call(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    base = fake.openai_base_url
    instrument(tracer_provider=instrumented, providers={base: "vllm"}, fingerprint_salt=TEST_SALT)
    with httpx2.Client() as http:
        http.post(base + "/chat/completions", json={"messages": MESSAGES})
    assert attrs(only_genai_span(exporter))[semconv.GEN_AI_PROVIDER_NAME] == "vllm"
