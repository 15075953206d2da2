"""README promises a newcomer exactly two commands; these tests keep the promise true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_gives_the_two_commands_and_the_makefile_defines_them() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z]+):", makefile, flags=re.M))
    assert {"demo", "test"} <= targets


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_the_top_level_layout_is_the_designed_one() -> None:
    for name in ("pyproject.toml", "README.md", "instrumentation", "processor", "tests", "otel-collector.yaml"):
        assert (ROOT / name).exists(), name
