"""The report API under floods and hostile clients, over real sockets against a real Parquet dataset: many requests
at once are all answered (200, or 503 with ``Retry-After`` when the query queue is full) on a bounded number of
threads; a full queue refuses at once; idle connections cost no thread and are closed after ``idle_timeout``; a
slowloris client sending its headers a line at a time is closed after it too.

The standard library's threading server (the report API before Hypercorn) fails each: a thread per connection,
no queue bound, and a read timeout renewed by every byte."""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tokentrail.processor.api.http import BUSY_ERROR_TYPE, ReportServer
from tokentrail.processor.ingest.asgi_server import HttpLimits

from tests.helpers.reports import rec_n as rec
from tests.helpers.reports import write_day

REPORT = "/v1/report?start_date=2025-03-01&end_date=2025-03-31&group_by=user"
MAX_CONCURRENT = 4
SPARE_THREADS = 2  # the test's own slack: a thread the interpreter or pytest starts meanwhile
LIVENESS = 60.0  # seconds after which a request not answered is hung (never a speed criterion)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("abuse")
    for day in ("2025-03-05", "2025-03-06"):
        write_day(root, day, [rec(i, f"{day}T08:00:00", user_id=f"user{i % 50:02d}", tags=[f"plan:p{i % 3}"])
                              for i in range(1, 501)])
    return root


@pytest.fixture
def server(data_dir: Path) -> Iterator[ReportServer]:
    with ReportServer(data_dir, port=0, max_concurrent_queries=MAX_CONCURRENT) as srv:
        yield srv


@dataclass
class Exchange:
    """One client of a flood: its request, the bytes it got back, or what went wrong."""

    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    error: str | None = None

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        head, _, body = bytes(self.received).partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (ln.partition(":") for ln in lines)}
        return int(status_line.split()[1]), headers, body


