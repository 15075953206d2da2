"""Python uses one core per process, so a busy site runs N receiver processes on one port (SO_REUSEPORT: the kernel
spreads connections over them), all writing one dataset. Two real `tokentrail serve` processes share the gRPC and
HTTP ports here; both take traffic, and every span lands exactly once."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from tests.helpers.otlp import export, make_request, random_span
from tests.helpers.receiver import ServeProcess, read_usage


def test_two_processes_share_one_port_and_one_dataset(tmp_path: Path) -> None:
    first = ServeProcess(tmp_path, "node-a", "--reuse-port")
    second = ServeProcess(tmp_path, "node-b", "--reuse-port", "--grpc-port", str(first.port))
    assert second.port == first.port
    sent: set[str] = set()
    for _ in range(60):  # a new connection per export: the kernel balances connections, not requests
        request = make_request([random_span() for _ in range(5)])
        export(first.port, request)
        sent |= {s.span_id.hex() for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert first.terminate() == 0 and second.terminate() == 0

    accepted = {}
    for rid in ("node-a", "node-b"):
        status = json.loads((tmp_path / "status" / f"{rid}.json").read_text())
        accepted[rid] = status["metrics"]["spans_accepted"]
    assert sum(accepted.values()) == len(sent)
    assert all(n > 0 for n in accepted.values()), accepted  # both processes took connections
    rows = read_usage(tmp_path)
    assert sorted(r["span_id"] for r in rows) == sorted(sent)
    writers = {p.name.split("-")[1] + "-" + p.name.split("-")[2] for p in (tmp_path / "usage").glob("date=*/part-*.parquet")}
    assert writers == {"node-a", "node-b"}


def test_the_http_port_is_shared_too(tmp_path: Path) -> None:
    a = ServeProcess(tmp_path, "http-a", "--reuse-port", http=True)
    assert a.http_port
    b = ServeProcess(
        tmp_path, "http-b", "--reuse-port", "--http-port", str(a.http_port), "--grpc-port", str(a.port), http=True
    )
    assert b.http_port == a.http_port
    for _ in range(40):
        body = make_request([random_span()]).SerializeToString()
        req = urllib.request.Request(
            f"http://127.0.0.1:{a.http_port}/v1/traces",
            data=body,
            method="POST",
            headers={"Content-Type": "application/x-protobuf", "Connection": "close"},
        )
        with urllib.request.urlopen(req, timeout=10) as response:
            assert response.status == 200
    assert a.terminate() == 0 and b.terminate() == 0
    assert len(read_usage(tmp_path)) == 40
