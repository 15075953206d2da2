"""What an LLM request says about itself: model, streaming, and the attribution it carries.

Only a handful of top-level fields are read; prompts are never kept. Bodies up to ``FULL_PARSE_LIMIT`` are read
exactly, with ``_jsonbody.pick``: the whole body is validated as JSON but only the fields of ``_jsonbody.Request``
are decoded, so a long chat history costs a walk over its bytes, not a Python object per message. Larger bodies (images, long
documents) are scanned for the few fields with regular expressions instead: the fields we need are short
scalars, and an escaped quote inside a prompt string can never match an unescaped ``"model":`` pattern.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, NamedTuple

from . import semconv
from ._jsonbody import Request, pick

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


class RequestFacts(NamedTuple):
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
        if len(body) > FULL_PARSE_LIMIT:
            return _from_scan(api, body)
        data = pick(body, Request)
        if not isinstance(data, dict):
            return UNKNOWN
        # The fields of a decoded body (inline: this runs on every call).
        get = data.get
        model = get("model")
        user: object = None
        tags: object = None
        include_usage = False
        if api == semconv.API_ANTHROPIC_MESSAGES:
            metadata = get("metadata")
            if isinstance(metadata, dict):
                user = metadata.get("user_id")
        else:
            if api in _STREAM_OPTIONS_APIS:
                options = get("stream_options")
                include_usage = isinstance(options, dict) and options.get("include_usage") is True
            user = get("user") or get("safety_identifier")
        # Vercel AI Gateway's reporting fields, which some clients send to every provider.
        provider_options = get("providerOptions")
        if provider_options is not None:
            gateway = _dig(provider_options, "gateway")
            if isinstance(gateway, dict):
                user = user or gateway.get("user")
                tags = gateway.get("tags")
        return RequestFacts(
            model if isinstance(model, str) else None,
            get("stream") is True,
            include_usage,
            user if isinstance(user, str) else None,
            tags,
            True,
        )
    except Exception:  # noqa: BLE001 - whatever a body holds, the request goes out, with what we could read
        return UNKNOWN


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


class HeaderFacts(NamedTuple):
    """The request headers the span needs, found in one pass (a header lookup in httpx costs a scan each).

    The credential headers are kept raw: ``_credentials.Fingerprinter`` finds the key in them, once per distinct
    value, so the key is neither decoded nor hashed again on every call that uses it.
    """

    authorization: bytes | None = None  # Authorization (a Bearer key)
    x_api_key: bytes | None = None  # x-api-key (Anthropic)
    api_key: bytes | None = None  # api-key (Azure)
    user: str | None = None  # ai-reporting-user
    tags: list[str] | None = None  # ai-reporting-tags, comma-separated
    baggage: bool = False  # a baggage header is present (it may carry our attribution: see _privacy)
    goog_api_key: bytes | None = None  # x-goog-api-key (Google's APIs)


NO_HEADERS: Final = HeaderFacts()
WANTED_HEADERS: Final = frozenset(
    {
        b"authorization",
        b"x-api-key",
        b"api-key",
        b"ai-reporting-user",
        b"ai-reporting-tags",
        b"baggage",
        b"x-goog-api-key",
    }
)


def read_headers(headers: Any) -> HeaderFacts:
    """The ``HeaderFacts`` of an ``httpx``/``httpx2`` ``Headers`` (or any mapping with ``items()``), in one pass."""
    raw = getattr(headers, "raw", None)
    if raw is None:
        raw = [(str(name).encode("latin-1"), str(value).encode("latin-1")) for name, value in headers.items()]
    found: dict[bytes, bytes] = {}
    for name, value in raw:
        lowered = name.lower()
        if lowered in WANTED_HEADERS and lowered not in found:
            found[lowered] = value
    if not found:
        return NO_HEADERS
    get = found.get
    user = get(b"ai-reporting-user")
    raw_tags = get(b"ai-reporting-tags")
    tags = None
    if raw_tags:
        tags = [tag.strip() for tag in raw_tags.decode("utf-8", "replace").split(",") if tag.strip()] or None
    return HeaderFacts(
        get(b"authorization"),
        get(b"x-api-key"),
        get(b"api-key"),
        user.decode("utf-8", "replace") if user else None,
        tags,
        b"baggage" in found,
        get(b"x-goog-api-key"),
    )


def _dig(data: object, *path: str) -> object:
    for name in path:
        if not isinstance(data, dict):
            return None
        data = data.get(name)
    return data
