"""The Google routes of the fake provider: the Gemini Developer API and Vertex AI, as the ``google-genai`` SDK calls
them (``genai.Client(http_options={"base_url": fake.gemini_base_url})``).

They live apart from the OpenAI/Anthropic routes because Google's API has its own paths, its own usage object and its
own counting rules, which are most of the code: here, what Google answers is built as data (``google_reply``), and the
provider's request handler (``fake_provider``) records the call and sends it with the failure modes and codings every
route shares.

Routes: ``/v1beta/models/{model}:generateContent``, ``:streamGenerateContent?alt=sse``, ``:embedContent``,
``:batchEmbedContents`` (Developer API) and ``/v1beta1/projects/{p}/locations/{l}/publishers/google/models/{model}:...``
(Vertex AI), and ``:predict`` for Vertex's text-embedding models. Their usage (``usageMetadata``, camelCase, zero
counts left out as proto3 JSON leaves them out):

* ``promptTokenCount`` = N + 32 per audio part, where N = 10 + len(canonical JSON of ``{"contents": ...}`` plus
  ``"systemInstruction"``) // 4, each ``inlineData`` counted as its ``mimeType`` alone; ``promptTokensDetails`` splits
  it into TEXT (N) and AUDIO (the audio parts);
* ``candidatesTokenCount`` = M = min(``generationConfig.maxOutputTokens``, 16), AUDIO in ``candidatesTokensDetails``
  when ``responseModalities`` asks for audio, else TEXT; finish reason ``MAX_TOKENS`` when the limit is < 16, else
  ``STOP``;
* ``cachedContentTokenCount`` = P // 4 (P the prompt count, which includes it) when the request names a
  ``cachedContent``;
* ``thoughtsTokenCount`` = M // 2 + 5 for thinking models (names with ``2.5`` or starting ``gemini-3``, not the
  ``-tts`` ones) unless ``thinkingConfig.thinkingBudget`` is 0;
* ``toolUsePromptTokenCount`` = 25 when ``tools`` include ``googleSearch`` or ``urlContext``;
* a stream sends one chunk per output token, each with the RUNNING totals (its candidates count so far), the last
  with the finish reason and the whole usage: summing chunks over-counts;
* embeddings: the Developer API's ``embedContent`` / ``batchEmbedContents`` carry no usage (as Google's do not);
  Vertex's ``embedContent`` / ``batchEmbedContents`` carry ``usageMetadata.promptTokenCount``, and ``:predict``
  a ``statistics.token_count`` per instance (1 + len(canonical JSON of its content) // 4) and
  ``metadata.billableCharacterCount``;
* ``responseId`` is random, ``modelVersion`` the model of the URL. Failures answer Google's error envelope
  (``{"error": {"code", "message", "status"}}``); the stream failure modes cut after the first chunk.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

from tokentrail.processor.demo.fake_reply import (
    DEFAULT_OUTPUT_TOKENS,
    EMBEDDING_DIMENSIONS,
    canonical_length,
    reply_pieces,
    vector,
)
from tokentrail.processor.demo.fake_server import dumps

__all__ = [
    "GEMINI_AUDIO_PART_TOKENS",
    "GEMINI_TOOL_USE_TOKENS",
    "GoogleReply",
    "embedding_tokens",
    "gemini_usage",
    "google_api",
    "google_error",
    "google_reply",
    "google_route",
]

# Google's paths: ``/{version}/[projects/{p}/locations/{l}/][publishers/{pub}/](models|tunedModels)/{m}:{method}``.
_GOOGLE_PATH: Final = re.compile(r"/(?:models|tunedModels)/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$")
_GOOGLE_METHODS: Final = frozenset(
    {"generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents", "predict"}
)
_GOOGLE_STATUS: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
GEMINI_AUDIO_PART_TOKENS: Final = 32
GEMINI_TOOL_USE_TOKENS: Final = 25
_GEMINI_SERVER_TOOLS: Final = ("googleSearch", "urlContext", "googleSearchRetrieval")


@dataclass(slots=True)
class GoogleReply:
    """What the fake answers one Google call with: the truth it records (``api``, ``usage``, ``response_id``), and
    the JSON body (``payload``) or, for a stream, the SSE events."""

    api: str
    usage: dict[str, Any] | None
    response_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    events: list[bytes] = field(default_factory=list)


def google_route(path: str) -> tuple[str, str] | None:
    """The (model, method) of a Google API path the fake serves, or None."""
    match = _GOOGLE_PATH.search(path)
    if match is None or match["method"] not in _GOOGLE_METHODS:
        return None
    return match["model"], match["method"]


def google_api(path: str) -> str:
    """``vertex`` for a Vertex AI path, ``gemini`` for the Developer API."""
    return "vertex" if "/projects/" in path or "/publishers/" in path else "gemini"


def google_error(status: int) -> dict[str, Any]:
    """Google's error envelope for an injected ``status:<code>`` failure."""
    return {"error": {"code": status, "message": "injected failure", "status": _GOOGLE_STATUS.get(status, "INTERNAL")}}


