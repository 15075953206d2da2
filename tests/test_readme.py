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


def test_the_attribution_table_covers_every_instrumentation_and_each_row_is_proved() -> None:
    """Each row of README's attribution table names its proof: a golden fixture whose every record carries a user
    and tags (the spans that instrumentation really wrote, set up the way the row says), or a test that exists."""
    import json

    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\s*\| ([^|]+?) \| (.+) \| ([^|]+) \|\s*$", readme, flags=re.M)
    table = {writer: proof for writer, _how, proof in rows if "`tests/" in proof}
    expected = ("TokenTrail", "AI SDK v6", "AI SDK v7, `OpenTelemetry`", "AI SDK v7, `LegacyOpenTelemetry`",
                "openai-v2", "OpenLLMetry", "OpenInference", "pydantic-ai", "Raw OpenTelemetry spans")  # fmt: skip
    for name in expected:
        assert any(name in writer for writer in table), name
    assert len(table) == len(expected)
    for writer, proof in table.items():
        for reference in re.findall(r"`([^`]+)`", proof):
            path, _, test = reference.partition("::")
            assert (ROOT / path).is_file(), (writer, path)
            if test:
                assert re.search(rf"^(async )?def {re.escape(test)}\(", (ROOT / path).read_text(), re.M), (writer, test)
            else:
                results = json.loads((ROOT / path).read_text())
                records = [record for result in results for record in result["records"]]
                assert records and all(r["user_id"] and r["tags"] for r in records), (writer, path)


def test_every_install_line_installs_from_the_checkout_not_from_an_index() -> None:
    """TokenTrail is on no package index: ``pip install tokentrail`` fails for a newcomer. Every install line must
    name the checkout (``.``) or a wheel built from it; ``make check-install`` (CI) runs them all for real."""
    from tests.helpers.readme_install import install_lines

    lines = install_lines((ROOT / "README.md").read_text())
    assert any(line == "pip install ." for line in lines)
    assert any("'.[processor]'" in line for line in lines)
    for line in lines:
        targets = [word for word in line.split()[2:] if not word.startswith("-") and word != "dist"]
        for target in targets:
            assert target.strip("'\"").startswith((".", "dist/")), line
