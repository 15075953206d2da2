"""``tokentrail demo``: the whole pipeline on this machine (see ``tokentrail.processor.demo.run``). The demo parses
its own options, so ``main`` hands it the rest of the command line untouched; the subparser here only lists it in
``--help``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(commands: Any, default_data_dir: Path) -> None:
    commands.add_parser(
        "demo", add_help=False,
        help="run the whole pipeline locally and print reports (--fake-provider: only the fake LLM provider)",
    )


def run(argv: list[str]) -> int:
    from tokentrail.processor.demo.run import main  # the demo's SDKs (openai, anthropic) load only for this command

    try:
        code = main(argv)
    except SystemExit as exc:  # the demo's argparse exits on --help and bad usage; `main` returns codes instead
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    return code if isinstance(code, int) else 0
