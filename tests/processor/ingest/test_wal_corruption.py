"""A damaged WAL loses only the damaged frames (issue 13, items 1-2).

A WAL is written through the real ``WriteAheadLog`` (two segments of one receiver: an older, closed one of ten
frames and the newest, the one a crash interrupts, of three), corrupted on disk in one way each, then:
``tokentrail wal verify`` reports it without touching it, a real ``Receiver`` recovers it at start, and every
intact frame's rows are in Parquet exactly once, the damaged bytes in ``wal/quarantine/`` and ``tokentrail status``
says so. Before the fix a damaged length field passed for a torn tail and the segment was deleted with every
acknowledged frame after it, and one bad frame dropped the rest of its segment."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from tokentrail.processor.cli import status as status_command
from tokentrail.processor.cli import wal as wal_command
from tokentrail.processor.ingest.receiver import Receiver
from tokentrail.processor.schema import PRICED, UsageRecord
from tokentrail.processor.storage.wal import FRAME_HEADER, MAGIC, QUARANTINE_DIR, WriteAheadLog, list_segments

from tests.helpers.otlp import export
from tests.helpers.receiver import batch, read_usage, span_ids

RID = "r1"
T0 = datetime(2025, 6, 1, 12, tzinfo=UTC)
ROWS_PER_FRAME = 5
OLD_FRAMES = 10
NEW_FRAMES = 3


def rec(i: int) -> UsageRecord:
    return UsageRecord(
        timestamp=T0 + timedelta(seconds=i),
        trace_id=f"{i:032x}",
        span_id=f"{i:016x}",
        provider="openai",
        model="gpt-4o",
        input_tokens=100,
        output_tokens=10,
        total_cost=Decimal("0.000123456789"),
        market_cost=Decimal("0.000123456789"),
        price_status=PRICED,
    )


@dataclass(frozen=True)
class Frame:
    start: int
    end: int
    span_ids: frozenset[str]


@dataclass
class Wal:
    old: Path  # closed: a newer segment exists
    new: Path  # the newest: the one a crash may have cut mid-append
    frames: dict[Path, list[Frame]]


def write_wal(data_dir: Path) -> Wal:
    """Two segments written by the real log, with where each frame lies (read from the clean files' headers)."""
    wal = WriteAheadLog(data_dir / "wal", RID)
    n = 0
    ids: list[frozenset[str]] = []
    for count in (OLD_FRAMES, NEW_FRAMES):
        for _ in range(count):
            records = [rec(n + k) for k in range(ROWS_PER_FRAME)]
            n += ROWS_PER_FRAME
            wal.append(records)
            ids.append(frozenset(r.span_id for r in records))
        wal.rotate()
    old, new = (p for _, _, p in list_segments(data_dir / "wal", RID))
    frames: dict[Path, list[Frame]] = {}
    it = iter(ids)
    for path in (old, new):
        data = path.read_bytes()
        pos, frames[path] = len(MAGIC), []
        while pos < len(data):
            length, _ = FRAME_HEADER.unpack_from(data, pos)
            end = pos + FRAME_HEADER.size + length
            frames[path].append(Frame(pos, end, next(it)))
            pos = end
    assert [len(frames[old]), len(frames[new])] == [OLD_FRAMES, NEW_FRAMES]
    return Wal(old, new, frames)


# Each corruption damages the bytes of a file in place and returns the path and the indexes of the frames it
# destroyed (those whose rows must be missing, and only those).
Corruption = Callable[[Wal], tuple[Path, set[int]]]


def _edit(path: Path, edit: Callable[[bytearray], bytearray | None]) -> None:
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(edit(data) or data))


def length_field_mid_segment(w: Wal) -> tuple[Path, set[int]]:
    f = w.frames[w.old][4]

    def edit(d: bytearray) -> None:
        d[f.start : f.start + 4] = (0x7FFF_FFF0).to_bytes(4, "little")  # larger than the file: passed for a torn tail

    _edit(w.old, edit)
    return w.old, {4}


def payload_bytes(w: Wal) -> tuple[Path, set[int]]:
    f = w.frames[w.old][4]

    def edit(d: bytearray) -> None:
        middle = (f.start + f.end) // 2
        for i in range(middle, middle + 16):
            d[i] ^= 0x5A  # the CRC no longer matches

    _edit(w.old, edit)
    return w.old, {4}


