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
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, Literal, NamedTuple, Protocol

__all__ = ["Abandonable", "BodyObserver", "StreamEnd", "Wrappers", "wrappers"]

log = logging.getLogger(__name__)

StreamEnd = Literal["read", "closed", "failed", "abandoned"]


class BodyObserver(Protocol):
    """Learns about a body as it is read. No method may raise: they run inside the application's read.

    Each chunk goes to the ``feed`` given with the observer when the body is wrapped (none: the chunks go nowhere).
    That call may raise: ``unfed`` is then told, and the chunks stop going to it. ``ended`` turns True once ``end``
    has done its work; later calls would do nothing, so the wrappers skip them.
    """

    ended: bool

    def unfed(self) -> None: ...

    def end(self, how: StreamEnd, error: BaseException | None = None) -> None: ...


class Abandonable:
    """Ends the call of a body the application dropped without reading it to the end or closing it, when the body
    is collected. Every wrapper of a body (these for httpx, botocore's in ``_bedrock_streams``) needs this finalizer,
    and it must behave the same for all: a body that already ended is not marked incomplete here."""

    __slots__ = ()

    _observer: BodyObserver

    def __del__(self) -> None:
        try:
            observer = self._observer
            if not observer.ended:
                observer.end("abandoned")
        except Exception:  # noqa: BLE001, S110 - a finalizer must not raise, and may run when logging is gone
            pass


class _SyncMixin:
    """The sync half: wraps an iterable body with ``close()``."""

    _body: Any
    _observer: BodyObserver
    _feed: Callable[[bytes], object] | None

    def __iter__(self) -> Iterator[bytes]:
        observer = self._observer
        feed = self._feed
        try:
            for chunk in self._body:
                if feed is not None:
                    try:
                        feed(chunk)
                    except Exception:  # noqa: BLE001 - our parser's failure must not break the read: unfed() logs it
                        feed = None
                        observer.unfed()
                yield chunk
        except Exception as error:
            observer.end("failed", error)
            raise
        observer.end("read")

    def close(self) -> None:
        observer = self._observer
        if not observer.ended:
            observer.end("closed")
        self._body.close()


class _AsyncMixin:
    """The async half: wraps an async-iterable body with ``aclose()``."""

    _body: Any
    _observer: BodyObserver
    _feed: Callable[[bytes], object] | None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        observer = self._observer
        feed = self._feed
        chunks = self._body.__aiter__()
        try:
            async for chunk in chunks:
                if feed is not None:
                    try:
                        feed(chunk)
                    except Exception:  # noqa: BLE001 - our parser's failure must not break the read: unfed() logs it
                        feed = None
                        observer.unfed()
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
        observer = self._observer
        if not observer.ended:
            observer.end("closed")
        await self._body.aclose()


class _Common(Abandonable):
    _body: Any
    _observer: BodyObserver
    _feed: Callable[[bytes], object] | None

    def __init__(self, body: Any, observer: BodyObserver, feed: Callable[[bytes], object] | None = None) -> None:
        self._body = body
        self._observer = observer
        self._feed = feed

    @property
    def elapsed(self) -> Any:
        """Forwarded: some clients read ``elapsed`` from ``response.stream``."""
        return getattr(self._body, "elapsed", None)



class Wrappers(NamedTuple):
    """One HTTP library's byte-stream base classes and the wrapper classes built on them (see ``wrappers``).

    A body is wrapped in the class of the same kind(s) as the body (``both_cls`` for a body that is sync and async),
    so the client's type checks still pass.
    """

    sync_base: type
    async_base: type
    sync_cls: type
    async_cls: type
    both_cls: type


@functools.cache
def wrappers(sync_base: type, async_base: type) -> Wrappers:
    """Wrapper classes deriving from one library's ``SyncByteStream`` and ``AsyncByteStream``, built once."""
    sync_cls = type("ObservedSyncByteStream", (_Common, _SyncMixin, sync_base), {})
    async_cls = type("ObservedAsyncByteStream", (_Common, _AsyncMixin, async_base), {})
    both_cls = type(
        "ObservedByteStream", (_Common, _SyncMixin, _AsyncMixin, sync_base, async_base), {}
    )
    return Wrappers(sync_base, async_base, sync_cls, async_cls, both_cls)
