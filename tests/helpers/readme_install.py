"""README's install lines, run as written: what a newcomer types, in fresh virtual environments, from a checkout.

``python -m tests.helpers.readme_install`` (``make check-install``, run by CI) finds every ``pip install`` and
``pip wheel`` line README.md gives (in ``sh`` blocks and in inline code), runs each in a new venv with the repository
root as the working directory (the wheel line, then its install line, in a directory of its own), and then checks
that what the line promises works there: the base install imports ``tokentrail.instrumentation``; the
``[processor]`` install runs ``tokentrail --version`` and ``tokentrail report --help``; ``[mcp]`` imports ``mcp``.
Needs the PyPI registry (it installs for real); the test suite only checks the lines' form
(``tests/test_readme.py``).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_LINE = re.compile(r"pip (?:install|wheel) [^`\n]+")


def install_lines(readme: str) -> list[str]:
    """Every ``pip install`` / ``pip wheel`` command README gives, in order, each once."""
    lines: list[str] = []
    for match in _LINE.finditer(readme):
        line = match.group(0).split("#", 1)[0].strip()
        if line not in lines:
            lines.append(line)
    return lines


def _run(command: list[str], cwd: Path) -> None:
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, cwd=cwd, check=True)


def _fresh(where: Path) -> Path:
    venv.create(where, with_pip=True)
    return where / "bin"


def _pip(bin_dir: Path, line: str) -> list[str]:
    # The line as a user types it, its `pip` being the fresh venv's.
    return [str(bin_dir / "python"), "-m", *shlex.split(line)]


def check(readme: str) -> None:
    lines = install_lines(readme)
    wheel = next((line for line in lines if line.startswith("pip wheel")), None)
    with tempfile.TemporaryDirectory(prefix="tokentrail-install-") as tmp:
        for index, line in enumerate(lines):
            if line.startswith("pip wheel"):
                continue
            bin_dir = _fresh(Path(tmp) / f"venv{index}")
            cwd = ROOT
            if "dist/" in line and wheel is not None:
                # The wheel a user built from the checkout, installed where the service lives.
                cwd = Path(tmp) / f"service{index}"
                cwd.mkdir()
                build = _pip(bin_dir, wheel)
                assert build[-1] == ".", wheel  # the checkout, which the service's directory is not
                build[-1] = str(ROOT)
                _run(build, cwd)
                matches = sorted((cwd / "dist").glob("tokentrail-*.whl"))
                line = line.replace("dist/tokentrail-*.whl", str(matches[-1]))
            _run(_pip(bin_dir, line), cwd)
            python = str(bin_dir / "python")
            _run([python, "-c", "import tokentrail.instrumentation as t; t.instrument; t.attribute"], ROOT)
            if "processor" in line:
                _run([str(bin_dir / "tokentrail"), "--version"], ROOT)
                _run([str(bin_dir / "tokentrail"), "report", "--help"], ROOT)
            if "mcp" in line:
                _run([python, "-c", "import mcp"], ROOT)
    print(f"README's {len(lines)} install lines work as written", flush=True)


if __name__ == "__main__":
    check((ROOT / "README.md").read_text())
    sys.exit(0)
