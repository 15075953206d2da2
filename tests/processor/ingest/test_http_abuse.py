"""OTLP/HTTP against clients that abuse the connection (security review findings 3, 4 and 11), on a real
``HttpReceiver`` over loopback sockets, in front of a real receiver's pipeline and WAL.

What each test pins: an unauthenticated or over-limit body is refused before it is read (the answer arrives while the
client still has megabytes to send), a full receiver answers 503 + ``Retry-After`` without reading the body, a body
that stops arriving is 408, idle connections cost no thread and are closed, so is a slowloris head, a chunked body is
stored, a body of unknown or inflated size counts against the admission as it grows, and a client gone mid-body is
counted quietly. The standard library server this replaces fails every one of them but the 413 (it did check
``Content-Length`` before reading)."""

from __future__ import annotations

import gzip
import http.client
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.rpc import status_pb2  # type: ignore[import-untyped]  # googleapis-common-protos ships no stubs
from tokentrail.processor.ingest.admission import Admission
from tokentrail.processor.ingest.asgi_server import DEFAULT_LIMITS, HttpLimits
from tokentrail.processor.ingest.http import HttpReceiver
from tokentrail.processor.ingest.receiver import Receiver

from tests.helpers.otlp import make_request, random_span
from tests.helpers.receiver import read_usage
from tests.processor.ingest.test_http import certificate  # noqa: F401 - the self-signed certificate fixture

TOKEN = "abuse-test-token"
PROTOBUF = "application/x-protobuf"
SHORT = HttpLimits(body_timeout=0.5, idle_timeout=1)
BIG = 50_000_000  # announced, never sent


class Served:
    """A receiver (pipeline, WAL, metrics) with the ``HttpReceiver`` under test in front of it."""

    def __init__(self, receiver: Receiver, http: HttpReceiver, token: str | None) -> None:
        self.receiver, self.http, self.token = receiver, http, token

    @property
    def counters(self) -> dict[str, int]:
        return self.receiver.metrics.counters()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.http.port), timeout=10)

    def head(self, length: int | None, *, token: str | None = None, chunked: bool = False, extra: str = "") -> bytes:
        lines = ["POST /v1/traces HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {PROTOBUF}"]
        lines += [f"Content-Length: {length}"] if length is not None else []
        lines += ["Transfer-Encoding: chunked"] if chunked else []
        lines += [f"Authorization: Bearer {token}"] if token is not None else []
        return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()

    def post(self, body: bytes, extra: str = "") -> tuple[int, dict[str, str], bytes]:
        with self.connect() as sock:
            sock.sendall(self.head(len(body), token=self.token, extra=extra) + body)
            return answer(sock)


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The response on ``sock`` (whatever the client has or has not sent of its body)."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes (or resets) ``sock`` within ``within`` seconds; what it sends first is skipped."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if readable:
            try:
                if sock.recv(65536) == b"":
                    return True
            except OSError:
                return True
    return False


