"""``tokentrail``: the CLI gives the HTTP API's answers, in the format asked, and runs the services until a signal."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import sys
import threading
import types
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pyarrow.parquet as pq
import pytest
from tokentrail.processor.api.http import ReportServer
from tokentrail.processor.cli import main as cli
from tokentrail.processor.reports.query import ReportQuery
from tokentrail.processor.schema import PRICED, UNPRICED, UsageRecord, records_to_table

from tests.helpers.otlp import export, make_request, random_span


def write_day(data_dir: Path, records: list[UsageRecord]) -> None:
    folder = data_dir / "usage" / f"date={records[0].day}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(records_to_table(records), folder / "part-r1-000001.parquet")


def rec(n: int, ts: datetime, **fields: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "timestamp": ts,
        "trace_id": f"{n:032x}",
        "span_id": f"{n:016x}",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1200,
        "output_tokens": 300,
        "total_cost": Decimal("0.000000000001"),
        "market_cost": Decimal("1.5"),
        "price_status": PRICED,
    }
    values.update(fields)
    return UsageRecord(**values)


def at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_day(
        tmp_path,
        [
            rec(1, at("2025-03-05"), user_id="alice", tags=["plan:pro"]),
            rec(2, at("2025-03-05"), user_id="alice", tags=["plan:pro"]),
            rec(3, at("2025-03-05"), user_id="bob", model="acme-private", price_status=UNPRICED, total_cost=None,
                market_cost=None),
        ],
    )
    write_day(tmp_path, [rec(4, at("2025-03-06"), user_id="bob", model="claude-haiku-4-5", provider="anthropic")])
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


REPORT = ("report", "--start-date", "2025-03-01", "--end-date", "2025-03-31")


def test_json_output_is_byte_for_byte_the_http_body(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *REPORT, "--data-dir", str(data_dir), "--date-part", "day", "--group-by", "model",
                       "--tags", "plan:pro,plan:free", "--format", "json")
    params = {"start_date": "2025-03-01", "end_date": "2025-03-31", "date_part": "day", "group_by": "model",
              "tags": "plan:pro,plan:free"}
    with ReportServer(data_dir, port=0) as server:
        with urllib.request.urlopen(f"{server.url}/v1/report?{urlencode(params)}", timeout=10) as response:
            body = response.read().decode()
    assert code == 0
    assert out == body
    assert json.loads(out)["results"][0]["model"] == "gpt-4o-mini"


def test_csv_output_has_a_header_and_exact_costs(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *REPORT, "--data-dir", str(data_dir), "--group-by", "user", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == list(ReportQuery.from_params({**dict(start_date="2025-03-01", end_date="2025-03-01"),
                                                          "group_by": "user"}).columns)
    by_user = {row["user"]: row for row in rows}
    assert by_user["alice"]["total_cost"] == "0.000000000002"
    assert by_user["bob"]["unpriced_request_count"] == "1"


def test_csv_of_no_rows_is_just_the_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "usage").mkdir()  # a dataset with nothing in the period (no dataset at all is an error)
    code, out, _ = run(capsys, *REPORT, "--data-dir", str(tmp_path), "--group-by", "model", "--format", "csv")
    assert code == 0
    assert out.splitlines() == [",".join(ReportQuery.from_params(
        {"start_date": "2025-03-01", "end_date": "2025-03-01", "group_by": "model"}).columns)]


def test_table_output_is_aligned_columns_for_people(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *REPORT, "--data-dir", str(data_dir), "--group-by", "model")
    assert code == 0
    table = out.split("\n\n")[0]  # footnotes follow a blank line
    header, rule, *lines, total_rule, total = table.splitlines()
    assert len(lines) == 3
    assert set(total_rule.replace(" ", "")) == {"-"} and total.startswith("total")
    assert header.split()[:3] == ["model", "cost", "market"]
    assert set(rule.replace(" ", "")) == {"-"}
    # Text columns start together; number columns end together.
    assert all(line.index(line.split()[0]) == 0 for line in lines)
    requests_end = header.index("requests") + len("requests")
    assert {line[:requests_end].rstrip()[-1:] for line in lines} == {"1", "2"}
    assert all(line[requests_end - 1] != " " for line in lines)
    assert "$0.000000000002" in out  # a tiny cost never reads as $0
    assert "1,200" in out or "2,400" in out  # thousands separators


def test_table_marks_costs_that_leave_out_unpriced_requests(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, *REPORT, "--data-dir", str(data_dir), "--group-by", "model")
    (unpriced_line,) = [line for line in out.splitlines() if line.startswith("acme-private")]
    assert "unpriced*" in unpriced_line  # a group with no known price never reads as $0
    assert "$0" not in unpriced_line
    assert "Costs cover priced requests only" in out


def test_table_of_tag_rows_warns_they_do_not_add_up(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, *REPORT, "--data-dir", str(data_dir), "--group-by", "tag")
    assert "untagged requests in none" in out


def test_table_of_no_rows_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "usage").mkdir()  # a dataset with nothing in the period (no dataset at all is an error)
    code, out, _ = run(capsys, *REPORT, "--data-dir", str(tmp_path))
    assert (code, out) == (0, "No usage in this period.\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--start-date", "2025-13-01", "--end-date", "2025-12-31"), "start_date is not a valid date"),
        (("--start-date", "2025-03-31", "--end-date", "2025-03-01"), "is before start_date"),
        (("--group-by", "colour"), "unknown group_by 'colour'"),
        (("--date-part", "year"), "unknown date_part 'year'"),
        (("--credential-type", "mine"), "unknown credential_type 'mine'"),
        (("--tags", "a", "--tags-match", "most"), "unknown tags_match 'most'"),
    ],
)
def test_a_bad_parameter_prints_the_message_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, "report", "--data-dir", str(tmp_path), *args)
    assert code == 2
    assert out == ""
    assert message in err


def test_an_unknown_format_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *REPORT, "--data-dir", str(tmp_path), "--format", "xml")
    assert code == 2
    assert "invalid choice: 'xml'" in err


def test_default_period_is_the_last_seven_days_ending_today_utc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    today = datetime.now(UTC).date()
    for n, days_ago in enumerate([0, 6, 7], start=1):
        write_day(tmp_path, [rec(n, at((today - timedelta(days=days_ago)).isoformat(), hour=0))])
    code, out, _ = run(capsys, "report", "--data-dir", str(tmp_path), "--format", "json")
    assert code == 0
    assert [r["day"] for r in json.loads(out)["results"]] == [
        (today - timedelta(days=6)).isoformat(),
        today.isoformat(),
    ]


def test_data_dir_defaults_to_the_environment_variable(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENTRAIL_DATA_DIR", str(data_dir))
    code, out, _ = run(capsys, *REPORT, "--group-by", "none", "--format", "json")
    assert code == 0
    assert json.loads(out)["results"][0]["request_count"] == 4


def test_data_dir_defaults_to_tokentrail_data_in_the_working_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOKENTRAIL_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    write_day(tmp_path / "tokentrail-data", [rec(1, at("2025-03-05"))])
    code, out, _ = run(capsys, *REPORT, "--group-by", "none", "--format", "json")
    assert code == 0
    assert json.loads(out)["results"][0]["request_count"] == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve_one_span(tmp_path: Path, *options: str) -> tuple[int, str, list[int], list[int]]:
    """Run `tokentrail serve` in this process, export one GenAI span over real gRPC once the API answers, then
    SIGTERM it: (exit code, stderr, health answers, accepted exports)."""
    grpc_port, api_port = _free_port(), _free_port()
    health: list[int] = []
    accepted: list[int] = []
    failures: list[BaseException] = []

    def operator() -> None:
        try:
            for _ in range(200):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=5) as response:
                        health.append(response.status)
                    break
                except OSError:
                    threading.Event().wait(0.05)
            response = export(grpc_port, make_request([random_span()]))
            accepted.append(0 if response.HasField("partial_success") else 1)
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=operator)
    thread.start()
    code = cli.main(
        ["serve", "--data-dir", str(tmp_path), "--grpc-port", str(grpc_port), "--api-port", str(api_port),
         "--http-port", "0", "--receiver-id", "cli-test", *options]
    )
    thread.join(10)
    assert not failures, failures
    return code, f"api port {api_port}", health, accepted


def test_serve_ingests_and_answers_until_sigterm_then_stops_with_everything_on_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real receiver and report API: a span exported while serving is in the report after SIGTERM."""
    previous = signal.getsignal(signal.SIGTERM)
    code, api, health, accepted = _serve_one_span(tmp_path)
    _, err = capsys.readouterr()
    assert code == 0
    assert health == [200] and accepted == [1]
    assert f"report API on http://127.0.0.1:{api.removeprefix('api port ')}" in err
    assert signal.getsignal(signal.SIGTERM) is previous
    assert len(list((tmp_path / "usage").glob("date=*/*.parquet"))) == 1  # stop flushed what it acknowledged


