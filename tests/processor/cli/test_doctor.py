"""``tokentrail doctor``: each check's status and its fix, on real Parquet datasets (written as the receiver lays them
out), a real receiver on loopback (real gRPC, its real status file), real DuckDB and the real price catalog.

The command is run through a parser built the way ``cli.main`` builds its own (``register`` on a subparsers action),
so these tests do not depend on ``main.COMMANDS`` listing it."""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tokentrail.processor import environment
from tokentrail.processor.cli import doctor as doctor_command
from tokentrail.processor.ingest.receiver import Receiver
from tokentrail.processor.ingest.status import status_path, write_status
from tokentrail.processor.pricing.catalog import PRICE_VERSION
from tokentrail.processor.schema import NO_USAGE, UNPRICED, UsageRecord

from tests.helpers.otlp import export, genai_attributes, make_request, make_span
from tests.helpers.reports import rec, write

NOW = datetime.now(UTC)  # records are dated relative to the real clock: the doctor judges against it


@pytest.fixture(autouse=True)
def no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(environment.PRICING, raising=False)


def doctor(capsys: pytest.CaptureFixture[str], data_dir: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    """Runs ``tokentrail doctor --format json``; returns the exit code and the checks by name."""
    code, out = doctor_text(capsys, data_dir, "--format", "json", *argv)
    body = json.loads(out)
    checks = {c["name"]: c for c in body["checks"]}
    assert code == (1 if body["status"] == "FAIL" else 0)  # the exit code says whether any check failed
    return code, checks


def doctor_text(capsys: pytest.CaptureFixture[str], data_dir: Path, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="tokentrail")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    doctor_command.register(commands, Path("unused-default"))
    args = parser.parse_args(["doctor", "--data-dir", str(data_dir), *argv])
    code = int(args.handler(args))
    return code, capsys.readouterr().out


def at(delta: timedelta, **fields: Any) -> UsageRecord:
    """A priced record (helper defaults: $1 total, $2 market) dated ``NOW + delta``."""
    return rec("2000-01-01T00:00:00", timestamp=NOW + delta, **fields)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- no dataset ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_a_data_dir_without_a_dataset_fails_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str
) -> None:
    data_dir = tmp_path / "data"
    if make == "empty":
        data_dir.mkdir()
    elif make == "file":
        data_dir.write_text("not a data dir")
    code, checks = doctor(capsys, data_dir)
    assert code == 1
    assert checks["dataset"]["status"] == "FAIL"
    assert str(data_dir) in checks["dataset"]["summary"] and "usage/" in checks["dataset"]["summary"]
    assert "--data-dir" in checks["dataset"]["fix"]
    assert checks["receiver"]["status"] == "FAIL" and "no receiver has run" in checks["receiver"]["summary"]
    assert (checks["disk"]["status"] == "SKIP") == (make != "empty")  # an empty directory's filesystem is checked
    for name in ("services", "unpriced", "no_usage", "byok", "clock"):
        assert checks[name]["status"] == "SKIP", name
    code, text = doctor_text(capsys, data_dir)
    assert code == 1
    assert any(line.startswith("FAIL  dataset") for line in text.splitlines())
    assert "fix: point --data-dir" in text


# -- a working deployment --------------------------------------------------------------------------------------------


def _status_of(data_dir: Path, receiver_id: str) -> dict[str, Any]:
    try:
        return dict(json.loads(status_path(data_dir, receiver_id).read_text()))
    except (OSError, ValueError):
        return {}


