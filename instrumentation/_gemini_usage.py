"""What a Google generative API response says about itself: ``usageMetadata`` in the OpenTelemetry convention.

Gemini's counts already follow most of the house rules: ``promptTokenCount`` includes ``cachedContentTokenCount``,
and nothing needs subtracting. Two counts sit apart and are added here:

* ``thoughtsTokenCount`` (thinking) is not inside ``candidatesTokenCount`` and is billed at the output rate, so
  output = candidates + thoughts, and reasoning = thoughts;
* ``toolUsePromptTokenCount`` (what a server-side tool such as Google Search or URL context read into the prompt) is
  not inside ``promptTokenCount`` either, and Google bills it as input: ``totalTokenCount`` counts it, and
  genai-prices, the catalog the processor prices with, adds it to the input of a Gemini call. So input = prompt +
  tool-use prompt.

The JSON is proto3's: a count of zero is left out. Once a response carries any count, a missing one is therefore
zero, not unknown (a generation with a prompt count and no candidates count generated nothing). A response with no
``usageMetadata`` at all (the Gemini Developer API's embeddings) has no usage: ``None``, never zero.

Streamed chunks each carry the RUNNING totals of the call so far, so a stream's usage is its latest chunk's; summing
chunks would count the prompt once per chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ._usage import ResponseFacts, Usage

__all__ = ["gemini_chunk", "gemini_facts", "gemini_usage", "google_error_type", "predict_usage"]

_COUNTS: Final = ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "toolUsePromptTokenCount")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _audio(details: object) -> int | None:
    """The AUDIO modality's tokens in a ``*TokensDetails`` list, or None when it names no audio."""
    if not isinstance(details, list):
        return None
    found = None
    for entry in details:
        if isinstance(entry, dict) and entry.get("modality") == "AUDIO":
            count = _int(entry.get("tokenCount"))
            if count is not None:
                found = (found or 0) + count
    return found


def gemini_usage(metadata: Mapping[str, Any], generated: bool = True) -> Usage | None:
    """A ``usageMetadata`` object as ``Usage``; None when it holds no count. ``generated`` is False for embeddings,
    whose output count is left unset rather than read as a proto3 zero."""
    if not any(name in metadata for name in _COUNTS):
        return None
    prompt = _int(metadata.get("promptTokenCount")) or 0
    tool_use = _int(metadata.get("toolUsePromptTokenCount")) or 0
    thoughts = _int(metadata.get("thoughtsTokenCount"))
    candidates = _int(metadata.get("candidatesTokenCount"))
    output = None
    if generated or candidates is not None or thoughts is not None:
        output = (candidates or 0) + (thoughts or 0)
    input_audio = _audio(metadata.get("promptTokensDetails"))
    tool_audio = _audio(metadata.get("toolUsePromptTokensDetails"))
    if tool_audio is not None:
        input_audio = (input_audio or 0) + tool_audio
    return Usage(
        input_tokens=prompt + tool_use,
        output_tokens=output,
        cache_read_input_tokens=_int(metadata.get("cachedContentTokenCount")),
        reasoning_output_tokens=thoughts,
        input_audio_tokens=input_audio,
        output_audio_tokens=_audio(metadata.get("candidatesTokensDetails")),
    )


def predict_usage(token_count: int | None) -> Usage | None:
    """Vertex AI's ``:predict`` embeddings: the sum of each prediction's ``statistics.token_count``."""
    return None if token_count is None else Usage(input_tokens=token_count)


def google_error_type(error: object) -> str:
    """A low-cardinality ``error.type`` of Google's error object: its ``status`` (``RESOURCE_EXHAUSTED``), else code."""
    if isinstance(error, dict):
        kind = error.get("status") or error.get("code")
        if kind:
            return str(kind)
    return "error"


def gemini_chunk(chunk: Mapping[str, Any], facts: ResponseFacts, generated: bool = True) -> None:
    """One response object (a whole body, or one streamed chunk) into ``facts``: the latest usage replaces any
    earlier one; a finish reason marks the end of a stream."""
    error = chunk.get("error")
    if error:
        facts.error_type = google_error_type(error)
        return
    if facts.response_id is None:
        value = chunk.get("responseId")
        facts.response_id = value if isinstance(value, str) and value else None
    if facts.response_model is None:
        value = chunk.get("modelVersion")
        facts.response_model = value if isinstance(value, str) and value else None
    candidates = chunk.get("candidates")
    if isinstance(candidates, list):
        for position, candidate in enumerate(candidates):
            if not isinstance(candidate, dict):
                continue
            reason = candidate.get("finishReason")
            if isinstance(reason, str) and reason:
                index = candidate.get("index")
                facts.finish_reasons[index if isinstance(index, int) else position] = reason.lower()
                facts.terminal = True
    metadata = chunk.get("usageMetadata")
    if isinstance(metadata, dict):
        usage = gemini_usage(metadata, generated)
        if usage is not None:
            facts.usage = usage


def gemini_facts(data: object, generated: bool = True) -> ResponseFacts:
    """The facts of a whole (non-SSE) response body: one object, or the JSON array ``streamGenerateContent``
    answers without ``alt=sse`` (each element a chunk, in order)."""
    facts = ResponseFacts()
    for chunk in data if isinstance(data, list) else (data,):
        if isinstance(chunk, dict):
            gemini_chunk(chunk, facts, generated)
    facts.terminal = True
    return facts
