"""Rewriting one day of the dataset atomically: compaction (merge small files, exact dedupe) and re-pricing.

Layout. The flusher writes ``usage/date=YYYY-MM-DD/part-<receiver>-<seq>.parquet`` into a plain directory. The first
rewrite of a day turns ``date=YYYY-MM-DD`` into a relative symlink to an immutable *version* directory,
``usage/.days/YYYY-MM-DD/v<N>/``; every later rewrite builds version ``N+1`` beside it and swaps the symlink.

Why a reader never sees a half state. A reader lists ``date=X/`` (``os.listdir`` resolves the symlink once, so the
listing is one version's files) and then opens ``date=X/<name>`` (resolved again at open). A swap lands either before
the listing (the reader sees only the new version), or after it: then the names it listed do not exist in the new
version (rewritten files get names no other version ever had), so its open fails and it lists again — the report
reader in ``report.py`` retries exactly that case. Files a reader already opened stay readable after the old version
is deleted (POSIX unlink semantics). No listing can hold files of two versions.

Swapping. A symlink is replaced by ``rename(2)`` of a new symlink over it (atomic). A day still in the plain layout is
swapped with ``renameat2(RENAME_EXCHANGE)`` (Linux 3.15+, ext4/xfs/btrfs/tmpfs; ``renamex_np(RENAME_SWAP)`` on macOS):
the plain directory and the symlink trade names in one step.

Never racing the flusher. Every writer of a day, in any process, holds the day's ``flock`` (``storage.day_lock``):
the flusher while it adds a file, a rewrite for the whole read-transform-swap. A crash mid-rewrite leaves at most an
unreferenced version directory or temporary link, removed by the next rewrite of that day.

Replays after a crash. A receiver that died between renaming a Parquet file into place and deleting its WAL segment
replays the segment on restart and rewrites the same file name (idempotent). If a rewrite merged that file in the
meantime, the name is listed in the new version's ``_absorbed`` file and the flusher skips it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokentrail.processor.errors import TokenTrailError
from tokentrail.processor.schema import ARROW_SCHEMA, SchemaMismatch, conform
from tokentrail.processor.storage.dataset import dataset_days
from tokentrail.processor.storage.parquet import (
    ABSORBED_FILE,
    _write_file,
    day_dir_name,
    day_lock,
    list_day,
    read_absorbed,
)
from tokentrail.processor.storage.wal import fsync_dir, segment_name

__all__ = [
    "VERSIONS_DIR",
    "CompactionResult",
    "RewriteError",
    "compact",
    "compact_day",
    "dataset_days",
    "dedupe_table",
    "identity_keys",
    "read_day",
    "rewrite_day",
]

log = logging.getLogger(__name__)

VERSIONS_DIR: Final = ".days"
_VERSION_RE: Final = re.compile(r"^v(\d{9})$")
_PART_RE: Final = re.compile(r"^part-(?P<rid>[A-Za-z0-9_.-]{1,64})-(?P<seq>\d{12})\.parquet$")
_SWAP_PREFIX: Final = ".swap-"
MAX_ROWS_PER_FILE: Final = 8 * 1_048_576  # a rewritten day is split into files of at most this many rows


class RewriteError(TokenTrailError, RuntimeError):
    """A day could not be rewritten; the day is unchanged."""


# -- atomic exchange of two paths ---------------------------------------------------------------------------------


def _exchange(a: Path, b: Path) -> None:
    """Atomically swaps the names ``a`` and ``b`` (both must exist)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        rc = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rename_swap = 2
        rc = libc.renamex_np(os.fsencode(a), os.fsencode(b), rename_swap)
    else:
        raise RewriteError(
            "this platform cannot swap a directory atomically; the first rewrite of a day written in the plain "
            "layout needs Linux renameat2(RENAME_EXCHANGE) or macOS renamex_np(RENAME_SWAP)"
        )
    if rc != 0:
        err = ctypes.get_errno()
        raise RewriteError(f"atomic exchange of {a} and {b} failed: {os.strerror(err)} (errno {err})")


# -- reading a day ------------------------------------------------------------------------------------------------


def _day_text(day: date) -> str:
    if isinstance(day, datetime) or not isinstance(day, date):
        raise TypeError(f"day must be a datetime.date, got {type(day).__name__}")
    return day.isoformat()


def _parquet_names(directory: Path) -> list[str]:
    return list_day(directory)


def _conform(table: pa.Table, what: str) -> pa.Table:
    """``table`` in the shared schema (``schema.conform``: older files get the columns added since as defaults)."""
    try:
        return conform(table)
    except SchemaMismatch as exc:
        raise RewriteError(f"{what}: {exc}") from exc


