"""The receiver's Prometheus text: values exact at any size (bytes gauges pass a million), a failing gauge NaN, and
the admission's exports and bytes in flight among the gauges."""

from __future__ import annotations

from pathlib import Path

from tokentrail.processor.ingest.admission import AdmissionPass
from tokentrail.processor.ingest.metrics import Metrics
from tokentrail.processor.ingest.receiver import Receiver


def values(text: str) -> dict[str, str]:
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines() if not line.startswith("#")}


def test_whole_numbers_are_exact_fractions_kept_and_a_failing_gauge_is_nan() -> None:
    metrics = Metrics()
    metrics.add(wal_bytes_written=(1 << 40) + 1)
    metrics.gauge("bytes_in_flight", lambda: 2 * 1048576 + 3)
    metrics.gauge("flush_lag_seconds", lambda: 0.125)

    def broken() -> float:
        raise OSError("disk walk failed")

    metrics.gauge("disk_used_bytes", broken)
    seen = values(metrics.render({"receiver_id": "m1"}))
    assert seen['tokentrail_receiver_wal_bytes_written_total{receiver_id="m1"}'] == "1099511627777"
    assert seen['tokentrail_receiver_bytes_in_flight{receiver_id="m1"}'] == "2097155"
    assert seen['tokentrail_receiver_flush_lag_seconds{receiver_id="m1"}'] == "0.125"
    assert seen['tokentrail_receiver_disk_used_bytes{receiver_id="m1"}'] == "NaN"
    assert seen['tokentrail_receiver_spans_received_total{receiver_id="m1"}'] == "0"


def test_a_receiver_shows_its_exports_and_bytes_in_flight(tmp_path: Path) -> None:
    with Receiver(tmp_path, grpc_port=0, flush_interval=3600) as receiver:
        text = receiver.metrics.render()
        assert "# TYPE tokentrail_receiver_exports_in_flight gauge" in text
        assert "# TYPE tokentrail_receiver_bytes_in_flight gauge" in text
        idle = values(text)
        assert (idle["tokentrail_receiver_exports_in_flight"], idle["tokentrail_receiver_bytes_in_flight"]) == ("0", "0")
        held = receiver.admission.try_admit(5_000_000)  # as an export in flight holds it
        assert isinstance(held, AdmissionPass)
        try:
            busy = values(receiver.metrics.render())
        finally:
            held.release()
        assert busy["tokentrail_receiver_exports_in_flight"] == "1"
        assert busy["tokentrail_receiver_bytes_in_flight"] == "5000000"
