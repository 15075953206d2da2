"""OTLP/HTTP against hostile or broken clients, on a real receiver over loopback with raw requests: a foreign
``Host`` (DNS rebinding) is 421, ambiguous framing (two ``Content-Length``, ``Transfer-Encoding`` with
``Content-Length``) and JSON nested beyond reason are 400, every refusal the app sees is counted, the ``Server``
header names no Python version; and ``max_disk_bytes`` holds while the flusher is stuck mid-flush (segments taken,
Parquet not yet written). Abuse of the connection itself (slow, idle, huge, unauthenticated) is test_http_abuse."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tokentrail.processor.ingest.pipeline import DiskFull
from tokentrail.processor.ingest.receiver import Receiver
from tokentrail.processor.storage.parquet import day_lock

from tests.helpers.otlp import T0_NS, make_request, random_span
from tests.helpers.receiver import batch, read_usage, span_ids

PROTOBUF = "application/x-protobuf"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path, grpc_port=0, http_port=0, receiver_id="harden-r1", flush_interval=3600) as r:
        yield r


def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request written byte for byte (http.client would refuse to send some of these); the answer parsed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def post(port: int, body: bytes, content_type: str = PROTOBUF, host: str = "127.0.0.1") -> tuple[int, bytes]:
    head = f"POST /v1/traces HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    status, _, answer = raw(port, head.encode() + b"\r\n" + body)
    return status, answer


def counters(receiver: Receiver) -> dict[str, int]:
    return receiver.metrics.counters()


# -- Host: DNS rebinding -------------------------------------------------------------------------------------------


def test_a_foreign_host_is_misdirected_and_stores_nothing(receiver: Receiver, tmp_path: Path) -> None:
    port = receiver.http_port
    assert port is not None
    status, answer = post(port, make_request([random_span()]).SerializeToString(), host=f"attacker.example:{port}")
    assert status == 421
    status, headers, body = raw(port, f"GET /metrics HTTP/1.1\r\nHost: attacker.example:{port}\r\n\r\n".encode())
    assert status == 421
    assert "attacker.example" in json.loads(body)["message"] and "--allowed-hosts" in json.loads(body)["message"]
    assert counters(receiver)["requests_wrong_host"] == 2
    receiver.flush()
    assert read_usage(tmp_path) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST.", "[::1]"])
def test_loopback_names_are_answered_with_or_without_a_port(receiver: Receiver, host: str) -> None:
    port = receiver.http_port
    assert port is not None
    for value in (host, f"{host}:{port}"):
        assert post(port, make_request([random_span()]).SerializeToString(), host=value)[0] == 200


# -- framing and bad bodies ----------------------------------------------------------------------------------------


def test_two_content_lengths_are_refused(receiver: Receiver) -> None:
    """h11 refuses two differing lengths itself (400, connection closed) before the app sees the request, so no
    counter of ours moves; what matters is that neither length is believed and nothing is stored."""
    port = receiver.http_port
    assert port is not None
    status, headers, _ = raw(
        port,
        b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nContent-Length: 50\r\n\r\n{}",
    )
    assert status == 400
    assert headers["connection"] == "close"
    assert receiver.stats["received"] == 0


def test_transfer_encoding_with_a_content_length_is_refused_not_misread(receiver: Receiver) -> None:
    """h11 would read this body chunked; a proxy in front may have read the length: refused, counted, closed."""
    port = receiver.http_port
    assert port is not None
    status, headers, body = raw(
        port,
        b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    )
    assert status == 400 and b"Transfer-Encoding" in body
    assert headers["connection"] == "close"
    assert counters(receiver)["requests_invalid"] == 1


def test_two_host_headers_are_refused_like_on_the_report_api(receiver: Receiver) -> None:
    """A proxy may route on one Host and a check read the other. h11 refuses it before the app (no body, no counter);
    ``auth.framing_problem`` refuses it again for a server stack that would not."""
    port = receiver.http_port
    assert port is not None
    status, headers, _ = raw(
        port,
        b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: attacker.example\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    )
    assert status == 400
    assert headers["connection"] == "close"
    assert receiver.stats["received"] == 0


def test_json_nested_beyond_reason_is_400_and_counted(receiver: Receiver) -> None:
    port = receiver.http_port
    assert port is not None
    deep = b'{"resourceSpans":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, answer = post(port, deep, content_type="application/json")
    assert status == 400
    assert "nested too deeply" in json.loads(answer)["message"]
    logs = (
        b"POST /v1/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(deep)}\r\n\r\n".encode()
    )
    assert raw(port, logs + deep)[0] == 400
    assert counters(receiver)["requests_invalid"] == 2


def test_lengths_413_and_no_body(tmp_path: Path) -> None:
    """Over the limit by its Content-Length: 413, counted, unread. A negative length: h11's own 400 (not counted:
    the app never sees it). Neither a length nor chunking: an empty body by HTTP/1.1's rules, so an empty export
    (the stdlib server wanted a Content-Length: 411)."""
    with Receiver(
        tmp_path, grpc_port=0, http_port=0, receiver_id="harden-r3", flush_interval=3600, max_message_bytes=1000
    ) as r:
        port = r.http_port
        assert port is not None
        head = b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
        assert raw(port, head + b"\r\n")[0] == 200
        assert raw(port, head + b"Content-Length: -3\r\n\r\n")[0] == 400
        status, headers, _ = raw(port, head + b"Content-Length: 5000\r\n\r\n")
        assert status == 413 and headers["connection"] == "close"
        seen = r.metrics.counters()
        assert (seen["requests_invalid"], seen["requests_too_large"]) == (0, 1)
        assert r.stats["received"] == 0


def test_the_server_header_names_no_python_version(receiver: Receiver) -> None:
    port = receiver.http_port
    assert port is not None
    _, headers, _ = raw(port, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert headers["server"] == "tokentrail"


# -- max_disk_bytes under a stuck flusher --------------------------------------------------------------------------


def _wal_and_parquet_bytes(data_dir: Path) -> int:
    wal = sum(p.stat().st_size for p in (data_dir / "wal").glob("*.wal"))
    return wal + sum(p.stat().st_size for p in (data_dir / "usage").rglob("*.parquet"))


def test_max_disk_bytes_counts_what_the_flusher_holds(tmp_path: Path) -> None:
    """The flusher takes the closed segments, then waits on the day's lock (as behind a long compaction): those
    segments are still on disk and their Parquet is still to come, so they must keep counting against the cap."""
    cap = 400_000
    day = datetime.fromtimestamp(T0_NS / 1e9, UTC).date().isoformat()
    acked = []
    with Receiver(tmp_path, grpc_port=0, receiver_id="harden-disk", flush_interval=3600, max_disk_bytes=cap) as r:
        while r.disk_used() < cap // 2:
            request = batch(20)
            r.export(request)
            acked.append(request)
        with day_lock(tmp_path / "usage", day):
            flushing = threading.Thread(target=r.flush)
            flushing.start()
            deadline = time.monotonic() + 30
            while r.wal is not None and r.wal.pending_bytes() > 0:  # wait until the flusher has taken every segment
                assert time.monotonic() < deadline, "the flusher never took the segments"
                time.sleep(0.01)
            refused = None
            for _ in range(200):
                request = batch(20)
                try:
                    r.export(request)
                except DiskFull:
                    refused = request
                    break
                acked.append(request)
            assert refused is not None, "nothing was refused while the flusher held its segments"
            assert _wal_and_parquet_bytes(tmp_path) <= cap
        flushing.join()
        r.flush()
        assert _wal_and_parquet_bytes(tmp_path) <= cap
    assert {row["span_id"] for row in read_usage(tmp_path)} == set().union(*(span_ids(a) for a in acked))


def test_allowed_hosts_reach_the_otlp_http_port(tmp_path: Path) -> None:
    """`tokentrail serve --allowed-hosts` (a Collector that calls the receiver by a name) is honoured on OTLP/HTTP,
    and a name not in the list still gets 421."""
    receiver = Receiver(tmp_path, grpc_port=0, http_port=0, flush_interval=3600, allowed_hosts=["collector.internal"])
    receiver.start()
    try:
        assert receiver.http_port is not None
        body = make_request([random_span()]).SerializeToString()
        assert post(receiver.http_port, body, host="collector.internal")[0] == 200
        assert post(receiver.http_port, body, host="attacker.example")[0] == 421
    finally:
        receiver.stop()


def test_serve_refuses_a_bad_per_call_limit_before_listening(tmp_path: Path) -> None:
    env = {**os.environ, "TOKENTRAIL_MAX_INPUT_TOKENS_PER_CALL": "lots"}
    done = subprocess.run(
        [sys.executable, "-m", "tokentrail.processor.cli.main", "serve", "--data-dir", str(tmp_path),
         "--grpc-port", "0", "--no-http", "--no-api"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "TOKENTRAIL_MAX_INPUT_TOKENS_PER_CALL" in line and "Traceback" not in done.stderr