def read_day(usage_dir: Path | str, day: date) -> pa.Table:
    """Every row of one day in the shared schema, files in name order (no lock: for inspection and tests)."""
    directory = Path(usage_dir) / day_dir_name(_day_text(day))
    return _read_files(directory, _parquet_names(directory))


def _read_files(directory: Path, names: list[str]) -> pa.Table:
    tables = [_conform(pq.read_table(directory / name), f"{directory / name}") for name in names]
    if not tables:
        return ARROW_SCHEMA.empty_table()
    return pa.concat_tables(tables)


# -- the primitive ------------------------------------------------------------------------------------------------


def rewrite_day(usage_dir: Path, day: date, transform: Callable[[pa.Table], pa.Table]) -> None:
    """Replaces every row of ``day`` with ``transform(rows)``, atomically for readers and safely against writers.

    ``transform`` receives the day's rows (the shared ``ARROW_SCHEMA``, files in name order) and returns the rows
    to keep, in any column order (missing nullable columns become nulls; extra columns are dropped). Every row
    it returns must still fall on ``day`` (UTC): a transform cannot move rows between partitions. It runs while
    the day is locked, so flushers of that day wait for it. If it raises, or its output is invalid, the day is
    left exactly as it was and the error propagates (``RewriteError`` for invalid output).

    A day with no files is left alone (``transform`` is not called). Readers see either all of the old rows or
    all of the new ones, never a mix (see the module docstring for how).
    """
    usage_dir = Path(usage_dir)
    day_text = _day_text(day)
    link = usage_dir / day_dir_name(day_text)
    versions = usage_dir / VERSIONS_DIR / day_text
    with day_lock(usage_dir, day_text):
        _clean_leftovers(usage_dir, day_text, link, versions)
        if not os.path.lexists(link):
            return
        names = _parquet_names(link)
        if not names:
            return
        table = _read_files(link, names)
        out = transform(table)
        if not isinstance(out, pa.Table):
            raise RewriteError(f"transform must return a pyarrow.Table, got {type(out).__name__}")
        out = _conform(out, f"transform output for {day_text}")
        _check_day(out, day)

        versions.mkdir(parents=True, exist_ok=True)
        number = max(_version_numbers(versions), default=0) + 1
        new_version = versions / f"v{number:09d}"
        new_version.mkdir()
        try:
            _write_version(out, new_version, number, _absorbed_names(usage_dir, link, names))
            fsync_dir(versions)
            _swap(usage_dir, link, new_version, day_text)
        except BaseException:
            if os.path.realpath(link) != os.path.realpath(new_version):
                shutil.rmtree(new_version, ignore_errors=True)
            raise
        _clean_leftovers(usage_dir, day_text, link, versions)


def _check_day(table: pa.Table, day: date) -> None:
    if table.num_rows == 0:
        return
    start = datetime.combine(day, time(0), tzinfo=UTC)
    end = start + timedelta(days=1)
    low, high = pc.min(table["timestamp"]).as_py(), pc.max(table["timestamp"]).as_py()
    if low < start or high >= end:
        raise RewriteError(
            f"transform output has rows outside {day.isoformat()} (UTC): {low.isoformat()} .. {high.isoformat()}; "
            "a rewrite cannot move rows between days"
        )


def _version_numbers(versions: Path) -> list[int]:
    try:
        names = os.listdir(versions)
    except FileNotFoundError:
        return []
    return [int(m.group(1)) for m in map(_VERSION_RE.match, names) if m]


def _absorbed_names(usage_dir: Path, link: Path, names: list[str]) -> list[str]:
    """Merged flush files whose WAL segment still exists (a replay would write them again), and those already
    listed whose segment still exists."""
    wal_dir = usage_dir.parent / "wal"
    candidates = set(names) | read_absorbed(link)
    absorbed = []
    for name in sorted(candidates):
        m = _PART_RE.match(name)
        if m and (wal_dir / segment_name(m["rid"], int(m["seq"]))).exists():
            absorbed.append(name)
    return absorbed


def _write_version(table: pa.Table, directory: Path, number: int, absorbed: list[str]) -> None:
    # Names no other version ever has (number and a random token): a reader holding an older listing fails to open
    # them rather than reading a mix.
    token = uuid.uuid4().hex[:12]
    table = table.sort_by("timestamp")
    for i, offset in enumerate(range(0, table.num_rows, MAX_ROWS_PER_FILE)):
        _write_file(table.slice(offset, MAX_ROWS_PER_FILE), directory / f"rewrite-{number:09d}-{token}-{i:04d}.parquet")
    if absorbed:
        tmp = directory / (ABSORBED_FILE + ".tmp")
        with open(tmp, "w") as f:
            f.write("\n".join(absorbed) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / ABSORBED_FILE)
    fsync_dir(directory)


