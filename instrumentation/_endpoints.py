"""Which requests are LLM calls, which API they use and which provider serves them.

This runs on every HTTP request the process makes, so the common answer ("not an LLM call") costs one method
comparison and one or two ``str.endswith``. The API is recognised by path, because OpenAI- and
Anthropic-compatible servers keep the paths while changing hosts; the provider by host, then by configured base
URL, then by the API's own vendor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from . import semconv

# Provider names follow gen_ai.provider.name where the conventions define one (openai, anthropic, azure.ai.openai,
# gcp.gemini, groq, mistral_ai, deepseek, x_ai); the others are the vendor's own short name.
PROVIDER_BY_HOST: Final[Mapping[str, str]] = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral_ai",
    "api.deepseek.com": "deepseek",
    "api.x.ai": "x_ai",
    "openrouter.ai": "openrouter",
    "api.together.xyz": "together_ai",
    "api.fireworks.ai": "fireworks",
    "generativelanguage.googleapis.com": "gcp.gemini",
    "ai-gateway.vercel.sh": "vercel",
    "api.perplexity.ai": "perplexity",
    "api.cerebras.ai": "cerebras",
}
PROVIDER_BY_HOST_SUFFIX: Final[tuple[tuple[str, str], ...]] = (
    (".openai.azure.com", "azure.ai.openai"),
    (".services.ai.azure.com", "azure.ai.inference"),
)

# The vendor whose API a path belongs to: the provider of a compatible server nobody configured.
_PROVIDER_BY_API: Final[Mapping[str, str]] = {
    semconv.API_CHAT_COMPLETIONS: "openai",
    semconv.API_ANTHROPIC_MESSAGES: "anthropic",
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


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A recognised LLM endpoint. ``known_host`` is False for a server recognised only by its path (not by a
    known host nor a configured base URL), which must then also send a model to count as an LLM call."""

    api: str
    provider: str
    operation: str
    server_address: str
    server_port: int
    known_host: bool


def normalise_base_urls(providers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """``{base_url: provider}`` as prefixes to match, longest first so the most specific base URL wins."""
    if not providers:
        return ()
    pairs = [(url.rstrip("/").lower(), provider) for url, provider in providers.items() if url and provider]
    return tuple(sorted(pairs, key=lambda pair: len(pair[0]), reverse=True))


def api_of(method: str, path: str) -> str | None:
    """The API of a request by its method and path alone: the hot path for every request, LLM or not."""
    if method != "POST":
        return None
    if path.endswith("/chat/completions"):
        return semconv.API_CHAT_COMPLETIONS
    if path.endswith("/messages"):
        return semconv.API_ANTHROPIC_MESSAGES
    return None


def recognise(method: str, url: URLLike, base_urls: tuple[tuple[str, str], ...] = ()) -> Endpoint | None:
    """The endpoint a request goes to, or None when it is not an LLM call we understand.

    ``base_urls`` comes from ``normalise_base_urls``: lower-cased prefixes, longest first.
    """
    path = url.path
    api = api_of(method, path)
    if api is None:
        return None
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
        provider = PROVIDER_BY_HOST.get(host)
    if provider is None:
        for suffix, name in PROVIDER_BY_HOST_SUFFIX:
            if host.endswith(suffix):
                provider = name
                break
    known_host = provider is not None
    if provider is None:
        # Chat Completions' path is distinctive; a bare "/messages" is not (mail and chat APIs use it), so an
        # unknown host must use Anthropic's versioned path to count as an Anthropic-compatible server.
        if api == semconv.API_ANTHROPIC_MESSAGES and not path.endswith("/v1/messages"):
            return None
        provider = _PROVIDER_BY_API[api]
    port = url.port or (443 if url.scheme == "https" else 80)
    return Endpoint(
        api=api,
        provider=provider,
        operation=semconv.GEN_AI_OPERATION_CHAT,
        server_address=host,
        server_port=port,
        known_host=known_host,
    )
