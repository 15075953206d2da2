"""The one promise every fault test checks: what the receiver acknowledged is stored, exactly once.

Read from the Parquet dataset after the receiver stopped cleanly (SIGTERM: everything acknowledged is flushed), with
DuckDB (``tests.helpers.receiver.read_usage``) and through the public report API (``run_report``), so a record
hidden from one reader but not the other (a half-swapped compacted day, say) fails too.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokentrail.processor.reports.query import ReportQuery
from tokentrail.processor.reports.report import run_report

from tests.fault.collector import Ledger
from tests.helpers.receiver import read_usage

__all__ = ["Stored", "assert_exactly_once", "stored"]

# The days make_batch spreads spans over, with room on both sides.
FIRST_DAY = "2025-05-25"
LAST_DAY = "2025-06-30"


@dataclass(frozen=True)
class Stored:
    counts: collections.Counter[str]  # span id -> rows
    report_requests: int

    @property
    def ids(self) -> set[str]:
        return set(self.counts)

    @property
    def duplicates(self) -> dict[str, int]:
        return {k: n for k, n in self.counts.items() if n > 1}


def stored(data_dir: Path) -> Stored:
    counts = collections.Counter(str(r["span_id"]) for r in read_usage(data_dir))
    rows = run_report(
        data_dir, ReportQuery.from_params({"start_date": FIRST_DAY, "end_date": LAST_DAY, "group_by": "none"})
    )
    return Stored(counts, int(rows[0]["request_count"]) if rows else 0)


def assert_exactly_once(
    data_dir: Path, ledger: Ledger, *, also: Iterable[str] = (), lost: Iterable[str] = ()
) -> Stored:
    """Every acknowledged span (plus ``also``, minus ``lost``: spans a test destroyed on purpose) stored once, nothing
    else stored, no span twice, no permanent refusal of a valid batch, nothing given up on."""
    assert not ledger.permanent, f"valid batches refused permanently: {ledger.permanent[:5]}"
    assert not ledger.pending, f"{len(ledger.pending)} batch(es) never acknowledged"
    result = stored(data_dir)
    assert not result.duplicates, f"{len(result.duplicates)} span(s) stored more than once"
    expected = (ledger.acked_ids() | set(also)) - set(lost)
    missing = expected - result.ids
    extra = result.ids - expected
    assert not missing, f"{len(missing)} acknowledged span(s) not stored"
    assert not extra, f"{len(extra)} span(s) stored that were never acknowledged (or were destroyed)"
    assert result.report_requests == len(expected), (result.report_requests, len(expected))
    return result
