"""A damaged WAL, end to end: a real receiver acknowledges known batches and is SIGKILLed with them still in its WAL;
the segment is damaged on disk in one way each; the restarted receiver stores every frame the damage did not touch
(spans lost beyond the damaged frames: 0), quarantines the damaged bytes, counts them (``/metrics``, ``tokentrail
status``) and answers; ``tokentrail wal verify`` reports the damage before and a clean WAL after.

``tests/processor/ingest/test_wal_corruption.py`` damages segments written in-process, older closed segments
included; here the segment is the one a crashed ``tokentrail serve`` left, and recovery runs in the real command.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from tokentrail.processor.storage.wal import FRAME_HEADER, MAGIC, QUARANTINE_DIR, decode_payload, list_segments

from tests.fault.collector import GrpcExporter, Ledger, make_batch
from tests.fault.oracle import assert_exactly_once
from tests.fault.serve import Serve, run_cli

FRAMES = 12
SPANS_PER_FRAME = 10
PAGE = 4096


@dataclass(frozen=True)
class Frame:
    start: int
    end: int
    span_ids: frozenset[str]


def frames_of(segment: Path) -> list[Frame]:
    """Where each frame of an intact segment lies, and the spans it holds (decoded, not assumed)."""
    data = segment.read_bytes()
    assert data[: len(MAGIC)] == MAGIC
    pos, frames = len(MAGIC), []
    while pos < len(data):
        length, _ = FRAME_HEADER.unpack_from(data, pos)
        end = pos + FRAME_HEADER.size + length
        table = decode_payload(data[pos + FRAME_HEADER.size : end])
        frames.append(Frame(pos, end, frozenset(str(s) for s in table.column("span_id").to_pylist())))
        pos = end
    return frames


@dataclass(frozen=True)
class Damage:
    touched: list[int]  # indexes of the frames whose spans the damage destroys
    torn: bool = False  # a cut-short last frame (a crash's signature), not damage
    quarantined: bool = True


Corrupt = Callable[[bytearray, list[Frame]], Damage]


def flip(data: bytearray, at: int, mask: int = 0xFF) -> None:
    data[at] ^= mask


def length_field(data: bytearray, frames: list[Frame]) -> Damage:
    flip(data, frames[5].start + 1)  # bits 8-15 of frame 5's length: it ends somewhere else
    return Damage([5])


def payload_byte(data: bytearray, frames: list[Frame]) -> Damage:
    f = frames[5]
    flip(data, (f.start + FRAME_HEADER.size + f.end) // 2, 0x01)  # one bit: the CRC32 no longer matches
    return Damage([5])


def frame_checksum(data: bytearray, frames: list[Frame]) -> Damage:
    flip(data, frames[5].start + 4 + 2)  # the CRC field of frame 5's header
    return Damage([5])


def segment_magic(data: bytearray, frames: list[Frame]) -> Damage:
    flip(data, 3)  # the segment header: no frame is lost, the bad magic is kept for a human
    return Damage([])


def zeroed_page(data: bytearray, frames: list[Frame]) -> Damage:
    boundary = frames[6].start  # a page-aligned 4 KiB around the boundary of frames 5 and 6, as a lost page reads
    page = boundary // PAGE * PAGE
    assert page + PAGE < frames[-1].start, "the frames are too small for the page to fall mid-segment"
    data[page : page + PAGE] = bytes(PAGE)
    return Damage([i for i, f in enumerate(frames) if f.start < page + PAGE and f.end > page])


def truncated_mid_frame(data: bytearray, frames: list[Frame]) -> Damage:
    last = frames[-1]
    del data[(last.start + last.end) // 2 :]  # the crash came mid-append: that frame was never acknowledged
    return Damage([len(frames) - 1], torn=True, quarantined=False)


KINDS: list[Corrupt] = [length_field, payload_byte, frame_checksum, segment_magic, zeroed_page, truncated_mid_frame]


@pytest.mark.parametrize("corrupt", KINDS, ids=lambda c: c.__name__)
def test_a_damaged_wal_loses_only_the_damaged_frames(corrupt: Corrupt, tmp_path: Path) -> None:
    serve = Serve(tmp_path, "--flush-interval", "3600").start()  # nothing reaches Parquet: all of it is in the WAL
    ledger = Ledger()
    exporter = GrpcExporter(serve.ports.grpc, ledger)
    for _ in range(FRAMES):
        assert exporter.export(make_batch(SPANS_PER_FRAME))  # one Export, one frame
    exporter.close()
    serve.kill()
    (segment,) = (path for _, _, path in list_segments(tmp_path / "wal"))
    frames = frames_of(segment)
    assert [f.span_ids for f in frames] == [b.span_ids for b in ledger.acked]

    data = bytearray(segment.read_bytes())
    damage = corrupt(data, frames)
    segment.write_bytes(bytes(data))
    lost = set().union(*(frames[i].span_ids for i in damage.touched))

    # Offline first: the damage is reported (exit 1), a torn tail is not damage (exit 0); nothing is modified.
    verify = run_cli("wal", "verify", "--json", "--data-dir", str(tmp_path))
    report = json.loads(verify.stdout)
    assert verify.returncode == (0 if damage.torn else 1), verify.stdout + verify.stderr
    (seg,) = report["segments"]
    assert seg["frames_ok"] == FRAMES - len(damage.touched)
    assert (seg["torn_tail"] is not None) == damage.torn
    assert segment.read_bytes() == bytes(data)

    serve.start()  # recovery on the same data directory
    assert serve.healthz() == 200
    counters = serve.metrics()
    if damage.torn:
        assert counters["wal_torn_tails"] == 1 and counters["wal_corrupt_frames"] == 0
    elif damage.touched:
        assert counters["wal_corrupt_frames"] >= 1
    assert counters["records_recovered"] == SPANS_PER_FRAME * (FRAMES - len(damage.touched))
    after = GrpcExporter(serve.ports.grpc, ledger)
    assert after.export(make_batch(SPANS_PER_FRAME)), "the recovered receiver does not take new spans"
    after.close()
    assert serve.terminate() == 0

    assert_exactly_once(tmp_path, ledger, lost=lost)  # every frame the damage did not touch, once
    quarantine = tmp_path / "wal" / QUARANTINE_DIR
    status = json.loads(run_cli("status", "--json", "--data-dir", str(tmp_path)).stdout)
    if damage.quarantined:
        kept = sorted(p.name for p in quarantine.iterdir())
        assert kept and all(name.startswith(segment.name + ".bytes-") for name in kept)
        assert status["wal"]["quarantined"] == kept
    else:
        assert not quarantine.exists() and status["wal"]["quarantined"] == []
    assert status["wal"]["segments"] == 0
    clean = run_cli("wal", "verify", "--data-dir", str(tmp_path))
    assert clean.returncode == 0, clean.stdout + clean.stderr
