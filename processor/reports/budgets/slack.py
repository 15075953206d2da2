"""Alerts as Slack incoming-webhook messages (``format = "slack"``): where people already are, the numbers they act
on and a link to the dashboard range behind them.

A message is ``{"text": ..., "blocks": [...]}`` (Block Kit): ``text`` is the one line notifications and clients
without blocks show (the figures, not the link); the blocks are a header, a sentence, the figures as fields, the dashboard link when the server
knows the dashboard's URL, and a context line. Teams, Mattermost, Rocket.Chat and Discord's ``/slack`` endpoint read
the same shape.

Numbers are exact: money is the alert's ``Decimal`` with every digit it has (at least cents, never rounded, never
through ``float``), in USD like every amount TokenTrail shows. A figure the alert lacks (no projection for a budget
that never resets) is left out, never guessed; with no dashboard URL there is no link and no mention of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from tokentrail.processor.reports.budgets.links import DashboardLink, budget_link, spike_link
from tokentrail.processor.reports.formatting import decimal_text
from tokentrail.processor.reports.query import COST_METRICS

__all__ = ["budget_message", "exact_usd", "slack_message", "spike_message"]

HEADER_MAX: Final = 150  # Slack's limit on a header block's text
FIELD_MAX: Final = 2000  # and on a field's
_NONE_SINCE: Final = "1970-01-01"  # the period start of a never-resetting budget without a start day
_METRIC_NAMES: Final = {"total_cost": "cost", "market_cost": "market cost", "request_count": "requests"}


def _grouped(value: Decimal | int) -> tuple[str, str]:
    """``(sign, digits)``: every digit of ``value``, thousands grouped (``-1234.5`` -> ``("-", "1,234.5")``)."""
    text = decimal_text(Decimal(value))
    sign = "-" if text.startswith("-") else ""
    whole, dot, fraction = text.removeprefix("-").partition(".")
    return sign, f"{int(whole):,}{dot}{fraction}"


def exact_usd(value: Decimal | int) -> str:
    """``$1,234.50``, ``$0.000000123``, ``-$3.00``: every digit the amount has, at least cents. Unlike
    ``formatting.usd`` this never rounds: an alert quotes the amount that crossed the line."""
    sign, digits = _grouped(value)
    whole, _, fraction = digits.partition(".")
    return f"{sign}${whole}.{fraction.ljust(2, '0')}"


def _number(value: object) -> str:
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        sign, digits = _grouped(value)
        return sign + digits
    return str(value)


def _escape(text: object) -> str:
    """Text for Slack's mrkdwn: ``&``, ``<`` and ``>`` are its control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": f"*{label}*\n{value}"[:FIELD_MAX]}


def _header(text: str) -> dict[str, Any]:
    if len(text) > HEADER_MAX:
        text = text[: HEADER_MAX - 1] + "…"
    return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": False}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _link_block(link: DashboardLink | None) -> list[dict[str, Any]]:
    if link is None:
        return []
    return [_section(f"<{link.url}|Open the dashboard> for {_escape(link.describe())}")]


def _percent(value: object) -> str:
    return f"{decimal_text(value)}%" if isinstance(value, Decimal) else f"{value}%"


def _money(value: object) -> str:
    return exact_usd(value) if isinstance(value, (Decimal, int)) and not isinstance(value, bool) else "unknown"


def _budget_period(alert: Mapping[str, Any]) -> str:
    start, end = alert.get("period_start"), alert.get("period_end")
    if alert.get("period") == "none" or end is None:
        return "all time (never resets)" if start in (None, _NONE_SINCE) else f"since {start} (never resets)"
    return f"{alert.get('period')}, {start} to {end}"


