"""``tokentrail``: the command line.

One module per command, each with ``register(commands, default_data_dir)`` that adds its subparser and sets
``handler=callable(args) -> int`` on it; ``COMMANDS`` lists them in the order ``--help`` shows them. ``tokentrail
demo`` owns its options: ``main`` hands it the rest of the command line (``cli.demo.run``).

A command imports the heavy parts it alone needs (gRPC, the price catalog, the demo's SDKs, MCP) inside its
handler, so ``--help`` and ``report`` start without them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

from tokentrail.processor import environment
from tokentrail.processor.cli import (
    budgets,
    compact,
    demo,
    margins,
    mcp,
    prices,
    report,
    reprice,
    serve,
    spikes,
    status,
)
from tokentrail.processor.reports.errors import ReportError, ReportParameterError

__all__ = ["COMMANDS", "main"]

# The subcommands, in the order ``--help`` lists them.
COMMANDS: Final[tuple[ModuleType, ...]] = (
    report, serve, demo, budgets, compact, margins, mcp, prices, reprice, spikes, status
)

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2  # argparse's code for bad usage; bad report parameters are bad usage too


def _parser() -> argparse.ArgumentParser:
    # Built per call: defaults read the environment at run time, not at import time.
    default_data_dir = Path(os.environ.get(environment.DATA_DIR) or environment.DEFAULT_DATA_DIR)
    parser = argparse.ArgumentParser(
        prog="tokentrail", description="What every LLM API call costs, and who it was for, on OpenTelemetry."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for module in COMMANDS:
        module.register(commands, default_data_dir)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["demo"]:
        # Handed over untouched: the demo owns its options, and argparse would reject ones it does not know.
        return demo.run(args_list[1:])
    try:
        args = _parser().parse_args(args_list)
    except SystemExit as exc:  # argparse exits on bad usage and --help; main returns codes instead
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.handler(args))
    except ReportParameterError as exc:
        print(f"tokentrail {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ReportError as exc:
        print(f"tokentrail {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
