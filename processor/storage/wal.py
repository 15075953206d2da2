"""Write-ahead log: an Export is acknowledged only once its records are on disk.

Segments are append-only files ``<receiver>-<seq>.wal`` in ``DATA_DIR/wal/``. A segment starts with an 8-byte magic;
each frame is ``length (u32 LE) | crc32 (u32 LE) | payload`` where the payload is an Arrow IPC stream of the records
in ``schema.ARROW_SCHEMA`` (the flusher gets a table back without re-parsing rows, and decimals stay exact). Frames
are written and read without copying the payload (``Frame``; segments are memory-mapped when read).

fsync is the cost of durability (milliseconds on real disks), so it is group-committed: a writer appends its frame
and then waits for a sync that covers it; the first waiter to find no sync running becomes the leader and syncs
every frame written so far, for everyone. After a failed write nothing more is appended to that segment, so a torn
frame can only ever be a segment's last.

Reading (``read_segment``) keeps every intact frame: after a damaged one it resynchronises on the next offset whose
header, CRC32 and Arrow payload all check out. The bytes in between are ``Damage`` (copied to ``wal/quarantine/``
by ``quarantine`` before the segment is deleted); only a frame cut short at the end of the segment a crash
interrupted is a torn tail, dropped as never acknowledged. See docs/ARCHITECTURE.md, Durability and dedupe.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pyarrow as pa
from tokentrail.processor.errors import TokenTrailError
from tokentrail.processor.schema import ARROW_SCHEMA, UsageRecord, records_to_table

__all__ = [
    "FRAME_HEADER",
    "Frame",
    "InvalidReceiverId",
    "MAGIC",
    "MAX_FRAME_BYTES",
    "SegmentRead",
    "Damage",
    "MIN_FRAME_BYTES",
    "QUARANTINE_DIR",
    "WALClosed",
    "WALError",
    "WriteAheadLog",
    "decode_payload",
    "encode_records",
    "encode_table",
    "fsync_dir",
    "list_segments",
    "parse_segment_name",
    "quarantine",
    "read_segment",
    "segment_name",
    "validate_receiver_id",
]

log = logging.getLogger(__name__)

MAGIC: Final = b"TTWAL\x00\x01\n"
FRAME_HEADER: Final = struct.Struct("<II")
MAX_FRAME_BYTES: Final = 1 << 30  # a larger length field is corruption, not data
QUARANTINE_DIR: Final = "quarantine"  # under the WAL directory: damaged bytes found in segments, kept for a human
SEGMENT_SUFFIX: Final = ".wal"
_SEGMENT_RE: Final = re.compile(r"^(?P<rid>[A-Za-z0-9_.-]{1,64})-(?P<seq>\d{12})\.wal$")
_RECEIVER_ID_RE: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class WALError(TokenTrailError, OSError):
    """The records were not made durable; the caller must not acknowledge them. An ``OSError`` (with the errno of
    the failure where there was one): the transports answer every ``OSError`` as retryable."""


class WALClosed(WALError):
    """The log is closed (the receiver is stopping)."""


class InvalidReceiverId(TokenTrailError, ValueError):
    """A receiver id that cannot name files (it would be part of a path)."""


def validate_receiver_id(receiver_id: str) -> str:
    """Receiver ids become file names: only a safe alphabet, never a path."""
    if not _RECEIVER_ID_RE.match(receiver_id) or receiver_id in (".", ".."):
        raise InvalidReceiverId(f"receiver_id must match {_RECEIVER_ID_RE.pattern}, got {receiver_id!r}")
    return receiver_id


def segment_name(receiver_id: str, seq: int) -> str:
    return f"{receiver_id}-{seq:012d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> tuple[str, int] | None:
    """(receiver id, seq) of a segment file name, or None for any other file."""
    m = _SEGMENT_RE.match(name)
    return (m["rid"], int(m["seq"])) if m else None


def list_segments(wal_dir: Path, receiver_id: str | None = None) -> list[tuple[str, int, Path]]:
    """(receiver id, seq, path) of every segment, oldest first; ``receiver_id`` narrows to one receiver."""
    out: list[tuple[str, int, Path]] = []
    try:
        names = os.listdir(wal_dir)
    except FileNotFoundError:
        return out
    for name in names:
        m = _SEGMENT_RE.match(name)
        if m and (receiver_id is None or m["rid"] == receiver_id):
            out.append((m["rid"], int(m["seq"]), wal_dir / name))
    out.sort(key=lambda t: (t[0], t[1]))
    return out


def fsync_dir(path: Path) -> None:
    """A created, renamed or deleted file is durable only once its directory is synced."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Frame:
    """One WAL frame as its parts (header, Arrow IPC payload), written one after the other: the payload is never
    copied into a Python ``bytes`` (each fresh copy of a few hundred KB costs page faults on the ingest path)."""

    __slots__ = ("parts", "size")

    def __init__(self, header: bytes, payload: bytes | pa.Buffer) -> None:
        self.parts: tuple[bytes, bytes | pa.Buffer] = (header, payload)
        self.size = len(header) + len(memoryview(payload))

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(bytes(memoryview(p)) for p in self.parts)


