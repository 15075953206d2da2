"""WAL -> Parquet in the background: every ``interval``, the segment being written is sealed once it is that old and
every closed segment becomes Parquet files (``storage.parquet.flush_wal``), off the request path.

A flush that fails (a full disk, a day locked by a long rewrite) leaves its segments queued and is tried again next
interval: the records are durable in the WAL either way, and ``flush_lag_seconds`` shows the delay. A damaged frame
does not fail a flush: the segment's intact frames are stored, the damage quarantined and counted
(``wal_corrupt_frames``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tokentrail.processor.ingest.disk import DiskUsage
from tokentrail.processor.ingest.metrics import Metrics
from tokentrail.processor.storage.parquet import FlushResult, flush_wal
from tokentrail.processor.storage.wal import WriteAheadLog

__all__ = ["Flusher"]

log = logging.getLogger(__name__)


class Flusher:
    """The flusher of one receiver's WAL. ``flush`` also runs on demand (and once more at stop)."""

    def __init__(
        self,
        wal: WriteAheadLog,
        usage_dir: Path,
        *,
        interval: float,
        metrics: Metrics,
        disk: DiskUsage,
        housekeeping: Callable[[], None],
    ) -> None:
        self.wal = wal
        self.usage_dir = usage_dir
        self.interval = interval
        self._metrics = metrics
        self._disk = disk
        self._housekeeping = housekeeping  # after each round on the flusher's thread (disk walk, status file)
        self._lock = threading.Lock()  # one flush at a time: the thread's, an explicit one, the final one
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unflushed_since: float | None = None

    def note_appended(self) -> None:
        """Records reached the WAL: from now until a flush that started after this, they wait for Parquet."""
        if self._unflushed_since is None:
            self._unflushed_since = time.monotonic()

    def lag_seconds(self) -> float:
        """How long the oldest record not yet in Parquet has waited (0 when none waits)."""
        since = self._unflushed_since
        return 0.0 if since is None else time.monotonic() - since

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"tokentrail-flusher-{self.wal.receiver_id}")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread (after its current round); ``flush`` still works."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def flush(self) -> FlushResult:
        """Seals the current segment and writes every record appended so far to Parquet before returning."""
        with self._lock:
            started = time.monotonic()
            self.wal.rotate()
            return self._flushed(flush_wal(self.wal, self.usage_dir), started)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self._lock:
                    started = time.monotonic()
                    self.wal.rotate_if_older(self.interval)
                    self._flushed(flush_wal(self.wal, self.usage_dir), started)
            except Exception:  # noqa: BLE001 - the thread must outlive any failed round; logged, counted, retried
                self._metrics.add(flush_errors=1)
                log.exception("flushing WAL to Parquet failed; will retry")
            self._housekeeping()

    def _flushed(self, result: FlushResult, started: float) -> FlushResult:
        if result.rows:
            self._metrics.add(parquet_rows_written=result.rows, parquet_files_written=len(result.files))
        if result.corrupt_frames or result.torn_tails:  # logged by flush_segment; counted here for /metrics
            self._metrics.add(wal_corrupt_frames=result.corrupt_frames, wal_torn_tails=result.torn_tails)
        self._disk.add_files(result.files)
        since = self._unflushed_since
        if since is not None and since <= started:
            self._unflushed_since = None
        return result
