"""``tokentrail status`` in text: every counter the JSON has that a person needs, and a data directory whose
``status/`` or ``wal/`` is a file is one line naming it, not a traceback. Status files are written by the receiver's
own ``write_status``; ``tokentrail serve --help`` says what the listeners serve."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tokentrail.processor.cli import main as cli
from tokentrail.processor.ingest.status import StatusReadError, read_status_files, status_path, write_status


def _dataset(tmp_path: Path) -> Path:
    (tmp_path / "usage").mkdir()  # what a receiver creates when it starts
    return tmp_path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_text_shows_the_metric_points_and_log_records_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = _dataset(tmp_path)
    details = {"receiver_id": "r1", "pid": os.getpid(), "running": False, "grpc_port": 14317, "http_port": 14318}
    write_status(status_path(data_dir, "r1"), details,
                 {"spans_received": 2, "metric_points_ignored": 1234, "log_records_ignored": 56})
    code, out, err = _run(capsys, "status", "--data-dir", str(data_dir))
    assert (code, err) == (0, "")
    assert "metric points ignored 1234, log records ignored 56" in out
    code, out, _ = _run(capsys, "status", "--data-dir", str(data_dir), "--json")
    (receiver,) = json.loads(out)["receivers"]
    assert (receiver["metrics"]["metric_points_ignored"], receiver["metrics"]["log_records_ignored"]) == (1234, 56)


@pytest.mark.parametrize("folder", ["status", "wal"])
def test_a_file_where_a_folder_belongs_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], folder: str
) -> None:
    data_dir = _dataset(tmp_path)
    (data_dir / folder).write_text("not a folder\n")
    code, out, err = _run(capsys, "status", "--data-dir", str(data_dir))
    assert (code, out) == (1, "")
    (line,) = err.splitlines()
    assert line.startswith("tokentrail status: cannot read ")
    assert f"{data_dir / folder} is a file" in line
    assert (data_dir / folder).read_text() == "not a folder\n"  # looked at, left alone


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "data"
    a_file.write_text("")
    code, out, err = _run(capsys, "status", "--data-dir", str(a_file))
    assert (code, out) == (1, "")
    (line,) = err.splitlines()
    assert line.startswith("tokentrail status: no TokenTrail dataset at ") and "not a directory" in line


def test_reading_status_files_refuses_what_it_cannot_list_and_finds_none_where_none_was_written(
    tmp_path: Path,
) -> None:
    assert read_status_files(tmp_path) == []  # no receiver ever ran here: nothing to say
    (tmp_path / "status").write_text("")
    with pytest.raises(StatusReadError, match="is a file, not the status/ folder"):
        read_status_files(tmp_path)
    a_file = tmp_path / "plain"
    a_file.write_text("")
    with pytest.raises(StatusReadError, match=f"{a_file} is not a directory"):
        read_status_files(a_file)


def test_serve_help_names_what_each_listener_serves(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "serve", "--help")
    assert code == 0
    text = " ".join(out.split())  # argparse wraps to the terminal
    assert "(POST /v1/traces, /v1/metrics, /v1/logs; GET /metrics)" in text
    assert "/v1/budgets, /v1/margins, /v1/spikes" in text  # the report API is more than /v1/report
    assert "report API's /v1/ endpoints" in text  # --api-token guards them all
    assert "both listeners" not in text  # there are three: OTLP gRPC, OTLP HTTP, the report API