def _swap(usage_dir: Path, link: Path, new_version: Path, day_text: str) -> None:
    target = os.path.relpath(new_version, usage_dir)
    tmp_link = usage_dir / f"{_SWAP_PREFIX}{day_text}-{uuid.uuid4().hex[:8]}"
    os.symlink(target, tmp_link)
    try:
        if link.is_symlink():
            os.replace(tmp_link, link)  # rename(2) of a symlink over a symlink: atomic
        else:
            _exchange(tmp_link, link)  # the plain directory now lives at tmp_link
            shutil.rmtree(tmp_link)
    except BaseException:
        if tmp_link.is_symlink():
            tmp_link.unlink()
        raise
    fsync_dir(usage_dir)


def _clean_leftovers(usage_dir: Path, day_text: str, link: Path, versions: Path) -> None:
    """Under the day lock: versions nothing points at, and temporary links or swapped-out plain directories."""
    current = Path(os.path.realpath(link)) if link.is_symlink() else None
    removed = False
    for number in _version_numbers(versions):
        path = versions / f"v{number:09d}"
        if current is None or Path(os.path.realpath(path)) != current:
            shutil.rmtree(path, ignore_errors=True)
            removed = True
    prefix = f"{_SWAP_PREFIX}{day_text}-"
    for name in os.listdir(usage_dir):
        if name.startswith(prefix):
            path = usage_dir / name
            if path.is_symlink() or path.is_file():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)
            removed = True
    if removed:
        fsync_dir(usage_dir)
        if versions.exists():
            fsync_dir(versions)


# -- compaction -----------------------------------------------------------------------------------------------


def identity_keys(table: pa.Table) -> pa.ChunkedArray:
    """``UsageRecord.identity`` of every row as one string: (provider, response id), else (trace id, span id)."""
    response = table["response_id"]
    has_response = pc.and_(pc.is_valid(response), pc.not_equal(response, ""))
    has_response = pc.fill_null(has_response, False)
    by_response = pc.binary_join_element_wise("r", table["provider"], pc.fill_null(response, ""), "\x1f")
    by_span = pc.binary_join_element_wise("s", table["trace_id"], table["span_id"], "\x1f")
    return pc.if_else(has_response, by_response, by_span)


def dedupe_table(table: pa.Table) -> pa.Table:
    """One row per identity, the first in ``table`` order (the copy ingested first), sorted by time."""
    if table.num_rows == 0:
        return table
    keyed = pa.table({"key": identity_keys(table), "row": pa.array(range(table.num_rows), pa.int64())})
    first = keyed.group_by("key", use_threads=False).aggregate([("row", "min")])["row_min"]
    keep = pc.sort_indices(first)
    return table.take(pc.take(first, keep)).sort_by("timestamp")


@dataclass(frozen=True, slots=True)
class CompactionResult:
    day: date
    files_before: int
    files_after: int
    rows_before: int
    rows_after: int

    @property
    def duplicates_removed(self) -> int:
        return self.rows_before - self.rows_after


def compact_day(usage_dir: Path | str, day: date, *, min_files: int = 2) -> CompactionResult | None:
    """Merges one day's files into one (or a few very large) file(s), dropping exact duplicates.

    Skipped (returns None) when the day has fewer than ``min_files`` files; ``min_files=1`` rewrites even a single
    file, which removes duplicates inside it."""
    usage_dir = Path(usage_dir)
    link = usage_dir / day_dir_name(_day_text(day))
    if len(_parquet_names(link)) < max(1, min_files):
        return None
    seen: dict[str, int] = {}

    def transform(table: pa.Table) -> pa.Table:
        seen["before"] = table.num_rows
        seen["files"] = len(_parquet_names(link))
        out = dedupe_table(table)
        seen["after"] = out.num_rows
        return out

    rewrite_day(usage_dir, day, transform)
    if not seen:
        return None
    files_after = len(_parquet_names(link))
    result = CompactionResult(day, seen["files"], files_after, seen["before"], seen["after"])
    log.info(
        "compacted %s: %d file(s) -> %d, %d row(s) -> %d",
        day,
        result.files_before,
        result.files_after,
        result.rows_before,
        result.rows_after,
    )
    return result


def compact(
    usage_dir: Path | str, days: Iterable[date] | None = None, *, min_files: int = 2
) -> list[CompactionResult]:
    """Compacts ``days`` (default: every day in the dataset); returns what was done for each day compacted."""
    chosen = dataset_days(usage_dir) if days is None else list(days)
    results = []
    for day in chosen:
        result = compact_day(usage_dir, day, min_files=min_files)
        if result is not None:
            results.append(result)
    return results