def test_serve_prices_with_the_pricing_file_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--pricing reaches the receiver's prices: a 50 % discount halves total_cost and leaves the list price."""
    monkeypatch.delenv("TOKENTRAIL_PRICING", raising=False)
    pricing = tmp_path / "pricing.toml"
    pricing.write_text('[[rule]]\nprovider = "openai"\ndiscount_percent = 50\n')
    code, _, _, accepted = _serve_one_span(tmp_path / "data", "--pricing", str(pricing))
    capsys.readouterr()
    assert code == 0 and accepted == [1]
    (file,) = (tmp_path / "data" / "usage").glob("date=*/*.parquet")
    (row,) = pq.read_table(file).to_pylist()
    assert row["provider"] == "openai" and row["price_status"] == PRICED
    assert row["market_cost"] > 0
    assert row["total_cost"] == row["market_cost"] / 2
    assert "TOKENTRAIL_PRICING" not in os.environ  # the option named the file for this receiver only


def test_serve_refuses_a_bad_pricing_file_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOKENTRAIL_PRICING", raising=False)
    bad = tmp_path / "pricing.toml"
    bad.write_text("[[rule]]\nprovider = \"openai\"\ndiscount_percent = \"lots\"\n")
    port = _free_port()
    code = cli.main(["serve", "--data-dir", str(tmp_path / "d"), "--grpc-port", str(port), "--api-port", "0",
                     "--no-http", "--pricing", str(bad)])
    _, err = capsys.readouterr()
    assert code == 2
    assert "pricing.toml:3: discount_percent must be a number" in err  # names the line and the problem
    assert "TOKENTRAIL_PRICING" not in os.environ  # the option named the file for this receiver only
    with socket.socket() as sock:  # nothing was left listening
        sock.bind(("127.0.0.1", port))


