"""Serving an ASGI app (OTLP/HTTP, the report API) with Hypercorn, on a thread and event loop of its own.

Why Hypercorn: it closes a connection that sends nothing, or sends its request headers too slowly (slowloris), after
``idle_timeout`` — a fresh connection included. Uvicorn times out only idle keep-alive connections *between*
requests, so 1,000 sockets that never send keep 1,000 connections (and, counted by its ``limit_concurrency``, lock
out real clients); the standard library's server held a thread for each. On an event loop an open connection costs
a few kilobytes and no thread. Hypercorn also bounds the request head (``header_bytes``), refuses what h11 refuses
(two differing ``Content-Length``, a negative one, malformed chunked framing), stops gracefully (requests in flight
finish within ``graceful_timeout``), and serves TLS (HTTP/2 by ALPN). h11 accepts a request carrying both
``Content-Length`` and ``Transfer-Encoding``; each app refuses it itself (``ingest.auth.framing_refusal``).

One hole in Hypercorn 0.18's idle timer: a plaintext HTTP/2 "prior knowledge" preface (``PRI * HTTP/2.0``) stops it
and nothing restarts it until a stream ends, so a client that sends the preface and then nothing would hold its
connection forever. ``read_timeout`` (Hypercorn's own: a connection from which nothing arrives for that long is
closed) bounds it; it is long (120 s), because it also runs while a request is answered and the client, rightly, sends
nothing: an answer still being prepared when it fires is dropped as if the client had gone. No OTLP exporter or
browser speaks plaintext HTTP/2 to these ports (TLS negotiates HTTP/2 by ALPN, and that path has the idle timer).

What is left to each app: the body's size and its arrival deadline (``read_body``), authentication before the body
is read, and how much work it takes on at once (``ingest.admission`` for OTLP).

The socket is bound here, not by Hypercorn, so a port in use is our one-line ``ListenError``, ``SO_REUSEPORT`` is
ours to set, the listen backlog is ``SOMAXCONN``, and ``start()`` returns with the port listening (clients
connecting before the loop runs wait in the backlog).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hypercorn.asyncio import serve
from hypercorn.config import Config
from tokentrail.processor.ingest.listen import listen_error

__all__ = ["DEFAULT_LIMITS", "AsgiServer", "BodyTooLarge", "BodyTooSlow", "HttpLimits", "read_body"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What an HTTP surface holds each client to. The defaults fit Collectors and browsers with room to spare."""

    idle_timeout: float = 15.0
    """Seconds a connection may go without a complete request head (new or between keep-alive requests)."""
    body_timeout: float = 60.0
    """Seconds the whole body may take to arrive once the head is in (a 64 MiB body at ~1 MB/s)."""
    header_bytes: int = 16 * 1024
    """The request line and headers, in bytes."""
    read_timeout: float = 120.0
    """Seconds a connection may send nothing at all, whatever it is doing, before it is closed: the bound on what
    the idle timer misses (a plaintext HTTP/2 preface). Keep it above the slowest answer (a report query, an export's
    processing): the client is silent while it waits."""
    graceful_timeout: float = 5.0
    """Seconds ``stop()`` waits for requests in flight."""
    max_requests_per_connection: int = 1000


DEFAULT_LIMITS: Final = HttpLimits()


class BodyTooLarge(Exception):
    """The body passed the limit while being read (a chunked body, or more bytes than ``Content-Length`` said)."""


class BodyTooSlow(Exception):
    """The body did not arrive within ``HttpLimits.body_timeout``."""


class _Disconnected(Exception):
    pass


async def read_body(receive: Receive, limit: int, timeout: float) -> bytes:
    """The request body, refused past ``limit`` bytes (``BodyTooLarge``) or ``timeout`` seconds (``BodyTooSlow``);
    a client gone mid-body raises ``ConnectionResetError``. Read in the loop: no thread waits on a slow sender."""
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"body exceeds the limit of {limit} bytes")
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return

    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        raise BodyTooSlow(f"the body did not arrive within {timeout:g} s") from None
    except _Disconnected:
        raise ConnectionResetError("the client went away before sending its whole body") from None
    return b"".join(chunks)


