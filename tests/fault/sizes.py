"""How hard the fault suite pushes: a bounded run for CI (the whole suite in a few minutes on two cores), and a
longer one with ``TOKENTRAIL_SOAK=1`` (``make soak``): more kills, more rounds, more clients."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["SIZE", "SOAK", "Size"]

SOAK = os.environ.get("TOKENTRAIL_SOAK", "") not in ("", "0")


@dataclass(frozen=True)
class Size:
    kill_rounds: int  # receiver SIGKILLs per kill test
    tool_kills: int  # `tokentrail compact` / `reprice` SIGKILLs
    senders: int  # concurrent Collector-style exporters under the kills
    idle_sockets: int  # per port
    overload_exporters: int
    overload_batches: int  # per exporter
    report_clients: int


SIZE = (
    Size(kill_rounds=40, tool_kills=30, senders=6, idle_sockets=1000, overload_exporters=64, overload_batches=20,
         report_clients=400)
    if SOAK
    else Size(kill_rounds=5, tool_kills=6, senders=3, idle_sockets=200, overload_exporters=24, overload_batches=3,
              report_clients=200)
)
