"""Where in the dashboard an alert's numbers are: the dashboard (``GET /`` of the report API) takes the date range
and the filters of ``/v1/report`` in its URL, so an alert can link to the very range and scope it speaks of.

A link says only what the dashboard will show: when the dashboard cannot filter as the alert counts (a spike on
``service``, which ``/v1/report`` does not filter on; a value that is absent, e.g. requests with no user), the
link leaves that filter out and its description (``DashboardLink.describe``) does not claim it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlencode, urlsplit, urlunsplit

from tokentrail.processor.reports.query import MAX_RANGE_DAYS

__all__ = ["SCOPE_FILTERS", "DashboardLink", "budget_link", "dashboard_url", "spike_link"]

# A budget's scope, or a spike's dimension -> the /v1/report filter parameter that selects one value of it.
SCOPE_FILTERS: Final[Mapping[str, str]] = {
    "user": "user_id",
    "model": "model",
    "provider": "provider",
    "credential_type": "credential_type",
    "tag": "tags",
}


@dataclass(frozen=True, slots=True)
class DashboardLink:
    url: str
    start: date
    end: date
    filters: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """``2025-03-01 to 2025-03-31, user_id cust_42``: what the link opens."""
        days = self.start.isoformat() if self.start == self.end else f"{self.start} to {self.end}"
        return ", ".join([days, *(f"{name} {value}" for name, value in self.filters.items())])


def dashboard_url(base: str, start: date, end: date, filters: Mapping[str, str]) -> str:
    """``base`` (the report API's URL, or where a proxy serves it, maybe under a path) + ``/?start_date=..``."""
    parts = urlsplit(base)
    query = urlencode({"start_date": start.isoformat(), "end_date": end.isoformat(), **filters})
    if parts.query:
        query = f"{parts.query}&{query}"
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/", query, ""))


def _link(base: str | None, start: date, end: date, filters: Mapping[str, str]) -> DashboardLink | None:
    if not base:
        return None
    if (end - start).days + 1 > MAX_RANGE_DAYS:  # the longest range a report answers: its last days
        start = end - timedelta(days=MAX_RANGE_DAYS - 1)
    return DashboardLink(dashboard_url(base, start, end, filters), start, end, dict(filters))


def _day(text: object) -> date | None:
    if not isinstance(text, str) or len(text) < 10:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def budget_link(base: str | None, alert: Mapping[str, Any]) -> DashboardLink | None:
    """The budget's period (up to the alert's day for a budget that never resets) and its scope value. A budget
    that leaves BYOK calls out counts ``credential_type=system`` calls only: the link says so too, so the
    dashboard's total cost is the budget's spend."""
    start = _day(alert.get("period_start"))
    end = _day(alert.get("period_end")) or _day(alert.get("at"))
    if start is None or end is None or end < start:
        return None
    filters: dict[str, str] = {}
    scope, value = str(alert.get("scope")), alert.get("value")
    if scope in SCOPE_FILTERS and isinstance(value, str):
        filters[SCOPE_FILTERS[scope]] = value
    if not alert.get("count_byok") and scope != "credential_type":
        filters["credential_type"] = "system"
    return _link(base, start, end, filters)


def spike_link(base: str | None, alert: Mapping[str, Any]) -> DashboardLink | None:
    """The days of the spike's window, filtered to its value when the report can filter on that dimension."""
    try:
        first = datetime.fromisoformat(str(alert.get("window_start")).replace("Z", "+00:00"))
        after = datetime.fromisoformat(str(alert.get("window_end")).replace("Z", "+00:00"))
    except ValueError:
        return None
    filters: dict[str, str] = {}
    dimension, value = str(alert.get("dimension")), alert.get("value")
    if dimension in SCOPE_FILTERS and isinstance(value, str):
        filters[SCOPE_FILTERS[dimension]] = value
    end = max(first, after - timedelta(microseconds=1)).date()
    return _link(base, first.date(), end, filters)
