"""The real ``tokentrail serve`` as the fault suite needs it: every listener on (gRPC, OTLP/HTTP, the report API), on
ports that stay the same across a kill and a restart (a Collector keeps sending to one endpoint while the receiver
is down), and what its kernel says about it (threads, RSS, peak RSS from ``/proc/PID/status``).

``tests.helpers.receiver.ServeProcess`` starts serve without the report API and on port 0 (a new port each start),
so it cannot be restarted under senders that keep their endpoint; this one reuses its banner patterns.
"""

from __future__ import annotations

import collections
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.helpers.receiver import HTTP_LINE, PORT_LINE

__all__ = [
    "API_LINE",
    "Ports",
    "ProcStats",
    "Serve",
    "free_port",
    "http_get",
    "kill_all",
    "run_cli",
    "spawn_cli",
]

API_LINE: Final = re.compile(r"report API on https?://127\.0\.0\.1:(\d+)")
_ROOT: Final = Path(__file__).resolve().parents[2]
_LIVE: list[subprocess.Popen[str]] = []  # every child started here, killed by ``kill_all`` at each test's end
_CLI: Final = [sys.executable, "-m", "tokentrail.processor.cli.main"]


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def free_port() -> int:
    """A loopback port nothing listens on now (bound and released): the receiver keeps it across restarts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Ports:
    grpc: int
    http: int
    api: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


@dataclass(frozen=True)
class ProcStats:
    """One reading of ``/proc/PID/status``: sizes in bytes."""

    threads: int
    rss: int
    hwm: int

    @classmethod
    def of(cls, pid: int) -> ProcStats:
        fields: dict[str, str] = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        return cls(
            threads=int(fields["Threads"]),
            rss=int(fields["VmRSS"].split()[0]) * 1024,
            hwm=int(fields["VmHWM"].split()[0]) * 1024,
        )


def http_get(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one GET on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


class Serve:
    """``tokentrail serve --data-dir DATA_DIR`` with every listener on ``ports``. ``start()`` waits for the banner
    (all ports listening, recovery done); ``spawn()`` does not, for kills that land during recovery."""

    def __init__(
        self,
        data_dir: Path,
        *extra: str,
        ports: Ports | None = None,
        receiver_id: str = "fault",
        token: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.ports = ports or Ports.pick()
        self.receiver_id = receiver_id
        self.token = token
        self.proc: subprocess.Popen[str] | None = None
        self.log: collections.deque[str] = collections.deque(maxlen=200)
        self._banner = threading.Event()
        self.banner_ports: Ports | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def spawn(self) -> Serve:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        token = ["--ingest-token", self.token] if self.token else []
        self._banner = threading.Event()
        self.proc = subprocess.Popen(
            [
                *_CLI,
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--receiver-id",
                self.receiver_id,
                "--grpc-port",
                str(self.ports.grpc),
                "--http-port",
                str(self.ports.http),
                "--api-port",
                str(self.ports.api),
                *token,
                *self.extra,
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=_env(),
        )
        _LIVE.append(self.proc)
        threading.Thread(target=self._drain, args=(self.proc, self._banner), daemon=True).start()
        return self

    def start(self, timeout: float = 60.0) -> Serve:
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self._banner.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"serve did not start (exit {self.proc.poll()}):\n{self.tail()}")
        assert self.banner_ports == self.ports, (self.banner_ports, self.ports)

    def _drain(self, proc: subprocess.Popen[str], banner: threading.Event) -> None:
        """Keeps stderr flowing (a full pipe would block the receiver) and notices the banner."""
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log.append(line.rstrip("\n"))
            grpc = PORT_LINE.search(line)
            if grpc is not None and not banner.is_set():
                http, api = HTTP_LINE.search(line), API_LINE.search(line)
                self.banner_ports = Ports(
                    int(grpc.group(1)), int(http.group(1)) if http else 0, int(api.group(1)) if api else 0
                )
                banner.set()

    def tail(self, n: int = 40) -> str:
        return "\n".join(list(self.log)[-n:])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> bool:
        """SIGKILL; True when it was still running (the kill hit a live process)."""
        assert self.proc is not None
        was_alive = self.proc.poll() is None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        return was_alive

    def terminate(self, timeout: float = 120.0) -> int:
        """SIGTERM: serve stops listening, flushes everything acknowledged to Parquet and exits."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"serve did not stop within {timeout} s:\n{self.tail()}") from None

    # -- what it says ------------------------------------------------------------------------------------------------

    def stats(self) -> ProcStats:
        return ProcStats.of(self.pid)

    def healthz(self, timeout: float = 10.0) -> int:
        return http_get(self.ports.api, "/healthz", timeout=timeout)[0]

    def metrics(self) -> dict[str, float]:
        """The receiver's counters and gauges from ``GET /metrics`` (OTLP/HTTP port), without the prefix."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        status, _, body = http_get(self.ports.http, "/metrics", headers)
        assert status == 200, (status, body[:200])
        values: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line.startswith("tokentrail_receiver_"):
                name, _, value = line.rpartition(" ")
                name = name.split("{")[0].removeprefix("tokentrail_receiver_").removesuffix("_total")
                values[name] = float(value)
        return values


def run_cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """A ``tokentrail`` command to completion, output captured."""
    return subprocess.run([*_CLI, *args], capture_output=True, text=True, timeout=timeout, env=_env(), check=False)


def spawn_cli(*args: str) -> subprocess.Popen[str]:
    """A ``tokentrail`` command in the background (to be killed at a random point); output discarded."""
    proc = subprocess.Popen(
        [*_CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, env=_env()
    )
    _LIVE.append(proc)
    return proc


def kill_all() -> None:
    """Kills every child this module started that still runs: a failed test leaves no receiver holding its data
    directory, nor a compaction writing into the next test's time."""
    while _LIVE:
        proc = _LIVE.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
