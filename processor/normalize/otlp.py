"""Helpers for reading OTLP protobuf messages without turning whole spans into dicts.

Attribute extraction is the receiver's ceiling (docs/ARCHITECTURE.md, "Performance": ``MessageToDict`` or a dict of
every attribute cost several times what the reader pays). These helpers keep only the keys a caller asked for and
convert values lazily, so a span that is not about an LLM call costs a handful of lookups.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Status

__all__ = [
    "SERVICE_NAME",
    "DEPLOYMENT_ENVIRONMENT_NAME",
    "DEPLOYMENT_ENVIRONMENT",
    "STATUS_CODE_ERROR",
    "InvalidRequest",
    "NotAnInteger",
    "pick_attributes",
    "resource_service_environment",
    "UNSET",
    "BytesValue",
    "InvalidValue",
    "any_value",
    "as_fast_request",
    "attribute_entry",
    "scrub_request",
    "UnreadableAttribute",
    "as_python",
    "as_str",
    "as_int",
    "as_bool",
    "as_str_list",
    "fast_request_class",
    "nanos_to_datetime",
    "parse_export_request",
    "parse_json_request",
    "response_json",
]

SERVICE_NAME: Final = "service.name"
DEPLOYMENT_ENVIRONMENT_NAME: Final = "deployment.environment.name"
DEPLOYMENT_ENVIRONMENT: Final = "deployment.environment"  # the name before semconv 1.27
STATUS_CODE_ERROR: Final = Status.STATUS_CODE_ERROR

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DOUBLE: Final = struct.Struct("<d")
_RESOURCE_KEYS: Final = frozenset({SERVICE_NAME, DEPLOYMENT_ENVIRONMENT_NAME, DEPLOYMENT_ENVIRONMENT})


class NotAnInteger(ValueError):
    """An attribute that must count something held another type; the caller rejects the span with this message."""


def pick_attributes(attributes: Iterable[KeyValue], keys: frozenset[str]) -> dict[str, AnyValue]:
    """Only the attributes named in ``keys``, still as protobuf values: conversion happens on demand."""
    return {kv.key: kv.value for kv in attributes if kv.key in keys}


def resource_service_environment(resource: Resource) -> tuple[str | None, str | None]:
    """``service.name`` and the deployment environment, read once per ResourceSpans rather than per span."""
    found = pick_attributes(resource.attributes, _RESOURCE_KEYS)
    service = as_str(found.get(SERVICE_NAME))
    environment = as_str(found.get(DEPLOYMENT_ENVIRONMENT_NAME))
    if environment is None:
        environment = as_str(found.get(DEPLOYMENT_ENVIRONMENT))
    return service, environment


def as_python(value: AnyValue) -> object:
    """The general conversion, for values whose type the caller cannot predict."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "array_value":
        return [as_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: as_python(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value
    return None


def as_str(value: AnyValue | None) -> str | None:
    """A string attribute; numbers are accepted as their text because some SDKs send ids as numbers."""
    if value is None:
        return None
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value or None
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value" and math.isfinite(value.double_value):
        return repr(value.double_value)
    return None


def as_int(value: AnyValue | None, key: str) -> int | None:
    """A count. Integral doubles are accepted because JavaScript SDKs may export whole numbers as doubles; anything
    else raises ``NotAnInteger`` so the span is rejected rather than priced from a guess."""
    if value is None:
        return None
    kind = value.WhichOneof("value")
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        d = value.double_value
        if math.isfinite(d) and d.is_integer():
            return int(d)
    if kind is None:
        return None
    raise NotAnInteger(f"{key} must be an integer, got {kind.removesuffix('_value')}")


def as_bool(value: AnyValue | None) -> bool:
    """A flag; the strings "true"/"1" count because baggage-derived attributes arrive as text."""
    if value is None:
        return False
    kind = value.WhichOneof("value")
    if kind == "bool_value":
        return value.bool_value
    if kind == "string_value":
        return value.string_value.strip().lower() in ("true", "1", "yes")
    if kind == "int_value":
        return value.int_value != 0
    return False


def as_str_list(value: AnyValue | None) -> list[str]:
    """A string array; a lone string becomes a one-item list and non-string items are dropped."""
    if value is None:
        return []
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [v.string_value for v in value.array_value.values if v.WhichOneof("value") == "string_value"]
    if kind == "string_value":
        return [value.string_value] if value.string_value else []
    return []


def nanos_to_datetime(unix_nano: int) -> datetime:
    """UTC at microsecond precision, the resolution of the stored timestamp column (integer math: no float drift)."""
    return _EPOCH + timedelta(microseconds=unix_nano // 1000)


# -- decoding Export requests ------------------------------------------------------------------------------------

_FAST: list[type[Message]] = []


def fast_request_class() -> type[Message]:
    """ExportTraceServiceRequest whose ``Span.attributes`` is declared ``repeated bytes``: each element is one
    ``KeyValue``'s own encoding (a length-delimited field either way, so the same bytes parse).

    protobuf then neither builds a message per attribute nor checks its strings when it parses (parsing costs about a
    third of the standard class's), and a reader meets each attribute as one ``bytes`` object it can look up whole in
    a memo: the attributes that repeat from span to span (models, providers, flags, the keys of other spans) cost one
    dict lookup each (docs/ARCHITECTURE.md, "Performance"). ``attribute_entry`` splits an encoding into its key and its
    value's encoding, which ``any_value`` decodes. Duplicate keys: the last one wins, as when a list is turned into a
    dict. Built once, in a private descriptor pool."""
    if _FAST:
        return _FAST[0]
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, trace_pb2, trace_service_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        proto.name = "tokentrail_fast/" + proto.name
        proto.dependency[:] = ["tokentrail_fast/" + d for d in proto.dependency]
        proto.ClearField("service")
        proto.options.Clear()
        for message in proto.message_type:
            if message.name != "Span":
                continue
            for f in message.field:
                if f.name == "attributes":
                    f.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                    f.ClearField("type_name")
        pool.Add(proto)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(ExportTraceServiceRequest.DESCRIPTOR.full_name))
    _FAST.append(cls)
    return cls


class UnreadableAttribute(ValueError):
    """A span attribute of a ``fast_request_class()`` message that is not a ``KeyValue`` encoding or whose key holds
    invalid UTF-8: the standard class would have refused the request at parse, so its reader takes the request back
    to ``scrub_request``."""


def attribute_entry(raw: bytes) -> tuple[str, bytes]:
    """The key and the value's ``AnyValue`` encoding of one ``KeyValue`` encoding. The usual layout (key, then value,
    nothing else) is split here; anything else (fields repeated or reordered, unknown fields) is read by protobuf.
    Raises ``UnreadableAttribute``."""
    n = len(raw)
    try:
        if n and raw[0] == 0x0A:
            length, pos = _varint(raw, 1)
            key_end = pos + length
            if key_end == n:
                return _key(raw[pos:]), b""
            if key_end < n and raw[key_end] == 0x12:
                length, value_start = _varint(raw, key_end + 1)
                if value_start + length == n:
                    return _key(raw[pos:key_end]), raw[value_start:]
    except (IndexError, InvalidValue):
        raise UnreadableAttribute("malformed attribute") from None
    try:
        entry: Any = _lenient_key_value_class().FromString(raw)
    except DecodeError:
        raise UnreadableAttribute("malformed attribute") from None
    return _key(entry.key), entry.value.SerializeToString()


def _key(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise UnreadableAttribute("attribute key with invalid UTF-8") from None


def as_fast_request(request: Any) -> Any:
    """``request`` as a ``fast_request_class()`` message (re-encoded when it is the standard class)."""
    cls = fast_request_class()
    if isinstance(request, cls):
        return request
    return cls.FromString(request.SerializeToString())


# -- attribute values (AnyValue encodings) -------------------------------------------------------------------------


class _Unset:
    """An ``AnyValue`` with nothing set: the key is present, the value says nothing."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset()


class InvalidValue(ValueError):
    """An attribute value that is not a valid ``AnyValue`` encoding, or holds invalid UTF-8."""


_MEMO: dict[bytes, object] = {}
_MEMO_MAX_ENTRIES: Final = 1 << 16
_MEMO_MAX_BYTES: Final = 64  # names, flags, counts, tags: the values that repeat
_MASK64: Final = (1 << 64) - 1


def any_value(raw: bytes) -> object:
    """The Python value of one ``AnyValue`` encoding: ``str``, ``int``, ``bool``, ``float``, ``BytesValue``, a ``tuple``
    (array), a ``dict`` (kvlist, not shared: never remembered) or ``UNSET``; never ``None`` or ``bytes``. Short
    encodings are remembered (a bounded memo), so the names and counts that repeat across spans are decoded once. Raises
    ``InvalidValue``."""
    value = _MEMO.get(raw)
    if value is None:
        value = _decode_any_value(raw)
        if len(raw) <= _MEMO_MAX_BYTES and type(value) is not dict:
            if len(_MEMO) >= _MEMO_MAX_ENTRIES:
                _MEMO.clear()
            _MEMO[raw] = value
    return value


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = raw[pos]  # IndexError on a truncated varint
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise InvalidValue("malformed varint")


def _decode_any_value(raw: bytes) -> object:
    """The common encodings (one field covering the whole value) in Python; anything else (arrays, kvlists, several
    fields where the last wins, unknown fields) through protobuf itself."""
    n = len(raw)
    if n == 0:
        return UNSET
    tag = raw[0]
    try:
        if tag == 0x0A:  # string_value
            length, pos = _varint(raw, 1)
            if pos + length == n:
                try:
                    return raw[pos:].decode()
                except UnicodeDecodeError:
                    raise InvalidValue("invalid UTF-8") from None
        elif tag == 0x18:  # int_value (two's complement int64)
            value, pos = _varint(raw, 1)
            if pos == n:
                value &= _MASK64
                return value - (1 << 64) if value >= 1 << 63 else value
        elif tag == 0x10:  # bool_value
            value, pos = _varint(raw, 1)
            if pos == n:
                return value != 0
        elif tag == 0x21 and n == 9:  # double_value
            return _DOUBLE.unpack_from(raw, 1)[0]
    except IndexError:
        raise InvalidValue("malformed value") from None
    return _decode_slow(raw)


def _decode_slow(raw: bytes) -> object:
    try:
        message = AnyValue.FromString(raw)
    except DecodeError:
        try:
            _lenient_any_value_class().FromString(raw)
        except DecodeError:
            raise InvalidValue("malformed value") from None
        raise InvalidValue("invalid UTF-8") from None
    if message.WhichOneof("value") is None:
        return UNSET
    return _python_value(message)


class BytesValue(bytes):
    """A ``bytes_value`` attribute, decoded: a ``bytes`` subclass, so that a plain ``bytes`` always means "an encoding
    not decoded yet" to a reader holding either."""

    __slots__ = ()


def _python_value(value: AnyValue) -> object:
    """``as_python`` with arrays as tuples (immutable: decoded values are shared through the memo)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None  # inside an array or kvlist, as ``as_python`` reads it
    if kind == "array_value":
        return tuple(_python_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: _python_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return BytesValue(value.bytes_value)
    return getattr(value, kind)


class InvalidRequest(ValueError):
    """The request body is not an ExportTraceServiceRequest; the message says why (INVALID_ARGUMENT / HTTP 400)."""


def parse_export_request(data: bytes) -> tuple[Any, list[str]]:
    """The request (a ``fast_request_class()`` message), plus warnings about string fields dropped for invalid
    UTF-8.

    protobuf refuses a whole message when one string field holds invalid UTF-8. One bad attribute must not cost a
    batch, so such a request is decoded again with a copy of the OTLP messages whose string fields are bytes (the
    same wire format); every invalid attribute is removed (other invalid strings are cleared) and the rest decodes
    normally. The fast path never pays for this."""
    try:
        return fast_request_class().FromString(data), []
    except DecodeError as exc:
        return _parse_lenient(data, exc)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"malformed ExportTraceServiceRequest: {exc}") from None


def scrub_request(data: bytes) -> tuple[Any, list[str]]:
    """``parse_export_request`` for a request the fast class parsed but whose attributes turned out unreadable
    (``UnreadableAttribute``): read as the standard class would, with every invalid UTF-8 string dropped or
    cleared; raises ``InvalidRequest`` when the request is malformed."""
    return _parse_lenient(data, None)


def _parse_lenient(data: bytes, first_error: Exception | None) -> tuple[Any, list[str]]:
    lenient_cls = _lenient_request_class()
    try:
        lenient = lenient_cls.FromString(data)
    except (DecodeError, ValueError, TypeError) as exc:
        raise InvalidRequest(f"malformed ExportTraceServiceRequest: {first_error or exc}") from None
    warnings: list[str] = []
    _scrub(lenient, warnings)
    try:
        request = fast_request_class().FromString(lenient.SerializeToString())
    except DecodeError as exc:
        raise InvalidRequest(f"malformed ExportTraceServiceRequest: {first_error or exc}") from None
    return request, warnings


_LENIENT: list[type[Message]] = []


def _lenient_request_class() -> type[Message]:
    """ExportTraceServiceRequest with every string field declared ``bytes`` (built once, in its own pool)."""
    if _LENIENT:
        return _LENIENT[0]
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    pool = descriptor_pool.DescriptorPool()
    string_type = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    bytes_type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    for module in (common_pb2, resource_pb2, trace_pb2, trace_service_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        proto.name = "tokentrail_lenient/" + proto.name
        proto.dependency[:] = ["tokentrail_lenient/" + d for d in proto.dependency]
        proto.ClearField("service")
        proto.options.Clear()

        def fix(messages: Any) -> None:
            for message in messages:
                for f in message.field:
                    if f.type == string_type:
                        f.type = bytes_type
                fix(message.nested_type)

        fix(proto.message_type)
        pool.Add(proto)
    descriptor = pool.FindMessageTypeByName(ExportTraceServiceRequest.DESCRIPTOR.full_name)
    cls = message_factory.GetMessageClass(descriptor)
    _LENIENT.append(cls)
    return cls


def _lenient_any_value_class() -> type[Message]:
    return _lenient_class(AnyValue)


def _lenient_key_value_class() -> type[Message]:
    return _lenient_class(KeyValue)


def _lenient_class(standard: type[Message]) -> type[Message]:
    from google.protobuf import message_factory

    pool = _lenient_request_class().DESCRIPTOR.file.pool
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(standard.DESCRIPTOR.full_name))


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _any_value_ok(value: Any) -> bool:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return _valid_utf8(value.string_value)
    if kind == "array_value":
        return all(_any_value_ok(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return all(_valid_utf8(kv.key) and _any_value_ok(kv.value) for kv in value.kvlist_value.values)
    return True


def _repeated(descriptor: Any) -> bool:
    if hasattr(descriptor, "is_repeated"):  # protobuf >= 6
        return bool(descriptor.is_repeated)
    return bool(descriptor.label == descriptor.LABEL_REPEATED)


def _scrub(message: Any, warnings: list[str]) -> None:
    """Removes invalid-UTF-8 attributes, clears other invalid strings, in a lenient message tree."""
    for descriptor, value in message.ListFields():
        if descriptor.type == descriptor.TYPE_MESSAGE:
            if _repeated(descriptor):
                if descriptor.message_type.name == "KeyValue":
                    bad = [kv for kv in value if not (_valid_utf8(kv.key) and _any_value_ok(kv.value))]
                    for kv in bad:
                        key = kv.key.decode("utf-8", "replace")[:100]
                        warnings.append(f"attribute {key!r} dropped: invalid UTF-8")
                        value.remove(kv)
                    continue
                for item in value:
                    _scrub(item, warnings)
            else:
                _scrub(value, warnings)
        elif descriptor.type == descriptor.TYPE_BYTES and isinstance(value, bytes):
            if descriptor.name in ("trace_id", "span_id", "parent_span_id"):
                continue  # real bytes fields
            if not _valid_utf8(value):
                warnings.append(f"{descriptor.name} cleared: invalid UTF-8")
                message.ClearField(descriptor.name)


def parse_json_request(body: bytes) -> ExportTraceServiceRequest:
    """OTLP/JSON: protobuf JSON mapping, except that trace and span ids are hex strings (not base64)."""
    import base64
    import json

    from google.protobuf import json_format

    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"malformed OTLP/JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidRequest("malformed OTLP/JSON: the body must be a JSON object")

    def ids(obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
            value = obj.get(key)
            if isinstance(value, str) and value:
                try:
                    obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise InvalidRequest(f"malformed OTLP/JSON: {key} {value[:40]!r} is not hex") from None

    for resource_spans in _list(document, "resourceSpans", "resource_spans"):
        for scope_spans in _list(resource_spans, "scopeSpans", "scope_spans"):
            for span in _list(scope_spans, "spans"):
                ids(span)
                for link in _list(span, "links"):
                    ids(link)
    try:
        return json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise InvalidRequest(f"malformed OTLP/JSON: {str(exc)[:300]}") from None


def _list(obj: Any, *names: str) -> list[Any]:
    if not isinstance(obj, dict):
        return []
    for name in names:
        value = obj.get(name)
        if isinstance(value, list):
            return value
    return []


def response_json(message: Any) -> bytes:
    from google.protobuf import json_format

    return json_format.MessageToJson(message, indent=None).encode()