def encode_table(table: pa.Table) -> Frame:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    payload = sink.getvalue()  # a pyarrow Buffer: zlib and writev read it in place
    return Frame(FRAME_HEADER.pack(payload.size, zlib.crc32(payload)), payload)


def encode_records(records: Sequence[UsageRecord]) -> Frame:
    """One frame, built outside any lock so writers serialize in parallel with another's fsync."""
    return encode_table(records_to_table(records))


def decode_payload(payload: bytes | pa.Buffer) -> pa.Table:
    return pa.ipc.open_stream(payload).read_all()


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes ``[start, end)`` of a segment that hold no readable frame: at least ``frames`` frames were lost there
    (an estimate from the headers still plausible inside the range; 0 for a damaged magic alone)."""

    start: int
    end: int
    reason: str
    frames: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(slots=True)
class SegmentRead:
    """What a segment holds: the tables of its intact frames, the ranges between them that hold none (``damage``)
    and, for the segment a crash may have cut, a partial last frame (``torn_tail``: never acknowledged)."""

    path: Path
    tables: list[pa.Table] = field(default_factory=list)
    size: int = 0
    damage: list[Damage] = field(default_factory=list)
    torn_tail: Damage | None = None

    @property
    def corrupt(self) -> bool:
        """Damage a crash cannot explain: acknowledged records may be gone, a human must hear of it."""
        return bool(self.damage)

    @property
    def frames(self) -> int:
        return len(self.tables)

    @property
    def damaged_frames(self) -> int:
        return sum(d.frames for d in self.damage)

    @property
    def damaged_bytes(self) -> int:
        return sum(d.size for d in self.damage)

    @property
    def valid_bytes(self) -> int:
        """Bytes of the magic and the intact frames."""
        torn = self.torn_tail.size if self.torn_tail is not None else 0
        return self.size - self.damaged_bytes - torn

    @property
    def num_rows(self) -> int:
        return sum(t.num_rows for t in self.tables)

    def table(self) -> pa.Table:
        if not self.tables:
            return ARROW_SCHEMA.empty_table()
        return pa.concat_tables(self.tables)


MIN_FRAME_BYTES: Final = 16  # an Arrow IPC stream is a schema message and an end marker at least: 0 is a zeroed page
_CONTINUATION: Final = b"\xff\xff\xff\xff"  # how every Arrow IPC stream (so every payload) begins
_USAGE_COLUMNS: Final = frozenset(ARROW_SCHEMA.names)
_NOT_FF: Final = re.compile(rb"[^\xff]")


def _frame_at(data: pa.Buffer, pos: int, size: int) -> tuple[pa.Table | None, int, str]:
    """(table, end, "") for an intact frame at ``pos``, else (None, pos, why not).

    Intact means all of: a length within bounds that ends inside the file, the CRC32 of that many bytes, and a
    payload that decodes as an Arrow IPC stream of usage records. After damage this is what tells a real frame from
    bytes that merely look like a header (a false match needs a 1-in-2^32 CRC collision *and* a decodable stream)."""
    if pos + FRAME_HEADER.size > size:
        return None, pos, "a partial frame header"
    length, crc = FRAME_HEADER.unpack_from(data, pos)
    if length < MIN_FRAME_BYTES or length > MAX_FRAME_BYTES:
        return None, pos, f"an impossible frame length ({length})"
    end = pos + FRAME_HEADER.size + length
    if end > size:
        return None, pos, f"a frame of {length} bytes running past the end of the file"
    payload = data.slice(pos + FRAME_HEADER.size, length)
    if zlib.crc32(payload) != crc:
        return None, pos, "a checksum mismatch"
    try:
        table = decode_payload(payload)
    except (pa.ArrowException, OSError, ValueError):  # a bad flatbuffer is a plain OSError
        return None, pos, "a payload that is not an Arrow IPC stream"
    if not table.schema.equals(ARROW_SCHEMA, check_metadata=False) and not (
        table.column_names and set(table.column_names) <= _USAGE_COLUMNS
    ):
        return None, pos, "a payload that is not usage records"
    return table, end, ""


def _resync(data: pa.Buffer, search: mmap.mmap, start: int, size: int) -> tuple[int, pa.Table, int] | None:
    """The first intact frame at or after ``start``: (offset, table, end), or None when none follows.

    A payload starts with the Arrow continuation marker (0xFFFFFFFF) and then its metadata length (int32 LE, far
    below 16 MiB: its top byte is 0), so only offsets 8 bytes before such a marker are tried, found by a C search
    rather than a Python loop over every byte; inside a run of 0xFF bytes (erased flash reads so) only its last few
    offsets can qualify. Each candidate is then checked in full (``_frame_at``)."""
    search_from = start + FRAME_HEADER.size
    while True:
        marker = search.find(_CONTINUATION, search_from, size)
        if marker < 0:
            return None
        not_ff = _NOT_FF.search(search, marker + len(_CONTINUATION))
        run_end = not_ff.start() if not_ff else size
        for at in range(max(marker, run_end - 7), run_end - 3):
            if at + 8 > size or search[at + 7] != 0:
                continue
            table, end, _ = _frame_at(data, at - FRAME_HEADER.size, size)
            if table is not None:
                return at - FRAME_HEADER.size, table, end
        search_from = run_end - 3


def _frames_in(data: pa.Buffer, start: int, end: int) -> int:
    """How many frames a damaged range held, at least: headers are followed while their lengths land inside it."""
    frames, pos = 0, start
    while pos < end:
        frames += 1
        if pos + FRAME_HEADER.size > end:
            break
        length, _ = FRAME_HEADER.unpack_from(data, pos)
        nxt = pos + FRAME_HEADER.size + length
        if length < MIN_FRAME_BYTES or nxt > end:
            break
        pos = nxt
    return frames


def _looks_torn(data: pa.Buffer, start: int, size: int) -> bool:
    """Whether ``[start, size)`` is one frame cut short, as a crash mid-append leaves it: a partial header, or a
    plausible header whose frame would end past the file's end."""
    if start + FRAME_HEADER.size > size:
        return True
    length, _ = FRAME_HEADER.unpack_from(data, start)
    return MIN_FRAME_BYTES <= length <= MAX_FRAME_BYTES and start + FRAME_HEADER.size + length > size