class AsgiServer:
    """``app`` served on ``host:port`` (0 picks a free port: read ``port`` after ``start()``).

    ``transport`` names the surface in errors and logs ("OTLP/HTTP", "the report API": ``ingest.listen``'s names)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        transport: str,
        host: str,
        port: int,
        limits: HttpLimits = DEFAULT_LIMITS,
        reuse_port: bool = False,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        self._app = app
        self._transport = transport
        self._host = host.strip("[]")
        self._requested_port = port
        self._limits = limits
        self._reuse_port = reuse_port
        self._tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def tls(self) -> bool:
        return self._tls is not None

    @property
    def port(self) -> int:
        """The bound port once started (the real one when asked for 0), else the one asked for."""
        return self._port if self._port is not None else self._requested_port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def _config(self, fd: int) -> Config:
        limits = self._limits
        config = Config()
        config.bind = [f"fd://{fd}"]
        config.backlog = socket.SOMAXCONN
        config.keep_alive_timeout = limits.idle_timeout
        config.read_timeout = limits.read_timeout  # type: ignore[assignment]  # Hypercorn types it int | None
        config.ssl_handshake_timeout = limits.idle_timeout  # Hypercorn's default is 60 s: a silent TLS client is idle
        config.h11_max_incomplete_size = limits.header_bytes
        config.h2_max_header_list_size = limits.header_bytes
        config.graceful_timeout = limits.graceful_timeout
        config.keep_alive_max_requests = limits.max_requests_per_connection
        config.include_server_header = False  # the apps say "tokentrail", without versions
        config.accesslog = None
        config.errorlog = log
        if self._tls is not None:
            cert, key = self._tls
            config.certfile, config.keyfile = str(cert), str(key)
            config.create_ssl_context()  # a bad certificate or key fails start(), not the first client
        return config

    def start(self) -> int:
        """Binds and serves; returns the bound port. Raises ``ListenError`` (an ``OSError``) naming the address
        when it cannot listen there."""
        if self._thread is not None:
            raise RuntimeError(f"{self._transport} server already started")
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        try:
            sock = socket.create_server(
                (self._host, self._requested_port), family=family, backlog=socket.SOMAXCONN,
                reuse_port=self._reuse_port,
            )
        except OSError as exc:
            raise listen_error(self._transport, self._host, self._requested_port, exc) from None
        self._port = int(sock.getsockname()[1])
        try:
            config = self._config(sock.fileno())
        except BaseException:
            sock.close()
            raise
        fd = sock.detach()  # Hypercorn owns the descriptor from here and closes it on shutdown
        self._thread = threading.Thread(
            target=self._run, args=(config, fd), name=f"tokentrail-{self._transport.replace(' ', '-')}", daemon=True
        )
        self._thread.start()
        self._ready.wait(10)
        if self._failure is not None:
            raise self._failure
        return self._port

    def _run(self, config: Config, fd: int) -> None:
        try:
            asyncio.run(self._serve(config))
        except BaseException as exc:  # noqa: BLE001 - reported to start(), or logged if it comes later
            if not self._ready.is_set():
                self._failure = exc
                socket.socket(fileno=fd).close()
            else:
                log.exception("%s server stopped on an error", self._transport)
        finally:
            self._ready.set()

    async def _serve(self, config: Config) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await serve(self._app, config, shutdown_trigger=self._stop.wait, mode="asgi")  # type: ignore[arg-type]

    def stop(self) -> None:
        """Stops accepting, lets requests in flight finish (``graceful_timeout``), closes the socket. Idempotent."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop closed meanwhile
                pass
        thread.join(self._limits.graceful_timeout + 5)
        self._thread = self._loop = self._stop = None
        self._ready.clear()