def test_a_working_deployment_is_ok_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now_ns = int(NOW.timestamp() * 1e9) - 60 * 10**9
    spans = [make_span(genai_attributes(), trace_id=os.urandom(16), span_id=os.urandom(8), start_ns=now_ns)
             for _ in range(3)]
    with Receiver(tmp_path, grpc_port=0, receiver_id="doc-r1", flush_interval=0.05, status_interval=0) as receiver:
        response = export(receiver.grpc_port, make_request(spans))  # real OTLP/gRPC
        assert not response.partial_success.rejected_spans
        receiver.flush()
        deadline = time.monotonic() + 30  # the flusher writes the status file after its next round
        while _status_of(tmp_path, "doc-r1").get("metrics", {}).get("spans_received") != 3:
            assert time.monotonic() < deadline, _status_of(tmp_path, "doc-r1")
            time.sleep(0.02)
        code, checks = doctor(capsys, tmp_path, "--min-free-percent", "0", "--catalog-max-age-days", "36500")
    assert {name: c["status"] for name, c in checks.items()} == dict.fromkeys(checks, "OK"), checks
    assert code == 0
    assert "doc-r1 on 127.0.0.1:" in checks["receiver"]["summary"]
    assert "3 span(s) received" in checks["receiver"]["summary"]
    assert checks["services"]["summary"] == "checkout 3 call(s) in the last 24 h"
    assert checks["unpriced"]["summary"] == "0 of 3 call(s) unpriced (0.0%) in the last 24 h"
    assert checks["catalog"]["details"]["price_version"] == PRICE_VERSION  # what the receiver stamped
    assert checks["catalog"]["summary"].startswith(f"{PRICE_VERSION} bundled catalog, newest price dated ")


def test_a_stopped_receiver_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Receiver(tmp_path, grpc_port=0, receiver_id="doc-gone", flush_interval=3600):
        pass  # stopping writes its last status: running false
    code, checks = doctor(capsys, tmp_path)
    assert code == 1
    receiver = checks["receiver"]
    assert receiver["status"] == "FAIL"
    assert "no receiver running: doc-gone stopped (newest status " in receiver["summary"]
    assert f"start `tokentrail serve --data-dir {tmp_path}`" in receiver["fix"]


def test_a_receiver_that_does_not_answer_or_receive_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, [at(-timedelta(hours=1))])
    port = _free_port()  # nothing listens on it any more
    details = {"receiver_id": "doc-deaf", "pid": os.getpid(), "host": "0.0.0.0", "grpc_port": port,
               "http_port": None, "running": True, "started_at": time.time(), "max_disk_bytes": None,
               "tls": False, "auth": True}
    write_status(status_path(tmp_path, "doc-deaf"), details, {"spans_received": 0, "requests_unauthenticated": 4})
    code, checks = doctor(capsys, tmp_path, "--min-free-percent", "0", "--catalog-max-age-days", "36500")
    receiver = checks["receiver"]
    assert receiver["status"] == "WARN"
    assert code == 0  # a warning is not a failure
    assert f"cannot connect to gRPC 0.0.0.0:{port} from here" in receiver["summary"]
    assert "has received no span since it started" in receiver["summary"]
    assert "refused 4 request(s) without the right token" in receiver["summary"]
    assert f"at 0.0.0.0:{port}" in receiver["fix"] and environment.INGEST_TOKEN in receiver["fix"]
    _, checks = doctor(capsys, tmp_path, "--no-connect")
    assert "cannot connect" not in checks["receiver"]["summary"]
    write_status(status_path(tmp_path, "doc-deaf"), details, {"spans_received": 0, "log_records_ignored": 7})
    _, checks = doctor(capsys, tmp_path, "--no-connect")
    assert "has received metrics or logs (7) but no span since it started" in checks["receiver"]["summary"]
    assert "send traces to 0.0.0.0:" in checks["receiver"]["fix"]


# -- what the dataset says -------------------------------------------------------------------------------------------


