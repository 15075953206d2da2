"""The usage dataset as every report reads it: the Parquet files of a range of UTC days, found by directory name
(partition pruning before DuckDB opens anything), read in one DuckDB query with every user value a parameter.

The report, budgets, margins and spikes all go through ``scan_dataset``: the same files, the same pruning, the same
retry when compaction swaps a file between listing and reading, and costs back as exact ``Decimal``.

``require_dataset`` tells "no dataset here" (a wrong path: an error) from "no usage in this period" (a dataset with no
rows in range: an empty answer); every command that reads a data directory asks it first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Context, Decimal
from pathlib import Path
from typing import Any, Final

from tokentrail.processor.reports.errors import ReportError
from tokentrail.processor.schema import COST_QUANTUM, PARTITION_COLUMN
from tokentrail.processor.storage.dataset import USAGE_DIR, dataset_files, partition_day

__all__ = ["USAGE_DIR", "USAGE_SOURCE", "NoDatasetError", "dataset_files", "exact_cost", "require_dataset", "scan_dataset"]

# The records, as every query reads them: the partition date from the path, typed, files listed by the caller.
USAGE_SOURCE: Final = (
    f"read_parquet($files, hive_partitioning = true, hive_types = {{'{PARTITION_COLUMN}': DATE}}, union_by_name = true)"
)

_SUM_CONTEXT: Final = Context(prec=60)  # wider than DECIMAL(38, 12): quantizing a sum never rounds it


class NoDatasetError(ReportError):
    """The data directory holds no dataset: a wrong path, not an empty period. Said, never answered as zero usage."""


def require_dataset(data_dir: str | os.PathLike[str]) -> Path:
    """``data_dir`` if it holds a dataset (a ``usage/`` folder, which a receiver creates when it starts), else
    ``NoDatasetError`` naming the path and what was expected there. A dataset with no rows is a dataset: its empty
    periods are answered as such."""
    path = Path(data_dir)
    shown = str(path) if path.is_absolute() else f"{path} ({path.absolute()})"
    expected = f"a dataset is the {USAGE_DIR}/date=YYYY-MM-DD/*.parquet that `tokentrail serve --data-dir` writes"
    if not path.exists():
        raise NoDatasetError(f"no TokenTrail dataset at {shown}: the directory does not exist ({expected})")
    if not path.is_dir():
        raise NoDatasetError(f"no TokenTrail dataset at {shown}: it is not a directory ({expected})")
    if not (path / USAGE_DIR).is_dir():
        raise NoDatasetError(f"no TokenTrail dataset in {shown}: it has no {USAGE_DIR}/ folder ({expected})")
    return path


def scan_dataset(
    data_dir: str | os.PathLike[str],
    start_date: date,
    end_date: date,
    sql: str,
    params: Mapping[str, object],
    *,
    days: Iterable[date] | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql`` over the dataset's files of ``start_date..end_date`` (or only of ``days``), as
    ``(column names, rows)``; ``([], [])`` when no file is in range. Values are as DuckDB gives them (``Any``).
    ``sql`` reads the records with ``FROM {USAGE_SOURCE}`` (``$files`` is filled here) and passes every user value
    as a named parameter.

    The budgets, margins and spikes queries go through here, as the report does: the same files, the same
    partition pruning, the same retry when compaction swaps a file between listing and reading."""
    import duckdb  # slow to import: loaded by the first query, so `tokentrail --help` and the receiver never pay for it

    wanted = set(days) if days is not None else None
    attempts = 3
    for attempt in range(attempts):
        files = dataset_files(data_dir, start_date, end_date)
        if wanted is not None:
            files = [f for f in files if _file_day(f) in wanted]
        if not files:
            return [], []
        try:
            # One connection per query: DuckDB connections are not shared across threads, and opening one is cheap.
            with duckdb.connect(":memory:") as con:
                # A server's stderr is for its log: DuckDB draws a progress bar on long queries unless told not to.
                con.execute("SET enable_progress_bar = false")
                cursor = con.execute(sql, {**params, "files": files})
                names = [d[0] for d in cursor.description]
                return names, cursor.fetchall()
        except duckdb.IOException:
            # Compaction replaces small files with a merged one; a file listed a moment ago may be gone.
            # List again, but only for that reason: any other I/O error is real.
            if attempt == attempts - 1 or all(os.path.exists(f) for f in files):
                raise
    raise AssertionError("unreachable")


def _file_day(path: str) -> date | None:
    return partition_day(os.path.basename(os.path.dirname(path)))


def exact_cost(value: object) -> Decimal:
    """A summed cost as an exact ``Decimal`` at the stored scale; NULL (nothing priced) is 0. (DuckDB may hand back
    ``3E-12``; the stored scale, pico-dollars, reads better and compares the same.)"""
    if value is None:
        return Decimal(0).quantize(COST_QUANTUM)
    if not isinstance(value, Decimal):
        raise ReportError(f"cost came back as {type(value).__name__}, not Decimal")  # never via float
    return value.quantize(COST_QUANTUM, context=_SUM_CONTEXT)
