"""Long jobs (``reprice``, ``compact``) draw a progress line on stderr when, and only when, stderr is a terminal."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tokentrail.processor.cli import main as cli
from tokentrail.processor.schema import records_to_table

from tests.processor.cli.test_cli import at, rec


class Terminal(io.StringIO):
    """stderr as a terminal: what `isatty()` says is all the CLI looks at."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def two_days(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two days of two files each (so compact has work), priced records (so reprice has work)."""
    monkeypatch.delenv("TOKENTRAIL_PRICING", raising=False)
    n = 0
    for day in ("2025-03-05", "2025-03-06"):
        folder = tmp_path / "usage" / f"date={day}"
        folder.mkdir(parents=True)
        for part in (1, 2):
            n += 1
            pq.write_table(records_to_table([rec(n, at(day))]), folder / f"part-r1-00000{part}.parquet")
    return tmp_path


JOBS = {
    "compact": ("compact", "--data-dir", "{dir}"),
    "reprice": ("reprice", "--data-dir", "{dir}", "--start-date", "2025-03-05", "--end-date", "2025-03-06"),
}
VERBS = {"compact": "compacting", "reprice": "repricing"}


@pytest.mark.parametrize("job", JOBS)
def test_a_terminal_sees_each_day_in_progress_then_a_cleared_line(
    two_days: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, job: str
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert cli.main([arg.format(dir=two_days) for arg in JOBS[job]]) == 0
    drawn = terminal.getvalue()
    first = f"\rtokentrail {job}: {VERBS[job]} 2025-03-05 (1/2 days)"
    second = f"\rtokentrail {job}: {VERBS[job]} 2025-03-06 (2/2 days)"
    assert first in drawn and second in drawn and drawn.index(first) < drawn.index(second)
    assert drawn.endswith("\r" + " " * len(second.lstrip("\r")) + "\r")  # erased: the prompt starts clean
    out = capsys.readouterr().out
    assert "2025-03-05" in out and "2025-03-06" in out  # the results, on stdout as before


@pytest.mark.parametrize("job", JOBS)
def test_a_pipe_or_log_file_gets_no_progress(
    two_days: Path, capsys: pytest.CaptureFixture[str], job: str
) -> None:
    assert cli.main([arg.format(dir=two_days) for arg in JOBS[job]]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "\r" not in out and "2025-03-06" in out