def google_reply(path: str, model: str, method: str, body: dict[str, Any]) -> GoogleReply:
    """The answer to a Google call (``google_route(path)`` gave ``model`` and ``method``)."""
    api = google_api(path)
    if method in ("generateContent", "streamGenerateContent"):
        return _generate_content(body, model, api, method == "streamGenerateContent")
    if method == "predict":
        return _predict(body)
    return _embed_content(body, api, method == "batchEmbedContents")


# Usage ------------------------------------------------------------------------------------------------------------

def _without_inline_data(value: Any) -> Any:
    """``value`` with each ``inlineData`` part's bytes left out: an audio clip is counted by its part, not its size."""
    if isinstance(value, dict):
        if isinstance(value.get("inlineData"), dict):
            return {"inlineData": {"mimeType": _mime_type(value["inlineData"])}}
        return {key: _without_inline_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_inline_data(item) for item in value]
    return value


def _mime_type(data: dict[str, Any]) -> str:
    """An inline part's media type: proto3 JSON accepts ``mimeType`` and ``mime_type`` (google-genai sends the
    second)."""
    return str(data.get("mimeType") or data.get("mime_type") or "")


def _audio_parts(value: Any) -> int:
    if isinstance(value, dict):
        data = value.get("inlineData")
        if isinstance(data, dict) and _mime_type(data).startswith("audio/"):
            return 1
        return sum(_audio_parts(item) for item in value.values())
    if isinstance(value, list):
        return sum(_audio_parts(item) for item in value)
    return 0


def _gemini_config(body: dict[str, Any]) -> dict[str, Any]:
    config = body.get("generationConfig")
    return config if isinstance(config, dict) else {}


def _gemini_limit(body: dict[str, Any]) -> int:
    value = _gemini_config(body).get("maxOutputTokens")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else DEFAULT_OUTPUT_TOKENS


def _thinks(body: dict[str, Any], model: str) -> bool:
    thinking = _gemini_config(body).get("thinkingConfig")
    if isinstance(thinking, dict) and thinking.get("thinkingBudget") == 0:
        return False
    return ("2.5" in model or model.startswith("gemini-3")) and "-tts" not in model


