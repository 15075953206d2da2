"""Running receivers in tests: what landed in Parquet (``read_usage``), and the real ``tokentrail serve`` command in
a subprocess (``ServeProcess``), for the ingest, durability, scale and bad-input tests."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Final

import duckdb
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.otlp import make_request, random_span

__all__ = ["ServeProcess", "batch", "read_usage", "span_ids", "stop_serve_processes"]

PORT_LINE: Final = re.compile(r"OTLP/gRPC on 127\.0\.0\.1:(\d+)")
HTTP_LINE: Final = re.compile(r"OTLP/HTTP on 127\.0\.0\.1:(\d+)")

_LIVE: list[ServeProcess] = []


def read_usage(data_dir: Path) -> list[dict[str, Any]]:
    """Every stored record under ``data_dir/usage`` (the ``date`` partition included), oldest first."""
    files = sorted((data_dir / "usage").glob("date=*/*.parquet"))
    if not files:
        return []
    con = duckdb.connect()
    rel = con.execute(
        "SELECT * FROM read_parquet(?, hive_partitioning = true) ORDER BY timestamp", [[str(f) for f in files]]
    )
    names = [d[0] for d in rel.description]
    return [dict(zip(names, row)) for row in rel.fetchall()]


def batch(n: int) -> ExportTraceServiceRequest:
    """A request of ``n`` GenAI spans with random ids."""
    return make_request([random_span() for _ in range(n)])


def span_ids(request: ExportTraceServiceRequest) -> set[str]:
    return {s.span_id.hex() for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}


class ServeProcess:
    """`tokentrail serve` in a subprocess (the real command), on an ephemeral port read from its banner. Every one
    started is killed by ``stop_serve_processes`` if the test left it running."""

    def __init__(self, data_dir: Path, receiver_id: str, *extra: str, http: bool = False) -> None:
        http_args = ([] if "--http-port" in extra else ["--http-port", "0"]) if http else ["--no-http"]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokentrail.processor.cli.main",
                "serve",
                "--data-dir",
                str(data_dir),
                "--grpc-port",
                "0",
                *http_args,
                "--no-api",
                "--receiver-id",
                receiver_id,
                *extra,
            ],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.port = 0
        self.http_port: int | None = None
        _LIVE.append(self)
        banner: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(banner,), daemon=True).start()
        try:
            line = banner.get(timeout=60)
        except queue.Empty:
            line = None
        match = PORT_LINE.search(line) if line is not None else None
        if match is None or line is None:
            self.proc.kill()
            raise AssertionError(f"serve did not start (exit {self.proc.poll()})")
        self.port = int(match.group(1))
        h = HTTP_LINE.search(line)
        self.http_port = int(h.group(1)) if h else None

    def _read(self, banner: queue.Queue[str | None]) -> None:
        """Hands the banner line over, then keeps draining stderr so the process never blocks on a full pipe."""
        assert self.proc.stderr is not None
        sent = False
        for line in self.proc.stderr:
            if not sent and PORT_LINE.search(line):
                banner.put(line)
                sent = True
        if not sent:
            banner.put(None)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def stop_serve_processes() -> None:
    """Kills every ``ServeProcess`` still running: a failing test must not leave one holding ports and its data
    directory (call it from a fixture's teardown)."""
    while _LIVE:
        serve = _LIVE.pop()
        if serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait(timeout=30)
