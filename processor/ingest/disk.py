"""Disk accounting for ``max_disk_bytes``: what the data directory holds, so a request that would overfill it is
refused (retryably) before it is written rather than failing half-way.

Counted: Parquet under ``usage/``; every WAL segment of this receiver still on disk, the ones the flusher has taken
and is turning into Parquet included (the WAL's own ``pending_bytes`` no longer lists those); the same bytes once
more for the Parquet that flush is writing (counted for real only when the round ends: ``add_files``); and the
frames requests have been admitted with but not yet appended (``reserve``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from tokentrail.processor.storage.wal import WriteAheadLog, list_segments

__all__ = ["RESCAN_SECONDS", "DiskUsage"]

RESCAN_SECONDS: Final = 30.0  # other writers (receivers, compaction) change usage/: walked again this often


class DiskUsage:
    """Parquet bytes under ``usage/`` (every receiver's and compaction's: walked every ``RESCAN_SECONDS``, added to
    as this receiver flushes) plus this receiver's WAL not yet in Parquet."""

    def __init__(self, usage_dir: Path, max_bytes: int | None) -> None:
        self.usage_dir = usage_dir
        self.max_bytes = max_bytes
        self.dataset_bytes = 0
        self._scanned = 0.0
        self._lock = threading.Lock()
        self._reserved = 0  # admitted frames not yet appended to the WAL
        self._flushing = 0  # the most bytes seen taken by the flusher this round: the Parquet it may write

    def refresh(self, force: bool = False) -> None:
        """Walks ``usage/`` again when a cap is set and the last walk is old (always with ``force``)."""
        if self.max_bytes is None and not force:
            return
        now = time.monotonic()
        if not force and now - self._scanned < RESCAN_SECONDS:
            return
        total = 0
        for root, _dirs, files in os.walk(self.usage_dir):
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except OSError:
                    pass  # deleted between the listing and the stat (a rewrite swapped its day): not there
        self.dataset_bytes = total
        self._scanned = now

    def add_files(self, paths: Iterable[Path]) -> None:
        """Parquet files this receiver just wrote (a flush round ended: its estimate gives way to them)."""
        added = 0
        for path in paths:
            try:
                added += path.stat().st_size
            except OSError:
                pass  # already merged away by compaction: the next walk counts what replaced it
        with self._lock:
            self.dataset_bytes += added
            self._flushing = 0

    def used(self, wal: WriteAheadLog | None) -> int:
        if wal is None:
            return self.dataset_bytes + self._reserved
        pending = wal.pending_bytes()
        on_disk = 0
        for _rid, _seq, path in list_segments(wal.dir, wal.receiver_id):
            try:
                on_disk += path.stat().st_size
            except OSError:
                pass  # flushed and deleted between the listing and the stat: its Parquet is in _flushing
        taken = on_disk - pending
        with self._lock:
            # Segments on disk the WAL no longer lists as pending are the flusher's: they become Parquet of at most
            # their size (Parquet compresses; IPC frames do not). The most seen this round stays counted, so a
            # segment already deleted still stands for its Parquet, until the flusher holds none (or add_files).
            self._flushing = max(self._flushing, taken) if taken > 0 else 0
            return self.dataset_bytes + max(on_disk, pending) + self._flushing + self._reserved

    def would_exceed(self, wal: WriteAheadLog | None, more: int) -> bool:
        return self.max_bytes is not None and self.used(wal) + more > self.max_bytes

    def reserve(self, wal: WriteAheadLog | None, more: int) -> bool:
        """Admit ``more`` bytes unless they would exceed the cap; the caller ``release``s them once appended (or
        failed), so requests admitted together cannot each see the room only one of them has."""
        if self.max_bytes is not None and self.used(wal) + more > self.max_bytes:
            return False
        with self._lock:
            self._reserved += more
        return True

    def release(self, more: int) -> None:
        with self._lock:
            self._reserved -= more