def read_segment(path: Path, *, tail_may_be_torn: bool = True) -> SegmentRead:
    """Every intact frame, however many bad ones lie between them; never modifies the file.

    After a bad frame (checksum mismatch, impossible length, undecodable payload, zeroed bytes) reading resumes at
    the next intact frame (``_resync``), and the bytes between become a ``Damage``. A range that runs to the end of
    the file and is one frame cut short is a ``torn_tail`` when ``tail_may_be_torn`` (the segment a crash could have
    interrupted mid-append: a receiver's newest); anywhere else it is damage too.

    The file is memory-mapped and frames are decoded in place (no copy of the segment or of a frame: the tables
    reference the mapping, which stays valid after the file is deleted)."""
    size = path.stat().st_size
    result = SegmentRead(path=path, size=size)
    if size == 0:
        return result  # created but never written
    with pa.memory_map(str(path)) as source:
        data = source.read_buffer(size)
    if size < len(MAGIC) and data.to_pybytes() == MAGIC[:size]:
        result.torn_tail = Damage(0, size, "a partial segment header", 0)  # a crash while creating the segment
        return result
    search: mmap.mmap | None = None
    try:
        pos = len(MAGIC)
        bad: tuple[int, str] | None = None
        if data.slice(0, len(MAGIC)).to_pybytes() != MAGIC:
            bad = (0, "a damaged segment header")
        while pos < size:
            if bad is None:
                table, end, reason = _frame_at(data, pos, size)
                if table is not None:
                    result.tables.append(table)
                    pos = end
                    continue
                bad = (pos, reason)
            if search is None:
                with open(path, "rb") as f:
                    search = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
            found = _resync(data, search, bad[0] + 1 if bad[0] else len(MAGIC), size)
            if found is None:
                break
            start, table, end = found
            result.damage.append(Damage(bad[0], start, bad[1], _frames_in(data, max(bad[0], len(MAGIC)), start)))
            bad = None
            result.tables.append(table)
            pos = end
        if bad is not None:
            if tail_may_be_torn and bad[0] >= len(MAGIC) and _looks_torn(data, bad[0], size):
                result.torn_tail = Damage(bad[0], size, bad[1], 1)
            else:
                frames = _frames_in(data, max(bad[0], len(MAGIC)), size)
                result.damage.append(Damage(bad[0], size, bad[1], frames))
    finally:
        if search is not None:
            search.close()
    return result


