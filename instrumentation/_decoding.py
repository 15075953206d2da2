"""Content-decoding of the bytes we observe at the transport, where bodies are still as the server sent them.

The transport sees raw bytes; decompression happens later, in the client's ``Response``. Providers compress JSON
bodies (and some, event streams), so the usage parser needs its own decoder. gzip and deflate, the usual ones, are
decoded here with zlib, chunk by chunk. Any other Content-Encoding (br, zstd, several codings in a row, one the
client does not know) is decoded when the body ends by the HTTP library itself, through its public ``Response`` of
the bytes we kept, exactly as it decodes the application's: so we read what the application reads, for every
encoding the client can decode (``br`` needs ``brotli``, ``zstd`` needs ``zstandard`` or ``backports.zstd``,
installed as the client asks for them), and a coding the client ignores is ignored here too. Only if that is
impossible (or the compressed body exceeds ``MAX_LIBRARY_DECODED``) is the usage reported missing, never guessed.
"""

from __future__ import annotations

import logging
import zlib
from typing import Final

from ._parsers import JsonBodyParser
from ._usage import BodyParser, ResponseFacts

log = logging.getLogger(__name__)

# wbits 32 + MAX_WBITS: zlib detects a gzip or zlib header by itself.
_AUTO_HEADER: Final = 32 + zlib.MAX_WBITS
# The most compressed bytes of one body kept for the HTTP library to decode at its end.
MAX_LIBRARY_DECODED: Final = 16 << 20


class ZlibDecoder:
    """gzip and deflate with zlib, behind the decoder interface of the HTTP libraries (``decode``, ``flush``)."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._raw_deflate = False
        self._decompressor = zlib.decompressobj(_AUTO_HEADER)

    def decode(self, chunk: bytes) -> bytes:
        try:
            return self._decompressor.decompress(chunk)
        except zlib.error:
            if self._encoding != "deflate" or self._raw_deflate:
                raise
            # Some servers send raw deflate without the zlib header that the HTTP spec asks for.
            self._raw_deflate = True
            self._decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.decode(chunk)

    def flush(self) -> bytes:
        return self._decompressor.flush()


class DecodingParser:
    """Feeds ``inner`` the body as ``ZlibDecoder`` decodes it, chunk by chunk.

    A decoder that fails, or finds the data incomplete at its flush (a stream the application closed after its last
    event, before the coding's own end), stops the decoding but leaves what was read so far: a stream's usage event
    still counts, and a JSON body cut short does not parse anyway.
    """

    def __init__(self, inner: BodyParser, decoder: ZlibDecoder) -> None:
        self._inner = inner
        self._decoder = decoder
        self._failed = False

    def feed(self, chunk: bytes) -> None:
        if self._failed:
            return
        try:
            decoded = self._decoder.decode(chunk)
        except zlib.error:
            self._failed = True
            return
        self._inner.feed(decoded)

    def result(self) -> ResponseFacts:
        if not self._failed:
            try:
                decoded = self._decoder.flush()
            except zlib.error:
                self._failed = True
            else:
                self._inner.feed(decoded)
        return self._inner.result()


class LibraryDecodingParser:
    """Keeps the body as it came and, at its end, feeds ``inner`` what the HTTP library's ``Response`` of those bytes
    decodes, piece by piece. A failure (bytes it cannot decode, a coding cut short) stops there, and the pieces
    decoded before it count for an event stream, read piece by piece by the application too, but not for a whole
    JSON body, which the application cannot read at all then."""

    def __init__(self, inner: BodyParser, response_class: type, content_encoding: str) -> None:
        self._inner = inner
        self._whole = isinstance(inner, JsonBodyParser)
        self._response_class = response_class
        self._content_encoding = content_encoding
        self._chunks: list[bytes] | None = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        if self._chunks is None:
            return
        self._size += len(chunk)
        if self._size > MAX_LIBRARY_DECODED:
            self._chunks = None  # too large to keep: its usage is reported missing
            return
        self._chunks.append(chunk)

    def result(self) -> ResponseFacts:
        chunks, self._chunks = self._chunks, None
        if not chunks:
            return self._inner.result()
        decoded: list[bytes] = []
        try:
            response = self._response_class(
                200, headers=[("content-encoding", self._content_encoding)], content=iter(chunks)
            )
            for piece in response.iter_bytes():
                if self._whole:
                    decoded.append(piece)
                else:
                    self._inner.feed(piece)
        except Exception:  # noqa: BLE001 - each library raises its own decoding errors
            log.debug("TokenTrail could not decode a %r body", self._content_encoding, exc_info=True)
            if self._whole:
                return ResponseFacts()
        for piece in decoded:
            self._inner.feed(piece)
        return self._inner.result()


class UnreadableParser:
    """Stands in for a body in an encoding we cannot decode: it reports that nothing was learned."""

    def feed(self, chunk: bytes) -> None:
        pass

    def result(self) -> ResponseFacts:
        return ResponseFacts()


def decoding(parser: BodyParser, content_encoding: str | None, response_class: type | None = None) -> BodyParser:
    """``parser`` behind a decoder for ``content_encoding``; for encodings beyond gzip and deflate, the decoding of the
    HTTP library whose ``response_class`` carries the body, or (without one) a parser that learns nothing."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return parser
    if encoding in ("gzip", "x-gzip", "deflate"):
        return DecodingParser(parser, ZlibDecoder(encoding))
    if response_class is not None:
        return LibraryDecodingParser(parser, response_class, content_encoding or "")
    return UnreadableParser()
