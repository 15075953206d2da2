"""The report API against hostile or careless clients and setups, over real sockets with raw requests: a foreign
``Host`` (DNS rebinding) is 421 even with no token, ambiguous framing is 400, an ``as_of`` outside the dates Python
can count is 400 (not 500), the ``Server`` header names no Python version, a query that fails is a 500 with its
traceback in the log only, a burst of connections waits in the listen queue instead of being dropped, a client that
leaves mid-request or mid-response is no traceback; and ``tokentrail serve`` refuses an empty token and an open
report API beyond loopback. Floods and idle or slow clients: ``test_api_abuse.py``."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokentrail.processor.api.http import APITokenError, ReportServer
from tokentrail.processor.cli import main as cli
from tokentrail.processor.cli import serve
from tokentrail.processor.reports.budgets import budgets_from_dict

from tests.helpers.reports import rec_n as rec
from tests.helpers.reports import write_day

REPORT = "/v1/report?start_date=2025-03-01&end_date=2025-03-31"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_day(tmp_path, "2025-03-05", [rec(1, "2025-03-05T08:00:00", user_id="alice")])
    return tmp_path


@pytest.fixture
def server(data_dir: Path) -> Iterator[ReportServer]:
    with ReportServer(data_dir, port=0) as srv:
        yield srv


def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request written byte for byte (http.client would refuse to send some of these); the answer parsed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def get(port: int, path: str, host: str) -> tuple[int, dict[str, str], bytes]:
    return raw(port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())


# -- Host: DNS rebinding -------------------------------------------------------------------------------------------


def test_a_rebinding_host_reads_no_report_without_a_token(server: ReportServer) -> None:
    status, _, body = get(server.port, REPORT, f"attacker.example:{server.port}")
    assert status == 421
    message = json.loads(body)["error"]["message"]
    assert "attacker.example" in message and "--allowed-hosts" in message
    assert "alice" not in body.decode() and "results" not in body.decode()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "Localhost.", "[::1]"])
def test_loopback_names_are_answered_with_or_without_the_port(server: ReportServer, host: str) -> None:
    for value in (host, f"{host}:{server.port}"):
        status, _, body = get(server.port, REPORT, value)
        assert status == 200 and json.loads(body)["results"]


@pytest.mark.parametrize("host", ["127.0.0.1:x", "evil.example@127.0.0.1", "[::1", "", "10.0.0.7"])
def test_malformed_or_other_hosts_are_refused_on_loopback(server: ReportServer, host: str) -> None:
    assert get(server.port, REPORT, host)[0] == 421


def test_allowed_hosts_are_answered_and_no_others(data_dir: Path) -> None:
    with ReportServer(data_dir, port=0, allowed_hosts=["reports.internal"]) as srv:
        assert get(srv.port, REPORT, f"reports.internal:{srv.port}")[0] == 200
        assert get(srv.port, REPORT, "REPORTS.internal")[0] == 200
        assert get(srv.port, REPORT, "other.internal")[0] == 421


def test_two_host_or_content_length_headers_are_refused(server: ReportServer) -> None:
    """Two Host or two differing Content-Length headers are refused by h11 before the app (a 400 with no body);
    Content-Length with Transfer-Encoding, which h11 reads as chunked and a proxy in front may read by length, by
    the app (a 400 in our error shape). Either way the connection is closed after the answer."""
    twice_host = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: attacker.example\r\n\r\n"
    twice_length = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nContent-Length: 9\r\n\r\n"
    length_and_chunked = (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    for request in (twice_host, twice_length, length_and_chunked):
        status, headers, _ = raw(server.port, request)
        assert status == 400 and headers["connection"] == "close"
    _, _, body = raw(server.port, length_and_chunked)
    assert json.loads(body)["error"]["message"] == "both Content-Length and Transfer-Encoding: send one"


def test_the_server_header_names_no_python_version(server: ReportServer) -> None:
    _, headers, _ = get(server.port, "/healthz", "127.0.0.1")
    assert headers["server"] == "tokentrail"


@pytest.mark.parametrize(
    ("request_line", "host", "status"),
    [("GET /healthz", "127.0.0.1", 200), ("GET /nope", "127.0.0.1", 404), ("DELETE /v1/report", "127.0.0.1", 405),
     (f"GET {REPORT}", "127.0.0.1", 200), ("GET /v1/report", "127.0.0.1", 400), (f"GET {REPORT}", "evil.example", 421)],
)
def test_every_answer_names_the_server_without_versions_and_is_not_cached(
    server: ReportServer, request_line: str, host: str, status: int
) -> None:
    answer, headers, _ = raw(server.port, f"{request_line} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert answer == status
    assert headers["server"] == "tokentrail" and headers["cache-control"] == "no-store"


def test_a_query_that_fails_is_a_500_with_its_traceback_in_the_log(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Parquet file DuckDB cannot read: the client gets the error shape and no detail, the log the traceback."""
    (data_dir / "usage" / "date=2025-03-05" / "part-broken.parquet").write_bytes(b"PAR1 not parquet")
    with ReportServer(data_dir, port=0) as srv:
        status, headers, body = get(srv.port, REPORT, "127.0.0.1")
        assert status == 500 and headers["content-type"] == "application/json; charset=utf-8"
        assert json.loads(body) == {"error": {"message": "the query failed; the server log has the details",
                                              "type": "api_error"}}
        assert "part-broken" not in body.decode()
        assert get(srv.port, "/healthz", "127.0.0.1")[0] == 200  # still serving
    (failure,) = [r for r in caplog.records if r.exc_info]
    assert failure.levelno == logging.ERROR and "/v1/report failed" in failure.getMessage()
    assert failure.exc_info is not None and "part-broken" in str(failure.exc_info[1])


