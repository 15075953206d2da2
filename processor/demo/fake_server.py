"""What every fake provider server shares: a threaded HTTP/1.1 server on loopback, its lifecycle, and the wire.

The fake LLM provider (``fake_provider``) and the fake AWS Bedrock runtime (``fake_bedrock``) answer different APIs
but run the same way: a real server on 127.0.0.1 (port 0 takes a free one) in a daemon thread, started and stopped by
a test or the demo, quiet about the connection resets that its failure modes cause on purpose, recording each call
under a lock so a test can look while a stream is open. Keeping that here means the two fakes differ only in what they
answer, and a fix to the lifecycle (a port, a shutdown wait) reaches both.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Final, Generic, TypeVar

__all__ = [
    "FAIL_HEADER",
    "FakeHandler",
    "FakeServer",
    "QuietServer",
    "cut_events",
    "dumps",
    "injected_status",
    "json_object",
]

FAIL_HEADER: Final = "x-fake-fail"

CallT = TypeVar("CallT")
EventT = TypeVar("EventT")
ServerT = TypeVar("ServerT", bound="FakeServer[Any]")


def dumps(payload: object) -> bytes:
    """Compact JSON, as the providers send it."""
    return json.dumps(payload, separators=(",", ":")).encode()


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object; anything else (broken JSON, a list) as an empty one, so a route still
    answers and records the call."""
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def injected_status(failure: str | None) -> int | None:
    """The HTTP status a ``status:<code>`` failure mode asks for (500 when the code is not a number), else None."""
    if failure is None or not failure.startswith("status:"):
        return None
    try:
        return int(failure.partition(":")[2])
    except ValueError:
        return 500


def cut_events(events: list[EventT], first_content: int, failure: str | None) -> list[EventT]:
    """The events a stream sends under ``failure``: ``truncate`` and ``midstream`` stop after the first content
    event (index ``first_content``); ``midstream`` also drops the connection (``FakeHandler.end_chunked``)."""
    if failure in ("truncate", "midstream"):
        return events[: first_content + 1]
    return events


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeServer[Any]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that stops reading a stream early resets the connection: that is a test scenario, not a bug.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FakeHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, silent, and the writes both fakes make: a whole body, or chunks of a stream."""

    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes: with Nagle's algorithm on, the body waited for the client's delayed
    # ACK of the headers, 40 ms on every non-streamed call over loopback (a real provider's stack sends at once).
    disable_nagle_algorithm = True
    server: QuietServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass  # keep test output clean

    def headers_dict(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def send_body(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        """A whole response; ``headers`` in the order given (Content-Length among them)."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self, headers: Mapping[str, str]) -> None:
        """A 200 whose body follows in chunks (``headers`` must say ``Transfer-Encoding: chunked``)."""
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def write_chunk(self, chunk: bytes) -> None:
        """One chunk, framing and data in one write: an event reaches the client whole."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.flush()

    def end_chunked(self, cut: bool) -> None:
        """End the body, or with ``cut`` drop the connection without the last chunk (a protocol error mid-stream)."""
        if cut:
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class FakeServer(Generic[CallT]):
    """The lifecycle of a fake: ``start()``/``stop()`` or a context manager, ``port``/``base_url`` once started, and
    the calls it served (``calls``, ``last_call``, ``reset()``). A subclass names its handler and what it serves."""

    handler: ClassVar[type[FakeHandler]]
    thread_name: ClassVar[str]
    served_nothing: ClassVar[str]  # last_call's error before any call

    def __init__(self, port: int = 0) -> None:
        self._requested_port = port
        self.calls: list[CallT] = []
        self._lock = threading.Lock()
        self._server: QuietServer | None = None
        self._thread: threading.Thread | None = None

    def start(self: ServerT) -> ServerT:
        if self._server is not None:
            return self
        server = QuietServer(("127.0.0.1", self._requested_port), self.handler)
        server.fake = self
        self._server = server
        # A short poll interval: stop() waits up to one interval, and tests start and stop many servers.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self: ServerT) -> ServerT:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            name = type(self).__name__
            raise RuntimeError(f"{name} is not started: use start() or `with {name}() as fake:`")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def last_call(self) -> CallT:
        with self._lock:
            if not self.calls:
                raise LookupError(self.served_nothing)
            return self.calls[-1]

    def record(self, call: CallT) -> CallT:
        """Keep ``call`` (from a handler's thread) before its response is sent."""
        with self._lock:
            self.calls.append(call)
        return call

    def reset(self) -> None:
        """Forget recorded calls (between phases of a test or demo)."""
        with self._lock:
            self.calls.clear()
