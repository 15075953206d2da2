"""Disk accounting for ``max_disk_bytes``: what the data directory holds, so a request that would overfill it is
refused (retryably) before it is written rather than failing half-way."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from tokentrail.processor.storage.wal import WriteAheadLog

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
        """Parquet files this receiver just wrote."""
        for path in paths:
            try:
                self.dataset_bytes += path.stat().st_size
            except OSError:
                pass  # already merged away by compaction: the next walk counts what replaced it

    def used(self, wal: WriteAheadLog | None) -> int:
        return self.dataset_bytes + (wal.pending_bytes() if wal is not None else 0)

    def would_exceed(self, wal: WriteAheadLog | None, more: int) -> bool:
        return self.max_bytes is not None and self.used(wal) + more > self.max_bytes
