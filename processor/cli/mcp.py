"""``tokentrail mcp``: an MCP server on stdio exposing report, requests, budgets, margins and spikes as tools."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from tokentrail.processor import environment

__all__ = ["register"]


def register(commands: Any, default_data_dir: Path) -> None:
    parser = commands.add_parser(
        "mcp",
        help="serve report, requests, budgets, margins and spikes as MCP tools over stdio (for agents)",
        description="Speaks the Model Context Protocol on stdin/stdout until the client closes stdin. Needs the "
        "processor and mcp extras: pip install './[processor,mcp]' from a TokenTrail checkout.",
    )
    parser.add_argument("--data-dir", type=Path, default=default_data_dir, help=f"(env {environment.DATA_DIR})")
    parser.add_argument("--budgets", default=os.environ.get(environment.BUDGETS) or None,
                        help=f"budgets TOML file, for the budgets tool (env {environment.BUDGETS})")
    parser.add_argument("--revenue", default=os.environ.get(environment.REVENUE) or None,
                        help=f"revenue TOML file, for the margins tool (env {environment.REVENUE})")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        from tokentrail.processor.api.mcp import run_stdio  # the mcp extra: optional, and loaded only here
        from tokentrail.processor.reports.dataset import require_dataset
    except ModuleNotFoundError:
        raise  # a missing extra: `main` names it in one line
    except ImportError as exc:  # installed, but not a version we can use
        print(f"tokentrail mcp: the installed mcp package does not fit ({exc}); from a TokenTrail checkout: "
              "pip install --upgrade './[processor,mcp]'", file=sys.stderr)
        return 1
    require_dataset(args.data_dir)  # a wrong path is said now, not answered as zero usage by every tool
    # stdout carries the protocol: every log line goes to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    run_stdio(args.data_dir, budgets=args.budgets, revenue=args.revenue)
    return 0
