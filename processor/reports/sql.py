"""The one SQL text of a report question: every user value a named parameter, every identifier and expression from
fixed tables (``query.GROUP_COLUMNS``, the date buckets below), never from the request."""

from __future__ import annotations

from typing import Final

from tokentrail.processor.reports.dataset import USAGE_SOURCE
from tokentrail.processor.reports.query import COST_METRICS, FILTER_COLUMNS, GROUP_COLUMNS, ReportQuery
from tokentrail.processor.schema import PARTITION_COLUMN, PRICED, TOKEN_FIELDS

__all__ = ["build_sql", "filter_sql"]

_US_PER_HOUR: Final = 3_600_000_000


def _date_expressions(date_part: str) -> tuple[str, str]:
    """(raw bucket to group on, text key from the bucket). Grouping on the raw value and formatting only the
    grouped rows keeps string work out of the per-record path. Day, week and month come from the stored
    partition date; only the hour needs the timestamp, taken as integer microseconds so the session time zone
    cannot shift it."""
    if date_part == "hour":
        return (
            f'epoch_us("timestamp") // {_US_PER_HOUR}',
            f"strftime(make_timestamp(__bucket * {_US_PER_HOUR}), '%Y-%m-%dT%H')",
        )
    if date_part == "day":
        return (f'"{PARTITION_COLUMN}"', "strftime(__bucket, '%Y-%m-%d')")
    if date_part == "week":  # DuckDB weeks are ISO weeks: they start on Monday
        return (f"date_trunc('week', \"{PARTITION_COLUMN}\")", "strftime(__bucket, '%Y-%m-%d')")
    if date_part == "month":
        return (f"date_trunc('month', \"{PARTITION_COLUMN}\")", "strftime(__bucket, '%Y-%m')")
    raise AssertionError(date_part)  # ReportQuery validated it


def filter_sql(query: ReportQuery) -> tuple[list[str], dict[str, object]]:
    """The conditions that pick a query's records (its dates and filters), ANDed, and the parameters they name:
    one definition for the report and for ``requests`` (the calls behind a report's number are its records)."""
    params: dict[str, object] = {"start_date": query.start_date, "end_date": query.end_date}
    where = [f'"{PARTITION_COLUMN}" BETWEEN $start_date AND $end_date']
    for name in FILTER_COLUMNS:
        value = getattr(query, name)
        if value is not None:
            params[name] = value
            where.append(f'"{name}" = ${name}')
    if query.tags:
        # One list_contains per tag: much faster in DuckDB than list_has_any/list_has_all with a list parameter
        # (docs/ARCHITECTURE.md, Reports).
        tests = []
        for i, tag in enumerate(query.tags):
            params[f"tag_{i}"] = tag
            tests.append(f"list_contains(tags, $tag_{i})")
        joiner = " AND " if query.tags_match == "all" else " OR "
        where.append(f"({joiner.join(tests)})")
    return where, params


