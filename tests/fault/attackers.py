"""Abusive clients, on raw sockets (an HTTP library would be too polite): idle connections, headers a byte at a time
(slowloris), bodies a trickle at a time, bodies far bigger than allowed or sent without credentials, and bytes that
are no protocol at all; for gRPC, an HTTP/2 client (``h2``) that starts an Export and sends its message slowly.

Each returns what the server did (a status line, or that it closed the connection), never raises for the server's
refusal, and bounds its own waiting (``timeout``), so a server that hangs fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions

__all__ = [
    "BigBody",
    "GRPC_EXPORT",
    "H2_PREFACE",
    "big_bodies",
    "closed_within",
    "connect",
    "grpc_big_messages",
    "idle_sockets",
    "read_status",
    "request_head",
    "slow_body",
    "slow_grpc_message",
    "slowloris",
]

GRPC_EXPORT: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # how an HTTP/2 client with prior knowledge begins
CHUNK: Final = 1 << 20


def _ready(sock: socket.socket, timeout: float, write: bool = False) -> tuple[bool, bool]:
    """(readable, writable) within ``timeout`` s, by ``poll`` (``select`` fails on descriptors past 1023, and a
    thousand idle sockets take those)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | (select.POLLOUT if write else 0))
    events = poller.poll(max(0, int(timeout * 1000)))
    mask = events[0][1] if events else 0
    return bool(mask & (select.POLLIN | select.POLLHUP | select.POLLERR)), bool(mask & select.POLLOUT)


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request_head(method: str, path: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_status(sock: socket.socket, timeout: float = 10.0) -> int | None:
    """The status code of the response on ``sock``, or None when the server closed (or reset) it first. Raises
    ``TimeoutError`` when it does neither within ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        return None if not data else _status(data)
    return _status(data)


def _status(data: bytes) -> int | None:
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else None


def closed_within(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` (whatever it says first is read and dropped)."""
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            ready, _ = _ready(sock, left)
            if ready and not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    return False


@contextlib.contextmanager
def idle_sockets(port: int, n: int) -> Iterator[list[socket.socket]]:
    """``n`` connections that never send a byte, open for the block."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            socks.append(connect(port))
        yield socks
    finally:
        for s in socks:
            s.close()


def slowloris(port: int, n: int, interval: float, duration: float, idle_timeout: float) -> list[float | None]:
    """``n`` connections each sending a request head one byte every ``interval`` s (never finishing it) for up to
    ``duration`` s. Returns, per connection, the seconds until the server closed it (None: still open at the end)."""
    head = request_head("POST", "/v1/traces", port, {"Content-Type": "application/x-protobuf", "X-Pad": "a" * 4000})

    def one() -> float | None:
        sock = connect(port)
        t0 = time.monotonic()
        try:
            for byte in head:
                if time.monotonic() - t0 > duration:
                    return None
                try:
                    sock.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    return time.monotonic() - t0
                if closed_within(sock, interval):
                    return time.monotonic() - t0
            return None
        finally:
            sock.close()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: one(), range(n)))


@dataclass(frozen=True)
class BigBody:
    status: int | None  # None: closed without an answer
    sent: int  # body bytes the server let us send before answering / closing


def big_bodies(
    port: int, n: int, size: int, method: str, path: str, headers: dict[str, str], timeout: float = 30.0
) -> list[BigBody]:
    """``n`` concurrent requests announcing a ``size``-byte body and pushing it as fast as the server reads, while
    watching for its answer (a server that answers before reading stops the push)."""
    chunk = bytes(CHUNK)

    def one() -> BigBody:
        sock = connect(port, timeout)
        sent = 0
        status: int | None = None
        try:
            sock.sendall(request_head(method, path, port, {**headers, "Content-Length": str(size)}))
            sock.setblocking(False)
            deadline = time.monotonic() + timeout
            while sent < size and time.monotonic() < deadline:
                readable, writable = _ready(sock, 1.0, write=True)
                if readable:
                    break  # an answer (or a close) came before the whole body
                if writable:
                    try:
                        sent += sock.send(chunk[: min(CHUNK, size - sent)])
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, ConnectionResetError):
                        break
            sock.setblocking(True)
            try:
                status = read_status(sock, max(1.0, deadline - time.monotonic()))
            except TimeoutError:
                status = None
            return BigBody(status, sent)
        finally:
            sock.close()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: one(), range(n)))


def grpc_big_messages(
    port: int, n: int, size: int, token: str | None, timeout: float = 60.0
) -> list[grpc.StatusCode]:
    """``n`` concurrent Exports of ``size`` bytes each (not a valid request: what it costs to read them is the
    point), each on a connection of its own. Returns each call's status code."""
    payload = b"\x0a" + bytes(size - 1)
    metadata = (("authorization", f"Bearer {token}"),) if token else None

    def one() -> grpc.StatusCode:
        with grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[("grpc.max_send_message_length", -1), ("grpc.use_local_subchannel_pool", 1)],
        ) as channel:
            call = channel.unary_unary(GRPC_EXPORT, request_serializer=None, response_deserializer=None)
            try:
                call(payload, timeout=timeout, metadata=metadata)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: one(), range(n)))


