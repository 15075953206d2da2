"""Which requests are LLM calls, which API they use and which provider serves them.

This runs on every HTTP request the process makes, so the common answer ("not an LLM call") costs one method
comparison and a few ``str.endswith``. The API is recognised by path, because OpenAI- and Anthropic-compatible
servers keep the paths while changing hosts (and Google's APIs, whose paths name the model and the method, keep
theirs behind any ``base_url``: see ``_gemini``); the provider by configured base URL, then by host, then by the
API's own vendor (for Google's, Vertex AI or the Gemini Developer API by the path's shape).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar

from . import semconv
from ._gemini import google_call

log = logging.getLogger(__name__)

# gen_ai.provider.name takes the OpenTelemetry well-known value where the conventions define one (openai,
# anthropic, azure.ai.openai, azure.ai.inference, gcp.gemini, gcp.vertex_ai, aws.bedrock, groq, mistral_ai,
# deepseek, x_ai, perplexity, cohere); the others are the vendor's own short name.
PROVIDER_BY_HOST: Final[Mapping[str, str]] = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral_ai",
    "api.deepseek.com": "deepseek",
    "api.x.ai": "x_ai",
    "openrouter.ai": "openrouter",
    "api.together.xyz": "together_ai",
    "api.together.ai": "together_ai",
    "api.fireworks.ai": "fireworks",
    "generativelanguage.googleapis.com": "gcp.gemini",  # Gemini's OpenAI-compatible endpoint (/v1beta/openai/)
    "ai-gateway.vercel.sh": "vercel",
    "api.perplexity.ai": "perplexity",
    "api.cerebras.ai": "cerebras",
    "api.cohere.ai": "cohere",
    "api.cohere.com": "cohere",
    "api.deepinfra.com": "deepinfra",
    "router.huggingface.co": "huggingface",
    "api.moonshot.ai": "moonshot",
}
PROVIDER_BY_HOST_SUFFIX: Final[tuple[tuple[str, str], ...]] = (
    (".openai.azure.com", "azure.ai.openai"),
    (".cognitiveservices.azure.com", "azure.ai.openai"),
    (".services.ai.azure.com", "azure.ai.inference"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),  # Vertex AI's OpenAI-compatible endpoint, any region
    (".amazonaws.com", "aws.bedrock"),  # bedrock-runtime.<region>.amazonaws.com/openai/v1/...: checked below
)
_AZURE_PROVIDERS: Final = frozenset({"azure.ai.openai"})

# The vendor whose API a path belongs to: the provider of a compatible server nobody configured.
_PROVIDER_BY_API: Final[Mapping[str, str]] = {
    semconv.API_CHAT_COMPLETIONS: "openai",
    semconv.API_ANTHROPIC_MESSAGES: "anthropic",
    semconv.API_RESPONSES: "openai",
    semconv.API_COMPLETIONS: "openai",
    semconv.API_EMBEDDINGS: "openai",
}
OPERATION_BY_API: Final[Mapping[str, str]] = {
    semconv.API_CHAT_COMPLETIONS: semconv.GEN_AI_OPERATION_CHAT,
    semconv.API_ANTHROPIC_MESSAGES: semconv.GEN_AI_OPERATION_CHAT,
    semconv.API_RESPONSES: semconv.GEN_AI_OPERATION_CHAT,
    semconv.API_COMPLETIONS: semconv.GEN_AI_OPERATION_TEXT_COMPLETION,
    semconv.API_EMBEDDINGS: semconv.GEN_AI_OPERATION_EMBEDDINGS,
}


class URLLike(Protocol):
    """What ``httpx.URL`` and ``httpx2.URL`` both offer."""

    @property
    def scheme(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    @property
    def path(self) -> str: ...
    @property
    def raw_path(self) -> bytes: ...
    @property
    def params(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A recognised LLM endpoint. ``known_host`` is False for a server recognised only by its path (not by a
    known host nor a configured base URL), which must then also send a model to count as an LLM call.

    ``deployment`` and ``api_version`` are Azure OpenAI's: a deployment is a name the customer chose, not a model,
    so the span's model comes from the body or the response and the deployment is kept apart.

    ``model`` and ``stream`` are what the path itself says, for APIs that put them there (Google's): the body of such
    a request names neither, so it is not read at all.
    """

    api: str
    provider: str
    operation: str
    server_address: str
    server_port: int
    known_host: bool
    deployment: str | None = None
    api_version: str | None = None
    model: str | None = None
    stream: bool = False


