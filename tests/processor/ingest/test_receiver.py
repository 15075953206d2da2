"""The OTLP/gRPC receiver on a real loopback server: acknowledged means on disk, retries are counted once, bad input
gets the right status code, and a crash loses nothing acknowledged."""

from __future__ import annotations

import gc
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tokentrail.processor.ingest.gc_tuning import GC_THRESHOLD
from tokentrail.processor.ingest.receiver import Receiver
from tokentrail.processor.normalize.reader import normalize_request
from tokentrail.processor.schema import ARROW_SCHEMA, COST_TYPE
from tokentrail.processor.storage.parquet import part_name
from tokentrail.processor.storage.wal import WriteAheadLog, list_segments, read_segment

from tests.helpers.otlp import export, export_raw, genai_attributes, make_request, make_span, random_span
from tests.helpers.receiver import batch, read_usage, span_ids


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    # A long flush interval: only an explicit flush() writes Parquet, so tests see the WAL state.
    with Receiver(tmp_path, grpc_port=0, receiver_id="test-r1", flush_interval=3600) as r:
        yield r


def test_port_zero_binds_a_real_port(receiver: Receiver) -> None:
    assert receiver.grpc_port > 0
    assert export(receiver.grpc_port, make_request([])).partial_success.rejected_spans == 0


def test_spans_from_the_real_otlp_exporter_land_in_parquet(receiver: Receiver, tmp_path: Path) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "billing", "deployment.environment.name": "dev"}))
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{receiver.grpc_port}", insecure=True)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as span:
        span.set_attributes(
            genai_attributes({"gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini"})
        )
    with tracer.start_as_current_span("GET /health"):
        pass
    provider.shutdown()
    receiver.flush()

    (row,) = read_usage(tmp_path)
    assert (row["service"], row["environment"], row["model"], row["user_id"]) == ("billing", "dev", "gpt-4o-mini", "cust_42")
    assert row["tags"] == ["plan:pro", "feature:chat"]
    assert row["price_status"] == "priced"
    assert row["market_cost"] == row["total_cost"] > 0
    assert receiver.stats["skipped"] == 1 and receiver.stats["accepted"] == 1


def test_records_are_in_the_wal_when_export_returns_before_any_flush(receiver: Receiver, tmp_path: Path) -> None:
    export(receiver.grpc_port, make_request([random_span(), random_span()]))
    rows = sum(read_segment(p).num_rows for _, _, p in list_segments(tmp_path / "wal"))
    assert rows == 2
    assert read_usage(tmp_path) == []  # not yet in Parquet: the WAL alone made it safe to acknowledge


def test_export_is_unavailable_when_the_wal_cannot_fsync(receiver: Receiver, tmp_path: Path) -> None:
    wal = receiver.wal
    assert wal is not None

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    wal._fsync = full_disk
    span = random_span()
    with pytest.raises(grpc.RpcError) as info:
        export(receiver.grpc_port, make_request([span]))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    wal._fsync = os.fsync  # the disk recovers; the Collector's retry must be accepted, not taken for a duplicate
    export(receiver.grpc_port, make_request([span]))
    receiver.flush()
    assert len(read_usage(tmp_path)) == 1  # the refused copy was cut from the WAL: the retry is the only one
    assert receiver.stats["deduplicated"] == 0


def test_the_same_span_exported_twice_is_stored_once(receiver: Receiver, tmp_path: Path) -> None:
    request = make_request([random_span()])
    export(receiver.grpc_port, request)
    export(receiver.grpc_port, request)
    receiver.flush()
    assert len(read_usage(tmp_path)) == 1
    assert receiver.stats["deduplicated"] == 1


def test_duplicates_across_the_real_exporter_are_stored_once(receiver: Receiver, tmp_path: Path) -> None:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("chat") as span:
        span.set_attributes(genai_attributes())
    spans = memory.get_finished_spans()
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{receiver.grpc_port}", insecure=True)
    try:
        exporter.export(spans)
        exporter.export(spans)
    finally:
        exporter.shutdown()
    receiver.flush()
    assert len(read_usage(tmp_path)) == 1


