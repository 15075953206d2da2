"""The write-ahead log and the Parquet partitions: durable before acknowledged, torn tails ignored, replay
idempotent, files in the shared schema."""

from __future__ import annotations

import os
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from tokentrail.processor.schema import ARROW_SCHEMA, COST_TYPE, PRICED, UsageRecord, table_to_records
from tokentrail.processor.storage.parquet import flush_segment, flush_wal, part_name, write_partitions
from tokentrail.processor.storage.wal import WALError, WriteAheadLog, list_segments, read_segment

T = datetime(2025, 6, 1, 23, 59, 59, 999_999, tzinfo=UTC)


def rec(i: int, *, timestamp: datetime = T, **overrides: Any) -> UsageRecord:
    fields: dict[str, Any] = dict(
        timestamp=timestamp,
        trace_id=f"{i:032x}",
        span_id=f"{i:016x}",
        provider="openai",
        model="gpt-4o",
        tags=["plan:pro"],
        input_tokens=100 + i,
        output_tokens=10,
        total_cost=Decimal("0.000123456789"),
        market_cost=Decimal("0.000123456789"),
        price_status=PRICED,
    )
    fields.update(overrides)
    return UsageRecord(**fields)


def segments(wal_dir: Path) -> list[Path]:
    return [p for _, _, p in list_segments(wal_dir)]


def test_appended_records_read_back_from_the_segment(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, "r1")
    wal.append([rec(1), rec(2)])
    wal.append([rec(3)])
    (path,) = segments(tmp_path)
    read = read_segment(path)
    assert read.num_rows == 3
    assert [r.trace_id for r in table_to_records(read.table())] == [rec(i).trace_id for i in (1, 2, 3)]
    assert read.table().schema == ARROW_SCHEMA


def test_append_returns_only_after_fsync(tmp_path: Path) -> None:
    release = threading.Event()
    synced: list[int] = []

    def slow_fsync(fd: int) -> None:
        release.wait(10)
        os.fsync(fd)
        synced.append(fd)

    wal = WriteAheadLog(tmp_path, "r1", fsync=slow_fsync)
    done = threading.Event()
    def append() -> None:
        wal.append([rec(1)])
        done.set()

    threading.Thread(target=append).start()
    assert not done.wait(0.3)  # the frame is written, but append waits for its fsync
    release.set()
    assert done.wait(5)
    assert synced


def test_failed_fsync_raises_so_nothing_is_acknowledged(tmp_path: Path) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    wal = WriteAheadLog(tmp_path, "r1", fsync=broken_fsync)
    with pytest.raises(WALError):
        wal.append([rec(1)])


def test_failed_fsync_cuts_the_unacknowledged_frames_from_the_segment(tmp_path: Path) -> None:
    fail = {"on": False}

    def flaky_fsync(fd: int) -> None:
        if fail["on"]:
            raise OSError(5, "Input/output error")
        os.fsync(fd)

    wal = WriteAheadLog(tmp_path, "r1", fsync=flaky_fsync)
    wal.append([rec(1)])
    fail["on"] = True
    with pytest.raises(WALError):
        wal.append([rec(2)])
    fail["on"] = False
    wal.append([rec(3)])  # a new segment
    wal.rotate()
    rows = sorted(r.trace_id for p in segments(tmp_path) for r in table_to_records(read_segment(p).table()))
    assert rows == [rec(1).trace_id, rec(3).trace_id]


