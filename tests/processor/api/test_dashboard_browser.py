"""The dashboard as a person uses it: a real headless Chromium (Debian's, /usr/bin/chromium; ``make chromium``
installs it) driven by Playwright against a real ``ReportServer`` on loopback over real Parquet days.

Every figure is checked against the API's own answer for the same question (one source of truth), never against
numbers worked out here; nothing depends on pixels. The run leaves ``build/screenshots/dashboard.png``,
``dashboard-drilldown.png`` and ``dashboard-metrics.json`` (page weight, time to first render) for people to look at.
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
from tokentrail.processor.api.http import ReportServer
from tokentrail.processor.reports.budgets import budgets_from_dict
from tokentrail.processor.reports.revenue import revenue_from_dict
from tokentrail.processor.schema import PRICED, UNPRICED, UsageRecord

from tests.helpers.reports import rec, write

CHROMIUM = Path("/usr/bin/chromium")
# As root on a closed network: no sandbox (root), and none of the background fetches a fresh profile would try.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-quic"]
ROOT = Path(__file__).resolve().parents[3]
SCREENSHOTS = ROOT / "build" / "screenshots"
TRACE_URL = "https://tempo.example/trace/{trace_id}"
TOKEN = "dash-s3cret"
TIMEOUT_MS = 20_000
METRICS = ("total_cost", "market_cost", "request_count", "input_tokens", "output_tokens", "unpriced_request_count")
MODELS = [  # (provider, model, price per call); None: a model no catalog knows
    ("openai", "gpt-4o-mini", Decimal("0.000184500001")),
    ("openai", "gpt-4o", Decimal("0.0123456789")),
    ("anthropic", "claude-haiku-4-5", Decimal("0.004000000007")),
    ("anthropic", "claude-sonnet-4-5", Decimal("0.031234567891")),
    ("openai", "mystery-model", None),
]
USERS = [("cust_acme", "pro"), ("cust_globex", "free"), ("cust_initech", "pro"), (None, None)]


def _today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _records() -> list[UsageRecord]:
    """Ten recent days (inside the default last 30 days) and one 40 days back (outside it): several models,
    providers, users, plans, services, BYOK calls, one unpriced model, costs with every digit."""
    rng = random.Random(14)
    records: list[UsageRecord] = []
    for days_back in [*range(10), 40]:
        for _ in range(6 if days_back else 3):
            provider, model, price = rng.choice(MODELS)
            user, plan = rng.choice(USERS)
            hour = rng.randrange(24) if days_back else 0  # today: nothing after now
            byok = user == "cust_acme" and rng.random() < 0.5
            tags = [f"plan:{plan}", rng.choice(["feature:chat", "feature:search"])] if plan else []
            records.append(rec(
                (_today() - timedelta(days=days_back, hours=-hour, minutes=-rng.randrange(60))).isoformat()[:19],
                provider=provider, model=model, user_id=user, tags=tags,
                credential_type="byok" if byok else "system",
                service=rng.choice(["chat-api", "search-api"]), environment="prod",
                input_tokens=rng.randrange(100, 5000), output_tokens=rng.randrange(10, 800),
                total_cost=None if price is None else Decimal(0) if byok else price,
                market_cost=price, price_status=UNPRICED if price is None else PRICED,
                duration_ms=float(rng.randrange(200, 4000)), streamed=rng.random() < 0.5,
                conversation_id=rng.choice(["conv_a", "conv_b", "conv_c", None]),
                trace_id=f"{rng.randrange(12):032x}",  # agent runs of several calls
            ))
    return records


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dashboard")
    write(path, _records())
    return path


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[ReportServer]:
    with ReportServer(data_dir, port=0, trace_url=TRACE_URL) as srv:
        yield srv


@pytest.fixture(scope="module")
def token_server(data_dir: Path) -> Iterator[ReportServer]:
    budgets = budgets_from_dict({"budgets": [{"name": "all", "scope": "total", "amount": 1, "period": "monthly"}]})
    revenue = revenue_from_dict({"plans": {"pro": {"monthly": 30}, "free": {"monthly": 0}}})
    with ReportServer(data_dir, port=0, token=TOKEN, budgets=budgets, revenue=revenue) as srv:
        yield srv


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make chromium` (Debian's chromium package)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (its own session storage); any console error or uncaught exception (a CSP violation, a bug in
    the script) fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    # A 401 or an unconfigured 404 is logged by the browser as a failed load: answers, not problems.
    tab.on("console", lambda m: problems.append(m.text)
           if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    yield tab
    context.close()
    assert problems == []


def api(server: ReportServer, path: str, params: dict[str, str], token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"{server.url}{path}?{urlencode(params)}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def api_rows(server: ReportServer, params: dict[str, str], token: str | None = None) -> list[dict[str, str]]:
    """The report's rows with every number as the digits the API wrote (what the page must show as data-value)."""
    status, body = api(server, "/v1/report", params, token)
    assert status == 200, body
    rows: list[dict[str, str]] = json.loads(body, parse_float=str, parse_int=str)["results"]
    return rows