def test_malformed_protobuf_is_invalid_argument(receiver: Receiver) -> None:
    with pytest.raises(grpc.RpcError) as info:
        export_raw(receiver.grpc_port, b"\xff\xff\xff\xff not protobuf")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_rejected_spans_are_reported_in_partial_success_and_the_rest_stored(receiver: Receiver, tmp_path: Path) -> None:
    bad = make_span(genai_attributes({"gen_ai.usage.input_tokens": -5}), trace_id=os.urandom(16))
    response = export(receiver.grpc_port, make_request([random_span(), bad, random_span()]))
    assert response.partial_success.rejected_spans == 1
    assert "out of range" in response.partial_success.error_message
    receiver.flush()
    assert len(read_usage(tmp_path)) == 2
    assert receiver.stats["rejected"] == 1


def test_unknown_model_is_stored_unpriced_with_null_cost(receiver: Receiver, tmp_path: Path) -> None:
    export(receiver.grpc_port, make_request([random_span({"gen_ai.response.model": "acme-llm-9"})]))
    receiver.flush()
    (row,) = read_usage(tmp_path)
    assert row["price_status"] == "unpriced"
    assert row["total_cost"] is None and row["market_cost"] is None
    assert receiver.stats["unpriced"] == 1


def test_byok_record_costs_the_organisation_nothing(receiver: Receiver, tmp_path: Path) -> None:
    export(receiver.grpc_port, make_request([random_span({"tokentrail.credential.type": "byok"})]))
    receiver.flush()
    (row,) = read_usage(tmp_path)
    assert row["total_cost"] == Decimal(0)
    assert row["market_cost"] > 0


def test_parquet_files_have_the_shared_schema_and_decimal_costs(receiver: Receiver, tmp_path: Path) -> None:
    export(receiver.grpc_port, make_request([random_span()]))
    receiver.flush()
    (path,) = (tmp_path / "usage").glob("date=*/*.parquet")
    schema = pq.read_schema(path)
    assert schema.equals(ARROW_SCHEMA, check_metadata=False)
    assert schema.field("market_cost").type == COST_TYPE
    assert path.parent.name == "date=2025-06-01"
    assert path.name.startswith("part-test-r1-")


def test_unflushed_wal_segments_are_replayed_on_start_and_seed_the_dedupe_window(tmp_path: Path) -> None:
    # A receiver that crashed after acknowledging: its records exist only in the WAL.
    request = make_request([random_span(), random_span()])
    crashed = WriteAheadLog(tmp_path / "wal", "test-r1")
    crashed.append(normalize_request(request).records)
    (segment,) = [p for _, _, p in list_segments(tmp_path / "wal")]

    with Receiver(tmp_path, grpc_port=0, receiver_id="test-r1", flush_interval=3600) as receiver:
        assert not segment.exists()
        assert len(read_usage(tmp_path)) == 2
        export(receiver.grpc_port, request)  # the Collector retries the batch it never saw acknowledged
        receiver.flush()
        assert receiver.stats["deduplicated"] == 2
    assert len(read_usage(tmp_path)) == 2


def test_replay_after_a_crash_mid_flush_rewrites_the_same_files(tmp_path: Path) -> None:
    crashed = WriteAheadLog(tmp_path / "wal", "test-r1")
    crashed.append(normalize_request(make_request([random_span(), random_span()])).records)
    (segment,) = [p for _, _, p in list_segments(tmp_path / "wal")]
    seq = int(segment.stem.rsplit("-", 1)[1])
    backup = segment.read_bytes()

    with Receiver(tmp_path, grpc_port=0, receiver_id="test-r1", flush_interval=3600):
        pass
    first = sorted(p.relative_to(tmp_path) for p in (tmp_path / "usage").rglob("*.parquet"))
    segment.write_bytes(backup)  # the segment's delete never reached the disk
    with Receiver(tmp_path, grpc_port=0, receiver_id="test-r1", flush_interval=3600):
        pass
    second = sorted(p.relative_to(tmp_path) for p in (tmp_path / "usage").rglob("*.parquet"))
    assert first == second == [Path("usage/date=2025-06-01") / part_name("test-r1", seq)]
    assert len(read_usage(tmp_path)) == 2


def test_segments_of_a_dead_receiver_are_replayed_by_another(tmp_path: Path) -> None:
    gone = WriteAheadLog(tmp_path / "wal", "old-host")
    gone.append(normalize_request(make_request([random_span()])).records)
    with Receiver(tmp_path, grpc_port=0, receiver_id="new-host", flush_interval=3600):
        pass
    (path,) = (tmp_path / "usage").rglob("*.parquet")
    assert path.name.startswith("part-old-host-")


