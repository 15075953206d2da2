"""A port already taken: one line that names the port and the fix, from the Python API and from `tokentrail serve`,
with nothing of gRPC's own logging before it and nothing else lost (the receiver id is free for the next try)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokentrail.processor.errors import TokenTrailError
from tokentrail.processor.ingest.listen import ListenError
from tokentrail.processor.ingest.receiver import Receiver


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize(("transport", "option"), [("grpc", "--grpc-port"), ("http", "--http-port")])
def test_a_taken_port_raises_one_clear_error_and_prints_nothing(
    tmp_path: Path, taken_port: int, transport: str, option: str, capfd: pytest.CaptureFixture[str]
) -> None:
    grpc_port, http_port = (taken_port, None) if transport == "grpc" else (0, taken_port)
    receiver = Receiver(tmp_path, grpc_port=grpc_port, http_port=http_port, receiver_id="ports-r1", flush_interval=3600)
    with pytest.raises(ListenError) as info:
        receiver.start()
    assert isinstance(info.value, TokenTrailError) and isinstance(info.value, OSError)
    message = str(info.value)
    assert "\n" not in message
    assert f"127.0.0.1:{taken_port}" in message and f"port {taken_port} is already in use" in message
    assert option in message
    captured = capfd.readouterr()  # file-descriptor level: gRPC's core writes its own line there
    assert "Failed to add port" not in captured.err and "add_port" not in captured.err, captured.err
    with Receiver(tmp_path, grpc_port=0, receiver_id="ports-r1", flush_interval=3600) as retry:  # lock released
        assert retry.grpc_port != 0


@pytest.mark.parametrize(("transport", "option"), [("grpc", "--grpc-port"), ("http", "--http-port")])
def test_serve_on_a_taken_port_says_which_and_what_to_do_in_one_line(
    tmp_path: Path, taken_port: int, transport: str, option: str
) -> None:
    ports = ["--grpc-port", str(taken_port), "--http-port", "0"]
    if transport == "http":
        ports = ["--grpc-port", "0", "--http-port", str(taken_port)]
    result = subprocess.run(
        [sys.executable, "-m", "tokentrail.processor.cli.main", "serve", "--data-dir", str(tmp_path), "--no-api", *ports],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("tokentrail serve: cannot listen for OTLP/")
    assert f"port {taken_port} is already in use" in line and option in line
