"""TokenTrail processor: OTLP in, priced usage records in Parquet, reports out.

The supported Python API is re-exported here, so no one needs to know the package layout::

    from tokentrail.processor import ReportQuery, run_report

    rows = run_report("/var/lib/tokentrail", ReportQuery.from_params({"start_date": "2026-11-01",
                                                                      "end_date": "2026-11-30",
                                                                      "group_by": "user"}))

Names resolve on first use (PEP 562), so importing one stage (the CLI, the instrumentation's tests) does not load
DuckDB, gRPC and pyarrow all at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tokentrail.processor.errors import TokenTrailError

if TYPE_CHECKING:
    from tokentrail.processor.ingest.receiver import Receiver
    from tokentrail.processor.pricing.catalog import Pricer
    from tokentrail.processor.pricing.explain import explain
    from tokentrail.processor.pricing.overrides import load_overrides
    from tokentrail.processor.reports.budgets import budget_status, load_budgets
    from tokentrail.processor.reports.margins import margins
    from tokentrail.processor.reports.query import ReportQuery
    from tokentrail.processor.reports.report import ReportRows, run_report
    from tokentrail.processor.reports.spikes import SpikeQuery, find_spikes
    from tokentrail.processor.schema import UsageRecord

# Public name -> the module that defines it. Keep in step with the TYPE_CHECKING imports above (a test checks).
_EXPORTS: dict[str, str] = {
    "Receiver": "tokentrail.processor.ingest.receiver",
    "Pricer": "tokentrail.processor.pricing.catalog",
    "explain": "tokentrail.processor.pricing.explain",
    "load_overrides": "tokentrail.processor.pricing.overrides",
    "budget_status": "tokentrail.processor.reports.budgets",
    "load_budgets": "tokentrail.processor.reports.budgets",
    "margins": "tokentrail.processor.reports.margins",
    "ReportQuery": "tokentrail.processor.reports.query",
    "ReportRows": "tokentrail.processor.reports.report",
    "run_report": "tokentrail.processor.reports.report",
    "SpikeQuery": "tokentrail.processor.reports.spikes",
    "find_spikes": "tokentrail.processor.reports.spikes",
    "UsageRecord": "tokentrail.processor.schema",
}

__all__ = [  # a literal list, so linters and IDEs see the names; a test holds it equal to _EXPORTS
    "TokenTrailError",
    "Receiver",
    "Pricer",
    "explain",
    "load_overrides",
    "budget_status",
    "load_budgets",
    "margins",
    "ReportQuery",
    "ReportRows",
    "run_report",
    "SpikeQuery",
    "find_spikes",
    "UsageRecord",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