def slow_body(
    port: int, path: str, headers: dict[str, str], size: int, rate: float, duration: float
) -> str:
    """One request whose ``size``-byte body arrives at ``rate`` bytes/s, for at most ``duration`` s. Returns how it
    ended: ``"status N"`` (the server answered), ``"closed"``, or ``"still sending"``."""
    sock = connect(port)
    try:
        sock.sendall(request_head("POST", path, port, {**headers, "Content-Length": str(size)}))
        t0 = time.monotonic()
        sent = 0
        step = max(1, int(rate / 10))
        while time.monotonic() - t0 < duration:
            ready, _ = _ready(sock, 0.1)
            if ready:
                status = read_status(sock)
                return "closed" if status is None else f"status {status}"
            if sent < size:
                try:
                    sock.sendall(bytes(min(step, size - sent)))
                except (BrokenPipeError, ConnectionResetError):
                    return "closed"
                sent += step
        return "still sending"
    finally:
        sock.close()


def slow_grpc_message(
    port: int, token: str | None, size: int, rate: float, duration: float, started: threading.Event | None = None
) -> str:
    """One gRPC Export over a raw HTTP/2 connection whose ``size``-byte message arrives at ``rate`` bytes/s, for at
    most ``duration`` s. Returns how it ended: ``"grpc-status N"`` (the server answered), ``"reset"`` (stream or
    connection reset), ``"closed"``, or ``"still sending"``."""
    sock = connect(port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", GRPC_EXPORT),
        (":authority", f"127.0.0.1:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    if token:
        headers.append(("authorization", f"Bearer {token}"))
    conn.send_headers(1, headers)
    sock.sendall(conn.data_to_send())
    message = b"\x00" + size.to_bytes(4, "big") + bytes(size)
    if started is not None:
        started.set()
    t0 = time.monotonic()
    sent = 0
    step = max(1, int(rate / 10))
    try:
        while time.monotonic() - t0 < duration:
            if sent < len(message):
                conn.send_data(1, message[sent : sent + step])
                sent += step
                sock.sendall(conn.data_to_send())
            ready, _ = _ready(sock, 0.1)
            if ready:
                data = sock.recv(65536)
                if not data:
                    return "closed"
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived):
                        for name, value in event.headers:
                            if name in (b"grpc-status", "grpc-status"):
                                return f"grpc-status {value.decode() if isinstance(value, bytes) else value}"
                    if isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                        return "reset"
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
        return "still sending"
    except (ConnectionResetError, BrokenPipeError, h2.exceptions.ProtocolError):
        return "reset"
    finally:
        sock.close()
