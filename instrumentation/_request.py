"""What an LLM request says about itself: model, streaming, and the attribution it carries.

Only a handful of top-level fields are read; prompts are never kept. Bodies up to ``FULL_PARSE_LIMIT`` are parsed
as JSON, which is exact and, at that size, cheaper than the span itself. Larger bodies (images, long documents)
are scanned for the few fields with regular expressions instead of being decoded: the fields we need are short
scalars, and an escaped quote inside a prompt string can never match an unescaped ``"model":`` pattern.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from . import semconv

FULL_PARSE_LIMIT: Final = 1 << 20

_STRING: Final = rb'"((?:[^"\\]|\\.)*)"'
_PATTERNS: Final = {
    "model": re.compile(rb'"model"\s*:\s*' + _STRING),
    "user": re.compile(rb'"user"\s*:\s*' + _STRING),
    "safety_identifier": re.compile(rb'"safety_identifier"\s*:\s*' + _STRING),
    "user_id": re.compile(rb'"user_id"\s*:\s*' + _STRING),
}
_STREAM_TRUE: Final = re.compile(rb'"stream"\s*:\s*true')
_INCLUDE_USAGE_TRUE: Final = re.compile(rb'"include_usage"\s*:\s*true')


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """The request fields the span needs. ``user`` and ``tags`` are raw: validation happens with the context's."""

    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    tags: object = None
    parsed: bool = False  # the body was a JSON object, as every LLM request is


UNKNOWN: Final = RequestFacts()


def read_request(api: str, body: bytes | None) -> RequestFacts:
    """The facts of a request body of ``api``. Never raises: an unreadable body gives ``UNKNOWN``."""
    if not body:
        return UNKNOWN
    try:
        if len(body) <= FULL_PARSE_LIMIT:
            data = json.loads(body)
            return _from_json(api, data) if isinstance(data, dict) else UNKNOWN
        return _from_scan(api, body)
    except Exception:
        return UNKNOWN


def _from_json(api: str, data: dict[str, Any]) -> RequestFacts:
    model = data.get("model")
    stream = data.get("stream") is True
    user: object = None
    tags: object = None
    include_usage = False
    if api == semconv.API_CHAT_COMPLETIONS:
        options = data.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        user = data.get("user") or data.get("safety_identifier")
    elif api == semconv.API_ANTHROPIC_MESSAGES:
        metadata = data.get("metadata")
        if isinstance(metadata, dict):
            user = metadata.get("user_id")
    # Vercel AI Gateway's reporting fields, which some clients send to every provider.
    gateway = _dig(data, "providerOptions", "gateway")
    if isinstance(gateway, dict):
        user = user or gateway.get("user")
        tags = gateway.get("tags")
    return RequestFacts(
        model=model if isinstance(model, str) else None,
        stream=stream,
        include_usage=include_usage,
        user=user if isinstance(user, str) else None,
        tags=tags,
        parsed=True,
    )


def _from_scan(api: str, body: bytes) -> RequestFacts:
    def first(name: str) -> str | None:
        match = _PATTERNS[name].search(body)
        if match is None:
            return None
        value = json.loads(b'"' + match.group(1) + b'"')
        return value if isinstance(value, str) else None

    if api == semconv.API_CHAT_COMPLETIONS:
        user = first("user") or first("safety_identifier")
        include_usage = _INCLUDE_USAGE_TRUE.search(body) is not None
    else:
        user = first("user_id")
        include_usage = False
    return RequestFacts(
        model=first("model"),
        stream=_STREAM_TRUE.search(body) is not None,
        include_usage=include_usage,
        user=user,
        parsed=True,
    )


def header_attribution(headers: Mapping[str, str]) -> tuple[str | None, list[str] | None]:
    """The user and tags of Vercel's ``ai-reporting-user`` / ``ai-reporting-tags`` request headers."""
    user = headers.get("ai-reporting-user") or None
    raw_tags = headers.get("ai-reporting-tags")
    tags = [tag.strip() for tag in raw_tags.split(",") if tag.strip()] if raw_tags else None
    return user, tags


def _dig(data: object, *path: str) -> object:
    for name in path:
        if not isinstance(data, dict):
            return None
        data = data.get(name)
    return data
