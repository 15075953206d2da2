"""Same answers everywhere: the CLI, the HTTP API and the Python API return identical rows for the same question,
tag rows overlap (and the docs say so), and the one-row total is the sum over days."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokentrail.processor.api import openapi
from tokentrail.processor.api.http import ReportServer
from tokentrail.processor.cli import main as cli
from tokentrail.processor.reports import report
from tokentrail.processor.reports.budgets import budgets_from_dict
from tokentrail.processor.reports.formatting import format_csv, report_json
from tokentrail.processor.reports.query import METRICS, ReportQuery
from tokentrail.processor.reports.report import Report, run_report
from tokentrail.processor.reports.revenue import revenue_from_dict
from tokentrail.processor.schema import UNPRICED

from tests.helpers.reports import rec, write

USERS = ("alice", "bob", None)
MODELS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5"), ("openai", "gpt-4.1"))
TAGS = ("plan:pro", "plan:free", "feature:chat", "feature:search")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("same")
    records = []
    start = datetime(2025, 3, 1, tzinfo=UTC)
    for i in range(120):
        provider, model = MODELS[i % 3]
        ts = start + timedelta(hours=7 * i)
        records.append(rec(
            ts.strftime("%Y-%m-%dT%H:%M:%S"),
            user_id=USERS[i % 3],
            provider=provider,
            model=model,
            tags=[TAGS[j] for j in range(4) if (i >> j) & 1],
            credential_type="byok" if i % 5 == 0 else "system",
            total_cost=Decimal(i) / 7 if i % 11 else None,
            market_cost=Decimal(i) / 3 if i % 11 else None,
            price_status=UNPRICED if i % 11 == 0 else "priced",
            cached_input_tokens=i % 4,
            service="web" if i % 2 else "worker",
        ))
    write(root, records)
    return root


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[ReportServer]:
    budgets = budgets_from_dict({"budgets": [{"name": "u", "scope": "user", "value": "each", "amount": 5}]})
    revenue = revenue_from_dict({"plans": {"pro": {"monthly": 20}, "free": {"monthly": 0, "allowance": 1}}})
    with ReportServer(data_dir, port=0, budgets=budgets, revenue=revenue) as srv:
        yield srv


def http(server: ReportServer, path: str, params: dict[str, str], accept: str = "application/json") -> str:
    with urlopen(Request(f"{server.url}{path}?{urlencode(params)}", headers={"Accept": accept}), timeout=10) as r:
        return r.read().decode()


def cli_out(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


PERIOD = {"start_date": "2025-03-01", "end_date": "2025-04-30"}
MATRIX: list[dict[str, str]] = [
    {},
    {"group_by": "none"},
    {"group_by": "user"},
    {"group_by": "model", "date_part": "day"},
    {"group_by": "tag"},
    {"group_by": "tag,user", "date_part": "week"},
    {"group_by": "provider,credential_type", "date_part": "month"},
    {"group_by": "day", "date_part": "hour", "model": "gpt-4.1"},
    {"group_by": "service", "tags": "plan:pro,feature:chat", "tags_match": "all"},
    {"group_by": "user", "tags": "plan:free,feature:search", "credential_type": "system"},
    {"group_by": "user", "order_by": "total_cost", "limit": "2"},
    {"group_by": "model,tag", "order_by": "request_count:asc", "user_id": "alice"},
]


def cli_args(params: dict[str, str]) -> list[str]:
    return [f"--{name.replace('_', '-')}={value}" for name, value in params.items()]


@pytest.mark.parametrize("extra", MATRIX, ids=[urlencode(p) or "default" for p in MATRIX])
def test_cli_http_and_python_return_the_same_rows(
    extra: dict[str, str], data_dir: Path, server: ReportServer, capsys: pytest.CaptureFixture[str]
) -> None:
    params = {**PERIOD, **extra}
    query = ReportQuery.from_params(params)
    python_rows = Report(data_dir).run(query)
    assert python_rows, "every query of the matrix has rows, so the comparison means something"
    body = report_json(python_rows) + "\n"
    assert http(server, "/v1/report", params) == body
    assert cli_out(capsys, "report", "--data-dir", str(data_dir), "--format", "json", *cli_args(params)) == body
    csv_text = format_csv(python_rows, query.columns)
    assert http(server, "/v1/report", params, accept="text/csv") == csv_text
    assert cli_out(capsys, "report", "--data-dir", str(data_dir), "--format", "csv", *cli_args(params)) == csv_text
    keywords: dict[str, Any] = {k: (int(v) if k == "limit" else v) for k, v in params.items()}
    keyword = Report(data_dir).query(**keywords)
    assert keyword == python_rows and keyword.truncated == python_rows.truncated


@pytest.mark.parametrize(("path", "command", "params"), [
    ("/v1/budgets", ["budgets", "--budgets", "{budgets}"], {"as_of": "2025-03-20"}),
    ("/v1/margins", ["margins", "--revenue", "{revenue}"], {"start_date": "2025-03-01", "end_date": "2025-03-31",
                                                            "by": "plan"}),
    ("/v1/margins", ["margins", "--revenue", "{revenue}"], {"start_date": "2025-03-01", "end_date": "2025-03-31",
                                                            "by": "upgrade"}),
    ("/v1/spikes", ["spikes"], {"as_of": "2025-03-20", "include_all": "true", "dimension": "tag"}),
])
def test_budgets_margins_and_spikes_answer_the_same_on_the_cli_and_http(
    path: str, command: list[str], params: dict[str, str], data_dir: Path, server: ReportServer,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budgets]]\nname = "u"\nscope = "user"\nvalue = "each"\namount = 5\n')
    revenue = tmp_path / "revenue.toml"
    revenue.write_text("[plans.pro]\nmonthly = 20\n[plans.free]\nmonthly = 0\nallowance = 1\n")
    argv = [a.format(budgets=budgets, revenue=revenue) for a in command]
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in params.items() if k != "include_all"]
    flags += ["--all"] if params.get("include_all") else []
    out = cli_out(capsys, *argv, "--data-dir", str(data_dir), "--format", "json", *flags)
    assert out == http(server, path, params)
    csv_out = cli_out(capsys, *argv, "--data-dir", str(data_dir), "--format", "csv", *flags)
    assert csv_out == http(server, path, {**params, "format": "csv"})


def test_tag_rows_do_not_add_up_to_the_total(data_dir: Path) -> None:
    (total,) = run_report(data_dir, ReportQuery.from_params({**PERIOD, "group_by": "none"}))
    tags = run_report(data_dir, ReportQuery.from_params({**PERIOD, "group_by": "tag"}))
    tagged_requests = sum(row["request_count"] for row in tags)
    # Requests with several tags count in each; untagged ones in none: the sum is not the total.
    assert tagged_requests != total["request_count"]
    assert tagged_requests > total["request_count"]


def test_the_docs_say_tag_rows_overlap() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    assert "tag rows do not add up to the total" in readme

    assert "tag rows do not add up to the total" in " ".join((report.__doc__ or "").split())
    assert "tag rows do not add up to the total" in str(openapi.openapi_document())


def _sum(values: list[Any]) -> Any:
    """A cost is unknown (None) in a row none of whose requests has a price: the sum over rows is the sum of the
    known ones, unknown only when all are."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _sums(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {metric: _sum([row[metric] for row in rows]) for metric in METRICS}


