"""Budgets: how much of an amount a scope has spent this period, where it is heading, and an alert when it crosses
a threshold; and spikes that alert, not only listed.

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
    webhook = [                 # a list: every alert of this budget goes to each
        "https://hooks.example.com/tokentrail",
        { url = "https://hooks.slack.com/services/T0/B0/XXXX", format = "slack" },
    ]

    [spikes]                    # optional: spikes alert too (``tokentrail serve``)
    enabled = true              # default true; false keeps the table but sends nothing
    interval_seconds = 300      # how often to check (default 300; at least 1)
    dimension = ["model", "user"]   # one or a list: model, provider, user, tag, credential_type, service,
                                    # environment, total (default "model")
    window = "hour"             # and the other GET /v1/spikes parameters: seasonality, baseline, metric,
    threshold = 3.5             # threshold, min_increase, partial (as_of is the clock's)
    webhook = { url = "https://hooks.slack.com/services/T0/B0/YYYY", format = "slack" }

A ``webhook`` (top level, in a budget, in ``[spikes]``) is a URL (the alert as JSON), a table
``{ url = "...", format = "json" | "slack", headers = { ... } }``, or a list of these; a budget or ``[spikes]``
without one uses the top-level one. ``webhook_headers`` go with the webhooks given as plain URLs; a table webhook
sends its own ``headers`` only (a JSON hook's shared secret is not Slack's). An unknown format is refused with its
line, like every other mistake in the file.

Periods are UTC calendar periods. Spend is ``total_cost``; with ``count_byok = true`` a BYOK call counts at its
list price (``market_cost``). Unpriced calls add nothing (their cost is unknown, never a silent $0).

**Status** (``GET /v1/budgets``, ``tokentrail budgets``): per budget and scope value, spend so far, remaining,
percent, and projected end-of-period spend: spend so far plus the spend rate of the trailing
``min(period, 7 days)`` carried over the rest of the period (so a new month projects from last week's rate).

**Alerts**: ``BudgetMonitor`` watches records as the receiver makes them durable (``attach(receiver, ...)``) and,
when a scope's spend crosses a threshold, fires once per budget, period, value and threshold: a log line and a POST
to each webhook, retried with backoff. Which thresholds fired, and alerts not yet delivered, live in
``DATA_DIR/budgets/state.json`` (written atomically under a file lock), so a restart neither re-fires nor loses
an alert; delivery is at least once, and each alert carries an ``id`` (also sent as ``Idempotency-Key``).

**Spike alerts**: ``SpikeMonitor`` (``start_spike_alerts``) runs the ``[spikes]`` questions every
``interval_seconds`` on a thread of its own, off the ingest path, and sends each new spike (a value of a dimension
in one window) once; fired spikes and undelivered alerts live in ``DATA_DIR/budgets/spikes.json``. A JSON spike
alert (``"type": "spike.detected"``) carries the dimension and value, the window, ``observed`` and ``expected``
(exact), the score, ratio and threshold.

**Formats**: ``json`` POSTs the alert itself (money as exact JSON numbers). ``slack`` POSTs a Slack
incoming-webhook message (``{"text": ..., "blocks": [...]}``, Block Kit): the figures (budget, scope and value,
spend of amount, percent, threshold, period, projected end-of-period spend when there is one; or a spike's
observed vs expected), money with every digit it has, and a link to the dashboard for the alert's date range and
filters when ``tokentrail serve`` knows the dashboard's URL (``--dashboard-url``, else the report API's own).

The package, one job a module: ``config`` (the file), ``spend`` (spend per scope value, from the dataset),
``status`` (``GET /v1/budgets``), ``alerts`` (``BudgetMonitor``: thresholds crossed as records land),
``spike_alerts`` (``SpikeMonitor``), ``state`` (fired alerts and undelivered ones on disk), ``webhook`` (delivery),
``slack`` (the Slack message) and ``links`` (the dashboard link of an alert).
"""

from __future__ import annotations

from tokentrail.processor.reports.budgets.alerts import BudgetMonitor, attach
from tokentrail.processor.reports.budgets.config import (
    DEFAULT_THRESHOLDS,
    PERIODS,
    SCOPES,
    WEBHOOK_FORMATS,
    Budget,
    BudgetConfigError,
    BudgetsConfig,
    Period,
    SpikeAlerts,
    Webhook,
    budgets_from_dict,
    load_budgets,
)
from tokentrail.processor.reports.budgets.spike_alerts import SpikeMonitor, start_spike_alerts
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
    "WEBHOOK_FORMATS",
    "Budget",
    "BudgetConfigError",
    "BudgetMonitor",
    "BudgetsConfig",
    "Period",
    "SpikeAlerts",
    "SpikeMonitor",
    "Webhook",
    "WebhookNotifier",
    "attach",
    "budget_status",
    "budgets_body",
    "budgets_from_dict",
    "budgets_from_params",
    "load_budgets",
    "start_spike_alerts",
]
