"""The stored dataset as readers find it: which days exist and which Parquet files hold a range of days, found by
directory name (``usage/date=YYYY-MM-DD/``) before any file is opened."""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Final

from tokentrail.processor.schema import PARTITION_COLUMN
from tokentrail.processor.storage.parquet import list_day

__all__ = ["USAGE_DIR", "dataset_days", "dataset_files", "partition_day"]

USAGE_DIR: Final = "usage"  # DATA_DIR/usage/date=YYYY-MM-DD/part-*.parquet
_DAY_DIR_RE: Final = re.compile(rf"{PARTITION_COLUMN}=(\d{{4}}-\d{{2}}-\d{{2}})")


def partition_day(name: str) -> date | None:
    """The day a partition directory name (``date=YYYY-MM-DD``) stands for; None for any other name."""
    match = _DAY_DIR_RE.fullmatch(name)
    if match is None:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:  # date=2025-02-30: not a day, not ours
        return None


def dataset_days(usage_dir: Path | str) -> list[date]:
    """Every day that has a partition directory, oldest first."""
    try:
        names = os.listdir(usage_dir)
    except FileNotFoundError:
        return []
    return sorted(day for day in map(partition_day, names) if day is not None)


def dataset_files(data_dir: str | os.PathLike[str], start_date: date, end_date: date) -> list[str]:
    """Parquet files of the days in range, sorted. Each day is one consistent listing (``parquet.list_day``), never
    part of a version a rewrite is deleting."""
    root = Path(data_dir) / USAGE_DIR
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return []
    files: list[str] = []
    for entry in entries:
        day = partition_day(entry.name)
        if day is None or not start_date <= day <= end_date or not entry.is_dir():
            continue
        files.extend(os.path.join(entry.path, name) for name in list_day(entry.path))
    files.sort()
    return files
