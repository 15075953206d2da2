"""What an LLM request says about itself: model, streaming, and the attribution it carries.

Only a handful of top-level fields are read; prompts are never kept. Bodies up to ``FULL_PARSE_LIMIT`` are parsed
as JSON, which is exact and, at that size, cheaper than the span itself. Larger bodies (images, long documents)
are scanned for the few fields with regular expressions instead of being decoded: the fields we need are short
scalars, and an escaped quote inside a prompt string can never match an unescaped ``"model":`` pattern.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from . import semconv
from ._credentials import key_of

FULL_PARSE_LIMIT: Final = 1 << 20

_STRING: Final = rb'"((?:[^"\\]|\\.)*)"'
_PATTERNS: Final = {
    "model": re.compile(rb'"model"\s*:\s*' + _STRING),
    "user": re.compile(rb'"user"\s*:\s*' + _STRING),
    "safety_identifier": re.compile(rb'"safety_identifier"\s*:\s*' + _STRING),
    "user_id": re.compile(rb'"user_id"\s*:\s*' + _STRING),
}
_STREAM_TRUE: Final = re.compile(rb'"stream"\s*:\s*true')
# The APIs whose streams carry usage only when asked with stream_options.include_usage.
_STREAM_OPTIONS_APIS: Final = frozenset({semconv.API_CHAT_COMPLETIONS, semconv.API_COMPLETIONS})
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
    if api == semconv.API_ANTHROPIC_MESSAGES:
        metadata = data.get("metadata")
        if isinstance(metadata, dict):
            user = metadata.get("user_id")
    else:
        if api in _STREAM_OPTIONS_APIS:
            options = data.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
        user = data.get("user") or data.get("safety_identifier")
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

    if api == semconv.API_ANTHROPIC_MESSAGES:
        user = first("user_id")
        include_usage = False
    else:
        user = first("user") or first("safety_identifier")
        include_usage = api in _STREAM_OPTIONS_APIS and _INCLUDE_USAGE_TRUE.search(body) is not None
    return RequestFacts(
        model=first("model"),
        stream=_STREAM_TRUE.search(body) is not None,
        include_usage=include_usage,
        user=user,
        parsed=True,
    )


@dataclass(frozen=True, slots=True)
class HeaderFacts:
    """The request headers the span needs, found in one pass (a header lookup in httpx costs a scan each)."""

    key: str | None = None  # the API key: Authorization Bearer, x-api-key (Anthropic) or api-key (Azure)
    user: str | None = None  # ai-reporting-user
    tags: list[str] | None = None  # ai-reporting-tags, comma-separated
    baggage: bool = False  # a baggage header is present (it may carry our attribution: see _privacy)


_WANTED: Final = frozenset({b"authorization", b"x-api-key", b"api-key", b"ai-reporting-user", b"ai-reporting-tags", b"baggage"})


def read_headers(headers: Any) -> HeaderFacts:
    """The ``HeaderFacts`` of an ``httpx``/``httpx2`` ``Headers`` (or any mapping, more slowly)."""
    raw = getattr(headers, "raw", None)
    if raw is None:
        items = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    else:
        items = raw
    found: dict[bytes, bytes] = {}
    for name, value in items:
        name = name.lower()
        if name in _WANTED and name not in found:
            found[name] = value
    def text(name: bytes) -> str | None:
        value = found.get(name)
        return value.decode("latin-1") if value else None

    user = found.get(b"ai-reporting-user")
    raw_tags = found.get(b"ai-reporting-tags")
    tags = None
    if raw_tags:
        tags = [tag.strip() for tag in raw_tags.decode("utf-8", "replace").split(",") if tag.strip()] or None
    return HeaderFacts(
        key=key_of(text(b"authorization"), text(b"x-api-key"), text(b"api-key")),
        user=user.decode("utf-8", "replace") if user else None,
        tags=tags,
        baggage=b"baggage" in found,
    )


def _dig(data: object, *path: str) -> object:
    for name in path:
        if not isinstance(data, dict):
            return None
        data = data.get(name)
    return data
