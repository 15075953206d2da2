"""The status file: each receiver's last snapshot in ``DATA_DIR/status/<receiver>.json``, written now and then by a
running receiver and once more when it stops, read by ``tokentrail status`` (which may run on another host that
shares the data directory, so the file, not a port, is the interface)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

__all__ = ["STATUS_DIR", "StatusFile", "read_status_files", "status_path", "write_status"]

log = logging.getLogger(__name__)

STATUS_DIR: Final = "status"


def status_path(data_dir: Path, receiver_id: str) -> Path:
    return data_dir / STATUS_DIR / f"{receiver_id}.json"


def write_status(path: Path, details: Mapping[str, object], metrics: Mapping[str, float]) -> None:
    """Atomically replaces ``path``: a reader sees the previous snapshot or this one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    body = {**details, "updated_at": time.time(), "metrics": metrics}
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_status_files(data_dir: Path) -> list[dict[str, object]]:
    """Every receiver's last status snapshot under ``data_dir/status`` (unreadable ones skipped: a receiver may be
    replacing its file right now)."""
    out: list[dict[str, object]] = []
    directory = data_dir / STATUS_DIR
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return out
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            out.append(json.loads((directory / name).read_text()))
        except (OSError, ValueError):
            continue
    return out


class StatusFile:
    """One receiver's status file: ``describe()`` (who it is, where it listens) plus ``metrics()`` (its counters and
    gauges, ``Metrics.snapshot``)."""

    def __init__(
        self,
        path: Path,
        describe: Callable[[], Mapping[str, object]],
        metrics: Callable[[], Mapping[str, float]],
        interval: float,
    ) -> None:
        self.path = path
        self.interval = interval
        self._describe = describe
        self._metrics = metrics
        self._written = 0.0

    def write(self) -> None:
        """Writes it now. A status file is a report, not data: failing to write one is logged, never raised."""
        self._written = time.monotonic()
        try:
            write_status(self.path, self._describe(), self._metrics())
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)

    def write_if_due(self) -> None:
        if time.monotonic() - self._written >= self.interval:
            self.write()
