"""A newcomer's first hour (issue 12): the base install's ``tokentrail`` says which extra to install instead of a
traceback, ``--version`` answers, and a wrong ``--data-dir`` is an error, never "no usage in this period"."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tokentrail.processor.cli import main as cli

# What the base install (`pip install .`) lacks: the processor extra's modules, and the mcp extra.
NOT_IN_THE_BASE_INSTALL = ("duckdb", "pyarrow", "grpc", "genai_prices", "mcp")

# `tokentrail` with those modules unimportable (None in sys.modules makes `import x` raise ModuleNotFoundError, as
# on an install without them), then the real entry point.
_BASE_INSTALL = textwrap.dedent(
    f"""
    import sys
    for name in {NOT_IN_THE_BASE_INSTALL!r}:
        sys.modules[name] = None
    from tokentrail.processor.cli.main import main
    raise SystemExit(main(sys.argv[1:]))
    """
)


def base_install(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BASE_INSTALL, *argv], cwd=cwd, capture_output=True, text=True, check=False
    )


COMMAND_NAMES = [module.__name__.rsplit(".", 1)[1] for module in cli.COMMANDS]

# The command line run on the base install for each command, and the extra it must name. Every command of
# COMMANDS is run; one missing here (a command meant to work on the base install) must at least not crash.
BASE_INSTALL_RUNS: dict[str, tuple[tuple[str, ...], str]] = {
    "report": (("report",), "processor"),
    "requests": (("requests",), "processor"),
    "serve": (("serve", "--grpc-port", "0", "--api-port", "0", "--no-http"), "processor"),
    "demo": (("demo", "--calls", "1"), "demo"),
    "budgets": (("budgets", "--budgets", "budgets.toml"), "processor"),
    "compact": (("compact",), "processor"),
    "margins": (("margins", "--revenue", "revenue.toml"), "processor"),
    "mcp": (("mcp",), "processor,mcp"),
    "prices": (("prices", "explain", "--provider", "openai", "--model", "gpt-4o", "--input", "10"), "processor"),
    "prices check": (("prices", "check", "pricing.toml"), "processor"),
    "prices unpriced": (("prices", "unpriced"), "processor"),
    "prices versions": (("prices", "versions"), "processor"),
    "reprice": (("reprice", "--start-date", "2025-03-01"), "processor"),
    "spikes": (("spikes",), "processor"),
    "status": (("status",), "processor"),
    "wal": (("wal", "verify"), "processor"),
}


@pytest.mark.parametrize("name", sorted({*COMMAND_NAMES, *BASE_INSTALL_RUNS}))
def test_on_the_base_install_each_command_names_the_extra_it_needs_in_one_line(tmp_path: Path, name: str) -> None:
    argv, extra = BASE_INSTALL_RUNS.get(name, ((name,), ""))
    result = base_install(tmp_path, *argv)
    assert "Traceback" not in result.stderr, result.stderr
    if not extra:
        return  # a command that works without the processor: not crashing is what is asked of it
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"tokentrail {' '.join(argv[:2]) if argv[0] == 'prices' else argv[0]}: needs the ")
    assert line.endswith(f"from a TokenTrail checkout: pip install './[{extra}]'"), line
    assert list(tmp_path.iterdir()) == []  # nothing was created (the demo made no directory)


def test_every_command_has_a_base_install_run() -> None:
    assert set(COMMAND_NAMES) <= {name.split()[0] for name in BASE_INSTALL_RUNS} | {"doctor"}


def test_help_and_version_work_on_the_base_install(tmp_path: Path) -> None:
    helped = base_install(tmp_path, "--help")
    assert (helped.returncode, helped.stderr) == (0, "")
    assert helped.stdout.startswith("usage: tokentrail")
    for name in COMMAND_NAMES:
        assert f"    {name} " in helped.stdout, name
    assert "report    (needs the processor extra: pip install './[processor]')" in helped.stdout
    versioned = base_install(tmp_path, "--version")
    assert (versioned.returncode, versioned.stderr) == (0, "")
    assert versioned.stdout == f"tokentrail {importlib.metadata.version('tokentrail')}\n"


def test_version_prints_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"tokentrail {importlib.metadata.version('tokentrail')}\n"


# Every command that reads a dataset; {budgets} and {revenue} are files written by the test.
READERS: dict[str, tuple[str, ...]] = {
    "report": ("report",),
    "requests": ("requests",),
    "compact": ("compact",),
    "reprice": ("reprice", "--start-date", "2025-03-01", "--end-date", "2025-03-02"),
    "spikes": ("spikes",),
    "prices versions": ("prices", "versions"),
    "prices unpriced": ("prices", "unpriced"),
    "budgets": ("budgets", "--budgets", "{budgets}"),
    "margins": ("margins", "--revenue", "{revenue}"),
    "status": ("status",),
    "mcp": ("mcp",),  # checked before it serves: a wrong path is said at start, not by every tool call
}


def _argv(tmp_path: Path, command: str, data_dir: Path) -> list[str]:
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budgets]]\nname = "all"\namount = 10\n')
    revenue = tmp_path / "revenue.toml"
    revenue.write_text("[plans.pro]\nmonthly = 30\n")
    argv = [arg.format(budgets=budgets, revenue=revenue) for arg in READERS[command]]
    return [*argv, "--data-dir", str(data_dir)]


@pytest.mark.parametrize("command", READERS)
@pytest.mark.parametrize("place", ["missing", "not a dataset"])
def test_a_path_with_no_dataset_is_an_error_naming_the_path_and_what_was_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str, place: str
) -> None:
    monkeypatch.delenv("TOKENTRAIL_PRICING", raising=False)
    data_dir = tmp_path / "wrong"
    if place == "not a dataset":
        data_dir.mkdir()
        (data_dir / "notes.txt").write_text("not a dataset\n")
    code = cli.main(_argv(tmp_path, command, data_dir))
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"tokentrail {command}: no TokenTrail dataset ")
    assert str(data_dir) in line and "usage/" in line
    if place == "not a dataset":
        assert [p.name for p in data_dir.iterdir()] == ["notes.txt"]  # looked at, nothing written
    else:
        assert not data_dir.exists()


@pytest.mark.parametrize("command", [c for c in READERS if c != "mcp"])  # mcp would serve on stdin
def test_a_dataset_with_no_usage_in_the_period_is_not_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.delenv("TOKENTRAIL_PRICING", raising=False)
    data_dir = tmp_path / "data"
    (data_dir / "usage").mkdir(parents=True)  # what a receiver creates when it starts
    code = cli.main(_argv(tmp_path, command, data_dir))
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "no TokenTrail dataset" not in err