def wait_for(condition: Callable[[], bool], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Starts an ``HttpReceiver`` with the given admission, limits and token on a real receiver's pipeline. The
    receiver is built without HTTP, so this test chooses the listener's admission and limits itself."""
    with ExitStack() as stack:

        def start(
            *, token: str | None = None, admission: Admission | None = None, limits: HttpLimits = DEFAULT_LIMITS
        ) -> Served:
            receiver = Receiver(tmp_path, grpc_port=0, flush_interval=3600, ingest_token=token)
            stack.enter_context(receiver)
            http_receiver = HttpReceiver(
                receiver._pipeline,  # the real pipeline, WAL and metrics of a started receiver
                receiver.metrics,
                token=token,
                port=0,
                admission=admission,
                limits=limits,
            ).start()
            stack.callback(http_receiver.stop)
            return Served(receiver, http_receiver, token)

        yield start


def spans_body(count: int = 1) -> bytes:
    return make_request([random_span() for _ in range(count)]).SerializeToString()


# -- refused before the body is read -------------------------------------------------------------------------------


def test_an_unauthenticated_50_mb_post_is_401_before_its_body_is_sent(serve: Callable[..., Served]) -> None:
    """The answer comes while 50 MB are still to be sent: the body was never waited for, so never held (the old
    server read all of it first, then refused it). The connection is closed after the answer."""
    served = serve(token=TOKEN)
    with served.connect() as sock:
        sock.sendall(served.head(BIG, token="wrong") + b"\x00" * 4096)
        status, headers, body = answer(sock)
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert headers["connection"] == "close"
        assert status_pb2.Status.FromString(body).code == 16  # UNAUTHENTICATED
        assert closed_by_server(sock, 10)
    assert served.counters["requests_unauthenticated"] == 1
    assert served.receiver.stats["received"] == 0


def test_a_content_length_over_the_limit_is_413_before_its_body_is_sent(serve: Callable[..., Served]) -> None:
    served = serve(token=TOKEN)
    with served.connect() as sock:
        sock.sendall(served.head(BIG * 2, token=TOKEN) + b"\x00" * 4096)  # 100 MB > the 64 MiB default
        status, headers, body = answer(sock)
        assert status == 413 and headers["connection"] == "close"
        assert b"exceeds the limit" in body
        assert closed_by_server(sock, 10)
    assert served.counters["requests_too_large"] == 1


def test_a_full_receiver_answers_503_with_retry_after_without_reading_the_body(serve: Callable[..., Served]) -> None:
    admission = Admission(max_exports=1)
    served = serve(admission=admission)
    held = admission.admit()  # another export (gRPC, another HTTP client) holds the only place
    assert held is not None
    with served.connect() as sock:
        sock.sendall(served.head(1_000_000) + b"\x00" * 4096)
        status, headers, body = answer(sock)
    assert status == 503 and headers["retry-after"] == "1"
    assert headers["connection"] == "close"
    assert status_pb2.Status.FromString(body).code == 14  # UNAVAILABLE: every OTLP exporter retries it
    assert served.counters["requests_busy"] == 1
    held.release()
    assert served.post(spans_body())[0] == 200  # the place is free again: admitted, stored, released
    assert wait_for(lambda: admission.in_flight == (0, 0))  # released once the answer is sent
    assert served.receiver.stats["accepted"] == 1


# -- slow and idle clients -----------------------------------------------------------------------------------------


def test_a_body_that_stops_arriving_is_408(serve: Callable[..., Served]) -> None:
    served = serve(limits=SHORT)
    with served.connect() as sock:
        sock.sendall(served.head(1000) + b"\x00" * 10)  # and nothing more
        status, headers, body = answer(sock)
        assert status == 408 and headers["connection"] == "close"
        assert b"did not arrive" in body
        assert closed_by_server(sock, 10)
    assert served.counters["requests_timed_out"] == 1
    assert wait_for(lambda: served.http.admission.in_flight == (0, 0))  # given back once the answer is sent


def test_idle_connections_hold_no_thread_and_are_closed(serve: Callable[..., Served]) -> None:
    served = serve(limits=SHORT)
    assert served.post(spans_body())[0] == 200  # the export pool's first thread exists before counting
    threads = threading.active_count()
    with ExitStack() as stack:
        idle = [stack.enter_context(served.connect()) for _ in range(200)]
        # Served after the 200 were accepted (one listening socket, accepted in order): they are all open now.
        assert served.post(spans_body())[0] == 200
        assert threading.active_count() - threads <= 5  # the old server: one thread per connection, 200 more
        deadline = time.monotonic() + 15
        still_open = [sock for sock in idle if not closed_by_server(sock, max(0.0, deadline - time.monotonic()))]
        assert still_open == []  # closed by the server after idle_timeout (1 s here), none left to hold
    assert served.receiver.stats["accepted"] == 2


def test_a_slowloris_head_is_closed_after_the_idle_timeout(serve: Callable[..., Served]) -> None:
    """A request head trickled a byte at a time never completes, so the connection counts as idle all along."""
    served = serve(limits=SHORT)
    with served.connect() as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        deadline = time.monotonic() + 15
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"a")
            except OSError:
                closed = True
                break
            closed = closed_by_server(sock, 0.1)
        assert closed, "a trickled head kept its connection open"
    assert served.post(spans_body())[0] == 200


# -- bodies of unknown or growing size -----------------------------------------------------------------------------