def flood(port: int, clients: int, path: str) -> tuple[list[Exchange], int]:
    """``clients`` requests at once from this one thread (non-blocking sockets: the test adds no thread to the count
    it watches), each read to the end (``Connection: close``). Returns the exchanges and the most threads alive in
    this process while they ran."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    selector = selectors.DefaultSelector()
    exchanges: list[Exchange] = []
    for _ in range(clients):
        sock = socket.socket()
        sock.setblocking(False)
        assert sock.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
        exchange = Exchange(sock)
        selector.register(sock, selectors.EVENT_WRITE, exchange)
        exchanges.append(exchange)
    most_threads = threading.active_count()
    unfinished = clients
    deadline = time.monotonic() + LIVENESS
    try:
        while unfinished:
            assert time.monotonic() < deadline, f"{unfinished} of {clients} requests were never answered"
            for key, events in selector.select(timeout=0.1):
                exchange = key.data
                finished = False
                if events & selectors.EVENT_WRITE:
                    failure = exchange.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if failure:
                        exchange.error, finished = os.strerror(failure), True
                    else:
                        assert exchange.sock.send(request) == len(request)  # a few bytes: the buffer takes them
                        selector.modify(exchange.sock, selectors.EVENT_READ, exchange)
                else:
                    try:
                        chunk = exchange.sock.recv(65536)
                    except OSError as exc:
                        exchange.error, finished = repr(exc), True
                    else:
                        exchange.received += chunk
                        finished = not chunk
                if finished:
                    selector.unregister(exchange.sock)
                    unfinished -= 1
            most_threads = max(most_threads, threading.active_count())
    finally:
        for exchange in exchanges:
            exchange.sock.close()
        selector.close()
    return exchanges, most_threads


def get(server: ReportServer, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=LIVENESS) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def assert_busy(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 503
    assert headers["retry-after"] == "1"
    error = json.loads(body)["error"]
    assert error["type"] == BUSY_ERROR_TYPE and "busy" in error["message"]


def wait_for(condition: object, what: str, timeout: float = LIVENESS) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


# -- (a) a flood is answered, on a bounded number of threads -------------------------------------------------------


def test_300_requests_at_once_are_all_answered_on_a_bounded_number_of_threads(server: ReportServer) -> None:
    assert get(server, "/healthz")[0] == 200
    baseline = threading.active_count()
    exchanges, most_threads = flood(server.port, 300, REPORT)
    assert [e.error for e in exchanges if e.error] == []  # none reset, none refused
    answers = [e.answer() for e in exchanges]
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert 200 in statuses
    for status, headers, body in answers:
        if status == 200:
            assert len(json.loads(body)["results"]) == 50
        else:
            assert_busy(status, headers, body)
    assert most_threads <= baseline + MAX_CONCURRENT + SPARE_THREADS, (baseline, most_threads)
    assert get(server, REPORT)[0] == 200  # and it serves on


# -- (b) a full queue is a 503 at once, with Retry-After -----------------------------------------------------------


def test_a_full_query_queue_answers_503_with_retry_after_at_once(data_dir: Path) -> None:
    """One query thread and one place in the queue. The thread is held by a call of ours (as a slow scan would hold
    it); a first request waits in the queue, a second finds it full and is told to retry; released, the first
    request is answered and the next is served."""
    release = threading.Event()
    with ReportServer(data_dir, port=0, max_concurrent_queries=1, max_queued_queries=1) as srv:
        held = srv.queries.submit(release.wait)
        assert held is not None
        waiting: list[tuple[int, dict[str, str], bytes]] = []
        client = threading.Thread(target=lambda: waiting.append(get(srv, REPORT)))
        try:
            client.start()
            wait_for(lambda: srv.queries.pending == 2, "the first request never reached the queue")
            assert_busy(*get(srv, REPORT))
            assert_busy(*get(srv, "/v1/spikes?window=day"))  # every query endpoint shares the pool
            assert get(srv, "/healthz")[0] == 200  # what needs no query is answered meanwhile
            assert not waiting  # the first is still waiting for the thread
        finally:
            release.set()
            client.join(LIVENESS)
        assert held.result(timeout=LIVENESS) is True
        ((status, _, body),) = waiting
        assert status == 200 and len(json.loads(body)["results"]) == 50
        assert get(srv, REPORT)[0] == 200
        assert srv.queries.pending == 0


def test_the_openapi_document_tells_clients_about_the_busy_answer(data_dir: Path) -> None:
    """A generated client must know a 503 is "retry after Retry-After", on every query endpoint."""
    with ReportServer(data_dir, port=0) as srv:
        status, _, body = get(srv, "/openapi.json")
    assert status == 200
    paths = json.loads(body)["paths"]
    queries = [p for p in paths if p.startswith("/v1/")]
    assert queries
    for path in queries:
        busy = paths[path]["get"]["responses"]["503"]
        assert "overloaded_error" in busy["description"] and "Retry-After" in busy["headers"], path


def test_the_query_pool_bounds_are_checked_at_construction(data_dir: Path) -> None:
    for running, queued in ((0, 1), (1, -1)):
        with pytest.raises(ValueError, match="max_concurrent_queries"):
            ReportServer(data_dir, port=0, max_concurrent_queries=running, max_queued_queries=queued)


# -- (c) idle connections cost no thread and are closed --------------------------------------------------------------


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``timeout`` seconds, sending nothing."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_200_idle_connections_take_no_thread_and_are_closed_after_the_idle_timeout(data_dir: Path) -> None:
    limits = HttpLimits(idle_timeout=1)
    with ReportServer(data_dir, port=0, limits=limits, max_concurrent_queries=MAX_CONCURRENT) as srv:
        assert get(srv, "/healthz")[0] == 200
        baseline = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(200)]
        try:
            # Answered after all 200 were accepted (they were queued first): a thread each would be alive now.
            assert get(srv, "/healthz")[0] == 200
            assert get(srv, REPORT)[0] == 200
            assert threading.active_count() <= baseline + MAX_CONCURRENT + SPARE_THREADS
            deadline = time.monotonic() + limits.idle_timeout + 20
            still_open = [s for s in idle if not closed_by_server(s, max(0.01, deadline - time.monotonic()))]
            assert not still_open, f"{len(still_open)} of 200 idle connections still open"
        finally:
            for sock in idle:
                sock.close()
        assert get(srv, REPORT)[0] == 200


# -- (d) slowloris ---------------------------------------------------------------------------------------------------


def test_a_slowloris_client_is_closed_after_the_idle_timeout(data_dir: Path) -> None:
    """The request head arrives a byte every 0.2 s (one header line that never ends): each byte renewed the old
    server's read timeout, so it waited forever; the head must be complete within ``idle_timeout``."""
    limits = HttpLimits(idle_timeout=1)
    with ReportServer(data_dir, port=0, limits=limits) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            deadline = time.monotonic() + limits.idle_timeout + 20
            closed = False
            sent = 0
            while not closed and time.monotonic() < deadline:
                try:
                    sock.sendall(b"x")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                sent += 1
                closed = closed_by_server(sock, 0.2)
            assert closed, f"still open after {sent} bytes of a header"
        assert get(srv, "/healthz")[0] == 200
