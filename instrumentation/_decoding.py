"""Content-decoding of the bytes we observe at the transport, where bodies are still as the server sent them.

The transport sees raw bytes; decompression happens later, in the client's ``Response``. Providers compress JSON
bodies (and some, event streams), so the usage parser needs its own decoder. gzip and deflate, the usual ones, are
decoded here with zlib. Any other Content-Encoding (br, zstd, several codings in a row, one the client does not
know) goes through a decoder the HTTP library itself builds for it, exactly as its ``Response`` will for the
application: so we read what the application reads, for every encoding the client can decode (``br`` needs
``brotli``, ``zstd`` needs ``zstandard`` or ``backports.zstd``, installed as the client asks for them), and a coding
the client ignores is ignored here too. Only if that is impossible is the usage reported missing, never guessed.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any, Final

from ._usage import BodyParser, ResponseFacts

log = logging.getLogger(__name__)

# wbits 32 + MAX_WBITS: zlib detects a gzip or zlib header by itself.
_AUTO_HEADER: Final = 32 + zlib.MAX_WBITS


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
    """Feeds ``inner`` the decoded body: ``decoder`` is ours for gzip and deflate, else the HTTP library's own (see
    the module docstring). ``httpx`` decoders and ours return bytes from ``decode`` and ``flush``; ``httpx2`` ones
    yield them: both are taken.

    A decoder that fails, or finds the data incomplete at its flush (a stream the application closed after its last
    event, before the coding's own end), stops the decoding but leaves what was read so far: a stream's usage event
    still counts, and a JSON body cut short does not parse anyway.
    """

    def __init__(self, inner: BodyParser, decoder: Any) -> None:
        self._inner = inner
        self._decoder = decoder
        self._failed = False

    def _take(self, decoded: Any) -> None:
        if isinstance(decoded, bytes):
            self._inner.feed(decoded)
        else:
            for part in decoded:
                self._inner.feed(part)

    def feed(self, chunk: bytes) -> None:
        if self._failed:
            return
        try:
            decoded = self._decoder.decode(chunk)
            if not isinstance(decoded, bytes):
                decoded = list(decoded)  # a generator: its decoding errors surface here, not in the parser
        except Exception:
            self._failed = True
            return
        self._take(decoded)

    def result(self) -> ResponseFacts:
        if not self._failed:
            try:
                decoded = self._decoder.flush()
                if not isinstance(decoded, bytes):
                    decoded = list(decoded)
            except Exception:
                self._failed = True
            else:
                self._take(decoded)
        return self._inner.result()


class UnreadableParser:
    """Stands in for a body in an encoding we cannot decode: it reports that nothing was learned."""

    def feed(self, chunk: bytes) -> None:
        pass

    def result(self) -> ResponseFacts:
        return ResponseFacts()


def library_decoder(response_class: type, content_encoding: str) -> Any:
    """A fresh content decoder for ``content_encoding``, built by the HTTP library whose ``Response`` class is given,
    the way that library builds the one the application's response will use (a throwaway response of the same
    encoding asks for it: the real response's decoder must stay the application's alone)."""
    return response_class(200, headers=[("content-encoding", content_encoding)])._get_content_decoder()


def decoding(parser: BodyParser, content_encoding: str | None, response_class: type | None = None) -> BodyParser:
    """``parser`` behind a decoder for ``content_encoding``; for encodings beyond gzip and deflate, the decoder of the
    HTTP library whose ``response_class`` carries the body, or (without one) a parser that learns nothing."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return parser
    if encoding in ("gzip", "x-gzip", "deflate"):
        return DecodingParser(parser, ZlibDecoder(encoding))
    if response_class is not None:
        try:
            return DecodingParser(parser, library_decoder(response_class, content_encoding or ""))
        except Exception:
            log.debug("TokenTrail has no decoder for Content-Encoding %r", content_encoding, exc_info=True)
    return UnreadableParser()
