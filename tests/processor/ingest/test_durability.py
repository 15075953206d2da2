"""Nothing acknowledged is ever lost, and nothing is counted twice: a receiver process SIGKILLed while clients send
(and while its flusher writes Parquet) comes back with every acknowledged span in the report exactly once, even when
senders retry everything; a full disk refuses with UNAVAILABLE until there is room, and loses nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tokentrail.processor.ingest.receiver import Receiver
from tokentrail.processor.reports.report import ReportQuery, run_report
from tokentrail.processor.storage.wal import QUARANTINE_DIR

from tests.helpers.otlp import export
from tests.helpers.receiver import ServeProcess, batch, read_usage, span_ids


def send_until(port: int, stop: threading.Event, acked: list, unacked: list, lock: threading.Lock) -> None:
    """A sender like the Collector's exporter: a batch is either acknowledged or (on any error) kept to retry."""
    while not stop.is_set():
        request = batch(20)
        try:
            export(port, request, timeout=5)
        except grpc.RpcError:
            with lock:
                unacked.append(request)
            if stop.is_set():
                return
            time.sleep(0.01)
            continue
        with lock:
            acked.append(request)


def test_sigkill_while_sending_loses_nothing_acknowledged_and_counts_everything_once(tmp_path: Path) -> None:
    acked: list[ExportTraceServiceRequest] = []
    unacked: list[ExportTraceServiceRequest] = []
    lock = threading.Lock()
    for round_number in range(2):  # two crashes in a row: recovery itself must survive being interrupted later
        serve = ServeProcess(tmp_path, "crashy", "--flush-interval", "0.02")  # kills land mid-flush too
        stop = threading.Event()
        senders = [threading.Thread(target=send_until, args=(serve.port, stop, acked, unacked, lock)) for _ in range(4)]
        for t in senders:
            t.start()
        target = 40 * (round_number + 1)
        deadline = time.monotonic() + 60
        while len(acked) < target and time.monotonic() < deadline:
            time.sleep(0.01)
        serve.kill()  # mid-send: requests in flight are neither acknowledged nor lost
        stop.set()
        for t in senders:
            t.join(30)
        assert len(acked) >= target

    # The restarted receiver replays the WAL; the senders retry what was not acknowledged, and (at-least-once) even
    # resend everything that was: each call must still be stored exactly once.
    final = ServeProcess(tmp_path, "crashy")
    for request in unacked + acked:
        export(final.port, request)
    assert final.terminate() == 0

    rows = read_usage(tmp_path)
    stored = [r["span_id"] for r in rows]
    expected = set().union(*(span_ids(r) for r in acked + unacked))
    assert len(stored) == len(set(stored)), "a span was stored twice"
    assert set(stored) == expected
    report = run_report(tmp_path, ReportQuery.from_params({"start_date": "2025-06-01", "end_date": "2025-06-01", "group_by": "none"}))
    assert report[0]["request_count"] == len(expected)
    # A kill leaves at most a torn tail in the newest segment, never damage: recovery raised no false alarm.
    assert not (tmp_path / "wal" / QUARANTINE_DIR).exists()


def test_acknowledged_spans_survive_a_sigkill_without_any_retry(tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path, "crashy2")
    acked = [batch(5) for _ in range(10)]
    for request in acked:
        export(serve.port, request)
    serve.kill()  # before any flush: the records exist only in the WAL
    ServeProcess(tmp_path, "crashy2").terminate()
    stored = [r["span_id"] for r in read_usage(tmp_path)]
    assert sorted(stored) == sorted(set().union(*(span_ids(r) for r in acked)))


# -- full disk ----------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path, grpc_port=0, receiver_id="disk-r1", flush_interval=0.05, max_disk_bytes=60_000) as r:
        yield r


def test_a_full_disk_refuses_with_unavailable_and_loses_nothing_acknowledged(small_disk: Receiver, tmp_path: Path) -> None:
    acked: list[ExportTraceServiceRequest] = []
    refused: ExportTraceServiceRequest | None = None
    for _ in range(500):
        request = batch(20)
        try:
            export(small_disk.grpc_port, request)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            assert "max_disk_bytes" in (exc.details() or "")
            refused = request
            break
        acked.append(request)
    assert refused is not None and acked, "the cap was never reached"
    assert small_disk.metrics.counters()["requests_unavailable"] == 1
    small_disk.flush()
    assert small_disk.max_disk_bytes is not None and small_disk.disk_used() <= small_disk.max_disk_bytes

    small_disk.max_disk_bytes = 10 << 20  # room again (an operator freed space): the sender's retry goes through
    export(small_disk.grpc_port, refused)
    small_disk.flush()
    stored = [r["span_id"] for r in read_usage(tmp_path)]
    assert len(stored) == len(set(stored))
    assert set(stored) == set().union(*(span_ids(r) for r in [*acked, refused]))


def test_a_disk_that_fills_while_flushing_keeps_the_records_in_the_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tokentrail.processor.storage.parquet as storage

    real_write = storage._write_file
    failing = {"on": True}

    def enospc(table: object, path: Path) -> None:
        if failing["on"]:
            raise OSError(28, "No space left on device")
        real_write(table, path)

    monkeypatch.setattr(storage, "_write_file", enospc)
    with Receiver(tmp_path, grpc_port=0, receiver_id="disk-r2", flush_interval=3600) as receiver:
        request = batch(10)
        export(receiver.grpc_port, request)
        with pytest.raises(OSError):
            receiver.flush()
        assert read_usage(tmp_path) == []
        failing["on"] = False
        receiver.flush()
        assert {r["span_id"] for r in read_usage(tmp_path)} == span_ids(request)


def test_no_space_while_appending_to_the_wal_is_unavailable(small_disk: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    import tokentrail.processor.storage.wal as wal_module

    def enospc(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wal_module.os, "write", enospc)
    with pytest.raises(grpc.RpcError) as info:
        export(small_disk.grpc_port, batch(3))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