def budget_message(alert: Mapping[str, Any], dashboard: str | None) -> dict[str, Any]:
    """A budget threshold alert (``budget.threshold_crossed``)."""
    name = str(alert.get("budget"))
    scope, value = alert.get("scope", "total"), alert.get("value")
    who = f" for {scope} {value}" if scope != "total" and value is not None else ""
    spend, amount = _money(alert.get("spend")), _money(alert.get("amount"))
    threshold, percent = _percent(alert.get("threshold")), _percent(alert.get("percent"))
    period = _budget_period(alert)
    currency = alert.get("currency", "USD")
    text = (f"Budget {name}{who} passed {threshold}: {spend} of {amount} {currency} spent ({percent}), "
            f"period {period}")
    fields = [
        _field("Budget", _escape(name)),
        _field("Scope", "total" if scope == "total" else f"{_escape(scope)} `{_escape(value)}`"),
        _field("Spend", f"{spend} of {amount} {_escape(currency)}"),
        _field("Percent", percent),
        _field("Threshold", threshold),
        _field("Period", _escape(period)),
    ]
    projected = alert.get("projected_spend")
    if isinstance(projected, Decimal):
        share = alert.get("projected_percent")
        fields.append(_field("Projected by period end",
                             _money(projected) + (f" ({_percent(share)})" if isinstance(share, Decimal) else "")))
    byok = "BYOK calls counted at list price" if alert.get("count_byok") else "BYOK calls not counted"
    context = " · ".join(_escape(part) for part in (f"alert {alert.get('id')}", str(alert.get("at", "")), byok) if part)
    link = budget_link(dashboard, alert)
    blocks = [
        _header(f"Budget {name}: {threshold} reached"),
        _section(f"*{_escape(name)}*{_escape(who)} has spent *{spend}* of {amount} {_escape(currency)} "
                 f"({percent}), past the {threshold} threshold."),
        {"type": "section", "fields": fields},
        *_link_block(link),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
    ]
    return {"text": _escape(text), "blocks": blocks}


def _metric_value(value: object, metric: str) -> str:
    if value is None:
        return "unknown"
    if metric in COST_METRICS:
        return _money(value)
    return f"{_number(value)} {_METRIC_NAMES.get(metric, metric.replace('_', ' '))}"


def spike_message(alert: Mapping[str, Any], dashboard: str | None) -> dict[str, Any]:
    """A spike (``spike.detected``): observed against expected, for one value of one dimension."""
    dimension, value, metric = str(alert.get("dimension")), alert.get("value"), str(alert.get("metric"))
    what = "all usage" if dimension == "total" else f"{dimension} {value if value is not None else '(none)'}"
    observed = _metric_value(alert.get("observed"), metric)
    expected = _metric_value(alert.get("expected"), metric)
    ratio = alert.get("ratio")
    times = f"{decimal_text(ratio)}x, " if isinstance(ratio, Decimal) else ""
    score, threshold = alert.get("score"), alert.get("threshold")
    start, end = alert.get("window_start"), alert.get("window_end")
    label = _METRIC_NAMES.get(metric, metric.replace("_", " "))
    text = (f"Spike in {label}: {what} at {observed} in the {alert.get('window')} from {start} to {end}, expected "
            f"{expected} ({times}score {_number(score)}, threshold {_number(threshold)})")
    fields = [
        _field("Dimension", _escape(dimension)),
        _field("Value", "all usage" if dimension == "total" else f"`{_escape(value)}`" if value is not None
               else "(none)"),
        _field("Observed", observed),
        _field("Expected", expected),
        _field("Ratio", f"{decimal_text(ratio)}x" if isinstance(ratio, Decimal) else "n/a (nothing expected)"),
        _field("Score", f"{_number(score)} (threshold {_number(threshold)})"),
        _field("Window", _escape(f"{alert.get('window')}, {start} to {end}")),
        _field("Baseline", _escape(f"{alert.get('baseline_windows')} windows, seasonality {alert.get('seasonality')}")),
    ]
    link = spike_link(dashboard, alert)
    blocks = [
        _header(f"Spike: {what}"),
        _section(f"*{_escape(what)}*: {label} *{observed}* in the {_escape(alert.get('window'))} from "
                 f"{_escape(start)}, expected {expected}."),
        {"type": "section", "fields": fields},
        *_link_block(link),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _escape(
            f"alert {alert.get('id')} · {alert.get('at', '')}")}]},
    ]
    return {"text": _escape(text), "blocks": blocks}


def slack_message(alert: Mapping[str, Any], dashboard: str | None) -> dict[str, Any]:
    """The Slack message for any alert, by its ``type``."""
    if str(alert.get("type", "")).startswith("spike."):
        return spike_message(alert, dashboard)
    return budget_message(alert, dashboard)
