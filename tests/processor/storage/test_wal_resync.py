"""Reading past a damaged WAL frame: the reader resynchronises only on a frame whose header, CRC32 and Arrow payload
of usage records all check out, so bytes that merely look like a frame never become records, and damage of any
shape (erased flash reads 0xFF) costs only the frames it touched."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
from tokentrail.processor.schema import PRICED, UsageRecord
from tokentrail.processor.storage.wal import FRAME_HEADER, MAGIC, WriteAheadLog, list_segments, read_segment

T0 = datetime(2025, 6, 1, 12, tzinfo=UTC)


def rec(i: int) -> UsageRecord:
    return UsageRecord(
        timestamp=T0 + timedelta(seconds=i),
        trace_id=f"{i:032x}",
        span_id=f"{i:016x}",
        provider="openai",
        model="gpt-4o",
        input_tokens=1,
        output_tokens=1,
        total_cost=Decimal("0.000000000001"),
        market_cost=Decimal("0.000000000001"),
        price_status=PRICED,
    )


def segment_of(tmp_path: Path, frames: int) -> tuple[Path, list[int]]:
    """A closed segment of ``frames`` one-row frames, and where each frame starts."""
    wal = WriteAheadLog(tmp_path, "r1")
    for i in range(frames):
        wal.append([rec(i)])
    wal.rotate()
    ((_, _, path),) = list_segments(tmp_path)
    data = path.read_bytes()
    starts, pos = [], len(MAGIC)
    while pos < len(data):
        starts.append(pos)
        pos += FRAME_HEADER.size + FRAME_HEADER.unpack_from(data, pos)[0]
    return path, starts


def span_ids(path: Path, *, tail_may_be_torn: bool = False) -> list[str]:
    return read_segment(path, tail_may_be_torn=tail_may_be_torn).table()["span_id"].to_pylist()


def test_an_erased_page_of_0xff_costs_only_the_frames_it_covers(tmp_path: Path) -> None:
    path, starts = segment_of(tmp_path, 8)
    data = bytearray(path.read_bytes())
    data[starts[3] + 40 : starts[4] + 40] = b"\xff" * (starts[4] - starts[3])  # frame 3's tail, frame 4's header
    path.write_bytes(bytes(data))
    read = read_segment(path, tail_may_be_torn=False)
    assert read.table()["span_id"].to_pylist() == [rec(i).span_id for i in (0, 1, 2, 5, 6, 7)]
    (damage,) = read.damage
    assert (damage.start, damage.end, damage.frames) == (starts[3], starts[5], 2)


def test_a_frame_with_a_valid_crc_but_no_arrow_payload_is_not_taken_for_one(tmp_path: Path) -> None:
    path, starts = segment_of(tmp_path, 3)
    data = path.read_bytes()
    fake_payload = b"\xff\xff\xff\xff\x10\x00\x00\x00" + b"not an arrow stream at all"
    fake = FRAME_HEADER.pack(len(fake_payload), zlib.crc32(fake_payload)) + fake_payload
    path.write_bytes(data[: starts[1]] + b"\x00" * 16 + fake + data[starts[1] :])  # garbage, then a fake frame
    read = read_segment(path, tail_may_be_torn=False)
    assert read.table()["span_id"].to_pylist() == [rec(i).span_id for i in range(3)]
    (damage,) = read.damage
    assert (damage.start, damage.end) == (starts[1], starts[1] + 16 + len(fake))


def test_an_arrow_stream_that_is_not_usage_records_is_not_taken_for_a_frame(tmp_path: Path) -> None:
    path, starts = segment_of(tmp_path, 2)
    sink = pa.BufferOutputStream()
    table = pa.table({"something": [1, 2, 3]})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    payload = sink.getvalue().to_pybytes()
    data = path.read_bytes()
    path.write_bytes(data + FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
    read = read_segment(path, tail_may_be_torn=False)
    assert read.num_rows == 2 and read.damage and "not usage records" in read.damage[0].reason


def test_a_short_last_frame_is_a_torn_tail_only_where_a_crash_can_have_cut_it(tmp_path: Path) -> None:
    path, starts = segment_of(tmp_path, 4)
    with open(path, "r+b") as f:
        f.truncate(starts[3] + 30)
    newest = read_segment(path, tail_may_be_torn=True)
    assert newest.num_rows == 3 and not newest.corrupt and newest.torn_tail is not None
    closed = read_segment(path, tail_may_be_torn=False)
    assert closed.num_rows == 3 and closed.corrupt and closed.torn_tail is None


def test_a_damaged_segment_header_keeps_every_frame(tmp_path: Path) -> None:
    path, _ = segment_of(tmp_path, 3)
    data = bytearray(path.read_bytes())
    data[0:4] = b"XXXX"
    path.write_bytes(bytes(data))
    read = read_segment(path)
    assert read.num_rows == 3
    (damage,) = read.damage
    assert (damage.start, damage.end, damage.frames) == (0, len(MAGIC), 0)
