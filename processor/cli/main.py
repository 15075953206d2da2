"""``tokentrail``: the command line.

One module per command, each with ``register(commands, default_data_dir)`` that adds its subparser and sets
``handler=callable(args) -> int`` on it; ``COMMANDS`` lists them in the order ``--help`` shows them. ``tokentrail
demo`` owns its options: ``main`` hands it the rest of the command line (``cli.demo.run``).

A command imports the heavy parts it alone needs (gRPC, the price catalog, the demo's SDKs, MCP) inside its
handler, so ``--help`` and ``report`` start without them. On the base install (``pip install .``, no processor
extra) a command whose module cannot be imported is still listed, and running it says which extra to install
(``cli.extras``): ``--help`` and ``--version`` always work.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from tokentrail.processor import environment
from tokentrail.processor.cli import demo
from tokentrail.processor.cli.extras import install_advice, missing_extra_message, needed_extra
from tokentrail.processor.reports.errors import ReportError, ReportParameterError

__all__ = ["COMMANDS", "main", "version"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2  # argparse's code for bad usage; bad report parameters are bad usage too

_PACKAGE: Final = "tokentrail.processor.cli"


def _unavailable(name: str, extra: str, message: str) -> ModuleType:
    """Stands in for a command whose module needs an extra that is not installed: listed in ``--help``, and
    ``main`` prints ``UNAVAILABLE`` (one line) instead of running it."""
    module = types.ModuleType(f"{_PACKAGE}.{name}")

    def register(commands: Any, default_data_dir: Path) -> None:
        commands.add_parser(name, help=f"(needs the {extra} extra: {install_advice(extra)})", add_help=False)

    setattr(module, "register", register)  # noqa: B010 -- a module object built here, not a typo'd attribute
    setattr(module, "UNAVAILABLE", message)  # noqa: B010
    return module


def _command(name: str) -> ModuleType:
    """The module of command ``name``, or a stand-in saying which extra it needs when one of the extra's modules is
    missing. Any other missing module is a bug and raises."""
    try:
        return importlib.import_module(f"{_PACKAGE}.{name}")
    except ModuleNotFoundError as exc:
        extra, message = needed_extra(name, exc), missing_extra_message(name, exc)
        if extra is None or message is None:
            raise
        return _unavailable(name, extra, message)


# The subcommands, in the order ``--help`` lists them.
COMMANDS: Final[tuple[ModuleType, ...]] = tuple(
    _command(name)
    for name in ("report", "requests", "serve", "demo", "doctor", "budgets", "compact", "margins", "mcp", "prices",
                 "reprice", "spikes", "status", "wal")
)


def version() -> str:
    """The installed distribution's version (what pip installed), or ``unknown`` when run from a bare source tree."""
    try:
        return importlib.metadata.version("tokentrail")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    # Built per call: defaults read the environment at run time, not at import time.
    default_data_dir = Path(os.environ.get(environment.DATA_DIR) or environment.DEFAULT_DATA_DIR)
    parser = argparse.ArgumentParser(
        prog="tokentrail", description="What every LLM API call costs, and who it was for, on OpenTelemetry."
    )
    parser.add_argument("--version", action="version", version=f"tokentrail {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for module in COMMANDS:
        module.register(commands, default_data_dir)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = args_list[0] if args_list else ""
    unavailable = next((getattr(m, "UNAVAILABLE", None) for m in COMMANDS if m.__name__ == f"{_PACKAGE}.{command}"),
                       None)
    if unavailable is not None:
        print(unavailable, file=sys.stderr)
        return EXIT_FAILURE
    if command == "demo":
        # Handed over untouched: the demo owns its options, and argparse would reject ones it does not know.
        return _missing_extra_said("demo", demo.run, args_list[1:])
    try:
        args = _parser().parse_args(args_list)
    except SystemExit as exc:  # argparse exits on bad usage and --help; main returns codes instead
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    name = " ".join(filter(None, (args.command, getattr(args, "prices_command", None))))  # "prices explain"
    try:
        return _missing_extra_said(name, args.handler, args)
    except ReportParameterError as exc:
        print(f"tokentrail {name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ReportError as exc:
        print(f"tokentrail {name}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _missing_extra_said(command: str, handler: Any, argument: Any) -> int:
    """Runs a handler; a module of an extra that is not installed (imported inside the handler) becomes one line
    naming the extra, not a traceback."""
    try:
        return int(handler(argument))
    except ModuleNotFoundError as exc:
        message = missing_extra_message(command, exc)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
