"""Budgets: how much of an amount a scope has spent this period, where it is heading, and an alert when it crosses
a threshold.

A budgets file (TOML) lists budgets::

    webhook = "https://hooks.example.com/tokentrail"   # optional: where alerts are POSTed (each budget may override)

    [webhook_headers]                                  # optional: e.g. a shared secret for the hook
    Authorization = "Bearer ..."

    [[budgets]]
    name = "company"            # unique; names the budget in status and alerts (default: scope:value:period)
    scope = "total"             # total, user, tag, model, provider or credential_type
    amount = 5000               # USD per period
    period = "monthly"          # daily, weekly (ISO, from Monday), monthly or none (never resets)

    [[budgets]]
    name = "per customer"
    scope = "user"
    value = "each"              # every user has this budget; or one value, e.g. "cust_42" (tags: "plan:free")
    amount = 20
    period = "monthly"
    thresholds = [80, 100]      # percent of amount; default [50, 75, 100]
    count_byok = false          # default: BYOK calls do not count (the customer's key pays), as Vercel does
    start = "2026-01-01"        # period "none" only: count from this day (default: all data)

Periods are UTC calendar periods. Spend is ``total_cost``; with ``count_byok = true`` a BYOK call counts at its
list price (``market_cost``). Unpriced calls add nothing (their cost is unknown, never a silent $0).

**Status** (``GET /v1/budgets``, ``tokentrail budgets``): per budget and scope value, spend so far, remaining,
percent, and projected end-of-period spend: spend so far plus the spend rate of the trailing
``min(period, 7 days)`` carried over the rest of the period (so a new month projects from last week's rate).

**Alerts**: ``BudgetMonitor`` watches records as the receiver makes them durable (``attach(receiver, ...)``) and,
when a scope's spend crosses a threshold, fires once per budget, period, value and threshold: a log line and, if
a webhook is set, a JSON POST retried with backoff. Which thresholds fired, and alerts not yet delivered, live in
``DATA_DIR/budgets/state.json`` (written atomically under a file lock), so a restart neither re-fires nor loses
an alert; delivery is at least once, and each alert carries an ``id`` (also sent as ``Idempotency-Key``).

The package, one job a module: ``config`` (the file), ``spend`` (spend per scope value, from the dataset),
``status`` (``GET /v1/budgets``), ``alerts`` (``BudgetMonitor``: thresholds crossed as records land), ``state``
(fired thresholds and undelivered alerts on disk) and ``webhook`` (delivery).
"""

from __future__ import annotations

from tokentrail.processor.reports.budgets.alerts import BudgetMonitor, attach
from tokentrail.processor.reports.budgets.config import (
    DEFAULT_THRESHOLDS,
    PERIODS,
    SCOPES,
    Budget,
    BudgetConfigError,
    BudgetsConfig,
    Period,
    budgets_from_dict,
    load_budgets,
)
from tokentrail.processor.reports.budgets.status import (
    BUDGET_COLUMNS,
    BUDGET_PARAMETERS,
    budget_status,
    budgets_body,
    budgets_from_params,
)
from tokentrail.processor.reports.budgets.webhook import WebhookNotifier

__all__ = [
    "BUDGET_COLUMNS",
    "BUDGET_PARAMETERS",
    "DEFAULT_THRESHOLDS",
    "PERIODS",
    "SCOPES",
    "Budget",
    "BudgetConfigError",
    "BudgetMonitor",
    "BudgetsConfig",
    "Period",
    "WebhookNotifier",
    "attach",
    "budget_status",
    "budgets_body",
    "budgets_from_dict",
    "budgets_from_params",
    "load_budgets",
]
