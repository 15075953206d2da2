"""Response body wrappers that watch the bytes go by and report how reading ended.

An LLM call is not over when its headers arrive: a streamed body is where the usage is, and the call's span must
end when the application finishes with the body, however that happens. The wrapper replaces ``response.stream``
at the transport, below the client's own wrappers, yields every chunk unchanged, and tells its observer about
each chunk and about the end: read to the end, closed early, failed, or dropped unclosed (the finalizer).

``httpx`` and ``httpx2`` each check ``isinstance(response.stream, SyncByteStream)`` (or ``AsyncByteStream``) of
their own module, so the wrapper classes are built per library from that library's base classes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, Literal, Protocol

log = logging.getLogger(__name__)

StreamEnd = Literal["read", "closed", "failed", "abandoned"]


class BodyObserver(Protocol):
    """Learns about a body as it is read. Neither method may raise: they run inside the application's read."""

    def chunk(self, data: bytes) -> None: ...

    def end(self, how: StreamEnd, error: BaseException | None = None) -> None: ...


class _SyncMixin:
    """The sync half: wraps an iterable body with ``close()``."""

    _body: Any
    _observer: BodyObserver

    def __iter__(self) -> Iterator[bytes]:
        observer = self._observer
        try:
            for chunk in self._body:
                observer.chunk(chunk)
                yield chunk
        except Exception as error:
            observer.end("failed", error)
            raise
        observer.end("read")

    def close(self) -> None:
        self._observer.end("closed")
        self._body.close()


class _AsyncMixin:
    """The async half: wraps an async-iterable body with ``aclose()``."""

    _body: Any
    _observer: BodyObserver

    async def __aiter__(self) -> AsyncIterator[bytes]:
        observer = self._observer
        chunks = self._body.__aiter__()
        try:
            async for chunk in chunks:
                observer.chunk(chunk)
                yield chunk
        except Exception as error:
            observer.end("failed", error)
            raise
        finally:
            # Close a partly read inner generator in this task, not later in one the event loop makes for it.
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
        observer.end("read")

    async def aclose(self) -> None:
        self._observer.end("closed")
        await self._body.aclose()


class _Common:
    _body: Any
    _observer: BodyObserver

    def __init__(self, body: Any, observer: BodyObserver) -> None:
        self._body = body
        self._observer = observer

    @property
    def elapsed(self) -> Any:
        """Forwarded: some clients read ``elapsed`` from ``response.stream``."""
        return getattr(self._body, "elapsed", None)

    def __del__(self) -> None:
        # The application dropped the response without reading or closing it. The observer ignores this if the
        # body already ended, so a body that ended normally is not marked incomplete here.
        try:
            self._observer.end("abandoned")
        except Exception:
            pass


@functools.cache
def _classes(sync_base: type, async_base: type) -> tuple[type, type, type]:
    """Wrapper classes deriving from one library's ``SyncByteStream`` and ``AsyncByteStream``."""
    sync_cls = type("ObservedSyncByteStream", (_Common, _SyncMixin, sync_base), {})
    async_cls = type("ObservedAsyncByteStream", (_Common, _AsyncMixin, async_base), {})
    both_cls = type(
        "ObservedByteStream", (_Common, _SyncMixin, _AsyncMixin, sync_base, async_base), {}
    )
    return sync_cls, async_cls, both_cls


def observe(body: Any, observer: BodyObserver, sync_base: type, async_base: type) -> Any:
    """``body`` wrapped for ``observer``, of the same kind(s) as ``body`` so the client's type checks still pass."""
    sync_cls, async_cls, both_cls = _classes(sync_base, async_base)
    is_sync = isinstance(body, sync_base)
    is_async = isinstance(body, async_base)
    if is_sync and is_async:
        return both_cls(body, observer)
    if is_async:
        return async_cls(body, observer)
    return sync_cls(body, observer)
