"""Which alerts fired (budget thresholds, spikes) and which are not yet delivered, on disk, so a restart neither
re-fires nor loses an alert."""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["AlertState", "decode_alert", "encode_alert"]

log = logging.getLogger(__name__)


class AlertState:
    """Fired thresholds and undelivered alerts, in one JSON file changed only under an exclusive file lock (so two
    processes sharing a data dir never both fire one threshold) and replaced atomically (so a crash never leaves
    half a file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": 1, "fired": {}, "pending": []}
        except (OSError, ValueError):
            log.exception("budget state %s is unreadable; starting afresh (thresholds may fire again)", self.path)
            return {"version": 1, "fired": {}, "pending": []}
        data.setdefault("fired", {})
        data.setdefault("pending", [])
        return data

    def _write(self, data: Mapping[str, Any]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def update(self, change: Callable[[dict[str, Any]], Any]) -> Any:
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                data = self._read()
                result = change(data)
                self._write(data)
                return result
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def read(self) -> dict[str, Any]:
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_SH)
            try:
                return self._read()
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def encode_alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    """For the state file: ``Decimal`` as text so nothing is rounded on the way through JSON, and without the
    webhook headers (they may hold secrets; a restart takes them from the budgets file again)."""
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in alert.items() if k != "webhook_headers"}


def decode_alert(alert: Mapping[str, Any], decimals: Iterable[str]) -> dict[str, Any]:
    """An alert read back from the state file: the ``decimals`` fields ``Decimal`` again."""
    out = dict(alert)
    for name in decimals:
        if isinstance(out.get(name), str):
            out[name] = Decimal(out[name])
    return out