def test_a_chunked_post_from_a_real_client_is_stored(serve: Callable[..., Served], tmp_path: Path) -> None:
    """The old server refused Transfer-Encoding (400); h11 frames chunked bodies, so they are read like any other."""
    served = serve()
    payload = spans_body(3)
    connection = http.client.HTTPConnection("127.0.0.1", served.http.port, timeout=10)
    try:
        chunks = iter([payload[:50], payload[50:]])
        connection.request("POST", "/v1/traces", body=chunks, headers={"Content-Type": PROTOBUF}, encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        response.read()
    finally:
        connection.close()
    served.receiver.flush()
    assert len(read_usage(tmp_path)) == 3


def test_a_chunked_body_grows_its_admission_and_is_refused_when_it_no_longer_fits(
    serve: Callable[..., Served],
) -> None:
    admission = Admission(max_exports=4, max_bytes=10_000)
    served = serve(admission=admission)
    held = admission.admit(8_000)
    assert held is not None
    with served.connect() as sock:
        sock.sendall(served.head(None, chunked=True) + b"1000\r\n" + b"\x00" * 4096 + b"\r\n")  # and no end
        status, headers, _ = answer(sock)
    assert status == 503 and headers["retry-after"] == "1"
    assert served.counters["requests_busy"] == 1
    assert wait_for(lambda: admission.in_flight == (1, 8_000))  # only the held export's share is left


def test_a_gzip_body_counts_what_it_inflates_to(serve: Callable[..., Served], tmp_path: Path) -> None:
    raw = spans_body(400)
    compressed = gzip.compress(raw)
    assert len(compressed) * 2 < len(raw)
    # Room for the compressed body beside the held export, not for what it inflates to.
    admission = Admission(max_exports=4, max_bytes=1_000 + len(compressed) + len(raw) // 2)
    served = serve(admission=admission)
    held = admission.admit(1_000)
    assert held is not None
    status, headers, _ = served.post(compressed, extra="Content-Encoding: gzip\r\n")
    assert status == 503 and headers["retry-after"] == "1"
    assert served.counters["requests_busy"] == 1
    held.release()
    assert served.post(compressed, extra="Content-Encoding: gzip\r\n")[0] == 200  # alone, it always gets in
    assert wait_for(lambda: admission.in_flight == (0, 0))
    served.receiver.flush()
    assert len(read_usage(tmp_path)) == 400


def test_http2_refusals_before_the_body_leave_the_connection_usable(
    tmp_path: Path, certificate: tuple[Path, Path]  # noqa: F811 - the fixture imported above
) -> None:
    """Over TLS a client may speak HTTP/2 (ALPN), as the Collector's Go exporter does. A 401 answered while the body
    is still coming must not cost the connection: Hypercorn 0.18 drops the whole connection on DATA for a stream it
    has finished answering, so the answer ends only once the client's body has."""
    cert, key = certificate
    body = spans_body()

    def slowly() -> Iterator[bytes]:
        for start in range(0, len(body), 100):
            time.sleep(0.05)  # DATA frames arrive after the headers were refused
            yield body[start : start + 100]

    with Receiver(tmp_path, grpc_port=0, flush_interval=3600, ingest_token=TOKEN) as receiver:
        http_receiver = HttpReceiver(
            receiver._pipeline, receiver.metrics, token=TOKEN, port=0, tls_cert=cert, tls_key=key
        ).start()
        try:
            with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=str(cert)), timeout=10) as client:
                url = f"https://127.0.0.1:{http_receiver.port}/v1/traces"
                refused = client.post(url, content=slowly(), headers={"Content-Type": PROTOBUF})
                accepted = client.post(
                    url, content=slowly(), headers={"Content-Type": PROTOBUF, "Authorization": f"Bearer {TOKEN}"}
                )
        finally:
            http_receiver.stop()
        assert (refused.http_version, refused.status_code) == ("HTTP/2", 401)
        assert accepted.status_code == 200  # on the same connection, which survived the refusal
        assert receiver.metrics.counters()["requests_unauthenticated"] == 1
        assert receiver.stats["accepted"] == 1


def test_a_gzip_bomb_is_400_and_inflates_no_further_than_the_limit(tmp_path: Path) -> None:
    with Receiver(tmp_path, grpc_port=0, flush_interval=3600) as receiver:
        http_receiver = HttpReceiver(receiver._pipeline, receiver.metrics, port=0, max_body_bytes=20_000).start()
        try:
            served = Served(receiver, http_receiver, None)
            status, _, body = served.post(gzip.compress(b"\x00" * 10_000_000), extra="Content-Encoding: gzip\r\n")
        finally:
            http_receiver.stop()
    assert status == 400 and b"exceeds the limit of 20000 bytes" in body  # 10 MB of zeros in 9.7 kB
    assert served.counters["requests_invalid"] == 1


# -- clients that go away ------------------------------------------------------------------------------------------


def test_a_client_gone_mid_body_is_counted_quietly(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    served = serve()
    with caplog.at_level(logging.DEBUG):
        with served.connect() as sock:
            sock.sendall(served.head(10_000) + b"\x00" * 100)
        assert wait_for(lambda: served.counters["connections_dropped"] == 1)
        assert wait_for(lambda: served.http.admission.in_flight == (0, 0))
    noisy: list[Any] = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert noisy == []
    assert served.counters["requests_invalid"] == 0  # the old server parsed the truncated body: a 400


def test_a_client_gone_before_its_answer_is_counted_and_its_records_kept(serve: Callable[..., Served]) -> None:
    served = serve()
    exporting, release = threading.Event(), threading.Event()

    def slow_listener(records: Any) -> None:  # runs on the export's thread after the fsync, before the answer
        exporting.set()
        release.wait(10)

    served.receiver.add_listener(slow_listener)
    body = spans_body()
    with served.connect() as sock:
        sock.sendall(served.head(len(body)) + body)
        assert exporting.wait(10)
    time.sleep(1)  # for the event loop to see the connection close (a liveness margin, not a measured time)
    release.set()
    assert wait_for(lambda: served.counters["connections_dropped"] == 1)
    assert served.receiver.stats["accepted"] == 1
    assert wait_for(lambda: served.http.admission.in_flight == (0, 0))
