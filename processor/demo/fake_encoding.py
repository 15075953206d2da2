"""The Content-Encoding codings the fake provider applies on request (header ``x-fake-encoding``): gzip, br, zstd.

Instrumentation must decode a compressed body (whole, or an SSE stream event by event) as a real provider sends it;
coding chunk by chunk with each chunk flushed, so every event reaches the client whole, is the part that needs care,
and it has nothing to do with any one API, so it lives here apart from the routes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Final

__all__ = ["ENCODING_HEADER", "Compressor", "codings_of", "compress"]

ENCODING_HEADER: Final = "x-fake-encoding"


class Compressor:
    """One Content-Encoding coding, applied chunk by chunk with each chunk flushed (an SSE event must reach the
    client whole), then finished."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._chunk: Callable[[bytes], bytes]
        self._finish: Callable[[], bytes]
        if coding == "gzip":
            packer = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
            self._chunk = lambda data: packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH)
            self._finish = lambda: packer.flush()
        elif coding == "br":
            import brotli  # a test dependency, only for this coding

            brotli_packer = brotli.Compressor()
            self._chunk = lambda data: brotli_packer.process(data) + brotli_packer.flush()
            self._finish = brotli_packer.finish
        elif coding == "zstd":
            try:
                import zstandard  # a test dependency, only for this coding

                zstd_packer = zstandard.ZstdCompressor().compressobj()
                self._chunk = lambda data: zstd_packer.compress(data) + zstd_packer.flush(
                    zstandard.COMPRESSOBJ_FLUSH_BLOCK
                )
                self._finish = zstd_packer.flush
            except ImportError:
                try:
                    from compression.zstd import ZstdCompressor  # type: ignore[import-not-found]  # Python 3.14+
                except ImportError:
                    from backports.zstd import ZstdCompressor
                block_packer = ZstdCompressor()
                self._chunk = lambda data: block_packer.compress(data, mode=ZstdCompressor.FLUSH_BLOCK)
                self._finish = lambda: block_packer.flush()
        else:
            raise ValueError(f"the fake provider cannot apply Content-Encoding {coding!r}")

    def chunk(self, data: bytes) -> bytes:
        return self._chunk(data)

    def finish(self) -> bytes:
        return self._finish()


def codings_of(value: str | None) -> list[str]:
    """The codings of an ``x-fake-encoding`` header, in the order they are applied."""
    return [coding.strip() for coding in (value or "").split(",") if coding.strip()]


def compress(data: bytes, codings: list[str]) -> bytes:
    """``data`` whole, with each coding applied in turn."""
    for coding in codings:
        packer = Compressor(coding)
        data = packer.chunk(data) + packer.finish()
    return data