def test_a_receiver_id_cannot_be_used_by_two_live_receivers(receiver: Receiver, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="in use"):
        Receiver(tmp_path, grpc_port=0, receiver_id="test-r1").start()


def test_stop_writes_everything_acknowledged_to_parquet(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path, grpc_port=0, receiver_id="test-r1", flush_interval=3600).start()
    export(receiver.grpc_port, make_request([random_span()]))
    receiver.stop()
    assert len(read_usage(tmp_path)) == 1
    assert list_segments(tmp_path / "wal") == []


def test_the_flusher_writes_parquet_on_its_own(tmp_path: Path) -> None:
    with Receiver(tmp_path, grpc_port=0, receiver_id="test-r1", flush_interval=0.05) as receiver:
        export(receiver.grpc_port, make_request([random_span()]))
        deadline = time.monotonic() + 5
        while not read_usage(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(read_usage(tmp_path)) == 1


def test_stats_count_every_outcome(receiver: Receiver) -> None:
    span = random_span()
    bad = make_span(genai_attributes({"gen_ai.request.model": None, "gen_ai.response.model": None}))
    other = make_span({"http.request.method": "GET"}, name="GET /")
    export(receiver.grpc_port, make_request([span, bad, other, random_span({"gen_ai.response.model": "nope-1"})]))
    export(receiver.grpc_port, make_request([span]))
    assert receiver.stats == {
        "received": 5,
        "accepted": 2,
        "rejected": 1,
        "deduplicated": 1,
        "unpriced": 1,
        "skipped": 1,
        "recovered": 0,
    }


def test_listeners_see_each_durable_batch_and_their_failures_never_fail_the_export(tmp_path: Path) -> None:
    seen: list[str] = []
    request = make_request([make_span(genai_attributes(gen_ai__response__model=None, gen_ai__request__model="gpt-4o-mini"))])

    def boom(records: object) -> None:
        raise RuntimeError("listener bug")

    with Receiver(tmp_path, grpc_port=0) as receiver:
        receiver.add_listener(boom)
        receiver.add_listener(lambda records: seen.extend(r.model for r in records))
        outcome = receiver.export(request)
        assert outcome.accepted == 1
        receiver.export(request)  # the same span again: a duplicate reaches no listener
    assert seen == ["gpt-4o-mini"]


def test_a_running_receiver_raises_the_gc_threshold_and_the_last_one_to_stop_restores_it(tmp_path: Path) -> None:
    before = gc.get_threshold()
    first = Receiver(tmp_path / "a", grpc_port=0, receiver_id="gc-1", flush_interval=3600).start()
    second = Receiver(tmp_path / "b", grpc_port=0, receiver_id="gc-2", flush_interval=3600).start()
    try:
        assert gc.get_threshold()[0] == max(GC_THRESHOLD, before[0])
        first.stop()
        assert gc.get_threshold()[0] == max(GC_THRESHOLD, before[0])  # the other one still runs
    finally:
        second.stop()
    assert gc.get_threshold() == before


def test_grpc_and_http_share_one_admission(tmp_path: Path) -> None:
    """An export in flight over gRPC takes the one place HTTP would have had: one bound, whatever the transport."""
    held, release = threading.Event(), threading.Event()

    def hold(records: object) -> None:  # a listener runs while its export holds its admission
        held.set()
        release.wait(30)

    first, second = batch(1), batch(1)
    with Receiver(
        tmp_path, grpc_port=0, http_port=0, receiver_id="test-r1", flush_interval=3600, max_concurrent_exports=1
    ) as receiver:
        receiver.add_listener(hold)
        grpc_export = threading.Thread(target=export, args=(receiver.grpc_port, first, 30))
        grpc_export.start()
        try:
            assert held.wait(30)
            assert receiver.admission.in_flight[0] == 1
            post = urllib.request.Request(
                f"http://127.0.0.1:{receiver.http_port}/v1/traces",
                data=second.SerializeToString(),
                headers={"Content-Type": "application/x-protobuf"},
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(post, timeout=30)
            assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "1"
        finally:
            release.set()
            grpc_export.join(30)
        with urllib.request.urlopen(post, timeout=30) as answer:  # the sender's retry, once there is room
            assert answer.status == 200
        receiver.flush()
        assert receiver.metrics.counters()["requests_busy"] == 1
        assert receiver.admission.in_flight == (0, 0)
    assert sorted(row["span_id"] for row in read_usage(tmp_path)) == sorted(span_ids(first) | span_ids(second))
