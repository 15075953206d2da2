"""botocore response bodies that let a Bedrock call see its usage as the application reads it.

A Bedrock call is not over when ``invoke_model`` or ``converse_stream`` returns: the usage is in the body the
application reads afterwards, and the call's span must end when the application is done with it, however that
happens (read to the end, closed early, failed, or dropped unclosed). These wrappers replace the body in the parsed
response: each is an instance of the botocore class it replaces (``StreamingBody``, ``EventStream``), so the
application's type checks and calls still work; each hands back exactly the bytes or events the original yields,
the same objects, one at a time, buffering nothing the application has not read.

Only botocore's public surface is used: a ``StreamingBody`` is built with its constructor around a reader of the
original; an ``EventStream`` subclass overrides the public methods and forwards to the original, whose private state
it never touches. Importing this module imports botocore: ``_bedrock`` does that only when botocore is installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from botocore.eventstream import EventStream  # type: ignore[import-untyped]  # botocore ships no types
from botocore.response import StreamingBody  # type: ignore[import-untyped]

from ._streams import Abandonable, BodyObserver

__all__ = ["ObservedBody", "ObservedEventStream"]

log = logging.getLogger(__name__)


class _BodyReader(Abandonable):
    """The raw stream of an ``ObservedBody``: reads from the original ``StreamingBody`` (which keeps checking the
    content length and converting urllib3's errors) and passes each piece to ``feed``. It knows the body has ended
    when a read returns nothing, reads everything, or reaches ``Content-Length``."""

    __slots__ = ("_body", "_observer", "_feed", "_left")

    def __init__(
        self, body: StreamingBody, observer: BodyObserver, feed: Callable[[bytes], object], length: int | None
    ) -> None:
        self._body = body
        self._observer = observer
        self._feed: Callable[[bytes], object] | None = feed
        self._left = length

    def _seen(self, chunk: bytes, everything: bool) -> None:
        feed = self._feed
        if chunk and feed is not None:
            try:
                feed(chunk)
            except Exception:  # noqa: BLE001 - our reader's failure must not break the read: unfed() logs it
                self._feed = None
                self._observer.unfed()
        if self._left is not None:
            self._left -= len(chunk)
        if everything or not chunk or (self._left is not None and self._left <= 0):
            observer = self._observer
            if not observer.ended:
                observer.end("read")

    def _failed(self, error: BaseException) -> None:
        observer = self._observer
        if isinstance(error, Exception) and not observer.ended:
            observer.end("failed", error)

    def read(self, amt: int | None = None) -> bytes:
        try:
            chunk: bytes = self._body.read(amt)
        except BaseException as error:
            self._failed(error)
            raise
        self._seen(chunk, amt is None or amt < 0)
        return chunk

    def readinto(self, buffer: Any) -> int:
        try:
            count: int = self._body.readinto(buffer)
        except BaseException as error:
            self._failed(error)
            raise
        self._seen(bytes(memoryview(buffer)[:count]), False)
        return count

    def readlines(self) -> list[bytes]:
        try:
            lines: list[bytes] = self._body.readlines()
        except BaseException as error:
            self._failed(error)
            raise
        self._seen(b"".join(lines), True)
        return lines

    def readable(self) -> bool:
        return bool(self._body.readable())

    def tell(self) -> int:
        return int(self._body.tell())

    def close(self) -> None:
        observer = self._observer
        if not observer.ended:
            observer.end("closed")
        self._body.close()


class ObservedBody(StreamingBody):
    """An ``invoke_model`` body: a real ``StreamingBody`` reading through ``_BodyReader`` from the original."""

    def __init__(
        self, body: StreamingBody, observer: BodyObserver, feed: Callable[[bytes], object], length: int | None
    ) -> None:
        # No length check of our own: the original body checks its Content-Length and raises on a short body.
        super().__init__(_BodyReader(body, observer, feed, length), None)
        self._original = body

    def set_socket_timeout(self, timeout: float) -> None:
        self._original.set_socket_timeout(timeout)


class ObservedEventStream(Abandonable, EventStream):
    """An event stream (``converse_stream``'s ``stream``, ``invoke_model_with_response_stream``'s ``body``) that shows
    each parsed event to ``feed`` as the application iterates, and ends the call when the stream does.

    Iterating again after a ``break`` resumes the original stream where it stopped, as botocore's does, so leaving a
    loop early does not end the call: closing the stream does, or dropping it (the finalizer)."""

    def __init__(
        self, stream: EventStream, observer: BodyObserver, feed: Callable[[Mapping[str, Any]], object]
    ) -> None:
        # EventStream.__init__ is not called: every public method forwards to ``stream``, which keeps its own state.
        self._stream = stream
        self._observer = observer
        self._feed: Callable[[Mapping[str, Any]], object] | None = feed

    def __iter__(self) -> Iterator[Any]:
        observer = self._observer
        try:
            for event in self._stream:
                feed = self._feed
                if feed is not None:
                    try:
                        feed(event)
                    except Exception:  # noqa: BLE001 - our reader's failure must not break the read: unfed() logs it
                        self._feed = None
                        observer.unfed()
                yield event
        except Exception as error:
            if not observer.ended:
                observer.end("failed", error)
            raise
        if not observer.ended:
            observer.end("read")

    def get_initial_response(self) -> Any:
        return self._stream.get_initial_response()

    def close(self) -> None:
        observer = self._observer
        if not observer.ended:
            observer.end("closed")
        self._stream.close()

    def __getattr__(self, name: str) -> Any:
        # Anything else a caller reads off the stream is the original's (only reached for names this class lacks).
        if name in ("_stream", "_observer", "_feed"):
            raise AttributeError(name)
        return getattr(self._stream, name)
