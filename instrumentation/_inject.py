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


def with_body(request: Any, body: bytes) -> Any:
    """A copy of an in-memory ``httpx``/``httpx2`` request with a new body, built with the library's public
    ``Request``; the original is left as the application made it."""
    headers = request.headers.copy()
    headers["content-length"] = str(len(body))
    return type(request)(request.method, request.url, headers=headers, content=body, extensions=request.extensions)