def default_range() -> dict[str, str]:
    end = _today().date()
    return {"start_date": (end - timedelta(days=29)).isoformat(), "end_date": end.isoformat()}


def wait_ready(page: Page) -> None:
    expect(page.locator("body")).to_have_attribute("data-state", "ready")


def expect_headline(page: Page, server: ReportServer, params: dict[str, str], token: str | None = None) -> None:
    """Every headline figure's data-value is the API's exact value for the same range and filters."""
    (total,) = api_rows(server, {**params, "group_by": "none"}, token)
    for metric in METRICS:
        expect(page.locator(f'[data-metric="{metric}"]')).to_have_attribute("data-value", total[metric])
    byok = [r for r in api_rows(server, {**params, "group_by": "credential_type"}, token)
            if r["credential_type"] == "byok"]
    expected = byok[0] if byok else {"request_count": "0", "market_cost": "0"}
    expect(page.locator('[data-metric="byok_request_count"]')).to_have_attribute("data-value",
                                                                                 expected["request_count"])
    expect(page.locator('[data-metric="byok_market_cost"]')).to_have_attribute("data-value", expected["market_cost"])


def query_of(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def test_first_load_shows_the_apis_figures_and_a_chart_with_data(page: Page, server: ReportServer) -> None:
    sizes: list[tuple[str, int]] = []
    page.on("requestfinished", lambda r: sizes.append((r.url, _transferred(r))))
    page.goto(server.url + "/")
    wait_ready(page)
    page.wait_for_load_state("networkidle")
    first_load = list(sizes)  # the shell, its assets and the data requests of one first visit
    first_render_ms = int(page.locator("body").get_attribute("data-first-render-ms") or -1)
    expect_headline(page, server, default_range())
    assert page.locator('[data-metric="total_cost"] .big').inner_text().startswith("$")
    unpriced = int(page.locator('[data-metric="unpriced_request_count"]').get_attribute("data-value") or 0)
    assert unpriced > 0  # the mystery model: counted, and linked to where and why
    page.click("#unpriced-link")
    expect(page.locator('th[aria-sort="descending"] [data-sort="unpriced_request_count"]')).to_be_visible()
    expect(page.locator("#unpriced-note")).to_be_visible()
    wait_ready(page)
    first = page.locator('table[data-table="top"] tbody tr').first
    assert first.get_attribute("data-key") == "mystery-model"

    chart = page.locator('svg[data-chart="cost-over-time"]')
    bars = chart.locator("rect")
    assert bars.count() > 0
    boxes = [bars.nth(i).bounding_box() for i in range(bars.count())]
    assert all(box is not None and box["width"] > 0 and box["height"] > 0 for box in boxes)
    legend = page.locator("#legend li").all_inner_texts()
    assert "gpt-4o" in legend and "claude-sonnet-4-5" in legend and "mystery-model" not in legend  # no cost, no bar

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(server.url + "/")
    wait_ready(page)
    page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)
    shell = sum(size for url, size in first_load if "/v1/" not in url)
    everything = sum(size for _, size in first_load)
    (SCREENSHOTS / "dashboard-metrics.json").write_text(json.dumps({
        "page_and_assets_kb": round(shell / 1024, 1),
        "first_load_kb_with_data": round(everything / 1024, 1),
        "first_render_ms": first_render_ms,
        "requests": len(first_load),
    }, indent=1) + "\n")
    assert {urlsplit(url).path for url, _ in first_load} >= {"/", "/assets/app.js", "/assets/app.css"}
    assert all(urlsplit(url).netloc == urlsplit(server.url).netloc for url, _ in sizes)  # nothing from elsewhere
    assert shell < 100 * 1024  # small: a few files of our own, no framework


def _transferred(request: Any) -> int:
    sizes = request.sizes()
    return int(sizes["responseBodySize"]) + int(sizes["responseHeadersSize"])