def header_both_fields(w: Wal) -> tuple[Path, set[int]]:
    f = w.frames[w.old][4]

    def edit(d: bytearray) -> None:
        d[f.start : f.start + 8] = bytes.fromhex("00100000deadbeef")  # a plausible length (4096), a wrong CRC

    _edit(w.old, edit)
    return w.old, {4}


def zeroed_page(w: Wal) -> tuple[Path, set[int]]:
    frames = w.frames[w.old]
    page = (frames[4].end // 4096) * 4096  # the page holding the boundary between frames 4 and 5
    if page + 4096 > frames[-1].start:
        page -= 4096
    lost = {i for i, f in enumerate(frames) if f.start < page + 4096 and f.end > page}

    def edit(d: bytearray) -> None:
        d[page : page + 4096] = bytes(4096)

    _edit(w.old, edit)
    assert len(lost) >= 2  # the page spans a frame boundary
    return w.old, lost


def bytes_cut_out_mid_segment(w: Wal) -> tuple[Path, set[int]]:
    frames = w.frames[w.old]
    cut = (frames[4].start + 100, frames[5].start + 50)  # frame 4's tail and frame 5's header: later frames shift

    def edit(d: bytearray) -> bytearray:
        return d[: cut[0]] + d[cut[1] :]

    _edit(w.old, edit)
    return w.old, {4, 5}


def closed_segment_truncated_mid_segment(w: Wal) -> tuple[Path, set[int]]:
    frames = w.frames[w.old]

    def edit(d: bytearray) -> bytearray:
        return d[: frames[6].start + 300]  # a newer segment exists: no crash mid-append can explain this

    _edit(w.old, edit)
    return w.old, set(range(6, OLD_FRAMES))


def newest_segment_truncated_mid_frame(w: Wal) -> tuple[Path, set[int]]:
    last = w.frames[w.new][-1]

    def edit(d: bytearray) -> bytearray:
        return d[: last.start + 100]  # a crash while appending the last frame (never acknowledged)

    _edit(w.new, edit)
    return w.new, {NEW_FRAMES - 1}


DAMAGE: list[Corruption] = [
    length_field_mid_segment,
    payload_bytes,
    header_both_fields,
    zeroed_page,
    bytes_cut_out_mid_segment,
    closed_segment_truncated_mid_segment,
]
TORN: list[Corruption] = [newest_segment_truncated_mid_frame]


def run_cli(module: object, data_dir: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """A command through its own ``register``, the way ``cli.main`` builds the parser."""
    parser = argparse.ArgumentParser(prog="tokentrail")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    module.register(commands, Path("unused-default"))  # type: ignore[attr-defined]
    args = parser.parse_args([*argv, "--data-dir", str(data_dir)])
    code = int(args.handler(args))
    return code, capsys.readouterr().out


def expected_rows(w: Wal, damaged: Path, lost: set[int]) -> set[str]:
    keep: set[str] = set()
    for path, frames in w.frames.items():
        for i, f in enumerate(frames):
            if not (path == damaged and i in lost):
                keep |= f.span_ids
    return keep


@pytest.mark.parametrize("corrupt", DAMAGE + TORN, ids=lambda c: c.__name__)
def test_recovery_keeps_every_intact_frame_and_quarantines_only_the_damage(
    corrupt: Corruption, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = write_wal(tmp_path)
    damaged, lost = corrupt(w)
    damaged_bytes = damaged.read_bytes()
    is_damage = corrupt in DAMAGE

    # Offline check first: it reports the damage with offsets, exits 1, and modifies nothing.
    code, out = run_cli(wal_command, tmp_path, ["wal", "verify", "--json"], capsys)
    report = json.loads(out)
    assert code == (1 if is_damage else 0)
    by_name = {s["segment"]: s for s in report["segments"]}
    seg = by_name[damaged.name]
    assert seg["frames_ok"] == len(w.frames[damaged]) - len(lost)
    assert seg["rows_ok"] == ROWS_PER_FRAME * (len(w.frames[damaged]) - len(lost))
    if is_damage:
        assert seg["damaged"] and seg["torn_tail"] is None
        assert seg["damaged_frames"] >= 1
    else:
        assert not seg["damaged"] and seg["torn_tail"] is not None
    assert damaged.read_bytes() == damaged_bytes
    assert not (tmp_path / "wal" / QUARANTINE_DIR).exists()

    # A real receiver recovers it at start; stop flushes nothing more (nothing new was sent).
    Receiver(tmp_path, grpc_port=0, receiver_id=RID, flush_interval=3600).start().stop()

    stored = [r["span_id"] for r in read_usage(tmp_path)]
    assert len(stored) == len(set(stored)), "a span was stored twice"
    assert set(stored) == expected_rows(w, damaged, lost)  # spans lost: exactly those of the damaged frames
    assert not list_segments(tmp_path / "wal")  # every segment was replayed

    quarantine = tmp_path / "wal" / QUARANTINE_DIR
    if is_damage:
        files = sorted(quarantine.iterdir())
        assert files and all(f.name.startswith(damaged.name + ".bytes-") for f in files)
        for d, f in zip(seg["damaged"], sorted(files, key=lambda p: int(p.name.split("-")[-2])), strict=True):
            assert f.name == f"{damaged.name}.bytes-{d['start']}-{d['end']}"
            assert f.read_bytes() == damaged_bytes[d["start"] : d["end"]]  # the damaged bytes, kept as they were
        status = status_command.collect_status(tmp_path)
        assert status["wal"]["quarantined"] == [f.name for f in files]
        code, text = run_cli(status_command, tmp_path, ["status"], capsys)
        assert code == 0 and "DAMAGED" in text and files[0].name in text
        # verify afterwards: the WAL is clean again, and says where the damaged bytes went
        code, text = run_cli(wal_command, tmp_path, ["wal", "verify"], capsys)
        assert code == 0 and "quarantine holds" in text
    else:
        assert not quarantine.exists()  # a crash's torn tail is no alarm


def test_verify_a_clean_wal_exits_0_and_counts_every_frame(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = write_wal(tmp_path)
    code, out = run_cli(wal_command, tmp_path, ["wal", "verify"], capsys)
    assert code == 0
    assert f"{w.old.name}  ok: {OLD_FRAMES} frame(s) intact ({OLD_FRAMES * ROWS_PER_FRAME} row(s))" in out
    assert "2 segment(s), 0 damaged" in out


def test_verify_prints_the_damaged_offsets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = write_wal(tmp_path)
    length_field_mid_segment(w)
    f = w.frames[w.old][4]
    code, out = run_cli(wal_command, tmp_path, ["wal", "verify"], capsys)
    assert code == 1
    assert f"{w.old.name}  DAMAGED: {OLD_FRAMES - 1} frame(s) intact" in out
    assert f"bytes {f.start}-{f.end} ({f.end - f.start} B) unreadable: an impossible frame length" in out


def test_a_damaged_frame_found_by_the_running_flusher_is_counted_in_metrics_and_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver = Receiver(tmp_path, grpc_port=0, receiver_id=RID, flush_interval=3600).start()
    try:
        requests = [batch(4) for _ in range(6)]
        for request in requests:
            export(receiver.grpc_port, request)  # one acknowledged frame each
        assert receiver.wal is not None
        receiver.wal.rotate()  # sealed, queued for the flusher
        (segment,) = (p for _, _, p in list_segments(tmp_path / "wal"))
        data = bytearray(segment.read_bytes())
        pos = len(MAGIC)
        for _ in range(2):  # to the third frame
            pos += FRAME_HEADER.size + FRAME_HEADER.unpack_from(data, pos)[0]
        data[pos + 200] ^= 0xFF
        segment.write_bytes(bytes(data))
        receiver.flush()
        assert receiver.metrics.counters()["wal_corrupt_frames"] == 1
        assert "tokentrail_receiver_wal_corrupt_frames_total 1\n" in receiver.metrics.render()
    finally:
        receiver.stop()  # writes the status file
    stored = [r["span_id"] for r in read_usage(tmp_path)]
    assert sorted(stored) == sorted(set().union(*(span_ids(r) for i, r in enumerate(requests) if i != 2)))
    code, text = run_cli(status_command, tmp_path, ["status"], capsys)
    assert code == 0 and "WAL damaged frames 1 (quarantined)" in text


def test_damage_found_by_startup_recovery_is_counted_in_metrics(tmp_path: Path) -> None:
    w = write_wal(tmp_path)
    damaged, lost = payload_bytes(w)
    receiver = Receiver(tmp_path, grpc_port=0, receiver_id=RID, flush_interval=3600).start()
    try:
        assert receiver.metrics.counters()["wal_corrupt_frames"] >= len(lost) >= 1
        assert "tokentrail_receiver_wal_corrupt_frames_total 0\n" not in receiver.metrics.render()
    finally:
        receiver.stop()
