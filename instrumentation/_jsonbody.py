"""The few fields of a JSON body we read, decoded with ``msgspec`` without building the rest.

Each shape below is a ``msgspec.Struct`` that declares only the fields the instrumentation reads; msgspec validates
the whole body as JSON but skips every other field without building a Python object for it, so reading a request
costs the same whether its chat history is one turn or sixty, and an embeddings response costs nothing for its floats.

``pick(data, shape)`` gives what ``project(json.loads(data), shape)`` gives: a dict of the declared fields that the
body has (nested shapes projected the same way). A body msgspec refuses (a declared field of another JSON type than
the shape expects, or text that only Python's ``json`` accepts: ``NaN``, UTF-16) is decoded whole with ``json``
instead, so every body reads exactly as it did, and one that is not JSON at all raises ``ValueError`` either way.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from typing import Any, Final, Union

import msgspec
from msgspec import UNSET, Struct, UnsetType

# Which fields to keep: a key's value whole (None), or projected again by a nested spec (see project).
Spec = Mapping[str, Union["Spec", None]]


class Request(Struct):
    """The request fields ``_request.read_request`` reads (never the messages)."""

    model: Any = UNSET
    stream: Any = UNSET
    stream_options: Any = UNSET
    user: Any = UNSET
    safety_identifier: Any = UNSET
    metadata: Any = UNSET
    providerOptions: Any = UNSET  # noqa: N815 - the JSON field's name


class Choice(Struct):
    """A Chat Completions (or legacy Completions) choice: its index and finish reason, never its message."""

    index: Any = UNSET
    finish_reason: Any = UNSET


class ChatResponse(Struct):
    """A whole Chat Completions, legacy Completions or Embeddings response body, or one stream chunk."""

    error: Any = UNSET
    id: Any = UNSET
    model: Any = UNSET
    choices: list[Choice] | None | UnsetType = UNSET
    service_tier: Any = UNSET
    usage: Any = UNSET
    x_groq: Any = UNSET  # Groq puts a stream's usage here


class Response(Struct):
    """A Responses API ``response`` object (a whole body, or the one a stream event carries), never its output."""

    id: Any = UNSET
    model: Any = UNSET
    service_tier: Any = UNSET
    status: Any = UNSET
    incomplete_details: Any = UNSET
    error: Any = UNSET
    usage: Any = UNSET


class ResponseEvent(Struct):
    """A Responses API stream event."""

    type: Any = UNSET
    code: Any = UNSET
    response: Response | None | UnsetType = UNSET


class Message(Struct):
    """A whole Anthropic Messages response body, never its content."""

    error: Any = UNSET
    id: Any = UNSET
    model: Any = UNSET
    stop_reason: Any = UNSET
    usage: Any = UNSET


class MessageEvent(Struct):
    """An Anthropic Messages stream event (message_start's message has no content yet: taken whole)."""

    type: Any = UNSET
    message: Any = UNSET
    delta: Any = UNSET
    usage: Any = UNSET
    error: Any = UNSET


class GeminiCandidate(Struct):
    """A Gemini candidate: its index and finish reason, never its content."""

    index: Any = UNSET
    finishReason: Any = UNSET  # noqa: N815 - the JSON field's name


class GeminiResponse(Struct):
    """A whole Google generateContent / embedContent response body, or one streamed chunk, never its content nor
    its vectors."""

    error: Any = UNSET
    responseId: Any = UNSET  # noqa: N815 - the JSON field's name
    modelVersion: Any = UNSET  # noqa: N815
    candidates: list[GeminiCandidate] | None | UnsetType = UNSET
    usageMetadata: Any = UNSET  # noqa: N815


def _nested(kind: Any) -> type[Struct] | None:
    """The Struct a field's type holds (itself, in a list, or in a union with None and UNSET), if any."""
    for argument in (kind, *typing.get_args(kind)):
        for inner in (argument, *typing.get_args(argument)):
            if typing.get_origin(inner) is None and isinstance(inner, type) and issubclass(inner, Struct):
                return inner
    return None


def _spec(shape: type[Struct]) -> dict[str, Any]:
    """The projection ``shape`` stands for: each field whole, or (a Struct, or a list of them) by its own spec."""
    spec: dict[str, Any] = {}
    for name, kind in typing.get_type_hints(shape).items():
        nested = _nested(kind)
        spec[name] = None if nested is None else _spec(nested)
    return spec


_SHAPES: Final[tuple[type[Struct], ...]] = (
    Request, ChatResponse, Response, ResponseEvent, Message, MessageEvent, GeminiResponse
)
_DECODERS: Final[dict[type[Struct], msgspec.json.Decoder[Any]]] = {shape: msgspec.json.Decoder(shape) for shape in _SHAPES}
SPECS: Final[dict[type[Struct], dict[str, Any]]] = {shape: _spec(shape) for shape in _SHAPES}


def project(value: Any, spec: Spec) -> Any:
    """What ``spec`` keeps of a decoded JSON value: of an object, its keys in ``spec`` (each value whole, or projected
    by the nested spec); of an array, each element projected; anything else as it is."""
    if type(value) is dict:
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if key in spec:
                nested = spec[key]
                kept[key] = project(item, nested) if isinstance(nested, dict) else item
        return kept
    if type(value) is list:
        return [project(item, spec) for item in value]
    return value


def pick(data: bytes, shape: type[Struct]) -> Any:
    """``project(json.loads(data), shape's spec)``: the same value, or a ``ValueError`` where ``json`` raises one."""
    try:
        if not data.isascii():
            # msgspec does not check the UTF-8 of what it skips; json refuses a body with any invalid byte.
            data.decode("utf-8")
        # to_builtins leaves out the fields the body did not have (UNSET), as json would never have made them.
        return msgspec.to_builtins(_DECODERS[shape].decode(data))
    except ValueError:  # not of this shape, or text only Python's json reads (NaN, UTF-16): decoded whole
        return project(json.loads(data), SPECS[shape])
