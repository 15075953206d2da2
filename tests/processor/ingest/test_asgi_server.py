"""The HTTP server every HTTP surface runs on: a real Hypercorn on loopback, driven with raw sockets where a client
misbehaves (idle, slow headers, slow or oversized body) and with urllib where it does not."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokentrail.processor.ingest.asgi_server import (
    AsgiServer,
    BodyTooLarge,
    BodyTooSlow,
    HttpLimits,
    Receive,
    Scope,
    Send,
    read_body,
)
from tokentrail.processor.ingest.listen import ListenError

LIMITS = HttpLimits(idle_timeout=1.0, body_timeout=0.5, graceful_timeout=1.0)


async def _echo_length(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the body's length, or the reason it was refused."""
    if scope["type"] != "http":
        return
    status, text = 200, ""
    try:
        body = await read_body(receive, 1000, LIMITS.body_timeout)
        text = str(len(body))
    except BodyTooLarge:
        status, text = 413, "too large"
    except BodyTooSlow:
        status, text = 408, "too slow"
    data = text.encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"%d" % len(data))]})
    await send({"type": "http.response.body", "body": data})


@pytest.fixture
def server() -> Iterator[AsgiServer]:
    srv = AsgiServer(_echo_length, transport="OTLP/HTTP", host="127.0.0.1", port=0, limits=LIMITS)
    srv.start()
    yield srv
    srv.stop()


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _post(port: int, body: bytes, headers: str = "") -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_port_zero_is_a_real_port_that_answers(server: AsgiServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert _post(server.port, b"x" * 10) == (200, b"10")


def test_a_port_in_use_is_one_line_naming_it(server: AsgiServer) -> None:
    other = AsgiServer(_echo_length, transport="the report API", host="127.0.0.1", port=server.port)
    with pytest.raises(ListenError, match=rf"port {server.port} is already in use.*--api-port"):
        other.start()


def test_a_connection_that_never_sends_is_closed_after_the_idle_timeout(server: AsgiServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as idle:
        assert _closed_within(idle, LIMITS.idle_timeout + 3)


def test_an_http2_preface_then_silence_is_closed_after_the_read_timeout() -> None:
    """Hypercorn's idle timer stops at a plaintext HTTP/2 preface and never restarts: ``read_timeout`` closes it."""
    limits = HttpLimits(idle_timeout=0.5, read_timeout=1.5)
    srv = AsgiServer(_echo_length, transport="OTLP/HTTP", host="127.0.0.1", port=0, limits=limits)
    srv.start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            started = time.monotonic()
            assert _closed_within(sock, 10)
            assert time.monotonic() - started >= 1.0  # by the read timeout, not the idle one
    finally:
        srv.stop()


async def _slow_answer(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await asyncio.sleep(1.5)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_an_answer_slower_than_the_idle_timeout_but_within_the_read_timeout_arrives() -> None:
    """The client is silent while it waits: only ``read_timeout`` runs then, and it must outlast the answer."""
    limits = HttpLimits(idle_timeout=0.5, read_timeout=5.0)
    srv = AsgiServer(_slow_answer, transport="the report API", host="127.0.0.1", port=0, limits=limits)
    srv.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/", timeout=10) as response:
            assert response.read() == b"ok"
    finally:
        srv.stop()


def test_request_headers_trickled_slowly_are_cut_off(server: AsgiServer) -> None:
    """Slowloris: a byte every 0.3 s keeps any per-read timeout happy; the idle deadline still ends it."""
    with socket.create_connection(("127.0.0.1", server.port)) as slow:
        slow.sendall(b"POST / HTTP/1.1\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < LIMITS.idle_timeout + 5:
            try:
                slow.sendall(b"X")
            except OSError:
                closed = True
                break
            time.sleep(0.3)
        assert closed or _closed_within(slow, 1)


def test_a_body_past_the_limit_is_refused_while_read(server: AsgiServer) -> None:
    assert _post(server.port, b"x" * 1001) == (413, b"too large")


def test_a_chunked_body_past_the_limit_is_refused_too(server: AsgiServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            client.sendall(b"200\r\n" + b"x" * 0x200 + b"\r\n")
        client.sendall(b"0\r\n\r\n")
        client.settimeout(5)
        assert client.recv(4096).startswith(b"HTTP/1.1 413")


def test_a_body_that_stops_arriving_is_408_not_a_held_connection(server: AsgiServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nabc")
        client.settimeout(5)
        assert client.recv(4096).startswith(b"HTTP/1.1 408")


def test_idle_connections_hold_no_thread_and_do_not_block_others(server: AsgiServer) -> None:
    before = threading.active_count()
    sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(200)]
    try:
        assert _post(server.port, b"abc") == (200, b"3")
        assert threading.active_count() <= before + 2
    finally:
        for sock in sockets:
            sock.close()


def test_stop_closes_the_port_and_is_idempotent(server: AsgiServer) -> None:
    port = server.port
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_bad_certificate_fails_start_not_the_first_client(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    srv = AsgiServer(_echo_length, transport="OTLP/HTTP", host="127.0.0.1", port=0, tls_cert=cert, tls_key=key)
    with pytest.raises(OSError):  # ssl.SSLError
        srv.start()


def test_ipv6_loopback_is_served() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    srv = AsgiServer(_echo_length, transport="OTLP/HTTP", host="::1", port=0, limits=LIMITS)
    try:
        srv.start()
    except ListenError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert srv.url == f"http://[::1]:{srv.port}"
        with urllib.request.urlopen(urllib.request.Request(srv.url, data=b"ab"), timeout=5) as response:
            assert response.read() == b"2"
    finally:
        srv.stop()