def gemini_usage(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The ``usageMetadata`` the fake answers a generateContent request with (see the module's docstring)."""
    material = {"contents": body.get("contents", [])}
    if "systemInstruction" in body:
        material["systemInstruction"] = body["systemInstruction"]
    text = 10 + canonical_length(_without_inline_data(material)) // 4
    audio = GEMINI_AUDIO_PART_TOKENS * _audio_parts(material)
    prompt = text + audio
    m = min(_gemini_limit(body), DEFAULT_OUTPUT_TOKENS)
    details = [{"modality": "TEXT", "tokenCount": text}]
    if audio:
        details.append({"modality": "AUDIO", "tokenCount": audio})
    modalities = _gemini_config(body).get("responseModalities")
    spoken = isinstance(modalities, list) and "AUDIO" in modalities
    usage: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": m}
    total = prompt + m
    if isinstance(body.get("cachedContent"), str):
        usage["cachedContentTokenCount"] = prompt // 4
    if _thinks(body, model):
        usage["thoughtsTokenCount"] = m // 2 + 5
        total += usage["thoughtsTokenCount"]
    tools = json.dumps(body.get("tools", []))
    if any(f'"{name}"' in tools for name in _GEMINI_SERVER_TOOLS):
        usage["toolUsePromptTokenCount"] = GEMINI_TOOL_USE_TOKENS
        usage["toolUsePromptTokensDetails"] = [{"modality": "TEXT", "tokenCount": GEMINI_TOOL_USE_TOKENS}]
        total += GEMINI_TOOL_USE_TOKENS
    usage["totalTokenCount"] = total
    usage["promptTokensDetails"] = details
    if "cachedContentTokenCount" in usage:
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": usage["cachedContentTokenCount"]}]
    usage["candidatesTokensDetails"] = [{"modality": "AUDIO" if spoken else "TEXT", "tokenCount": m}]
    return usage


def _running_gemini_usage(usage: dict[str, Any], candidates: int) -> dict[str, Any]:
    """A stream chunk's usage before the last: everything so far, with ``candidates`` output tokens generated."""
    running = {**usage, "candidatesTokenCount": candidates}
    running["totalTokenCount"] = usage["totalTokenCount"] - usage["candidatesTokenCount"] + candidates
    modality = usage["candidatesTokensDetails"][0]["modality"]
    running["candidatesTokensDetails"] = [{"modality": modality, "tokenCount": candidates}]
    return running


def embedding_tokens(content: Any) -> int:
    """The tokens the fake counts for one embedded content (a Content object, or a string for ``:predict``)."""
    return 1 + canonical_length(_without_inline_data(content)) // 4


def _dimensions(entry: Any) -> int:
    if isinstance(entry, dict):
        for holder in (entry, entry.get("embedContentConfig")):
            if isinstance(holder, dict) and isinstance(holder.get("outputDimensionality"), int):
                return int(holder["outputDimensionality"])
    return EMBEDDING_DIMENSIONS



# Replies ----------------------------------------------------------------------------------------------------------


def _generate_content(body: dict[str, Any], model: str, api: str, stream: bool) -> GoogleReply:
    usage = gemini_usage(body, model)
    response_id = base64.urlsafe_b64encode(uuid.uuid4().bytes[:12]).decode().rstrip("=")
    finish = "MAX_TOKENS" if _gemini_limit(body) < DEFAULT_OUTPUT_TOKENS else "STOP"
    pieces = reply_pieces(usage["candidatesTokenCount"])
    vertex = api == "vertex"

    def response(text: str, running: dict[str, Any], finished: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
        if finished:
            candidate["finishReason"] = finish
        if vertex:
            candidate["avgLogprobs"] = -0.25
        else:
            candidate["index"] = 0
        payload: dict[str, Any] = {"candidates": [candidate], "usageMetadata": running, "modelVersion": model}
        if vertex:
            payload["createTime"] = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        payload["responseId"] = response_id
        return payload

    reply = GoogleReply(api, usage, response_id)
    if not stream:
        reply.payload = response("".join(pieces), usage, True)
        return reply
    for count, piece in enumerate(pieces, start=1):
        last = count == len(pieces)
        running = usage if last else _running_gemini_usage(usage, count)
        reply.events.append(b"data: " + dumps(response(piece, running, last)) + b"\r\n\r\n")
    return reply


def _embed_content(body: dict[str, Any], api: str, batch: bool) -> GoogleReply:
    requests = body.get("requests") if batch else [body]
    contents = [entry.get("content") for entry in requests or [] if isinstance(entry, dict)]
    counts = [embedding_tokens(content) for content in contents]
    usage = None
    if api == "vertex":  # the Developer API states no usage for embeddings
        usage = {"promptTokenCount": sum(counts), "totalTokenCount": sum(counts)}
    vectors = [{"values": vector(index, _dimensions(entry))} for index, entry in enumerate(requests or [])]
    payload: dict[str, Any] = {"embeddings": vectors} if batch else {"embedding": vectors[0] if vectors else {}}
    if usage is not None:
        payload["usageMetadata"] = usage
        if not batch:
            payload["truncated"] = False
    return GoogleReply(api, usage, payload=payload)


def _predict(body: dict[str, Any]) -> GoogleReply:
    """Vertex's text-embedding models (``:predict``): usage per instance, and billable characters."""
    instances = body.get("instances")
    instances = [entry for entry in instances if isinstance(entry, dict)] if isinstance(instances, list) else []
    parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    dimensions = parameters.get("outputDimensionality") if isinstance(parameters, dict) else None
    statistics = [{"truncated": False, "token_count": embedding_tokens(entry.get("content"))} for entry in instances]
    characters = sum(len(entry["content"]) for entry in instances if isinstance(entry.get("content"), str))
    usage = {"statistics": statistics, "metadata": {"billableCharacterCount": characters}}
    size = dimensions if isinstance(dimensions, int) else EMBEDDING_DIMENSIONS
    predictions = [
        {"embeddings": {"statistics": stats, "values": vector(index, size)}} for index, stats in enumerate(statistics)
    ]
    return GoogleReply("vertex", usage, payload={"predictions": predictions, "metadata": usage["metadata"]})
