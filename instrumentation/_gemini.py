"""Which POSTs are calls to Google's own generative APIs, told by the shape of their path alone.

``google-genai`` (and any other client of the same REST API) puts the model and the method in the URL path and
nothing of either in the body: ``/{version}/models/{model}:generateContent`` for the Gemini Developer API,
``/{version}/projects/{p}/locations/{l}/publishers/{publisher}/models/{model}:generateContent`` for Vertex AI. The
shape is recognised on any host, because ``HttpOptions(base_url=...)`` sends the same paths to proxies, gateways and
test servers; the host only names the provider when it is Google's own (see ``_endpoints``). A path that merely ends
in a colon and a word costs one ``rfind`` and one set lookup before it is turned away.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from . import semconv

__all__ = ["GOOGLE_APIS", "GoogleCall", "google_call"]

# The method after the colon → (tokentrail.api, gen_ai.operation.name, the response streams).
_METHODS: Final[dict[str, tuple[str, str, bool]]] = {
    "generateContent": (semconv.API_GEMINI_GENERATE_CONTENT, semconv.GEN_AI_OPERATION_GENERATE_CONTENT, False),
    "streamGenerateContent": (semconv.API_GEMINI_GENERATE_CONTENT, semconv.GEN_AI_OPERATION_GENERATE_CONTENT, True),
    "embedContent": (semconv.API_GEMINI_EMBED_CONTENT, semconv.GEN_AI_OPERATION_EMBEDDINGS, False),
    "batchEmbedContents": (semconv.API_GEMINI_EMBED_CONTENT, semconv.GEN_AI_OPERATION_EMBEDDINGS, False),
    # Vertex AI's :predict serves many model families; only its embedding models bill tokens (see google_call).
    "predict": (semconv.API_VERTEX_PREDICT, semconv.GEN_AI_OPERATION_EMBEDDINGS, False),
}
GOOGLE_APIS: Final = frozenset(api for api, _, _ in _METHODS.values())
GEMINI: Final = "gcp.gemini"
VERTEX_AI: Final = "gcp.vertex_ai"


class GoogleCall(NamedTuple):
    """What a Google API path says: the API, the operation, the vendor whose shape it is, the model it names (None
    for a Vertex AI endpoint, a deployed tuned model the response names), and whether the answer streams."""

    api: str
    operation: str
    provider: str
    model: str | None
    stream: bool


def google_call(path: str) -> GoogleCall | None:
    """The Google API call a POST to ``path`` makes (the path without its query), or None."""
    colon = path.rfind(":")
    if colon < 0:
        return None
    found = _METHODS.get(path[colon + 1 :])
    if found is None:
        return None
    api, operation, stream = found
    resource = path[:colon]
    slash = resource.rfind("/")
    name = resource[slash + 1 :]
    collection_end = slash
    collection = resource[resource.rfind("/", 0, collection_end) + 1 : collection_end]
    prefix = resource[: collection_end - len(collection)]
    if not name or slash < 0:
        return None
    vertex = "/projects/" in prefix or "/publishers/" in prefix or prefix.startswith(("projects/", "publishers/"))
    if collection == "models":
        model: str | None = name
    elif collection == "tunedModels" and not vertex:
        model = name
    elif collection == "endpoints" and vertex:
        model = None  # a deployed (tuned) model: the response's modelVersion names it
    else:
        return None
    if api == semconv.API_VERTEX_PREDICT and (not vertex or model is None or "embedding" not in model):
        return None  # Imagen, Veo and other :predict models are not priced by tokens: not ours to count
    return GoogleCall(api, operation, VERTEX_AI if vertex else GEMINI, model, stream)
