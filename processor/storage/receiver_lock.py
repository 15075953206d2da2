"""Who owns a receiver id's WAL: an exclusive ``flock`` on ``wal/<receiver>.lock``.

Two live processes must never append to one receiver's segments, and recovery must replay only the segments of
receivers that are gone. The kernel releases a ``flock`` when its holder dies, so a crash never leaves an id held.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tokentrail.processor.storage.wal import validate_receiver_id

__all__ = ["ReceiverLock", "lock_path"]


def lock_path(wal_dir: Path, receiver_id: str) -> Path:
    return wal_dir / f"{validate_receiver_id(receiver_id)}.lock"


class ReceiverLock:
    """The lock of one receiver id; ``try_acquire`` never blocks (a live owner means: not ours)."""

    def __init__(self, wal_dir: Path, receiver_id: str) -> None:
        self.path = lock_path(wal_dir, receiver_id)
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