@pytest.mark.parametrize("filters", [{}, {"user_id": "alice"}, {"tags": "plan:pro"}, {"credential_type": "byok"}])
def test_the_total_is_the_sum_over_days_hours_weeks_and_any_group_but_tag(data_dir: Path, filters: dict) -> None:
    (total,) = run_report(data_dir, ReportQuery.from_params({**PERIOD, **filters, "group_by": "none"}))
    for extra in ({"group_by": "day"}, {"group_by": "day", "date_part": "hour"}, {"date_part": "week"},
                  {"group_by": "user"}, {"group_by": "model,credential_type"}, {"group_by": "service,provider"}):
        rows = run_report(data_dir, ReportQuery.from_params({**PERIOD, **filters, **extra}))
        assert _sums(rows) == {m: total[m] for m in METRICS}, extra


record_strategy = st.fixed_dictionaries({
    "minute": st.integers(0, 3 * 24 * 60 - 1),
    "user": st.sampled_from(USERS),
    "tags": st.lists(st.sampled_from(TAGS), max_size=3),
    "cost": st.one_of(st.none(), st.decimals(min_value=0, max_value=1000, places=12)),
    "byok": st.booleans(),
})


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(record_strategy, min_size=1, max_size=30))
def test_for_any_records_the_total_is_the_sum_of_the_days_and_tags_cover_the_tagged(records: list[dict]) -> None:
    root = Path(tempfile.mkdtemp(prefix="tt-same-"))
    try:
        start = datetime(2025, 3, 1, tzinfo=UTC)
        write(root, [
            rec((start + timedelta(minutes=r["minute"])).strftime("%Y-%m-%dT%H:%M:%S"), user_id=r["user"],
                tags=r["tags"], total_cost=r["cost"], market_cost=r["cost"],
                price_status="priced" if r["cost"] is not None else UNPRICED,
                credential_type="byok" if r["byok"] else "system")
            for r in records
        ])
        period = {"start_date": "2025-03-01", "end_date": "2025-03-03"}
        (total,) = run_report(root, ReportQuery.from_params({**period, "group_by": "none"}))
        days = run_report(root, ReportQuery.from_params({**period, "group_by": "day"}))
        assert _sums(days) == {m: total[m] for m in METRICS}
        assert total["request_count"] == len(records)
        known = [r["cost"] for r in records if r["cost"] is not None]
        assert total["total_cost"] == (sum(known, Decimal(0)) if known else None)  # all unpriced: unknown, not $0
        tags = {row["tag"]: row["request_count"] for row in run_report(root, ReportQuery.from_params(
            {**period, "group_by": "tag"}))}
        expected = {t: sum(1 for r in records if t in r["tags"]) for t in TAGS}
        assert tags == {t: n for t, n in expected.items() if n}
    finally:
        shutil.rmtree(root, ignore_errors=True)