def test_failed_write_raises_and_later_appends_go_to_a_new_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal = WriteAheadLog(tmp_path, "r1")
    wal.append([rec(1)])
    import tokentrail.processor.storage.wal as wal_module

    real_write = wal_module.os.write
    calls = {"n": 0}

    def failing_write(fd: int, data: memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            real_write(fd, bytes(data)[:10])
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(wal_module.os, "write", failing_write)
    with pytest.raises(WALError):
        wal.append([rec(2)])
    monkeypatch.setattr(wal_module.os, "write", real_write)
    wal.append([rec(3)])
    wal.rotate()
    rows = sorted(r.trace_id for p in segments(tmp_path) for r in table_to_records(read_segment(p).table()))
    assert rows == [rec(1).trace_id, rec(3).trace_id]


def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    calls: list[int] = []

    def slow_fsync(fd: int) -> None:
        time.sleep(0.02)
        os.fsync(fd)
        calls.append(fd)

    wal = WriteAheadLog(tmp_path, "r1", fsync=slow_fsync)
    threads = [threading.Thread(target=wal.append, args=([rec(i)],)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert read_segment(segments(tmp_path)[0]).num_rows == 24
    assert len(calls) < 24  # one leader synced for several writers


def test_torn_tail_frame_is_ignored_and_complete_frames_are_kept(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, "r1")
    wal.append([rec(1)])
    wal.append([rec(2)])
    wal.rotate()
    (path,) = segments(tmp_path)
    size = path.stat().st_size
    with open(path, "r+b") as f:  # a crash in the middle of the second frame
        f.truncate(size - 7)
    read = read_segment(path)
    assert read.num_rows == 1
    assert not read.corrupt
    assert read.valid_bytes < read.size


def test_garbage_after_the_last_frame_is_a_torn_tail(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, "r1")
    wal.append([rec(1)])
    wal.rotate()
    (path,) = segments(tmp_path)
    with open(path, "ab") as f:
        f.write(b"\x10\x00\x00\x00\xde\xad")
    assert read_segment(path).num_rows == 1


def test_corrupt_frame_before_the_end_is_flagged_its_bytes_quarantined_and_the_next_frame_kept(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, "r1")
    wal.append([rec(1)])
    wal.append([rec(2)])
    wal.rotate()
    (path,) = segments(tmp_path)
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the first frame's payload
    path.write_bytes(bytes(data))
    read = read_segment(path)
    assert read.corrupt and read.num_rows == 1
    result = flush_segment(path, tmp_path / "usage")
    assert result.rows == 1 and result.corrupt_frames == 1
    (kept,) = result.quarantined  # the damaged frame's bytes, named after where they came from
    assert kept.parent == tmp_path / "quarantine" and kept.name.startswith(path.name)
    assert kept.read_bytes() == bytes(data[read.damage[0].start : read.damage[0].end])
    assert not path.exists()


def test_segments_rotate_by_size(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, "r1", max_segment_bytes=1)
    wal.append([rec(1)])
    wal.append([rec(2)])
    assert len(segments(tmp_path)) == 2
    assert len(wal.take_closed()) == 2


def test_segments_rotate_by_age(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, "r1", max_segment_age=0.05)
    wal.append([rec(1)])
    assert not wal.rotate_if_older(60)
    time.sleep(0.06)
    assert wal.rotate_if_older()
    assert len(wal.take_closed()) == 1


def test_segment_numbers_are_never_reused_after_a_restart(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, "r1")
    wal.append([rec(1)])
    wal.close()
    first = segments(tmp_path)[0]
    flush_wal(wal, tmp_path / "usage")  # turned into Parquet and deleted
    assert not first.exists()
    again = WriteAheadLog(tmp_path, "r1")
    again.append([rec(2)])
    assert again.last_seq > wal.last_seq


def test_parquet_schema_matches_arrow_schema_with_decimal_costs(tmp_path: Path) -> None:
    (path,) = write_partitions([rec(1), rec(2, total_cost=None, market_cost=None)], tmp_path, "r1", 7)
    schema = pq.read_schema(path)
    assert schema.equals(ARROW_SCHEMA, check_metadata=False)
    assert schema.field("total_cost").type == COST_TYPE
    assert "date" not in schema.names  # the partition lives only in the path
    table = pq.read_table(path)
    assert table["total_cost"].to_pylist() == [Decimal("0.000123456789"), None]
    meta = pq.ParquetFile(path).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_partitions_are_utc_days_with_names_from_the_segment(tmp_path: Path) -> None:
    files = write_partitions([rec(1), rec(2, timestamp=T + timedelta(microseconds=1))], tmp_path, "r1", 42)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        f"date=2025-06-01/{part_name('r1', 42)}",
        f"date=2025-06-02/{part_name('r1', 42)}",
    ]
    assert not list(tmp_path.rglob("*.tmp"))


def test_duckdb_reads_the_dataset_with_hive_partitions(tmp_path: Path) -> None:
    write_partitions([rec(1), rec(2, timestamp=T + timedelta(hours=1))], tmp_path, "r1", 1)
    rows = (
        duckdb.connect()
        .execute(
            f"SELECT date, count(*), sum(total_cost) FROM read_parquet('{tmp_path}/*/*.parquet', "
            "hive_partitioning=true) GROUP BY date ORDER BY date"
        )
        .fetchall()
    )
    assert [(str(d), n) for d, n, _ in rows] == [("2025-06-01", 1), ("2025-06-02", 1)]
    assert rows[0][2] == Decimal("0.000123456789")


def test_replaying_a_segment_rewrites_the_same_files_without_duplicates(tmp_path: Path) -> None:
    wal_dir, usage = tmp_path / "wal", tmp_path / "usage"
    wal = WriteAheadLog(wal_dir, "r1")
    wal.append([rec(1), rec(2, timestamp=T + timedelta(hours=2))])
    wal.close()
    (segment,) = segments(wal_dir)
    backup = tmp_path / "segment.bak"
    shutil.copy(segment, backup)
    first = flush_segment(segment, usage)
    names = sorted(p.relative_to(usage) for p in usage.rglob("*.parquet"))
    shutil.copy(backup, segment)  # a crash after the Parquet rename, before the segment was deleted
    second = flush_segment(segment, usage)
    assert sorted(first.files) == sorted(second.files)
    assert sorted(p.relative_to(usage) for p in usage.rglob("*.parquet")) == names
    count = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{usage}/*/*.parquet')").fetchall()
    assert count == [(2,)]
    assert not segment.exists()


def test_flush_turns_closed_segments_into_parquet_and_deletes_them(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal", "r1")
    wal.append([rec(1)])
    wal.rotate()
    result = flush_wal(wal, tmp_path / "usage")
    assert (result.rows, result.segments) == (1, 1)
    assert segments(tmp_path / "wal") == []
    assert len(list((tmp_path / "usage").rglob("*.parquet"))) == 1


def test_tags_are_dictionary_encoded_in_parquet(tmp_path: Path) -> None:
    """Tag filters and tag grouping read the tags column on every report: it must be dictionary-encoded."""
    from datetime import datetime

    import pyarrow.parquet as pq
    from tokentrail.processor.schema import UsageRecord
    from tokentrail.processor.storage.parquet import write_partitions

    records = [
        UsageRecord(
            timestamp=datetime(2026, 11, 29, tzinfo=UTC),
            trace_id=f"{i:032x}",
            span_id=f"{i:016x}",
            provider="openai",
            model="gpt-4o-mini",
            tags=["plan:pro", f"feature:f{i % 3}"],
        )
        for i in range(50)
    ]
    (path,) = write_partitions(records, tmp_path / "usage", "r1", 1)
    column = pq.ParquetFile(path).metadata.row_group(0).column
    names = {column(i).path_in_schema: column(i) for i in range(pq.ParquetFile(path).metadata.num_columns)}
    assert "RLE_DICTIONARY" in str(names["tags.list.element"].encodings)