def _troubled_dataset(data_dir: Path) -> None:
    """50 calls in the last 24 h: 10 system, 30 BYOK, 6 unpriced, 4 streamed Chat Completions without usage; plus a
    service that stopped 3 days ago and one whose clock is 2 hours ahead. Priced with a catalog fetched in 2020."""
    old_catalog = f"{PRICE_VERSION} catalog=2020-01-01T00:00:00"
    hour = -timedelta(hours=1)
    records = [at(hour, service="checkout", price_version=old_catalog) for _ in range(10)]
    records += [at(hour, service="checkout", credential_type="byok", total_cost=Decimal(0), price_version=old_catalog)
                for _ in range(30)]
    unpriced = {"total_cost": None, "market_cost": None, "price_status": UNPRICED}
    records += [at(hour, service="checkout", provider="acme", model="acme-llm-9", **unpriced) for _ in range(5)]
    records += [at(hour, service="checkout", provider="openai", model="gpt-4o", **unpriced)]  # priceable now
    records += [at(hour, service="chat", api="chat.completions", streamed=True, total_cost=None, market_cost=None,
                   price_status=NO_USAGE) for _ in range(4)]
    records += [at(-timedelta(days=3), service="legacy", price_version=old_catalog) for _ in range(3)]
    records += [at(timedelta(hours=2), service="clock-ahead", price_version=old_catalog) for _ in range(2)]
    write(data_dir, records)


def test_each_problem_is_named_with_its_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _troubled_dataset(tmp_path)
    code, checks = doctor(capsys, tmp_path, "--min-free-percent", "0")
    status = {name: c["status"] for name, c in checks.items()}
    assert status == {"dataset": "OK", "receiver": "FAIL", "services": "WARN", "unpriced": "WARN",
                      "no_usage": "WARN", "byok": "WARN", "clock": "WARN", "disk": "OK", "catalog": "WARN"}
    assert code == 1  # the receiver never ran here

    services = checks["services"]
    assert services["summary"].startswith("chat 4, checkout 46 call(s) in the last 24 h; stopped: legacy (last call ")
    assert "3 days ago" in services["summary"] and "OTEL_EXPORTER_OTLP_ENDPOINT" in services["fix"]
    assert "clock-ahead" not in services["summary"]  # its calls are in the future, not in the window

    unpriced = checks["unpriced"]
    assert unpriced["summary"] == (
        "6 of 50 call(s) unpriced (12.0%) in the last 24 h: acme/acme-llm-9 5, openai/gpt-4o 1"
    )
    assert "the price catalog has no model 'acme-llm-9' for provider 'acme'" in unpriced["fix"]
    for advice in ("[aliases.<provider>]", environment.PRICING, "model_names.toml",
                   "`tokentrail prices explain --provider acme --model acme-llm-9`", "tokentrail reprice"):
        assert advice in unpriced["fix"], advice
    reasons = {(p["provider"], p["model"]): p["reason"] for p in unpriced["details"]["pairs"]}
    assert reasons[("openai", "gpt-4o")].startswith("priced by the catalog and overrides here now")

    no_usage = checks["no_usage"]
    assert no_usage["summary"] == (
        "4 of 50 call(s) without usage (8.0%) in the last 24 h, 4 of them Chat Completions streams"
    )
    assert "stream_options.include_usage (chat)" in no_usage["fix"]
    assert "TOKENTRAIL_STREAM_USAGE=inject" in no_usage["fix"]

    byok = checks["byok"]
    assert byok["summary"] == (
        "30 of 50 call(s) on customers' keys (60.0%), $60.00 of $80.00 market cost (75.0%) in the last 24 h"
    )
    assert byok["details"]["byok_market_cost"] == 60 and byok["details"]["market_cost"] == 80
    assert '[byok] total_cost = "list"' in byok["fix"] and "TOKENTRAIL_SYSTEM_KEYS" in byok["fix"]

    clock = checks["clock"]
    assert clock["summary"].startswith("2 call(s) dated in the future, up to ")
    assert clock["summary"].endswith(" ahead): clock-ahead 2") and "NTP" in clock["fix"]

    catalog = checks["catalog"]
    assert catalog["summary"].startswith("the receiver prices with a catalog fetched 2020-01-01 (")
    assert "TOKENTRAIL_PRICES_AUTO_UPDATE" in catalog["fix"] and "--update-catalog" in catalog["fix"]

    code, text = doctor_text(capsys, tmp_path, "--min-free-percent", "0")
    assert code == 1
    lines = text.splitlines()
    for name, word in status.items():
        assert any(line.startswith(f"{word:<5} {name}") for line in lines), (name, text)
    assert lines[-1] == "1 FAIL, 6 WARN, 2 OK"