def test_demo_hands_its_arguments_to_the_demo_module(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []

    def demo_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    monkeypatch.setitem(sys.modules, "tokentrail.processor.demo.run", types.SimpleNamespace(main=demo_main))
    assert cli.main(["demo", "--calls", "3", "--data-dir", "x"]) == 0
    assert seen == [["--calls", "3", "--data-dir", "x"]]


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)
    assert code == 2
    assert "usage: tokentrail" in err


def test_serve_refuses_a_bad_budgets_file_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "budgets.toml"
    bad.write_text('[[budgets]]\nname = "all"\namount = "a lot"\n')
    port = _free_port()
    code = cli.main(["serve", "--data-dir", str(tmp_path / "d"), "--grpc-port", str(port), "--api-port", "0",
                     "--no-http", "--budgets", str(bad)])
    _, err = capsys.readouterr()
    assert code == 1
    assert "budgets.toml" in err and "amount" in err
    with socket.socket() as sock:  # nothing was left listening
        sock.bind(("127.0.0.1", port))


def test_report_groups_by_conversation_and_trace_and_filters_on_them(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    write_day(tmp_path, [
        rec(1, at("2025-03-05"), conversation_id="chat-1", service="web"),
        rec(2, at("2025-03-05"), conversation_id="chat-1", service="web", trace_id=f"{1:032x}"),  # one run, 2 calls
        rec(3, at("2025-03-05"), conversation_id="chat-2", service="worker"),
    ])
    code, out, _ = run(capsys, *REPORT, "--data-dir", str(tmp_path), "--group-by", "conversation",
                       "--format", "json")
    assert code == 0
    assert {r["conversation"]: r["request_count"] for r in json.loads(out)["results"]} == {"chat-1": 2, "chat-2": 1}
    code, out, _ = run(capsys, *REPORT, "--data-dir", str(tmp_path), "--group-by", "trace", "--service", "web",
                       "--format", "json")
    assert code == 0
    assert [(r["trace"], r["request_count"]) for r in json.loads(out)["results"]] == [(f"{1:032x}", 2)]
    code, out, _ = run(capsys, "requests", "--start-date", "2025-03-01", "--end-date", "2025-03-31",
                       "--data-dir", str(tmp_path), "--conversation-id", "chat-2", "--format", "json")
    assert code == 0
    assert [r["span_id"] for r in json.loads(out)["results"]] == [f"{3:016x}"]
    code, _, err = run(capsys, *REPORT, "--data-dir", str(tmp_path), "--trace-id", "not-a-trace")
    assert code == 2 and "trace_id must be 32 hexadecimal characters" in err
