"""Parquet partitions of usage records: ``usage/date=YYYY-MM-DD/part-<receiver>-<seq>.parquet``.

Files are written to a temporary name, fsync'd and atomically renamed, so a reader never sees half a file. The name
derives from the WAL segment the rows came from: replaying a segment after a crash rewrites the same files with the
same rows (idempotent), never a second copy. Only the date becomes a path; no user-controlled value ever does.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokentrail.processor.errors import TokenTrailError
from tokentrail.processor.schema import ARROW_SCHEMA, PARTITION_COLUMN, UsageRecord, conform, records_to_table
from tokentrail.processor.storage.dedupe import table_keys
from tokentrail.processor.storage.wal import (
    QUARANTINE_DIR,
    WriteAheadLog,
    fsync_dir,
    parse_segment_name,
    quarantine,
    read_segment,
    validate_receiver_id,
)

__all__ = [
    "ABSORBED_FILE",
    "COMPRESSION",
    "LOCKS_DIR",
    "DICTIONARY_COLUMNS",
    "ROW_GROUP_SIZE",
    "FlushResult",
    "NotASegment",
    "flush_segment",
    "flush_wal",
    "part_name",
    "day_dir_name",
    "day_lock",
    "list_day",
    "read_absorbed",
    "write_partitions",
]

log = logging.getLogger(__name__)

COMPRESSION: Final = "zstd"
ROW_GROUP_SIZE: Final = 1_048_576  # small row groups make files larger (docs/ARCHITECTURE.md, Performance)
# Ids are unique per row: a dictionary would only add a page that Parquet then abandons.
_NO_DICTIONARY: Final = frozenset({"trace_id", "span_id", "response_id"})
# Parquet names a list column's values by their leaf path ("tags.list.element"): the bare name "tags" is silently
# ignored, which left tags PLAIN-encoded (tag filters and UNNEST slower, files larger: docs/ARCHITECTURE.md, Performance).
DICTIONARY_COLUMNS: Final = tuple(
    f"{f.name}.list.element" if pa.types.is_list(f.type) else f.name
    for f in ARROW_SCHEMA
    if f.name not in _NO_DICTIONARY and (pa.types.is_string(f.type) or pa.types.is_list(f.type))
)


# Per-day locks shared by every writer of a day (flushers of any receiver process, compaction, re-pricing).
LOCKS_DIR: Final = ".locks"
# In a day directory that ``compaction.rewrite_day`` produced: the names of flushed files it merged while their WAL
# segment still existed (a crash between the Parquet rename and the segment delete). Replaying such a segment must
# not write its file again: its rows are already in the merged file.
ABSORBED_FILE: Final = "_absorbed"


class NotASegment(TokenTrailError, ValueError):
    """A path handed to ``flush_segment`` that is not named like a WAL segment (``<receiver>-<seq>.wal``)."""


def part_name(receiver_id: str, seq: int) -> str:
    return f"part-{receiver_id}-{seq:012d}.parquet"


def day_dir_name(day: str) -> str:
    return f"{PARTITION_COLUMN}={day}"


def _link_target(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:  # a plain directory (not yet rewritten) or nothing at all
        return None


def list_day(day_dir: str | os.PathLike[str]) -> list[str]:
    """Names of the finished Parquet files of one day directory, sorted, as one consistent listing.

    Why not a bare ``listdir``: a rewrite swaps the day to a new version and then deletes the old one file by file,
    so a listing that started on the old version could see some of its files, or none. The swap is the only thing
    that changes where ``date=X`` points, and versions are deleted only after the link has left them for good, so
    a listing taken while the link target stayed the same (read before and after) is a whole version. Only finished
    files count (writers publish by atomic rename from ``*.parquet.tmp``); names starting with ``.`` or ``_`` are
    hidden by the usual Parquet-tool convention. A missing directory lists as empty."""
    path = os.fspath(day_dir)
    while True:
        before = _link_target(path)
        try:
            names = os.listdir(path)
        except FileNotFoundError:
            return []
        if _link_target(path) == before:
            return sorted(n for n in names if n.endswith(".parquet") and not n.startswith((".", "_")))


@contextmanager
def day_lock(dataset_dir: Path | str, day: str) -> Iterator[None]:
    """Exclusive, cross-process lock of one day's partition (``flock`` on ``.locks/<day>.lock``).

    Every writer of a day holds it: the flusher while it adds a file, ``rewrite_day`` while it reads, rewrites and
    swaps the day. ``flock`` is released by the kernel when a holder dies, so a crash never leaves a day locked."""
    locks = Path(dataset_dir) / LOCKS_DIR
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / f"{day}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def read_absorbed(directory: Path) -> frozenset[str]:
    try:
        return frozenset((directory / ABSORBED_FILE).read_text().split())
    except FileNotFoundError:
        return frozenset()


def _write_file(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            pq.write_table(
                table,
                f,
                compression=COMPRESSION,
                use_dictionary=list(DICTIONARY_COLUMNS),
                row_group_size=ROW_GROUP_SIZE,
                write_statistics=True,
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_partitions(
    data: pa.Table | Sequence[UsageRecord],
    dataset_dir: Path | str,
    receiver_id: str,
    seq: int,
) -> list[Path]:
    """Writes one file per UTC day present in ``data`` and returns their paths (empty input writes nothing).

    Rows are sorted by timestamp inside each file so readers can prune row groups by time."""
    validate_receiver_id(receiver_id)
    table = data if isinstance(data, pa.Table) else records_to_table(list(data))
    if table.num_rows == 0:
        return []
    table = conform(table)  # a WAL segment written before a column was added gets its default
    dataset = Path(dataset_dir)
    # The UTC day of each row as a day number (integer division of the microseconds: no formatting per row).
    micros = table["timestamp"].cast(pa.int64())
    # Integer division truncates toward zero: shift days before 1970 down one so it floors.
    floored = pc.if_else(pc.less(micros, 0), pc.subtract(micros, _MICROS_PER_DAY - 1), micros)
    day_numbers = pc.divide(floored, _MICROS_PER_DAY)
    unique_days = sorted(pc.unique(day_numbers).to_pylist())
    name = part_name(receiver_id, seq)
    written: list[Path] = []
    for number in unique_days:
        part = table if len(unique_days) == 1 else table.filter(pc.equal(day_numbers, number))
        if not _sorted(part["timestamp"]):
            part = part.sort_by("timestamp")
        day = (_EPOCH_DAY + timedelta(days=number)).isoformat()
        directory = dataset / day_dir_name(day)
        path = directory / name
        with day_lock(dataset, day):  # never while compaction or re-pricing rewrites this day
            directory.mkdir(parents=True, exist_ok=True)
            if name in read_absorbed(directory):
                continue  # a replay of rows a rewrite already merged: writing them again would count them twice
            _write_file(part, path)
            fsync_dir(directory)
        written.append(path)
    fsync_dir(dataset)
    return written


_MICROS_PER_DAY: Final = 86_400_000_000
_EPOCH_DAY: Final = date(1970, 1, 1)


def _sorted(column: pa.ChunkedArray) -> bool:
    """Whether timestamps are already in order (rows of one request and requests in arrival order usually are)."""
    values = column.combine_chunks().cast(pa.int64()) if column.num_chunks != 1 else column.chunk(0).cast(pa.int64())
    if len(values) < 2:
        return True
    return bool(pc.all(pc.greater_equal(values.slice(1), values.slice(0, len(values) - 1))).as_py())


@dataclass(slots=True)
class FlushResult:
    """What one flush did: rows and files written, segments turned into Parquet and deleted, and what could not be
    read in them (damaged frames, quarantined; partial last frames a crash left, never acknowledged)."""

    rows: int = 0
    files: list[Path] = field(default_factory=list)
    segments: int = 0
    identities: list[str] = field(default_factory=list)  # dedupe keys, only when asked for (recovery)
    corrupt_frames: int = 0
    corrupt_bytes: int = 0
    quarantined: list[Path] = field(default_factory=list)
    torn_tails: int = 0


def flush_segment(
    path: Path,
    dataset_dir: Path | str,
    *,
    collect_identities: bool = False,
    result: FlushResult | None = None,
    tail_may_be_torn: bool = False,
) -> FlushResult:
    """Turns one closed WAL segment into Parquet, then deletes it. Safe to repeat after a crash at any step.

    Every intact frame is written, also those after a damaged one (``read_segment`` resynchronises); the damaged
    bytes are copied to ``wal/quarantine/`` (durably, before the segment goes) and logged as an error.
    ``tail_may_be_torn`` is for the segment a crash may have cut mid-append (recovery's newest per receiver): a
    partial last frame there was never acknowledged and is only counted."""
    result = result if result is not None else FlushResult()
    parsed = parse_segment_name(path.name)  # the segment's own name carries its receiver and seq
    if parsed is None:
        raise NotASegment(f"not a WAL segment name: {path.name}")
    receiver_id, seq = parsed
    read = read_segment(path, tail_may_be_torn=tail_may_be_torn)
    table = read.table()
    if table.num_rows:
        result.files.extend(write_partitions(table, dataset_dir, receiver_id, seq))
        result.rows += table.num_rows
        if collect_identities:
            result.identities.extend(table_keys(table))
    if read.damage:
        kept = quarantine(read, path.parent / QUARANTINE_DIR)
        result.quarantined.extend(kept)
        result.corrupt_frames += read.damaged_frames
        result.corrupt_bytes += read.damaged_bytes
        for damage in read.damage:
            log.error(
                "WAL segment %s: bytes %d-%d hold no readable frame (%s; at least %d frame(s) lost); %d intact "
                "frame(s) of the segment stored; the damaged bytes are kept in %s",
                path,
                damage.start,
                damage.end,
                damage.reason,
                damage.frames,
                read.frames,
                path.parent / QUARANTINE_DIR,
            )
    if read.torn_tail is not None:
        result.torn_tails += 1
        log.warning(
            "WAL segment %s: dropped a partial last frame (%d bytes, %s): a crash interrupted its write, so it was "
            "never acknowledged",
            path,
            read.torn_tail.size,
            read.torn_tail.reason,
        )
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)
    result.segments += 1
    return result


def flush_wal(wal: WriteAheadLog, dataset_dir: Path | str) -> FlushResult:
    """Every closed segment of a running log into Parquet. A segment that fails stays queued for the next try."""
    result = FlushResult()
    pending = wal.take_closed()
    for i, path in enumerate(pending):
        try:
            flush_segment(path, dataset_dir, result=result)
        except Exception:
            wal.return_closed(pending[i:])
            raise
    return result
