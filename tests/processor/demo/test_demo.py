"""``tokentrail demo`` as a newcomer runs it (issue 12), in a subprocess: it never deletes what it did not create,
makes exactly ``--calls`` calls, runs again and again in its default directory, and ``--fake-provider`` serves the
fake to the real SDKs without keys."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import anthropic
import openai
import pytest
from google import genai
from tokentrail.processor.demo.fake_provider import DEFAULT_OUTPUT_TOKENS, prompt_tokens
from tokentrail.processor.demo.run import DEFAULT_DEMO_DIR, DEMO_MARKER
from tokentrail.processor.reports.query import ReportQuery
from tokentrail.processor.reports.report import run_report

TOKENTRAIL = (sys.executable, "-m", "tokentrail.processor.cli.main")


def tokentrail(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TOKENTRAIL, *argv], cwd=cwd, capture_output=True, text=True, check=False)


def snapshot(root: Path) -> dict[str, bytes]:
    if root.is_file():
        return {"": root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def total(data_dir: Path) -> dict[str, object]:
    today = datetime.now(UTC).date().isoformat()
    (row,) = run_report(data_dir, ReportQuery.from_params({"start_date": today, "end_date": today, "group_by": "none"}))
    return dict(row)


@pytest.mark.parametrize("kind", ["a dataset and an unrelated file", "a file"])
def test_demo_refuses_what_it_did_not_create_and_leaves_it_as_it_was(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "precious"
    if kind == "a file":
        target.write_text("my notes\n")
    else:
        day = target / "usage" / "date=2025-03-05"
        day.mkdir(parents=True)
        (day / "part-r1-000001.parquet").write_bytes(b"PAR1 a real day of usage PAR1")
        (target / "notes.txt").write_text("not the demo's\n")
    before = snapshot(target)
    result = tokentrail(tmp_path, "demo", "--data-dir", str(target), "--calls", "1")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("tokentrail demo: ") and str(target) in line
    assert "Traceback" not in result.stderr
    assert snapshot(target) == before


def test_the_default_demo_directory_works_run_after_run_and_holds_only_the_last_run(tmp_path: Path) -> None:
    """`make demo`, twice: the second run empties what the first wrote (its marked directory) and starts over."""
    for _ in range(2):
        result = tokentrail(tmp_path, "demo", "--calls", "3")
        assert result.returncode == 0, result.stderr
    data_dir = tmp_path / DEFAULT_DEMO_DIR
    assert (data_dir / DEMO_MARKER).is_file()
    assert total(data_dir)["request_count"] == 3  # not 6: the first run's records were cleared


def test_demo_makes_exactly_the_calls_asked_into_an_empty_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "empty"
    data_dir.mkdir()  # an empty directory is the demo's to use
    result = tokentrail(tmp_path, "demo", "--data-dir", str(data_dir), "--calls", "5")
    assert result.returncode == 0, result.stderr
    assert "made 5 LLM calls" in result.stdout
    row = total(data_dir)
    assert row["request_count"] == 5
    assert row["unpriced_request_count"] == 1  # the call to a model no catalog knows, even in a short run


def test_demo_calls_every_sdk_and_groups_calls_into_conversations(tmp_path: Path) -> None:
    """The native SDKs (issue 15) and conversations (issue 14): a dozen calls reach all four providers, every one
    priced but the unknown model, and each belongs to a conversation of its customer."""
    data_dir = tmp_path / "demo"
    result = tokentrail(tmp_path, "demo", "--data-dir", str(data_dir), "--calls", "12")
    assert result.returncode == 0, result.stderr
    today = datetime.now(UTC).date().isoformat()
    period = {"start_date": today, "end_date": today}
    by_provider = {
        row["provider"]: row
        for row in run_report(data_dir, ReportQuery.from_params({**period, "group_by": "provider"}))
    }
    assert set(by_provider) == {"openai", "anthropic", "google", "aws"}
    for name in ("anthropic", "google", "aws"):
        assert by_provider[name]["unpriced_request_count"] == 0 and by_provider[name]["total_cost"] > 0, name
    rows = run_report(data_dir, ReportQuery.from_params({**period, "group_by": "conversation,user"}))
    assert sum(row["request_count"] for row in rows) == 12
    assert all(row["conversation"] is not None and row["conversation"].startswith(row["user"]) for row in rows)
    assert "== cost of the 5 costliest conversations ==" in result.stdout


def test_demo_refuses_zero_calls(tmp_path: Path) -> None:
    result = tokentrail(tmp_path, "demo", "--calls", "0")
    assert result.returncode == 2
    assert "--calls: must be at least 1" in result.stderr
    assert list(tmp_path.iterdir()) == []


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_fake_provider_alone_serves_the_real_sdks_at_the_urls_it_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    process = subprocess.Popen(
        [*TOKENTRAIL, "demo", "--fake-provider"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # SIGABRT dumps every thread's stack
        # Ctrl-C as in a terminal: a test run started in the background inherits SIGINT ignored, and so would the
        # fake provider (a CI run hung so, its main thread asleep).
        preexec_fn=_sigint_default,
    )
    try:
        assert process.stdout is not None
        printed = ""
        while "GOOGLE_GEMINI_BASE_URL" not in printed:
            line = process.stdout.readline()
            assert line, (printed, process.stderr.read() if process.stderr else "")
            printed += line
        # The printed `export` lines, as a newcomer would paste them: the SDKs read these variables.
        exports = dict(re.findall(r"\b([A-Z_]+)=(\S+)", printed))
        assert set(exports) == {"OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY",
                                "GOOGLE_GEMINI_BASE_URL", "GEMINI_API_KEY"}
        assert all(url.startswith("http://127.0.0.1:") for k, url in exports.items() if k.endswith("_URL"))
        for name, value in exports.items():
            monkeypatch.setenv(name, value)
        chat = openai.OpenAI(max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
        assert chat.usage is not None
        assert chat.usage.prompt_tokens == prompt_tokens({"messages": [{"role": "user", "content": "hello"}]})
        assert chat.usage.completion_tokens == DEFAULT_OUTPUT_TOKENS
        message = anthropic.Anthropic(max_retries=0).messages.create(
            model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hello"}]
        )
        assert message.usage.output_tokens == 8
        monkeypatch.delenv("GOOGLE_API_KEY", raising=False)  # it would win over GEMINI_API_KEY
        gemini = genai.Client()  # kept in a variable: a dropped client closes its connection pool
        answer = gemini.models.generate_content(model="gemini-2.5-flash", contents="hello")
        assert answer.usage_metadata is not None and answer.usage_metadata.prompt_token_count
        gemini.close()  # as an application would at exit: no connection of ours is left open
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # say where it hangs (a CI run once saw Ctrl-C not stop it in 60 s)
            process.send_signal(signal.SIGABRT)
            out, err = process.communicate(timeout=30)
            raise AssertionError(f"--fake-provider did not stop on SIGINT within 60 s; its threads:\n{err}") from None
    assert process.returncode == 0, err
    assert "fake provider stopped" in out
    assert "Traceback" not in err
