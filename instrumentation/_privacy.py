"""Our attribution travels as W3C baggage between a company's services, and must never reach an LLM provider.

Baggage is copied into every outgoing request by whatever propagates the trace context: the Anthropic SDK does it
for its own calls, an HTTP client instrumentation does it for all of them. The ``tokentrail.*`` members name the
end user and the customer's tags, which are nobody else's business, so on a request we recognise as an LLM call
they are removed from the ``baggage`` header that is already there and from the context in which the request is
sent (for a propagator that writes the header after our hook). Other members are the application's and are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, Final

from opentelemetry import baggage
from opentelemetry.context import Context

PREFIX: Final = "tokentrail."
HEADER: Final = "baggage"


def _ours(member: str) -> bool:
    return member.partition("=")[0].strip().startswith(PREFIX)


def strip_header(headers: MutableMapping[str, str] | Any) -> None:
    """Remove our members from the request's ``baggage`` header(s), keeping the others byte-for-byte."""
    values: list[str] = headers.get_list(HEADER) if hasattr(headers, "get_list") else [headers.get(HEADER) or ""]
    if not any(PREFIX in value for value in values):
        return
    kept = [member for value in values for member in value.split(",") if member.strip() and not _ours(member)]
    del headers[HEADER]
    if kept:
        headers[HEADER] = ",".join(member.strip() for member in kept)


def context_without_ours(ctx: Context | None = None, entries: Mapping[str, object] | None = None) -> Context | None:
    """``ctx`` (default: current) without our baggage entries, or None when it has none (the common case).

    ``entries`` may pass ``baggage.get_all(ctx)`` when the caller has it already.
    """
    if entries is None:
        entries = baggage.get_all(ctx)
    ours = [name for name in entries if name.startswith(PREFIX)]
    if not ours:
        return None
    for name in ours:
        ctx = baggage.remove_baggage(name, ctx)
    return ctx