def test_small_shares_are_ok_but_still_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hour = -timedelta(hours=1)
    write(tmp_path, [at(hour, service="checkout") for _ in range(199)]
          + [at(hour, service="checkout", provider="acme", model="acme-llm-9", total_cost=None, market_cost=None,
                price_status=UNPRICED)])
    _, checks = doctor(capsys, tmp_path)
    assert checks["unpriced"]["status"] == "OK"
    assert checks["unpriced"]["summary"] == "1 of 200 call(s) unpriced (0.5%) in the last 24 h: acme/acme-llm-9 1"
    assert checks["byok"]["status"] == checks["no_usage"]["status"] == checks["clock"]["status"] == "OK"


def test_a_service_without_a_name_and_no_recent_calls_warn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, [at(-timedelta(hours=1), service="unknown_service")])
    _, checks = doctor(capsys, tmp_path)
    assert checks["services"]["status"] == "WARN" and "OTEL_SERVICE_NAME" in checks["services"]["fix"]
    write(tmp_path / "later", [at(-timedelta(days=2), service="checkout")])
    _, checks = doctor(capsys, tmp_path / "later", "--lookback-days", "1")
    assert checks["services"]["status"] == "WARN"
    assert checks["services"]["summary"] == "no LLM call stored in the last 1 days"


def test_disk_headroom_warns_under_the_threshold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, [at(-timedelta(hours=1))])
    _, checks = doctor(capsys, tmp_path, "--min-free-percent", "100")  # no filesystem in use is 100 % free
    assert checks["disk"]["status"] == "WARN"
    assert checks["disk"]["summary"].endswith("under 100%") and "tokentrail compact" in checks["disk"]["fix"]
    _, checks = doctor(capsys, tmp_path, "--min-free-percent", "0")
    assert checks["disk"]["status"] == "OK"


def test_catalog_age_and_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fetched = (NOW - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")
    write(tmp_path, [at(-timedelta(hours=1), price_version=f"{PRICE_VERSION} catalog={fetched}")])
    code, checks = doctor(capsys, tmp_path, "--min-free-percent", "0")
    assert checks["catalog"]["status"] == "OK" and code == 1  # the receiver never ran: FAIL, and only that
    assert checks["catalog"]["summary"] == f"the receiver prices with a catalog fetched {fetched[:10]} (2 day(s) old)"
    _, checks = doctor(capsys, tmp_path, "--catalog-max-age-days", "1")
    assert checks["catalog"]["status"] == "WARN"
    bad = tmp_path / "pricing.toml"
    bad.write_text("[byok]\ntotal_cost = \"sometimes\"\n")
    monkeypatch.setenv(environment.PRICING, str(bad))
    _, checks = doctor(capsys, tmp_path)
    assert checks["catalog"]["status"] == "FAIL"
    assert "sometimes" in checks["catalog"]["summary"] and "tokentrail prices check" in checks["catalog"]["fix"]
    assert checks["unpriced"]["status"] == "OK"  # still counted without the pricer's reasons


def test_a_file_where_the_status_folder_should_be_is_a_receiver_failure_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tokentrail.processor.cli.main import main

    (tmp_path / "usage").mkdir()
    (tmp_path / "status").write_text("not a folder")
    assert main(["doctor", "--data-dir", str(tmp_path), "--no-connect", "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    checks = report["checks"] if isinstance(report, dict) and "checks" in report else report
    (receiver,) = [c for c in checks if c["name"] == "receiver"]
    assert receiver["status"] == "FAIL" and "status" in receiver["summary"]
