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

from tokentrail.processor.errors import TokenTrailError

__all__ = ["STATUS_DIR", "StatusFile", "StatusReadError", "read_status_files", "status_path", "write_status"]

log = logging.getLogger(__name__)

STATUS_DIR: Final = "status"


class StatusReadError(TokenTrailError):
    """The status folder is there but cannot be listed (a file in its place, no permission): said, naming it, since
    answering "no receiver has run" would be a guess."""


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
    replacing its file right now); none when no receiver ever wrote one. ``StatusReadError`` when the folder itself
    cannot be listed."""
    out: list[dict[str, object]] = []
    directory = data_dir / STATUS_DIR
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return out
    except NotADirectoryError:
        if not data_dir.is_dir():
            raise StatusReadError(f"cannot read receiver status: {data_dir} is not a directory") from None
        raise StatusReadError(
            f"cannot read receiver status: {directory} is a file, not the {STATUS_DIR}/ folder receivers write their "
            "status files in (move it away, or point --data-dir at your receiver's data directory)"
        ) from None
    except OSError as exc:
        raise StatusReadError(f"cannot read receiver status in {directory}: {exc.strerror or exc}") from exc
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