def quarantine(read: SegmentRead, directory: Path) -> list[Path]:
    """Copies each damaged range of a segment to ``directory/<segment>.bytes-<start>-<end>`` (fsync'd) before the
    segment may be deleted: damaged bytes are never silently destroyed, and the name says where they came from.
    Writing the same range again (a replay after a crash) replaces the file with the same bytes."""
    if not read.damage:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with open(read.path, "rb") as src:
        for damage in read.damage:
            target = directory / f"{read.path.name}.bytes-{damage.start}-{damage.end}"
            tmp = target.with_name(f".{target.name}.tmp")
            src.seek(damage.start)
            with open(tmp, "wb") as out:
                remaining = damage.size
                while remaining:
                    chunk = src.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    out.write(chunk)
                    remaining -= len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
            written.append(target)
    fsync_dir(directory)
    return written


class _Batch:
    """The frames written since the last sync of one segment: their writers share one fsync."""

    __slots__ = ("done", "error", "frames")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None
        self.frames = 0


class _Segment:
    __slots__ = ("seq", "path", "fd", "size", "opened", "pending", "frames", "synced_size", "synced_frames")

    def __init__(self, seq: int, path: Path, fd: int) -> None:
        self.seq = seq
        self.path = path
        self.fd = fd
        self.size = len(MAGIC)
        self.opened = time.monotonic()
        self.pending = _Batch()
        self.frames = 0
        # What the last successful fsync covered: a failed sync cuts the segment back to this.
        self.synced_size = len(MAGIC)
        self.synced_frames = 0


def _write_all(fd: int, data: Frame | bytes) -> None:
    parts = data.parts if isinstance(data, Frame) else (data,)
    for part in parts:
        view = memoryview(part).cast("B")
        while view:
            n = os.write(fd, view)
            view = view[n:]


