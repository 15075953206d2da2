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
        # What the body said before any decoding failure still counts (a stream's usage event, say); a JSON body
        # cut short does not parse anyway.
        if not self._failed:
            try:
                self._inner.feed(self._decoder.flush())
            except zlib.error:
                self._failed = True
        return self._inner.result()


class LibraryDecodingParser:
    """Feeds ``inner`` what the HTTP library's own content decoder makes of the body (see the module docstring).

    ``httpx`` decoders return bytes from ``decode`` and ``flush``; ``httpx2`` ones yield them: both are taken.
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
        # As DecodingParser's: a decoder that fails, or finds the data incomplete at its flush (a stream the
        # application closed after its last event, before the coding's own end), leaves what was read so far.
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
        return DecodingParser(parser, encoding)
    if response_class is not None:
        try:
            return LibraryDecodingParser(parser, library_decoder(response_class, content_encoding or ""))
        except Exception:
            log.debug("TokenTrail has no decoder for Content-Encoding %r", content_encoding, exc_info=True)
    return UnreadableParser()
