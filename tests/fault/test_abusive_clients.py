"""Abusive clients on every port (OTLP/gRPC, OTLP/HTTP, the report API): bodies bigger than allowed, big bodies
without credentials, bodies and headers sent a trickle at a time, hundreds of idle connections, bytes that are no
protocol. After each attack the receiver is alive and answering on every port (``health.assert_answering``), its
threads stayed within what its configuration allows (``health.thread_bound``), its peak RSS rose by no more than the
bound each test states from its limits, and everything it acknowledged meanwhile is stored exactly once.

The receiver runs with small limits so an attack is cheap to mount and its bound tight: an ingest token and an API
token, 16 MiB messages, 4 exports or 32 MiB in flight, connections idle for 1 s (or silent for 5 s) closed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
import pytest

from tests.fault import attackers
from tests.fault.collector import Ledger
from tests.fault.health import MiB, Watch, assert_answering, thread_bound, warm_up
from tests.fault.oracle import assert_exactly_once
from tests.fault.serve import ProcStats, Serve
from tests.fault.sizes import Size
from tests.helpers.otlp import export_raw

TOKEN: Final = "fault-ingest-token"
API_TOKEN: Final = "fault-api-token"
MAX_EXPORTS: Final = 4
MAX_INFLIGHT: Final = 32 * MiB
MAX_MESSAGE: Final = 16 * MiB
IDLE_TIMEOUT: Final = 1.0
READ_TIMEOUT: Final = 5.0
"""Closes what the idle timer misses: Hypercorn's stops for good at a plaintext HTTP/2 preface (``PRI *``)."""
BUFFERS: Final = 32 * MiB
"""What an attack may cost that is no body read: socket and HTTP/2 flow-control buffers, the interpreter's arenas
and a query's DuckDB memory. A body read when it should not be costs its whole size (each attack's bodies total
hundreds of MiB)."""
PER_CONNECTION: Final = 32 * 1024
"""What an open connection may cost on the event loop: its transport and protocol objects, h11's buffers, a task
(measured: about 14 KiB); a thread each would cost its stack."""
PROTOBUF: Final = {"Content-Type": "application/x-protobuf"}
AUTH: Final = {"Authorization": f"Bearer {TOKEN}"}
REPORT: Final = "/v1/report?start_date=2025-06-01&end_date=2025-06-01"


@dataclass
class Target:
    serve: Serve
    ledger: Ledger
    baseline: ProcStats

    def watch(self) -> Watch:
        return Watch(self.serve)

    def assert_well(self, watch: Watch, memory: int) -> None:
        """Answering on every port, threads within bounds, peak RSS up by at most ``memory`` bytes."""
        assert_answering(self.serve, self.ledger, TOKEN, API_TOKEN)
        bound = thread_bound(self.baseline, MAX_EXPORTS)
        assert watch.peak_threads <= bound, f"{watch.summary()}; bound {bound}"
        assert watch.hwm_growth <= memory, f"{watch.summary()}; bound +{memory / MiB:.0f} MiB"
        print(watch.summary())

    def finish(self) -> None:
        assert self.serve.terminate() == 0
        assert_exactly_once(self.serve.data_dir, self.ledger)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    serve = Serve(
        tmp_path,
        "--api-token", API_TOKEN,
        "--max-message-bytes", str(MAX_MESSAGE),
        "--max-concurrent-exports", str(MAX_EXPORTS),
        "--max-inflight-bytes", str(MAX_INFLIGHT),
        "--http-idle-timeout", str(IDLE_TIMEOUT),
        "--http-read-timeout", str(READ_TIMEOUT),
        "--flush-interval", "0.1",
        token=TOKEN,
    ).start()
    ledger = Ledger()
    yield Target(serve, ledger, warm_up(serve, ledger, TOKEN, API_TOKEN))


# -- big bodies -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["otlp_http", "report_api", "grpc"])
def test_big_bodies_without_credentials_are_refused_unread(port: str, target: Target) -> None:
    """16 clients at once, each with a body just inside the size limit and no token: refused (401 /
    UNAUTHENTICATED) from the headers alone, so the 16 bodies (192-512 MiB) never enter memory."""
    ports = target.serve.ports
    with target.watch() as watch:
        if port == "grpc":
            codes = attackers.grpc_big_messages(ports.grpc, 16, 12 * MiB, token=None)
            assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED}
        else:
            where = (ports.http, "POST", "/v1/traces", PROTOBUF) if port == "otlp_http" else (ports.api, "GET", REPORT, {})
            answers = attackers.big_bodies(where[0], 16, 32 * MiB, where[1], where[2], where[3])
            assert {a.status for a in answers} == {401}, answers
            assert all(a.sent < 32 * MiB for a in answers), "a body was read to its end before the refusal"
    target.assert_well(watch, BUFFERS)
    target.finish()