def test_filters_range_and_view_change_the_figures_and_the_url(page: Page, server: ReportServer) -> None:
    page.goto(server.url + "/")
    wait_ready(page)
    before = page.locator('[data-metric="total_cost"]').get_attribute("data-value")
    page.fill('input[name="model"]', "gpt-4o")
    page.select_option('select[name="credential_type"]', "system")  # submits, as every select does
    wait_ready(page)
    assert query_of(page)["model"] == ["gpt-4o"] and query_of(page)["credential_type"] == ["system"]
    filtered = {**default_range(), "model": "gpt-4o", "credential_type": "system"}
    expect_headline(page, server, filtered)
    assert page.locator('[data-metric="total_cost"]').get_attribute("data-value") != before

    start = (_today() - timedelta(days=45)).date().isoformat()
    page.fill('input[name="start_date"]', start)
    page.click('#f button[type="submit"]')
    wait_ready(page)
    assert query_of(page)["start_date"] == [start]
    expect_headline(page, server, {**filtered, "start_date": start})  # the day 40 back now counts

    page.select_option('select[name="stack"]', "provider")
    wait_ready(page)
    page.select_option('select[name="bucket"]', "week")
    wait_ready(page)
    assert query_of(page)["stack"] == ["provider"] and query_of(page)["bucket"] == ["week"]
    assert page.locator("#legend li").all_inner_texts() == ["openai"]
    assert page.locator('svg[data-chart] rect').count() >= 2  # two weeks at least: 40 days back, and recent

    shared = page.url  # the link a person would paste: a new tab opens the same view
    page.go_back()
    wait_ready(page)
    assert "stack" in query_of(page) and "bucket" not in query_of(page)
    page.goto(shared)
    wait_ready(page)
    assert page.locator('select[name="stack"]').input_value() == "provider"
    assert page.locator('input[name="model"]').input_value() == "gpt-4o"
    expect_headline(page, server, {**filtered, "start_date": start})


def test_the_table_sorts_and_its_csv_is_the_apis(page: Page, server: ReportServer, tmp_path: Path) -> None:
    page.goto(server.url + "/?table=user")
    wait_ready(page)
    page.click('[data-sort="request_count"]')
    wait_ready(page)
    assert query_of(page)["sort"] == ["request_count:desc"]
    expected = api_rows(server, {**default_range(), "group_by": "user", "order_by": "request_count:desc",
                                 "limit": "10"})
    keys = page.locator('table[data-table="top"] tbody tr').evaluate_all("rows => rows.map(r => r.dataset.key)")
    assert keys == [r["user"] if r["user"] is not None else "(none)" for r in expected]

    href = page.locator("#csv").get_attribute("href") or ""
    with page.expect_download() as download:
        page.click("#csv")
    saved = tmp_path / "report.csv"
    download.value.save_as(saved)
    params = {k: v[0] for k, v in parse_qs(urlsplit(href).query).items()}
    assert params["group_by"] == "user" and params["format"] == "csv"
    status, csv = api(server, "/v1/report", params)
    assert status == 200 and saved.read_text() == csv and csv.count("\n") == len(expected) + 1


def test_a_row_drills_down_to_its_calls_and_a_call_to_its_trace(page: Page, server: ReportServer) -> None:
    """Needs ``GET /v1/requests`` (issue 14, item 2)."""
    page.goto(server.url + "/")
    wait_ready(page)
    page.click('button[data-drill="model:claude-haiku-4-5"]')
    wait_ready(page)
    assert query_of(page)["drill"] == ["model:claude-haiku-4-5"]
    calls = page.locator('table[data-table="calls"] tbody tr')
    (row,) = api_rows(server, {**default_range(), "group_by": "none", "model": "claude-haiku-4-5"})
    expect(calls).to_have_count(int(row["request_count"]))
    models = calls.evaluate_all("rows => rows.map(r => r.cells[2].textContent)")
    assert set(models) == {"claude-haiku-4-5"}
    link = calls.first.locator("a[data-trace]")
    trace_id = link.get_attribute("data-trace") or ""
    assert len(trace_id) == 32 and link.get_attribute("href") == TRACE_URL.replace("{trace_id}", trace_id)
    page.screenshot(path=str(SCREENSHOTS / "dashboard-drilldown.png"), full_page=True)


