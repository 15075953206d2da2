"""``TOKENTRAIL_STREAM_USAGE=inject``: ask Chat Completions and legacy Completions streams for their usage.

Those APIs put usage in a stream only when the request says ``stream_options.include_usage``; without it a
streamed call is recorded with ``tokentrail.usage.missing``. Adding the option makes the provider send a final
chunk with the usage and an EMPTY ``choices`` list, which application code that indexes ``chunk.choices[0]``
without checking would trip on. So it is off by default and, when on, changes only streamed requests of those two
APIs that do not already state ``include_usage``; the body is re-serialised, every field kept.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)


def with_include_usage(body: bytes) -> bytes | None:
    """``body`` with ``stream_options.include_usage`` set, or None if it is not a JSON object we can change."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    options = data.get("stream_options")
    if options is None:
        options = data["stream_options"] = {}
    if not isinstance(options, dict) or "include_usage" in options:
        return None
    options["include_usage"] = True
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def replace_body(request: Any, body: bytes) -> bool:
    """Give an in-memory ``httpx``/``httpx2`` request a new body. False (request unchanged) if it is not one."""
    stream = getattr(request, "stream", None)
    if type(stream).__name__ != "ByteStream" or not hasattr(request, "_content"):
        return False  # a streamed upload, or a request class we do not know: leave it alone
    headers = request.headers
    if "transfer-encoding" in headers:
        return False
    request.stream = type(stream)(body)
    request._content = body
    headers["content-length"] = str(len(body))
    return True
