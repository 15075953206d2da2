"""Recovery at start: what a crash left behind becomes Parquet before the first Export is accepted, and the dedupe
window learns what is already stored, so the sender's retry of a batch it never saw acknowledged is dropped.

Replayed: this receiver's own segments, and those of receivers whose lock nobody holds (a host that is gone); a live
receiver's segments are its own business. Replaying is idempotent (``storage.parquet.flush_segment``), so a crash
during recovery is recovered by the next start. Damaged frames never stop it: every intact frame is stored and the
damaged bytes are quarantined (``FlushResult.corrupt_frames``). The rules are in docs/ARCHITECTURE.md, Durability
and dedupe.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq
from tokentrail.processor.storage.dedupe import DedupeWindow, table_keys
from tokentrail.processor.storage.parquet import FlushResult, flush_segment
from tokentrail.processor.storage.receiver_lock import ReceiverLock
from tokentrail.processor.storage.wal import QUARANTINE_DIR, list_segments

__all__ = ["RECENT_SECONDS", "recent_parquet_keys", "recover", "replay_segments"]

log = logging.getLogger(__name__)

RECENT_SECONDS: Final = 3600  # Parquet written this recently seeds the dedupe window at start


def recover(wal_dir: Path, usage_dir: Path, receiver_id: str, window: DedupeWindow) -> FlushResult:
    """Replays what a previous run left and seeds ``window``: recent Parquet first, then the replayed records (so
    the newest are the last to age out). The caller holds ``receiver_id``'s lock."""
    result = replay_segments(wal_dir, usage_dir, receiver_id)
    if result.segments:
        log.info("replayed %d WAL segment(s): %d record(s)", result.segments, result.rows)
    if result.corrupt_frames or result.quarantined:
        log.error(
            "WAL recovery found %d damaged frame(s) (%d bytes, kept in %s); every intact frame was stored",
            result.corrupt_frames,
            result.corrupt_bytes,
            wal_dir / QUARANTINE_DIR,
        )
    window.seed(recent_parquet_keys(usage_dir))
    window.seed(result.identities)
    return result


def replay_segments(wal_dir: Path, usage_dir: Path, receiver_id: str) -> FlushResult:
    """Every segment of ``receiver_id`` and of dead receivers into Parquet (deleted after), with their records'
    dedupe keys in ``identities``."""
    for tmp in usage_dir.glob(f"date=*/part-{receiver_id}-*.parquet.tmp"):
        tmp.unlink(missing_ok=True)  # a write that never reached its rename
    result = FlushResult()
    by_owner: dict[str, list[Path]] = {}
    for rid, _seq, path in list_segments(wal_dir):
        by_owner.setdefault(rid, []).append(path)
    for rid, paths in by_owner.items():
        other = None
        if rid != receiver_id:
            other = ReceiverLock(wal_dir, rid)
            if not other.try_acquire():
                continue  # a live receiver owns these
        try:
            for i, path in enumerate(paths):
                # Only the newest segment can have been mid-append when its receiver died: a frame cut short at its
                # end was never acknowledged. In an older (closed) one, a short last frame is damage like any other.
                newest = i == len(paths) - 1
                flush_segment(path, usage_dir, collect_identities=True, result=result, tail_may_be_torn=newest)
        finally:
            if other is not None:
                other.release()
    return result


def recent_parquet_keys(usage_dir: Path, seconds: float = RECENT_SECONDS) -> list[str]:
    """Dedupe keys of the Parquet files written in the last ``seconds`` (by any receiver), oldest file first.

    Why: a batch acknowledged just before a crash may already be in Parquet (its segment flushed and deleted), and
    the sender retries it if the acknowledgement was lost. Compaction would remove such a copy; this keeps it out in
    the first place."""
    cutoff = time.time() - seconds
    recent: list[tuple[float, str]] = []
    for directory in usage_dir.glob("date=*"):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # removed while listed (a rewrite swapped the day): nothing to seed from it
        for entry in entries:
            if not entry.name.endswith(".parquet") or entry.name.startswith((".", "_")):
                continue
            try:
                mtime = entry.stat().st_mtime
            except OSError:
                continue
            if mtime >= cutoff:
                recent.append((mtime, entry.path))
    keys: list[str] = []
    for _mtime, path in sorted(recent):  # oldest first: the newest end up most recent in the window
        try:
            table = pq.read_table(path, columns=["provider", "response_id", "trace_id", "span_id"])
        except (OSError, pa.ArrowException) as exc:  # an unreadable file must not stop the receiver
            log.warning("cannot read %s to seed the dedupe window: %s", path, exc)
            continue
        keys.extend(table_keys(table))
    return keys