class WriteAheadLog:
    """Segments of one receiver. ``append`` returns only after an fsync covering the records.

    The caller owns the receiver id exclusively (the receiver holds a lock file); segment seqs never repeat because
    the last one used is kept in ``<receiver>.seq``, so a Parquet name derived from a seq is never reused.
    """

    def __init__(
        self,
        wal_dir: Path | str,
        receiver_id: str,
        *,
        max_segment_bytes: int = 64 << 20,
        max_segment_age: float = 60.0,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        self.dir = Path(wal_dir)
        self.receiver_id = validate_receiver_id(receiver_id)
        self.max_segment_bytes = max_segment_bytes
        self.max_segment_age = max_segment_age
        self._fsync = fsync  # injectable so tests can prove an acknowledgement waits for it
        self._lock = threading.Lock()  # guards segment state and writes
        self._sync_lock = threading.Lock()  # held by the leader while it syncs
        self._current: _Segment | None = None
        self._retiring: list[_Segment] = []  # no longer written to; pending a final sync and close
        self._closed_segments: list[Path] = []  # durable and closed: ready for the flusher
        self._closed = False
        self.dir.mkdir(parents=True, exist_ok=True)
        self._seq_file = self.dir / f"{self.receiver_id}.seq"
        self._last_seq = self._initial_seq()

    # -- sequence numbers ------------------------------------------------------------------------------------

    def _initial_seq(self) -> int:
        last = 0
        try:
            last = int(self._seq_file.read_text().strip() or 0)
        except FileNotFoundError:
            pass
        except ValueError:
            log.warning("unreadable %s; continuing from the segments present", self._seq_file)
        for _, seq, _ in list_segments(self.dir, self.receiver_id):
            last = max(last, seq)
        return last

    def _next_seq(self) -> int:
        seq = self._last_seq + 1
        tmp = self._seq_file.with_suffix(".seq.tmp")
        with open(tmp, "w") as f:
            f.write(f"{seq}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._seq_file)
        self._last_seq = seq
        return seq

    @property
    def last_seq(self) -> int:
        return self._last_seq

    # -- writing ---------------------------------------------------------------------------------------------

    def _open_segment(self) -> _Segment:
        seq = self._next_seq()
        path = self.dir / segment_name(self.receiver_id, seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            _write_all(fd, MAGIC)
            fsync_dir(self.dir)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return _Segment(seq, path, fd)

    def append(self, records: Sequence[UsageRecord]) -> None:
        """Durably appends one frame. Raises ``WALError`` (an ``OSError``) when the records are not on disk."""
        if not records:
            return
        self.append_frame(encode_records(records))

    def append_frame(self, frame: Frame | bytes) -> None:
        with self._lock:
            if self._closed:
                raise WALClosed("write-ahead log is closed")
            try:
                if self._current is None:
                    self._current = self._open_segment()
            except OSError as exc:
                raise WALError(exc.errno, f"cannot open a WAL segment: {exc.strerror or exc}") from exc
            segment = self._current
            try:
                _write_all(segment.fd, frame)
            except OSError as exc:
                # Nothing more goes into this segment: a partial frame stays its last bytes, which readers skip.
                try:
                    os.ftruncate(segment.fd, segment.size)
                except OSError:
                    pass
                self._retire_locked()
                raise WALError(exc.errno, f"WAL write failed: {exc.strerror or exc}") from exc
            segment.size += len(frame)
            segment.frames += 1
            batch = segment.pending
            batch.frames += 1
            if segment.size >= self.max_segment_bytes:
                self._retire_locked()
        self._wait_durable(batch)

    def _retire_locked(self) -> None:
        if self._current is not None:
            self._retiring.append(self._current)
            self._current = None

    def _wait_durable(self, batch: _Batch) -> None:
        with self._sync_lock:  # followers queue here while the leader syncs, then find their batch done
            if not batch.done:
                self._sync_pending()
        if batch.error is not None:
            raise WALError(getattr(batch.error, "errno", None), f"WAL fsync failed: {batch.error}") from batch.error

    def _sync_pending(self) -> None:
        """Leader: sync every written frame (retiring segments first, then the current one). Holds _sync_lock."""
        with self._lock:
            work: list[tuple[_Segment, _Batch, int, int, bool]] = []
            for segment in self._retiring:
                work.append((segment, segment.pending, segment.size, segment.frames, True))
                segment.pending = _Batch()
            self._retiring = []
            current = self._current
            if current is not None:
                work.append((current, current.pending, current.size, current.frames, False))
                current.pending = _Batch()
        for segment, batch, size, frames, close in work:
            if batch.frames or close:
                try:
                    self._fsync(segment.fd)
                except OSError as exc:
                    self._fail_segment(segment, batch, exc)
                    continue
            segment.synced_size, segment.synced_frames = size, frames
            batch.done = True
            if close:
                self._close_segment(segment)

    def _fail_segment(self, segment: _Segment, batch: _Batch, exc: OSError) -> None:
        """A failed fsync: every writer not yet covered by a successful sync is told its records were not stored,
        and the segment is cut back to what was synced, so neither a flush nor a replay stores them behind the
        exporter's back (its retry would then be a duplicate). The kernel may have dropped the failed pages anyway:
        nothing more is written to this segment."""
        log.error("fsync of WAL segment %s failed: %s", segment.path, exc)
        with self._lock:
            if self._current is segment:
                self._current = None
            if segment in self._retiring:
                self._retiring.remove(segment)
            later, segment.pending = segment.pending, _Batch()
        for failed in (batch, later):
            failed.error = exc
            failed.done = True
        try:
            os.ftruncate(segment.fd, segment.synced_size)
            self._fsync(segment.fd)
        except OSError as again:
            log.error("could not cut WAL segment %s back to its synced length: %s", segment.path, again)
        else:
            segment.size, segment.frames = segment.synced_size, segment.synced_frames
        self._close_segment(segment)

    def _close_segment(self, segment: _Segment) -> None:
        try:
            os.close(segment.fd)
        except OSError:
            pass
        if segment.frames == 0:
            segment.path.unlink(missing_ok=True)
        else:
            with self._lock:
                self._closed_segments.append(segment.path)
        try:
            fsync_dir(self.dir)
        except OSError as exc:
            log.error("fsync of WAL directory failed: %s", exc)

    def rotate(self) -> None:
        """Seals the current segment (synced, closed, handed to the flusher); the next append starts a new one."""
        with self._lock:
            self._retire_locked()
        with self._sync_lock:
            self._sync_pending()

    def rotate_if_older(self, max_age: float | None = None) -> bool:
        """Age-based rotation, so records reach Parquet even when traffic is too light to fill a segment."""
        limit = self.max_segment_age if max_age is None else max_age
        with self._lock:
            current = self._current
            due = current is not None and current.frames > 0 and time.monotonic() - current.opened >= limit
            if not due and not self._retiring:
                return False
            if due:
                self._retire_locked()
        with self._sync_lock:
            self._sync_pending()
        return due

    def pending_bytes(self) -> int:
        """Bytes on disk not yet in Parquet: the receiver refuses new work (UNAVAILABLE) above a limit."""
        with self._lock:
            paths = list(self._closed_segments)
            total = sum(s.size for s in self._retiring)
            if self._current is not None:
                total += self._current.size
        for path in paths:
            try:
                total += path.stat().st_size
            except OSError:
                pass
        return total

    def take_closed(self) -> list[Path]:
        """Closed segments not yet handed out, oldest first; the caller deletes each once it is in Parquet."""
        with self._lock:
            closed, self._closed_segments = self._closed_segments, []
        return sorted(closed)

    def return_closed(self, paths: Sequence[Path]) -> None:
        """Hands back segments the flusher could not process, to retry later."""
        with self._lock:
            self._closed_segments[:0] = list(paths)

    def close(self) -> None:
        """Refuses further appends, then syncs and closes everything; segments stay on disk until flushed (recovery
        replays them)."""
        with self._lock:
            self._closed = True
        self.rotate()