def normalise_base_urls(providers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """``{base_url: provider}`` as prefixes to match, longest first so the most specific base URL wins."""
    if not providers:
        return ()
    pairs = [(url.rstrip("/").lower(), provider) for url, provider in providers.items() if url and provider]
    return tuple(sorted(pairs, key=lambda pair: len(pair[0]), reverse=True))


def providers_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``TOKENTRAIL_PROVIDERS``: ``base_url=provider`` pairs separated by commas (or a JSON object).

    A URL may itself contain ``=`` (a query string), a provider name never does, so each pair splits at its last
    ``=``. A malformed entry is skipped with a warning: configuration must not stop the service.
    """
    raw = (os.environ if environ is None else environ).get(semconv.ENV_PROVIDERS, "").strip()
    if not raw:
        return {}
    if raw.startswith("{"):
        try:
            data = json.loads(raw)
        except ValueError:
            log.warning("TokenTrail: %s is not valid JSON; ignored", semconv.ENV_PROVIDERS)
            return {}
        return {str(url): str(name) for url, name in data.items() if url and name} if isinstance(data, dict) else {}
    providers: dict[str, str] = {}
    for entry in raw.split(","):
        url, sep, name = entry.strip().rpartition("=")
        if sep and url.strip() and name.strip():
            providers[url.strip()] = name.strip()
        elif entry.strip():
            log.warning("TokenTrail: an entry of %s is not base_url=provider; ignored", semconv.ENV_PROVIDERS)
    return providers


def api_of(method: str, path: str) -> str | None:
    """The API of a request by its method and path alone: the hot path for every request, LLM or not."""
    if method != "POST":
        return None
    if path.endswith("/completions"):
        return semconv.API_CHAT_COMPLETIONS if path.endswith("/chat/completions") else semconv.API_COMPLETIONS
    if path.endswith("/v1/messages"):
        # A bare "/messages" is common outside Anthropic's API (OpenAI's Assistants threads, mail and chat apps);
        # Anthropic and every Anthropic-compatible server (Bedrock-less gateways, DeepSeek, Azure) use /v1/messages.
        return semconv.API_ANTHROPIC_MESSAGES
    if path.endswith("/responses"):
        return semconv.API_RESPONSES
    if path.endswith("/embeddings"):
        return semconv.API_EMBEDDINGS
    return None


def _provider_by_host(host: str) -> str | None:
    provider = PROVIDER_BY_HOST.get(host)
    if provider is not None:
        return provider
    for suffix, name in PROVIDER_BY_HOST_SUFFIX:
        if host.endswith(suffix):
            if name == "aws.bedrock" and not host.startswith("bedrock"):
                continue  # some other AWS service
            return name
    return None


def _azure_details(url: URLLike) -> tuple[str | None, str | None]:
    """The deployment in ``/openai/deployments/{name}/...`` and the ``api-version`` query parameter."""
    deployment = None
    marker = "/deployments/"
    path = url.path
    start = path.find(marker)
    if start >= 0:
        deployment = path[start + len(marker) :].partition("/")[0] or None
    try:
        api_version = url.params.get("api-version") or None
    except Exception:  # noqa: BLE001 - a query string the URL class cannot parse: no api-version, still a call
        api_version = None
    return deployment, api_version


def recognise(method: str, url: URLLike, base_urls: tuple[tuple[str, str], ...] = ()) -> Endpoint | None:
    """The endpoint a request goes to, or None when it is not an LLM call we understand.

    ``base_urls`` comes from ``normalise_base_urls``: lower-cased prefixes, longest first.
    """
    path = url.path
    api = api_of(method, path)
    google = None
    if api is None:
        google = google_call(path) if method == "POST" else None
        if google is None:
            return None
        api = google.api
    host = url.host.lower()
    provider: str | None = None
    if base_urls:
        # Configured first: it is the application's explicit word (a proxy on a known host, a self-hosted server).
        full = f"{url.scheme}://{host}{'' if url.port is None else f':{url.port}'}{path}".lower()
        for prefix, name in base_urls:
            if full.startswith(prefix):
                provider = name
                break
    if provider is None:
        provider = _provider_by_host(host)
    known_host = provider is not None
    if provider is None:
        provider = google.provider if google is not None else _PROVIDER_BY_API[api]
    deployment = api_version = None
    if provider in _AZURE_PROVIDERS:
        deployment, api_version = _azure_details(url)
    port = url.port or (443 if url.scheme == "https" else 80)
    return Endpoint(
        api=api,
        provider=provider,
        operation=google.operation if google is not None else OPERATION_BY_API[api],
        server_address=host,
        server_port=port,
        known_host=known_host,
        deployment=deployment,
        api_version=api_version,
        model=google.model if google is not None else None,
        stream=google is not None and google.stream,
    )


T = TypeVar("T")

# How many distinct LLM URLs an ``EndpointCache`` remembers before it starts again (a service talks to a handful).
MAX_REMEMBERED: Final = 1024


class EndpointCache(Generic[T]):
    """``recognise`` remembered per URL, together with what the caller derives from each endpoint once (its span
    attributes), so that an LLM call to a URL seen before costs one dictionary lookup.

    The key is what ``recognise`` reads of a POST's URL: its scheme, host, port and raw path with its query (never
    its user info). Only LLM endpoints are remembered; any other POST is answered by ``recognise`` each time, which
    turns it away by a few ``str.endswith`` on its path. Lookups from several threads are safe: the worst race
    computes an entry twice.
    """

    __slots__ = ("_base_urls", "_derive", "known")

    def __init__(self, base_urls: tuple[tuple[str, str], ...], derive: Callable[[Endpoint], T]) -> None:
        self._base_urls = base_urls
        self._derive = derive
        self.known: dict[tuple[object, ...], tuple[Endpoint, T]] = {}

    def lookup(self, url: URLLike) -> tuple[Endpoint, T] | None:
        """The endpoint of a POST to ``url`` and what was derived from it, or None when it is not an LLM call."""
        key = (url.scheme, url.host, url.port, url.raw_path)
        found = self.known.get(key)
        if found is not None:
            return found
        endpoint = recognise("POST", url, self._base_urls)
        if endpoint is None:
            return None
        found = (endpoint, self._derive(endpoint))
        if len(self.known) >= MAX_REMEMBERED:
            self.known.clear()
        self.known[key] = found
        return found