def test_cost_per_conversation_and_per_agent_run_drill_down_to_their_calls(page: Page, server: ReportServer) -> None:
    """Issue 14, item 3: conversation and trace rows are the API's, each drills down to exactly its calls, and a
    trace row links to the tracing backend."""
    page.goto(server.url + "/?table=conversation&n=100")
    wait_ready(page)
    rows = page.locator('table[data-table="top"] tbody tr')
    expected = api_rows(server, {**default_range(), "group_by": "conversation", "order_by": "total_cost",
                                 "limit": "100"})
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.key)") == [
        r["conversation"] if r["conversation"] is not None else "(none)" for r in expected
    ]
    page.click('button[data-drill="conversation:conv_b"]')
    wait_ready(page)
    (row,) = api_rows(server, {**default_range(), "group_by": "none", "conversation_id": "conv_b"})
    expect(page.locator('table[data-table="calls"] tbody tr')).to_have_count(int(row["request_count"]))

    page.goto(server.url + "/?table=trace&n=100")
    wait_ready(page)
    (top,) = api_rows(server, {**default_range(), "group_by": "trace", "order_by": "total_cost", "limit": "1"})
    first = page.locator('table[data-table="top"] tbody tr').first
    expect(first.locator("a[data-trace]")).to_have_attribute("href", TRACE_URL.replace("{trace_id}", top["trace"]))
    first.locator("button[data-drill]").click()
    wait_ready(page)
    (row,) = api_rows(server, {**default_range(), "group_by": "none", "trace_id": top["trace"]})
    calls = page.locator('table[data-table="calls"] tbody tr')
    expect(calls).to_have_count(int(row["request_count"]))
    traces = calls.evaluate_all("rows => rows.map(r => r.querySelector('a[data-trace]').dataset.trace)")
    assert set(traces) == {top["trace"]}


def test_a_service_row_drills_down_and_a_more_filter_in_the_url_is_shown_and_applied(
    page: Page, server: ReportServer
) -> None:
    page.goto(server.url + "/?table=service")
    wait_ready(page)
    page.click('button[data-drill="service:search-api"]')
    wait_ready(page)
    (row,) = api_rows(server, {**default_range(), "group_by": "none", "service": "search-api"})
    calls = page.locator('table[data-table="calls"] tbody tr')
    expect(calls).to_have_count(int(row["request_count"]))
    assert set(calls.evaluate_all("rows => rows.map(r => r.cells[1].textContent)")) == {"search-api"}

    page.goto(server.url + "/?conversation_id=conv_a")
    wait_ready(page)
    expect(page.locator("#more-filters")).to_have_attribute("open", "")  # a filter in force is never hidden
    expect(page.locator('input[name="conversation_id"]')).to_have_value("conv_a")
    expect_headline(page, server, {**default_range(), "conversation_id": "conv_a"})


def test_with_a_token_the_page_asks_for_it_and_the_data_stays_behind_it(page: Page, token_server: ReportServer,
                                                                       tmp_path: Path) -> None:
    assert api(token_server, "/v1/report", {**default_range(), "group_by": "none"})[0] == 401
    assert api(token_server, "/v1/budgets", {})[0] == 401
    for path in ("/", "/assets/app.js", "/assets/app.css"):  # no data in them: open
        with urllib.request.urlopen(token_server.url + path, timeout=10) as response:
            assert response.status == 200
    page.goto(token_server.url + "/")
    expect(page.locator("body")).to_have_attribute("data-state", "token")
    expect(page.locator("#token-form")).to_be_visible()
    expect(page.locator("#data")).to_be_hidden()

    page.fill('#token-form input[name="token"]', "wrong")
    page.click('#token-form button[type="submit"]')
    expect(page.locator("#token-error")).to_contain_text("refused")
    page.fill('#token-form input[name="token"]', TOKEN)
    page.click('#token-form button[type="submit"]')
    wait_ready(page)
    expect_headline(page, token_server, default_range(), TOKEN)
    expect(page.locator("#budgets table")).to_be_visible()  # configured here: spend against the amount
    expect(page.locator("#margins table")).to_be_visible()

    with page.expect_download() as download:  # the CSV link carries the token (a Blob of an authorized fetch)
        page.click("#csv")
    saved = tmp_path / "report.csv"
    download.value.save_as(saved)
    href = page.locator("#csv").get_attribute("href") or ""
    params = {k: v[0] for k, v in parse_qs(urlsplit(href).query).items()}
    assert saved.read_text() == api(token_server, "/v1/report", params, TOKEN)[1]

    page.reload()  # the same tab keeps it (session storage)
    wait_ready(page)


def test_budgets_and_margins_say_not_configured_without_their_files(page: Page, server: ReportServer) -> None:
    page.goto(server.url + "/")
    wait_ready(page)
    for section in ("#budgets", "#margins"):
        expect(page.locator(f'{section} [data-empty="not-configured"]')).to_be_visible()
    expect(page.locator("#spikes .content")).not_to_be_empty()