@pytest.mark.parametrize("port", ["otlp_http", "grpc"])
def test_exports_over_the_size_limit_are_refused_before_they_are_read(port: str, target: Target) -> None:
    """8 authenticated exports of 48 MiB (3x the limit): 413 / RESOURCE_EXHAUSTED, read no further than the length
    that announces them."""
    ports = target.serve.ports
    with target.watch() as watch:
        if port == "grpc":
            codes = attackers.grpc_big_messages(ports.grpc, 8, 3 * MAX_MESSAGE, token=TOKEN)
            assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        else:
            answers = attackers.big_bodies(ports.http, 8, 3 * MAX_MESSAGE, "POST", "/v1/traces", {**PROTOBUF, **AUTH})
            assert {a.status for a in answers} == {413}, answers
    target.assert_well(watch, BUFFERS)
    target.finish()


@pytest.mark.parametrize("port", ["otlp_http", "grpc"])
def test_big_authenticated_exports_are_held_to_the_admission_bounds(port: str, target: Target) -> None:
    """16 authenticated 12 MiB exports at once (not valid OTLP: the cost of reading them is the point). OTLP/HTTP
    admits bodies by their Content-Length up to 32 MiB in flight (one alone always): the rest are 503 unread. gRPC
    learns a message's size only by reading it, so each export reserves the message limit (16 MiB) before its
    message is read: two are admitted, the other 14 are UNAVAILABLE unread (counted after reading instead, all
    ``MAX_EXPORTS`` were admitted). The gRPC calls all open first and send their messages together once each is
    admitted or refused, so the admitted ones read at once: the worst case. A body read costs about three times its
    size (HTTP: its chunks, joined, parsed; gRPC: its core's buffer, Python's bytes, and the flow-control windows of
    the calls refused meanwhile), far below all 16 read at once (576 MiB)."""

    ports = target.serve.ports
    size = 12 * MiB
    payload = b"\x0a" + bytes(size - 1)
    together = threading.Event()
    decided = threading.Semaphore(0)

    def held() -> Iterator[bytes]:
        together.wait(60)
        yield payload

    admitted = max(1, MAX_INFLIGHT // MAX_MESSAGE)  # reservations of the message limit that fit: messages read at once
    with target.watch() as watch:
        if port == "grpc":
            options = [("grpc.max_send_message_length", -1), ("grpc.use_local_subchannel_pool", 1)]
            channels = [grpc.insecure_channel(f"127.0.0.1:{ports.grpc}", options=options) for _ in range(16)]
            try:
                calls = [
                    channel.stream_unary(attackers.GRPC_EXPORT, request_serializer=None, response_deserializer=None)
                    .future(held(), timeout=60, metadata=(("authorization", f"Bearer {TOKEN}"),))
                    for channel in channels
                ]
                for call in calls:
                    call.add_done_callback(lambda _: decided.release())
                for refused in range(16 - admitted):  # answered before any message was sent: refused unread
                    assert decided.acquire(timeout=30), f"{16 - refused} exports admitted at once, not {admitted}"
                together.set()
                codes: list[grpc.StatusCode] = []
                for call in calls:
                    try:
                        call.result(timeout=60)
                    except grpc.RpcError as error:
                        codes.append(error.code())
            finally:
                together.set()
                for channel in channels:
                    channel.close()
            assert codes.count(grpc.StatusCode.UNAVAILABLE) == 16 - admitted, codes
            assert codes.count(grpc.StatusCode.INVALID_ARGUMENT) == admitted, codes  # read, and not OTLP
            bound = 3 * admitted * size
        else:
            answers = attackers.big_bodies(ports.http, 16, size, "POST", "/v1/traces", {**PROTOBUF, **AUTH})
            assert {a.status for a in answers} <= {400, 503}, answers
            bound = 3 * max(MAX_INFLIGHT, size)
    target.assert_well(watch, bound + BUFFERS)
    target.finish()


# -- slow and idle clients ------------------------------------------------------------------------------------------


def test_idle_connections_on_every_port_hold_no_thread_and_http_closes_them(target: Target, size: Size) -> None:
    """Hundreds of connections on each port that never send a byte, and on each HTTP port some that send only the
    HTTP/2 preface (prior knowledge) and then nothing: no thread each, the receiver answers meanwhile, and both
    HTTP surfaces close all of them: the plain ones after the idle timeout, the HTTP/2 ones (which stop Hypercorn's
    idle timer) after the read timeout. (gRPC closes a silent connection at its handshake timeout, the same idle
    timeout, and costs no thread meanwhile.)"""
    ports = target.serve.ports
    with target.watch() as watch:
        with (
            attackers.idle_sockets(ports.http, size.idle_sockets) as http_socks,
            attackers.idle_sockets(ports.api, size.idle_sockets) as api_socks,
            attackers.idle_sockets(ports.http, 20) as http_h2,
            attackers.idle_sockets(ports.api, 20) as api_h2,
            attackers.idle_sockets(ports.grpc, size.idle_sockets),
        ):
            for sock in http_h2 + api_h2:
                sock.sendall(attackers.H2_PREFACE)
            assert_answering(target.serve, target.ledger, TOKEN, API_TOKEN)
            with ThreadPoolExecutor(32) as pool:
                plain = list(pool.map(lambda s: attackers.closed_within(s, IDLE_TIMEOUT + 10), http_socks + api_socks))
                h2 = list(pool.map(lambda s: attackers.closed_within(s, READ_TIMEOUT + 10), http_h2 + api_h2))
            assert all(plain), f"{plain.count(False)} idle HTTP connection(s) still open after {IDLE_TIMEOUT + 10} s"
            assert all(h2), f"{h2.count(False)} idle HTTP/2 connection(s) still open after {READ_TIMEOUT + 10} s"
            assert_answering(target.serve, target.ledger, TOKEN, API_TOKEN)
    target.assert_well(watch, BUFFERS + (3 * size.idle_sockets + 40) * PER_CONNECTION)
    target.finish()


@pytest.mark.parametrize("port", ["otlp_http", "report_api"])
def test_slowloris_heads_are_cut_off_at_the_idle_timeout(port: str, target: Target) -> None:
    """50 clients sending a request head one byte every 0.2 s: each is closed once its head has taken longer than
    the idle timeout, however steadily bytes keep coming, while others are answered."""
    number = target.serve.ports.http if port == "otlp_http" else target.serve.ports.api
    with target.watch() as watch, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(attackers.slowloris, number, 50, 0.2, 15.0, IDLE_TIMEOUT)
        assert_answering(target.serve, target.ledger, TOKEN, API_TOKEN)
        closed_after = slow.result(60)
    assert all(t is not None for t in closed_after), f"{closed_after.count(None)} slow head(s) never cut off"
    assert max(t for t in closed_after if t is not None) < 5 * IDLE_TIMEOUT + 2, closed_after
    target.assert_well(watch, BUFFERS)
    target.finish()


@pytest.mark.parametrize("port", ["otlp_http", "grpc"])
def test_slow_bodies_hold_no_thread_and_unauthenticated_ones_no_slot(port: str, target: Target) -> None:
    """20 unauthenticated clients trickling an export's body are refused at once (their headers are enough), and
    authenticated ones trickling at 1 KiB/s, one fewer than fit, hold an admission slot each but no thread: the
    receiver keeps acknowledging other exports in the slot left. (An HTTP body is admitted by its length, so
    ``MAX_EXPORTS`` fit; a gRPC message is reserved at ``MAX_MESSAGE`` until read, so ``MAX_INFLIGHT // MAX_MESSAGE``.)"""
    ports = target.serve.ports
    duration = 6.0
    slots = (MAX_EXPORTS if port == "otlp_http" else min(MAX_EXPORTS, MAX_INFLIGHT // MAX_MESSAGE)) - 1

    def slow(token: str | None) -> str:
        if port == "grpc":
            return attackers.slow_grpc_message(ports.grpc, token, 1 * MiB, 1024, duration)
        headers = {**PROTOBUF, **({"Authorization": f"Bearer {token}"} if token else {})}
        return attackers.slow_body(ports.http, "/v1/traces", headers, 1 * MiB, 1024, duration)

    with target.watch() as watch, ThreadPoolExecutor(32) as pool:
        authenticated = [pool.submit(slow, TOKEN) for _ in range(slots)]
        unauthenticated = [pool.submit(slow, None) for _ in range(20)]
        refused = {f.result(30) for f in unauthenticated}
        assert refused == ({"grpc-status 16"} if port == "grpc" else {"status 401"}), refused
        assert_answering(target.serve, target.ledger, TOKEN, API_TOKEN)  # while the slow ones still trickle
        assert all(not f.done() for f in authenticated), [f.result() for f in authenticated if f.done()]
        ended = {f.result(60) for f in authenticated}
    assert ended <= {"still sending", "status 408", "grpc-status 4", "grpc-status 1", "reset"}, ended
    target.assert_well(watch, BUFFERS)
    target.finish()


# -- malformed bytes ------------------------------------------------------------------------------------------------

GARBAGE: Final = [
    bytes(range(256)) * 64,  # binary noise
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(500),  # a TLS ClientHello on a plaintext port
    b"\x00" * 4096,
    attackers.H2_PREFACE + b"\xff" * 64,  # the HTTP/2 preface, then no frame at all
    b"GET /" + b"A" * 100_000 + b" HTTP/1.1\r\n\r\n",  # a request line far past the head limit
    b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"b" * 100_000 + b"\r\n\r\n",  # one huge header
    b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
    b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nZZZZ\r\nnot hex\r\n0\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nA header without a colon\r\n\r\n",
    b"\r\n\r\n\r\n\r\n",
    "GET /v1/report?start_date=\u00e9 HTTP/1.1\r\nHost: \u00e9\r\n\r\n".encode(),
]


@pytest.mark.parametrize(
    "port", ["otlp_http", "report_api", "grpc"]
)
def test_malformed_bytes_are_refused_or_dropped_never_hung(port: str, target: Target) -> None:
    """Each garbage gets a 4xx or a closed connection within seconds (never a 5xx, never a hang), three times over
    and all at once; on gRPC, a well-framed Export whose message is not protobuf is INVALID_ARGUMENT."""
    number = {"otlp_http": target.serve.ports.http, "report_api": target.serve.ports.api, "grpc": target.serve.ports.grpc}[port]

    def throw(garbage: bytes) -> int | None:
        sock = attackers.connect(number)
        try:
            try:
                sock.sendall(garbage)
            except (BrokenPipeError, ConnectionResetError):
                return None
            status = attackers.read_status(sock, timeout=READ_TIMEOUT + 10)
            assert attackers.closed_within(sock, READ_TIMEOUT + 10), "an answered garbage connection stayed open"
            return status
        finally:
            sock.close()

    with target.watch() as watch, ThreadPoolExecutor(len(GARBAGE) * 3) as pool:
        statuses = list(pool.map(throw, GARBAGE * 3))
        if port == "grpc":
            with pytest.raises(grpc.RpcError) as info:
                export_raw(number, b"\xff\xfe not a protobuf message")
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # no token: refused before it is read
            metadata = (("authorization", f"Bearer {TOKEN}"),)
            with grpc.insecure_channel(f"127.0.0.1:{number}") as channel:
                call = channel.unary_unary(attackers.GRPC_EXPORT, request_serializer=None, response_deserializer=None)
                with pytest.raises(grpc.RpcError) as info:
                    call(b"\xff\xfe not a protobuf message", timeout=10, metadata=metadata)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert all(s is None or 400 <= s < 500 for s in statuses), statuses
    target.assert_well(watch, BUFFERS)
    target.finish()


def test_every_attack_at_once_on_every_port(target: Target, size: Size) -> None:
    """The attacks together (idle sockets, slow heads, unauthenticated big bodies on all three ports) while exports
    and queries go on: the receiver still answers, its threads within the same bound, and its memory within the
    attacks' buffers added up (twice one attack's, plus the connections'), far below one round of the 24 bodies
    read (384 MiB of them)."""
    ports = target.serve.ports
    with target.watch() as watch, ThreadPoolExecutor(8) as pool:
        with (
            attackers.idle_sockets(ports.http, size.idle_sockets // 2),
            attackers.idle_sockets(ports.api, size.idle_sockets // 2),
            attackers.idle_sockets(ports.grpc, size.idle_sockets // 2),
        ):
            heads = [pool.submit(attackers.slowloris, port, 20, 0.2, 8.0, IDLE_TIMEOUT) for port in (ports.http, ports.api)]
            bodies = [
                pool.submit(attackers.big_bodies, ports.http, 8, 32 * MiB, "POST", "/v1/traces", PROTOBUF),
                pool.submit(attackers.big_bodies, ports.api, 8, 32 * MiB, "GET", REPORT, {}),
            ]
            messages = pool.submit(attackers.grpc_big_messages, ports.grpc, 8, 12 * MiB, None)
            for _ in range(3):
                assert_answering(target.serve, target.ledger, TOKEN, API_TOKEN)
            for head in heads:
                assert None not in head.result(120), "a slow head was never cut off"
            for body in bodies:
                assert {a.status for a in body.result(120)} == {401}
            assert set(messages.result(120)) == {grpc.StatusCode.UNAUTHENTICATED}
    target.assert_well(watch, 2 * BUFFERS + 3 * (size.idle_sockets // 2 + 20) * PER_CONNECTION)
    target.finish()
