"""`python -m benchmarks [name ...]` (or `make bench`): runs every benchmark module's `run()` and prints its result,
each a ratio against a baseline measured in the same process, so numbers compare across machines and days.

A module that sets ``ON_REQUEST = True`` runs only when named (``make bench BENCH=abuse``): it measures what an attack
costs, not a speed, and takes minutes and gigabytes a plain ``make bench`` should not."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    here = Path(__file__).resolve().parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))
    chosen = [n for n in names if not argv or n in argv]
    for name in chosen:
        module = importlib.import_module(f"benchmarks.{name}")
        if not argv and getattr(module, "ON_REQUEST", False):
            print(f"# {name}: skipped, runs only when named (make bench BENCH={name})", file=sys.stderr, flush=True)
            continue
        if hasattr(module, "run"):
            print(json.dumps({name: module.run()}, indent=2), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
