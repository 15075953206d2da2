"""A full disk (``--max-disk-bytes``): exports are refused retryably (gRPC UNAVAILABLE, OTLP/HTTP 503 with
``Retry-After``), nothing acknowledged is lost, the receiver stays alive and answering; once the cap is raised (a
restart with room) the senders' resends are stored, each span once.
"""

from __future__ import annotations

from pathlib import Path

from tests.fault.collector import Backoff, GrpcExporter, HttpExporter, Ledger, make_batch
from tests.fault.oracle import assert_exactly_once
from tests.fault.serve import Serve

CAP = 200_000  # bytes of WAL + Parquet: a few dozen batches


def test_a_full_disk_refuses_retryably_loses_nothing_and_takes_the_resends_once_there_is_room(tmp_path: Path) -> None:
    full = Serve(tmp_path, "--flush-interval", "0.05", "--max-disk-bytes", str(CAP)).start()
    ledger = Ledger()
    give_up_soon = Backoff(max_elapsed=0.5)  # a Collector would keep retrying; here the batch waits in the ledger
    grpc_exporter = GrpcExporter(full.ports.grpc, ledger, backoff=give_up_soon)
    http_exporter = HttpExporter(full.ports.http, ledger, backoff=give_up_soon)
    refused_in_a_row = 0
    for i in range(1000):  # until both transports refuse, three times each in a row: the disk stays full
        exporter = grpc_exporter if i % 2 else http_exporter
        refused_in_a_row = 0 if exporter.export(make_batch(20)) else refused_in_a_row + 1
        if refused_in_a_row == 6:
            break
    assert ledger.acked, "nothing was acknowledged before the disk filled"
    assert refused_in_a_row == 6, "the disk never filled (or never stayed full)"
    assert not ledger.permanent, ledger.permanent
    assert set(ledger.refusals) == {"grpc:UNAVAILABLE", "http:503"}, ledger.refusals
    assert "http:503" not in ledger.without_delay, "a 503 without Retry-After"
    assert full.alive() and full.healthz() == 200
    counters = full.metrics()
    assert counters["requests_unavailable"] >= 6
    assert counters["disk_used_bytes"] <= CAP
    grpc_exporter.close()
    http_exporter.close()
    assert full.terminate() == 0

    roomy = Serve(tmp_path, "--flush-interval", "0.05", ports=full.ports).start()
    resender = GrpcExporter(roomy.ports.grpc, ledger)
    for batch in ledger.take_pending():  # the Collector's queue, resent
        assert resender.export(batch)
    resender.close()
    assert roomy.terminate() == 0
    assert_exactly_once(tmp_path, ledger)