def build_sql(query: ReportQuery) -> tuple[str, dict[str, object]]:
    """The one SQL text for a query, with every user value as a named parameter (``$files`` is filled by the
    caller with the dataset's files). Identifiers and expressions come only from fixed tables in this module.

    Two aggregation steps: records → partial groups (keyed also by the whole tag list when grouping by tag),
    then partial groups → rows. Exploding and de-duplicating tags per partial group instead of per record
    makes ``group_by=tag`` exact (a tag repeated on one request counts once) at about the cost of a plain
    UNNEST (``list_distinct`` per record is several times slower: docs/ARCHITECTURE.md, Reports). Without tags the
    second step re-sums already-grouped rows, which costs nothing measurable.
    """
    params: dict[str, object] = {
        "start_date": query.start_date,
        "end_date": query.end_date,
        "priced": PRICED,
    }
    by_tag = "tag" in query.dimensions
    partial_keys: list[str] = []  # step 1: per-record key expressions, aliased
    partial_group: list[str] = []
    carry: list[str] = []  # step 2: what passes from the partial groups to the final grouping
    keys: list[str] = []  # output key expressions, in output order
    group: list[str] = []  # final raw grouping columns
    order: list[str] = []

    date_key = query.date_key
    if date_key is not None:
        raw, text = _date_expressions(date_key)
        partial_keys.append(f"{raw} AS __bucket")
        partial_group.append("__bucket")
        carry.append("__bucket")
        keys.append(f'{text} AS "{date_key}"')
        group.append("__bucket")
        order.append("__bucket")
    order.append("total_cost DESC NULLS LAST")  # unknown costs after the known
    key_columns: dict[str, str] = {date_key: "__bucket"} if date_key is not None else {}
    for dimension in query.dimensions:
        alias = f"__g_{dimension}"
        if dimension == "tag":
            partial_keys.append("tags AS __tags")
            partial_group.append("__tags")
            # One row per distinct tag of the list; an empty list gives none, so untagged requests drop out.
            carry.append(f"UNNEST(list_distinct(__tags)) AS {alias}")
        else:
            partial_keys.append(f'"{GROUP_COLUMNS[dimension]}" AS {alias}')
            partial_group.append(alias)
            carry.append(alias)
        keys.append(f'{alias} AS "{dimension}"')
        group.append(alias)
        order.append(f"{alias} ASC NULLS LAST")
        key_columns[dimension] = alias
    order_key = query.order_key
    if order_key is not None:  # first, then the usual order breaks ties so the answer is the same on every run
        name, direction = order_key
        column = key_columns.get(name, name)  # metrics sort by their output column
        order.insert(0, f"{column} {direction.upper()} NULLS LAST")
    params["row_limit"] = query.row_cap + 1  # one more than returned tells whether rows were cut

    where, filter_params = filter_sql(query)
    params.update(filter_params)
    if by_tag:
        where.append("len(tags) > 0")  # no tag row can hold them: skip them before grouping

    partial_metrics = [
        # SUM skips NULL (unpriced) costs and is NULL only when every cost in the group is.
        "SUM(total_cost) AS total_cost",
        "SUM(market_cost) AS market_cost",
        *(f"SUM({name}) AS {name}" for name in TOKEN_FIELDS),
        "COUNT(*) AS request_count",
        "COUNT(*) FILTER (WHERE price_status <> $priced OR total_cost IS NULL) AS unpriced_request_count",
    ]
    metric_names = [*COST_METRICS, *TOKEN_FIELDS, "request_count", "unpriced_request_count"]
    metrics = [
        # NULL when no request of the row has a price (all unpriced or no_usage): its cost is unknown, not $0.
        # A partly priced row sums its priced requests; unpriced_request_count says how many that leaves out.
        *(f"SUM({name}) AS {name}" for name in COST_METRICS),
        *(f"CAST(COALESCE(SUM({name}), 0) AS BIGINT) AS {name}" for name in metric_names[len(COST_METRICS):]),
    ]
    sql = (
        f"SELECT {', '.join([*keys, *metrics])}\n"
        "FROM (\n"
        f"  SELECT {', '.join([*carry, *metric_names])}\n"
        "  FROM (\n"
        f"    SELECT {', '.join([*partial_keys, *partial_metrics])}\n"
        f"    FROM {USAGE_SOURCE}\n"
        f"    WHERE {' AND '.join(where)}\n"
        + (f"    GROUP BY {', '.join(partial_group)}\n" if partial_group else "")
        + "  ) AS partial_groups\n"
        ") AS usage\n"
        + (f"GROUP BY {', '.join(group)}\n" if group else "")
        # Without GROUP BY an aggregate returns one row even over nothing: an empty period must be no rows.
        + "HAVING SUM(request_count) > 0\n"
        f"ORDER BY {', '.join(order)}\n"
        "LIMIT $row_limit"
    )
    return sql, params
