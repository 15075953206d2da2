"""``tokentrail report`` on a terminal fits its table to the terminal's width (a real pseudo-terminal, its window
size set as a terminal emulator sets it); piped, it keeps every column for whatever reads it."""

from __future__ import annotations

import os
import subprocess
import sys
import termios
from decimal import Decimal
from pathlib import Path

import pytest
from tokentrail.processor.cli import main as cli
from tokentrail.processor.reports.formatting import TABLE_HEADERS
from tokentrail.processor.reports.query import METRICS

from tests.helpers.reports import rec, write

REPORT = ("report", "--start-date", "2025-03-01", "--end-date", "2025-03-31", "--group-by", "user,model",
          "--date-part", "day")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    write(tmp_path, [
        rec("2025-03-05T08:00:00", user_id="alice@corp", model="claude-sonnet-4-5", provider="anthropic",
            input_tokens=123_456_789, output_tokens=2_345_678, cached_input_tokens=3_456_789,
            cache_creation_input_tokens=456_789, reasoning_tokens=56_789, total_cost=Decimal("1234.567"),
            market_cost=Decimal("1500.1")),
        rec("2025-03-06T09:00:00", user_id="bob", total_cost=Decimal("12.5"), market_cost=Decimal("13")),
    ])
    return tmp_path


def _on_a_terminal(argv: list[str], columns: int) -> tuple[int, str, str]:
    """Runs the CLI with stdout on a pseudo-terminal ``columns`` wide; what it printed there, as lines."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # the window size decides
    main_fd, terminal_fd = os.openpty()
    termios.tcsetwinsize(terminal_fd, (24, columns))
    with subprocess.Popen([sys.executable, "-m", "tokentrail.processor.cli.main", *argv], stdin=subprocess.DEVNULL,
                          stdout=terminal_fd, stderr=subprocess.PIPE, env=env) as process:
        os.close(terminal_fd)
        chunks = []
        while True:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # EIO: the process closed its side
                break
            if not chunk:
                break
            chunks.append(chunk)
        _, err = process.communicate(timeout=120)
    os.close(main_fd)
    return process.returncode, b"".join(chunks).decode().replace("\r\n", "\n"), err.decode()


def test_on_an_80_column_terminal_the_table_fits_and_says_what_it_left_out(data: Path) -> None:
    code, out, err = _on_a_terminal([*REPORT, "--data-dir", str(data)], 80)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80, out
    header = out.splitlines()[0].split()
    assert header == ["day", "user", "model", "cost", "requests", "unpriced"]
    assert "alice@corp" in out and "$1,234.57" in out and "$1,247.07" in out  # keys and totals whole
    note = " ".join(out.split("\n\n")[-1].splitlines())
    assert note.startswith("Left out to fit 80 characters: market cost, input, output, cached in, cache write, "
                           "reasoning.")


def test_piped_the_table_keeps_every_column(data: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # a narrow terminal somewhere: piped output is not on it
    assert cli.main([*REPORT, "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    header = [h.strip() for h in out.splitlines()[0].split("  ") if h.strip()]
    assert header == ["day", "user", "model", *(TABLE_HEADERS[name] for name in METRICS)]
    assert "Left out" not in out
