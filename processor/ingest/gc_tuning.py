"""The cyclic garbage collector's first threshold while a receiver runs.

An Export allocates thousands of short-lived, acyclic objects; at Python's default threshold (700 allocations) the
collector runs several times per request for nothing, a large share of the ingest CPU (docs/ARCHITECTURE.md,
Performance; ``benchmarks/receiver_stages.py`` measures with the receiver's setting). The first receiver of a process
raises it; the last one to stop restores it.
"""

from __future__ import annotations

import gc
import threading
from typing import Final

__all__ = ["GC_THRESHOLD", "raise_gc_threshold", "restore_gc_threshold"]

GC_THRESHOLD: Final = 50_000
_lock = threading.Lock()
_users = 0
_saved: tuple[int, int, int] | None = None


def raise_gc_threshold() -> None:
    global _users, _saved
    with _lock:
        if _users == 0:
            saved = gc.get_threshold()
            if 0 < saved[0] < GC_THRESHOLD:  # 0: collection disabled by the application, left alone
                _saved = saved
                gc.set_threshold(GC_THRESHOLD, *saved[1:])
        _users += 1


def restore_gc_threshold() -> None:
    global _users, _saved
    with _lock:
        _users -= 1
        if _users == 0 and _saved is not None:
            if gc.get_threshold()[0] == GC_THRESHOLD:  # unless someone else changed it since
                gc.set_threshold(*_saved)
            _saved = None
