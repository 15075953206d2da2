"""Content-decoding of the bytes we observe at the transport, where bodies are still as the server sent them.

The transport sees raw bytes; decompression happens later, in the client's ``Response``. Providers gzip JSON
bodies, so the usage parser needs its own decoder. Only the stdlib codecs (gzip, deflate) are handled: for
anything else (br, zstd) the usage is reported missing rather than guessed.
"""

from __future__ import annotations

import zlib
from typing import Final

from ._usage import BodyParser, ResponseFacts

# wbits 32 + MAX_WBITS: zlib detects a gzip or zlib header by itself.
_AUTO_HEADER: Final = 32 + zlib.MAX_WBITS


class DecodingParser:
    """Feeds ``inner`` the decoded form of a gzip/deflate body."""

    def __init__(self, inner: BodyParser, encoding: str) -> None:
        self._inner = inner
        self._raw_deflate = False
        self._decoder = zlib.decompressobj(_AUTO_HEADER)
        self._failed = False
        self._encoding = encoding

    def feed(self, chunk: bytes) -> None:
        if self._failed:
            return
        try:
            self._inner.feed(self._decoder.decompress(chunk))
        except zlib.error:
            if self._encoding == "deflate" and not self._raw_deflate:
                # Some servers send raw deflate without the zlib header that the HTTP spec asks for.
                self._raw_deflate = True
                self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
                self.feed(chunk)
            else:
                self._failed = True

    def result(self) -> ResponseFacts:
        if not self._failed:
            try:
                self._inner.feed(self._decoder.flush())
            except zlib.error:
                self._failed = True
        return ResponseFacts() if self._failed else self._inner.result()


class UnreadableParser:
    """Stands in for a body in an encoding we cannot decode: it reports that nothing was learned."""

    def feed(self, chunk: bytes) -> None:
        pass

    def result(self) -> ResponseFacts:
        return ResponseFacts()


def decoding(parser: BodyParser, content_encoding: str | None) -> BodyParser:
    """``parser`` behind a decoder for ``content_encoding``, or a parser that learns nothing if we have none."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return parser
    if encoding in ("gzip", "x-gzip", "deflate"):
        return DecodingParser(parser, encoding)
    return UnreadableParser()
