"""The report: rows for a ``ReportQuery``, the same behind the HTTP API, the CLI, MCP and the Python API.

The query speaks Vercel AI Gateway's Custom Reporting parameters (``start_date``, ``end_date``, ``group_by``,
``date_part``, ``user_id``, ``model``, ``provider``, ``credential_type``, ``tags``, ``tags_match``), so a client
written for ``GET /v1/report`` gets the same rows from TokenTrail. Every surface parses through
``ReportQuery.from_params`` (``reports.query``), builds its SQL with ``reports.sql.build_sql`` and executes through
``run_report``: the same question gets the same answer everywhere.

Reading rules:

* Dates are inclusive UTC days and select ``date=YYYY-MM-DD`` partition directories before DuckDB opens a file,
  so a one-day report over a year of data touches one day of files.
* Costs are exact: DuckDB sums ``decimal128(18, 12)`` into ``DECIMAL(38, 12)`` and rows carry ``Decimal``.
  A record without a price (``price_status`` not ``priced``, cost NULL) adds nothing to the cost sums but counts in
  ``request_count`` and ``unpriced_request_count``: an unknown price is never a silent $0. A row none of whose
  requests has a price has unknown costs: ``None`` (JSON ``null``, CSV empty), never 0.
* ``group_by=tag`` puts a request in the row of each of its (distinct) tags and in no row if it has none, so tag
  rows do not add up to the total. Group by anything else for totals.
* Extensions to Vercel's parameters: ``group_by`` also takes ``service``, ``api``, ``environment``,
  ``operation`` and ``none`` (one total row); ``date_part`` also takes ``week`` (ISO, Monday) and ``month``;
  ``order_by=<metric or key>[:asc|:desc]`` and ``limit`` (e.g. the top 100 users by ``total_cost``).
  An unknown parameter name is refused (400), naming the closest known one; empty values count as absent.
* Bounds, so one request cannot ask the server for everything: a date range spans at most ``MAX_RANGE_DAYS``
  (366) days and a result at most ``MAX_ROWS`` (10,000) rows. When more rows exist than were returned, the
  result is marked ``truncated`` (``{"results": [...], "truncated": true}``); ask with ``order_by`` and
  ``limit`` for the rows that matter, or narrow the query.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeAlias

from tokentrail.processor.reports.dataset import exact_cost, scan_dataset
from tokentrail.processor.reports.formatting import report_json
from tokentrail.processor.reports.params import Params, as_date
from tokentrail.processor.reports.query import COST_METRICS, NO_GROUPING, ReportQuery
from tokentrail.processor.reports.sql import build_sql

__all__ = [
    "Report",
    "ReportQuery",  # defined in reports.query; imported from here by code that only runs reports
    "ReportRow",
    "ReportRows",
    "known_cost",
    "run_report",
]

# A row's values follow its columns: text keys (or None), int counts, Decimal costs (None when unknown). Typed Any
# so callers index a row as its query's columns say, without a cast per column.
ReportRow: TypeAlias = dict[str, Any]


class ReportRows(list[ReportRow]):
    """The rows of a report: a ``list`` of row dicts, plus ``truncated``, true when more rows exist than were
    returned (the query's ``limit``, or ``MAX_ROWS``). Compares equal to a plain list of the same rows."""

    truncated: bool

    def __init__(self, rows: Iterable[ReportRow] = (), *, truncated: bool = False) -> None:
        super().__init__(rows)
        self.truncated = truncated


def _rows(query: ReportQuery, names: list[str], raw_rows: list[tuple[Any, ...]]) -> ReportRows:
    cap = query.row_cap
    rows = ReportRows(truncated=len(raw_rows) > cap)
    for raw in raw_rows[:cap]:
        row: ReportRow = dict(zip(names, raw))
        for name in COST_METRICS:
            row[name] = known_cost(row[name])
        rows.append(row)
    return rows


def known_cost(value: object) -> Decimal | None:
    """A summed cost as ``exact_cost`` gives it, but NULL (no priced request in the sum) stays ``None``: unknown,
    which every surface must tell from a real $0."""
    return None if value is None else exact_cost(value)


def run_report(data_dir: str | os.PathLike[str], query: ReportQuery) -> ReportRows:
    """Rows for ``query`` over the dataset in ``data_dir``; a missing or empty dataset gives ``[]``.

    Rows are sorted by ``order_by`` if given, then by time bucket, then by ``total_cost`` descending, then by
    group keys, so the order is the same on every run. At most ``query.row_cap`` rows come back; the result's
    ``truncated`` says whether there were more.
    """
    sql, params = build_sql(query)
    names, raw_rows = scan_dataset(data_dir, query.start_date, query.end_date, sql, params)
    return _rows(query, names, raw_rows)


class Report:
    """The Python API: the same rows the HTTP API and the CLI give, as ``Decimal`` costs and ``int`` counts.

    >>> Report("tokentrail-data").query(start_date="2025-01-01", end_date="2025-01-31", group_by="model")
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self._data_dir = Path(data_dir)

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    def run(self, query: ReportQuery) -> ReportRows:
        return run_report(self._data_dir, query)

    def from_params(self, params: Params) -> ReportRows:
        """Rows for HTTP-style parameters; raises ``ReportParameterError`` as the HTTP API answers 400."""
        return self.run(ReportQuery.from_params(params))

    def query(
        self,
        *,
        start_date: date | str,
        end_date: date | str,
        group_by: str | Iterable[str] = ("day",),
        date_part: str | None = None,
        user_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        credential_type: str | None = None,
        tags: str | Iterable[str] = (),
        tags_match: str = "any",
        order_by: str | None = None,
        limit: int | None = None,
    ) -> ReportRows:
        """Keyword form for code and notebooks. Dates may be ``date`` or ``"YYYY-MM-DD"``; ``group_by`` and
        ``tags`` a comma-separated string or a sequence; ``group_by=()`` or ``"none"`` gives one total row."""
        groups = [g.strip().lower() for g in (group_by.split(",") if isinstance(group_by, str) else group_by)]
        if groups == [NO_GROUPING]:
            groups = []  # one total row, as group_by=none over HTTP
        tag_list = [t.strip() for t in (tags.split(",") if isinstance(tags, str) else tags)]
        return self.run(
            ReportQuery(
                start_date=as_date(start_date, "start_date"),
                end_date=as_date(end_date, "end_date"),
                group_by=tuple(g for g in groups if g),
                date_part=date_part,
                user_id=user_id,
                model=model,
                provider=provider,
                credential_type=credential_type,
                tags=tuple(t for t in tag_list if t),
                tags_match=tags_match,
                order_by=order_by,
                limit=limit,
            )
        )

    def json(self, query: ReportQuery) -> str:
        """The exact body ``GET /v1/report`` returns for ``query``."""
        return report_json(self.run(query))
