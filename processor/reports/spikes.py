"""Spikes: which models, providers, users, tags or credential types spend far more in the latest hour or day than
they usually do.

For one dimension, the latest window (by default the last complete hour or day before ``as_of``; with
``partial=true`` the one in progress) is compared, value by value, with the same window in earlier periods:

* ``seasonality=weekly`` (the default for days): the same weekday in the previous weeks, so a busy Monday after a
  quiet weekend, or a weekend-heavy product's Saturday, is compared with other Mondays or Saturdays, not with the
  days just before it;
* ``seasonality=daily`` (the default for hours): the same hour on the previous days;
* ``seasonality=none``: the windows just before.

The expected value is the baseline's **median**, its spread the **MAD** (median absolute deviation, scaled by
1.4826 to match a standard deviation on normal data). A value is a spike when its robust score
``(observed - expected) / spread`` reaches ``threshold`` (default 3.5). Both statistics ignore a few outliers in the
baseline, unlike the mean and standard deviation. The spread is never taken below

* counting noise: ``expected / sqrt(expected requests)`` (for ``request_count``, ``sqrt(expected)``), so two
  requests where one is usual is not a spike, while twice the usual ten thousand is;
* 10 % of the expected value, so a flat baseline does not make a small change look infinite;
* ``min_increase / threshold``, so a value new in the window is a spike only once it is ``min_increase`` above
  nothing (default: one cent of cost, one request, 1,000 tokens).

Baseline windows with no records at all (before data collection began, say) are left out, not counted as zero;
with fewer than three left, there is no judgement and the answer says so. For a cost metric, a value whose latest
window has requests but none with a known price has an unknown ``observed`` (``null``, never $0): its ``score`` and
``ratio`` are ``null`` and it is no spike (listed with ``include_all``, after the scored values); in a baseline
window, unpriced requests add nothing, as in every report.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from tokentrail.processor.reports.dataset import USAGE_SOURCE, exact_cost, scan_dataset
from tokentrail.processor.reports.errors import ReportParameterError
from tokentrail.processor.reports.params import Params, int_param, parse_as_of, refuse_unknown, single_param
from tokentrail.processor.reports.query import COST_METRICS, MAX_ROWS, METRICS

__all__ = [
    "DIMENSIONS",
    "SPIKE_COLUMNS",
    "SEASONALITIES",
    "SPIKE_PARAMETERS",
    "WINDOWS",
    "SpikeQuery",
    "SpikesResult",
    "find_spikes",
    "spikes_from_params",
]

DIMENSIONS: Final = ("model", "provider", "user", "tag", "credential_type", "service", "environment", "total")
WINDOWS: Final = ("hour", "day")
SEASONALITIES: Final = ("weekly", "daily", "none")
SPIKE_METRICS: Final = tuple(m for m in METRICS if m != "unpriced_request_count")
# Every parameter GET /v1/spikes reads (besides ``format``), and so accepts: the OpenAPI document lists exactly these.
SPIKE_PARAMETERS: Final = (
    "dimension",
    "window",
    "seasonality",
    "baseline",
    "metric",
    "threshold",
    "min_increase",
    "as_of",
    "partial",
    "include_all",
    "limit",
)
# The keys of a result row, in order (the CSV header).
SPIKE_COLUMNS: Final = ("dimension", "value", "observed", "expected", "mad", "score", "ratio", "spike")
DEFAULT_THRESHOLD: Final = Decimal("3.5")
MIN_BASELINE: Final = 3
MAX_BASELINE: Final = 60
MAD_SCALE: Final = Decimal("1.4826")
RELATIVE_FLOOR: Final = Decimal("0.1")
DEFAULT_BASELINE: Final = {
    ("day", "weekly"): 6,
    ("day", "none"): 14,
    ("hour", "daily"): 14,
    ("hour", "weekly"): 4,
    ("hour", "none"): 24,
}
DEFAULT_MIN_INCREASE: Final[dict[str, Decimal]] = {
    "total_cost": Decimal("0.01"), "market_cost": Decimal("0.01"), "request_count": Decimal(1)
}

_COLUMNS: Final = {
    "model": "model",
    "provider": "provider",
    "user": "user_id",
    "credential_type": "credential_type",
    "service": "service",
    "environment": "environment",
}
_UNIT: Final = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
_STEP: Final = {
    ("day", "weekly"): timedelta(days=7),
    ("day", "none"): timedelta(days=1),
    ("hour", "daily"): timedelta(days=1),
    ("hour", "weekly"): timedelta(days=7),
    ("hour", "none"): timedelta(hours=1),
}
_US: Final = timedelta(microseconds=1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SCORE: Final = Decimal("0.01")


@dataclass(frozen=True, slots=True, kw_only=True)
class SpikeQuery:
    dimension: str = "model"
    window: str = "day"
    seasonality: str | None = None  # None: weekly for days, daily for hours
    baseline: int | None = None  # None: the default for window and seasonality
    metric: str = "total_cost"
    threshold: Decimal = DEFAULT_THRESHOLD
    min_increase: Decimal | None = None
    as_of: datetime | None = None
    partial: bool = False
    include_all: bool = False
    limit: int = MAX_ROWS

    def __post_init__(self) -> None:
        if self.dimension not in DIMENSIONS:
            raise ReportParameterError(f"unknown dimension {self.dimension!r}; use one of {', '.join(DIMENSIONS)}")
        if self.window not in WINDOWS:
            raise ReportParameterError(f"unknown window {self.window!r}; use one of {', '.join(WINDOWS)}")
        seasonality = self.seasonality or ("weekly" if self.window == "day" else "daily")
        if seasonality not in SEASONALITIES:
            raise ReportParameterError(
                f"unknown seasonality {seasonality!r}; use one of {', '.join(SEASONALITIES)}"
            )
        if (self.window, seasonality) not in _STEP:
            raise ReportParameterError("seasonality=daily compares hours; for window=day use weekly or none")
        object.__setattr__(self, "seasonality", seasonality)
        baseline = self.baseline if self.baseline is not None else DEFAULT_BASELINE[(self.window, seasonality)]
        if isinstance(baseline, bool) or not isinstance(baseline, int) or not MIN_BASELINE <= baseline <= MAX_BASELINE:
            raise ReportParameterError(
                f"baseline must be a whole number of windows from {MIN_BASELINE} to {MAX_BASELINE}, got {baseline!r}"
            )
        object.__setattr__(self, "baseline", baseline)
        if self.metric not in SPIKE_METRICS:
            raise ReportParameterError(f"unknown metric {self.metric!r}; use one of {', '.join(SPIKE_METRICS)}")
        if not isinstance(self.threshold, Decimal) or not self.threshold.is_finite() or self.threshold <= 0:
            raise ReportParameterError(f"threshold must be a number above 0, got {self.threshold!r}")
        if self.min_increase is None:
            object.__setattr__(self, "min_increase", DEFAULT_MIN_INCREASE.get(self.metric, Decimal(1000)))
        elif not isinstance(self.min_increase, Decimal) or not self.min_increase.is_finite() or self.min_increase < 0:
            raise ReportParameterError(f"min_increase must be a number of 0 or more, got {self.min_increase!r}")
        if not 1 <= self.limit <= MAX_ROWS:
            raise ReportParameterError(f"limit must be a whole number from 1 to {MAX_ROWS}")

    @property
    def step(self) -> timedelta:
        return _STEP[(self.window, self.seasonality)]  # type: ignore[index]  # never None after __post_init__


@dataclass(frozen=True, slots=True)
class SpikesResult:
    query: SpikeQuery
    window_start: datetime
    window_end: datetime
    baseline_windows: list[datetime]  # the baseline windows that had records (their starts)
    rows: list[dict[str, Any]]
    truncated: bool = False
    note: str | None = None

    def body(self) -> dict[str, object]:
        q = self.query
        body: dict[str, object] = {
            "dimension": q.dimension,
            "metric": q.metric,
            "window": q.window,
            "seasonality": q.seasonality,
            "window_start": _iso(self.window_start),
            "window_end": _iso(self.window_end),
            "baseline_windows": len(self.baseline_windows),
            "threshold": q.threshold,
            "results": self.rows,
        }
        if self.truncated:
            body["truncated"] = True
        if self.note:
            body["note"] = self.note
        return body


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _floor(moment: datetime, unit: timedelta) -> datetime:
    moment = moment.astimezone(UTC)
    if unit == _UNIT["day"]:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def _us(delta: timedelta) -> int:
    return delta // _US


def _median(values: list[Decimal]) -> Decimal:
    return statistics.median(values)  # exact for Decimal: the middle value, or the mean of the middle two


def find_spikes(data_dir: str | os.PathLike[str], query: SpikeQuery) -> SpikesResult:
    unit = _UNIT[query.window]
    as_of = query.as_of or datetime.now(UTC)
    floor = _floor(as_of, unit)
    if query.partial and as_of > floor:
        start, width = floor, as_of - floor
    else:
        start, width = floor - unit, unit
    step = query.step
    n = query.baseline
    assert n is not None
    windows = [start - k * step for k in range(n + 1)]
    days: set[date] = set()
    for w in windows:
        day = w.date()
        while day <= (w + width - _US).date():
            days.add(day)
            day += timedelta(days=1)

    if query.dimension == "tag":
        key = "UNNEST(list_distinct(tags))"  # a request counts once in each of its tags; untagged in none
    elif query.dimension == "total":
        key = "CAST(NULL AS VARCHAR)"
    else:
        key = f'"{_COLUMNS[query.dimension]}"'
    metric = {"request_count": "1"}.get(query.metric, f'"{query.metric}"')
    # u: microseconds from the window start (negative before it). Window k holds u in [-k*step, -k*step + width);
    # fdiv is floor division (DuckDB's // truncates toward zero), exact here: |u| < 2^53.
    sql = (
        "SELECT CAST(-fdiv(u, $step) AS BIGINT) AS k, scope_value, SUM(m) AS observed, COUNT(*) AS requests\n"
        f'FROM (SELECT epoch_us("timestamp") - $w_start AS u, {key} AS scope_value, {metric} AS m\n'
        f"      FROM {USAGE_SOURCE}) AS records\n"
        "WHERE u < $width AND u >= -$n * $step AND u - CAST(fdiv(u, $step) AS BIGINT) * $step < $width\n"
        "GROUP BY k, scope_value"
    )
    params = {"step": _us(step), "w_start": _us(start - _EPOCH), "width": _us(width), "n": n}
    _, raw = scan_dataset(data_dir, min(days), max(days), sql, params, days=days)
    by_window: dict[int, dict[str | None, tuple[Decimal, int]]] = {}
    unknown_now: set[str | None] = set()  # values whose latest window has requests but no known cost
    for k, value, observed, requests in raw:
        amount = exact_cost(observed) if query.metric in COST_METRICS else Decimal(int(observed or 0))
        if observed is None and query.metric in COST_METRICS and int(k) == 0:
            unknown_now.add(value)
        by_window.setdefault(int(k), {})[value] = (amount, int(requests))
    present = sorted(k for k in by_window if 1 <= k <= n)
    baseline_starts = [windows[k] for k in present]
    if len(present) < MIN_BASELINE:
        return SpikesResult(
            query, start, start + width, baseline_starts, rows=[],
            note=f"only {len(present)} of {n} baseline windows have any records; at least {MIN_BASELINE} are needed",
        )
    current = by_window.get(0, {})
    values = set(current)
    for k in present:
        values.update(by_window[k])
    floor_spread = query.min_increase / query.threshold  # type: ignore[operator]  # never None after __post_init__
    scored: list[tuple[Decimal | None, dict[str, Any]]] = []  # (score, row)
    nothing = (Decimal(0), 0)
    for value in values:
        observed = current.get(value, nothing)[0]
        baseline = [by_window[k].get(value, nothing)[0] for k in present]
        expected = _median(baseline)
        mad = _median([abs(x - expected) for x in baseline])
        expected_requests = _median([Decimal(by_window[k].get(value, nothing)[1]) for k in present])
        counting = abs(expected) / expected_requests.sqrt() if expected_requests > 0 else Decimal(0)
        spread = max(MAD_SCALE * mad, counting, RELATIVE_FLOOR * abs(expected), floor_spread)
        unknown = value in unknown_now
        score = None if unknown else ((observed - expected) / spread).quantize(_SCORE) if spread else Decimal(0)
        spike = score is not None and score >= query.threshold
        if not spike and not query.include_all:
            continue
        scored.append((score, {
            "dimension": query.dimension,
            "value": value,
            "observed": None if unknown else _number(observed, query.metric),
            "expected": _number(expected, query.metric),
            "mad": _number(mad, query.metric),
            "score": score,
            "ratio": (observed / expected).quantize(_SCORE) if expected and not unknown else None,
            "spike": spike,
        }))
    scored.sort(key=lambda s: (s[0] is None, -(s[0] or 0), str(s[1]["value"])))
    rows = [row for _, row in scored]
    return SpikesResult(
        query, start, start + width, baseline_starts, rows=rows[: query.limit], truncated=len(rows) > query.limit
    )


def _number(value: Decimal, metric: str) -> Decimal | int:
    if metric in COST_METRICS:
        return exact_cost(value)
    return int(value) if value == value.to_integral_value() else value


def _decimal(params: Params, name: str) -> Decimal | None:
    text = single_param(params, name)
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ReportParameterError(f"{name} must be a number, got {text!r}") from None
    if not value.is_finite():
        raise ReportParameterError(f"{name} must be a finite number, got {text!r}")
    return value


def _bool(params: Params, name: str) -> bool:
    text = (single_param(params, name) or "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise ReportParameterError(f"{name} must be true or false, got {text!r}")
    return text in ("true", "1")


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value


def spikes_from_params(data_dir: str | os.PathLike[str], params: Params) -> SpikesResult:
    """``GET /v1/spikes``: the ``SPIKE_PARAMETERS``; any other name is refused."""
    refuse_unknown(params, SPIKE_PARAMETERS)
    baseline = single_param(params, "baseline")
    return find_spikes(
        data_dir,
        SpikeQuery(
            dimension=(single_param(params, "dimension") or "model").lower(),
            window=(single_param(params, "window") or "day").lower(),
            seasonality=(s.lower() if (s := single_param(params, "seasonality")) else None),
            baseline=int_param(params, "baseline", 0, MIN_BASELINE, MAX_BASELINE) if baseline else None,
            metric=(single_param(params, "metric") or "total_cost").lower(),
            threshold=_or(_decimal(params, "threshold"), DEFAULT_THRESHOLD),
            min_increase=_decimal(params, "min_increase"),
            as_of=parse_as_of(single_param(params, "as_of")),
            partial=_bool(params, "partial"),
            include_all=_bool(params, "include_all"),
            limit=int_param(params, "limit", MAX_ROWS, 1, MAX_ROWS),
        ),
    )