# -- as_of ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_of", ["9999-12-31", "0001-01-01", "0001-01-01T00:00:00%2B01:00", "1969-12-31"])
@pytest.mark.parametrize("path", ["/v1/spikes", "/v1/budgets"])
def test_as_of_out_of_range_is_a_bad_parameter(data_dir: Path, path: str, as_of: str) -> None:
    budgets = budgets_from_dict({"budgets": [{"name": "all", "scope": "total", "amount": 10, "period": "monthly"}]})
    with ReportServer(data_dir, port=0, budgets=budgets) as srv:
        status, _, body = get(srv.port, f"{path}?as_of={as_of}", "127.0.0.1")
    assert status == 400
    assert "as_of must be from 1970-01-02 to 9000-01-01" in json.loads(body)["error"]["message"]


@pytest.mark.parametrize("as_of", ["1970-01-01", "8999-12-31"])
def test_as_of_at_either_end_of_the_range_answers(data_dir: Path, as_of: str) -> None:
    with ReportServer(data_dir, port=0) as srv:
        assert get(srv.port, f"/v1/spikes?as_of={as_of}&window=day", "127.0.0.1")[0] == 200


# -- connections ---------------------------------------------------------------------------------------------------


def test_a_client_leaving_mid_request_is_no_traceback(
    data_dir: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Two clients reset their connection: one before its request head ends (Hypercorn's to close: the app never
    sees it), one while its query waits for the pool's only thread (held by a call of ours). Neither is a
    traceback; the second is counted, and its query leaves the queue without running."""
    caplog.set_level(logging.DEBUG)
    release = threading.Event()
    with ReportServer(data_dir, port=0, max_concurrent_queries=1) as srv:
        held = srv.queries.submit(release.wait)
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
                sock.sendall(f"GET {REPORT} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())  # the headers never end
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
                sock.sendall(f"GET {REPORT} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                deadline = time.monotonic() + 30
                while srv.queries.pending < 2:  # the held call and this request's query, waiting
                    assert time.monotonic() < deadline, "the request never reached the pool"
                    time.sleep(0.01)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            deadline = time.monotonic() + 30
            while srv.dropped_connections == 0:
                assert time.monotonic() < deadline, "the server never noticed the reset"
                time.sleep(0.01)
            assert srv.queries.pending == 1  # the waiting query was dropped, not left to run for nobody
        finally:
            release.set()
        assert held is not None and held.result(timeout=10) is True
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:  # still serving
            sock.sendall(f"GET {REPORT} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            assert sock.makefile("rb").readline().startswith(b"HTTP/1.1 200")
        assert srv.dropped_connections == 1
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


def test_a_client_leaving_mid_response_is_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """10,000 rows (megabytes) do not fit in the socket buffers of a client that reads the status line and resets:
    a write of the answer fails mid-response."""
    write_day(tmp_path, "2025-03-05", [rec(i, "2025-03-05T08:00:00", user_id=f"u{i:05d}") for i in range(1, 10_001)])
    caplog.set_level(logging.DEBUG)
    with ReportServer(tmp_path, port=0) as srv:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            sock.connect(("127.0.0.1", srv.port))
            sock.sendall(f"GET {REPORT}&group_by=user HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            assert sock.recv(12, socket.MSG_WAITALL) == b"HTTP/1.1 200"  # the answer (10,000 rows) has begun
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        deadline = time.monotonic() + 30
        while srv.dropped_connections == 0:  # the server's write fails on its event loop
            assert time.monotonic() < deadline, "the server never noticed the reset"
            time.sleep(0.01)
        assert srv.dropped_connections == 1
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


def _start_serve(data_dir: Path) -> tuple[subprocess.Popen[str], int, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokentrail.processor.cli.main", "serve", "--data-dir", str(data_dir), "--grpc-port",
         "0", "--http-port", "0", "--api-port", "0", "--receiver-id", "burst"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"OTLP/HTTP on 127\.0\.0\.1:(\d+).*report API on http://127\.0\.0\.1:(\d+)", line)
        if found:
            return proc, int(found[1]), int(found[2])
    proc.kill()
    raise AssertionError("tokentrail serve printed no banner")


def test_a_burst_of_connections_waits_in_the_listen_queue_and_is_answered(data_dir: Path) -> None:
    """The server is stopped (SIGSTOP) while 100 clients connect at once: the kernel completes the handshake of
    as many as the listen queue holds (a backlog of 5 held 6; the rest were dropped and retried a second or more
    later). Resumed, the server answers every one."""
    proc, otlp_port, api_port = _start_serve(data_dir)
    clients: list[socket.socket] = []
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            for port in (api_port, otlp_port):
                batch = []
                for _ in range(100):
                    sock = socket.socket()
                    sock.setblocking(False)
                    sock.connect_ex(("127.0.0.1", port))
                    batch.append(sock)
                clients += batch
                _, ready, _ = select.select([], batch, [], 1.0)
                connected = [s for s in ready if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
                assert len(connected) == 100, f"port {port}: {len(connected)} of 100 connections queued"
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        for i, sock in enumerate(clients):
            sock.setblocking(True)
            sock.settimeout(30)
            path = "/healthz" if i < 100 else "/metrics"
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        answers = [sock.makefile("rb").readline() for sock in clients]
        assert all(a.startswith(b"HTTP/1.1 200") for a in answers), {a for a in answers}
    finally:
        for sock in clients:
            sock.close()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


# -- tokens and where the API may listen ----------------------------------------------------------------------------


def test_an_empty_token_is_refused_not_read_as_no_auth(data_dir: Path) -> None:
    for token in ("", "  "):
        with pytest.raises(APITokenError, match="empty"):
            ReportServer(data_dir, port=0, token=token)


@pytest.mark.parametrize(
    ("argv", "env", "said"),
    [
        (["--api-token", ""], {}, "--api-token is empty"),
        ([], {"TOKENTRAIL_API_TOKEN": ""}, "--api-token is empty"),
        ([], {"TOKENTRAIL_INGEST_TOKEN": ""}, "--ingest-token is empty"),
        (["--host", "0.0.0.0"], {}, "would answer anyone who reaches it"),
    ],
)
def test_serve_refuses_to_start_unprotected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str],
    env: dict[str, str], said: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = cli._parser().parse_args(["serve", "--data-dir", str(tmp_path), "--grpc-port", "0", "--no-http", *argv])
    stop = threading.Event()
    stop.set()  # were it to start, it stops at once
    assert serve.run(args, stop) == serve.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0], err
    assert not (tmp_path / "wal").exists()  # nothing started


def test_serve_on_every_address_starts_with_a_token_or_allowed_hosts() -> None:
    args = cli._parser().parse_args(
        ["serve", "--host", "0.0.0.0", "--allowed-hosts", "reports.internal, Other.Internal"]
    )
    assert serve._setup_problem(args) is None
    args = cli._parser().parse_args(["serve", "--host", "0.0.0.0", "--api-token", "s3cret"])
    assert serve._setup_problem(args) is None
