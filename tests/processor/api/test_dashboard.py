"""The dashboard's HTTP side on a real ``ReportServer``: the shell and assets are served by us with a strict CSP and
no inline code, hold no data (open without the token, while the data stays 401), ship in the wheel, and a bad
``--trace-url`` stops the start. The page itself is driven in Chromium by ``test_dashboard_browser.py``."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import pytest
from tokentrail.processor.api.dashboard import ASSETS, TraceUrlError, check_trace_url
from tokentrail.processor.api.http import ReportServer

from tests.helpers.reports import rec, write

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD_DIR = ROOT / "processor" / "api" / "dashboard"
TOKENTRAIL = (sys.executable, "-m", "tokentrail.processor.cli.main")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write(tmp_path, [rec("2025-03-05T08:00:00", user_id="alice")])
    return tmp_path


@pytest.fixture
def server(data_dir: Path) -> Iterator[ReportServer]:
    with ReportServer(data_dir, port=0, token="s3cret", trace_url="https://tempo.example/trace/{trace_id}") as srv:
        yield srv


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data


def test_the_shell_is_served_at_the_root_with_a_strict_csp_and_no_inline_code(server: ReportServer) -> None:
    status, headers, body = fetch(server.url + "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"].startswith("default-src 'self';")
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
    page = _Tags()
    page.feed(body.decode())
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts == [{"src": "/assets/app.js", "defer": None}] and page.script_text.strip() == ""
    every_attribute = [name for _, attrs in page.tags for name in attrs]
    assert not [n for n in every_attribute if n.startswith("on") or n == "style"]  # the CSP would refuse them
    loaded = {attrs.get("src") or attrs.get("href") for tag, attrs in page.tags if tag in ("script", "link", "img")}
    assert loaded == {"/assets/app.js", "/assets/app.css", "/assets/icon.svg"}  # ours, nothing from elsewhere
    (body_attrs,) = [attrs for tag, attrs in page.tags if tag == "body"]
    assert body_attrs["data-token-required"] == "true"
    assert body_attrs["data-trace-url"] == "https://tempo.example/trace/{trace_id}"


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_every_asset_is_served_with_its_type_and_without_the_token(server: ReportServer, name: str) -> None:
    status, headers, body = fetch(f"{server.url}/assets/{name}")
    assert status == 200 and headers["content-type"] == ASSETS[name]
    assert body == (DASHBOARD_DIR / name).read_bytes()
    assert "default-src 'self'" in headers["content-security-policy"]


@pytest.mark.parametrize("name", ["", *sorted(ASSETS)])
def test_a_client_that_accepts_gzip_gets_every_file_gzipped_and_one_that_does_not_gets_it_plain(
    server: ReportServer, name: str
) -> None:
    url = f"{server.url}/assets/{name}" if name else server.url + "/"
    _, plain_headers, plain = fetch(url, {"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain_headers and plain_headers["vary"] == "Accept-Encoding"
    status, headers, body = fetch(url, {"Accept-Encoding": "gzip, deflate, br, zstd"})  # as Chromium asks
    assert status == 200 and headers["content-encoding"] == "gzip" and headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(body) == plain
    assert "default-src 'self'" in headers["content-security-policy"]
    if name in ("app.js", "app.css"):
        assert len(body) < len(plain) / 2
    assert "content-encoding" not in fetch(url, {"Accept-Encoding": "gzip;q=0, identity"})[1]


def test_an_unknown_asset_is_the_apis_404(server: ReportServer) -> None:
    status, _, body = fetch(server.url + "/assets/../http.py")
    assert status == 404 and b"not_found_error" in body
    assert fetch(server.url + "/assets/secret.js")[0] == 404


def test_the_data_stays_behind_the_token_while_the_page_is_open(server: ReportServer) -> None:
    query = "/v1/report?start_date=2025-03-01&end_date=2025-03-31&group_by=none"
    assert fetch(server.url + "/")[0] == 200
    assert fetch(server.url + query)[0] == 401
    status, _, body = fetch(server.url + query, {"Authorization": "Bearer s3cret"})
    assert status == 200 and b'"request_count": 1' in body


def test_the_root_answers_only_names_of_this_server(server: ReportServer) -> None:
    assert fetch(server.url + "/", {"Host": "evil.example"})[0] == 421  # DNS rebinding cannot read the page


def test_the_trace_url_is_escaped_into_the_shell(data_dir: Path) -> None:
    template = 'https://grafana.example/explore?left={"query":"{trace_id}"}&x=<b>'
    with ReportServer(data_dir, port=0, trace_url=template) as srv:
        _, _, body = fetch(srv.url + "/")
    text = body.decode()
    assert "<b>" not in text and 'data-token-required="false"' in text
    page = _Tags()
    page.feed(text)
    (body_attrs,) = [attrs for tag, attrs in page.tags if tag == "body"]
    assert body_attrs["data-trace-url"] == template


@pytest.mark.parametrize(("template", "problem"), [
    ("https://tempo.example/trace/", "must contain {trace_id}"),
    ("javascript:alert('{trace_id}')", "http:// or https://"),
    ("/trace/{trace_id}", "http:// or https://"),
    ("ftp://x.example/{trace_id}", "http:// or https://"),
])
def test_a_trace_url_that_cannot_link_a_trace_is_refused(template: str, problem: str, data_dir: Path) -> None:
    with pytest.raises(TraceUrlError, match=re.escape(problem)):
        check_trace_url(template)
    with pytest.raises(ValueError, match=re.escape(problem)):
        ReportServer(data_dir, port=0, trace_url=template)


def test_a_trace_url_with_other_braces_is_kept_as_written() -> None:
    template = ' https://grafana.example/explore?left={"queries":[{"query":"{trace_id}"}]} '
    assert check_trace_url(template) == template.strip()


@pytest.mark.parametrize("how", ["option", "variable"])
def test_serve_refuses_a_bad_trace_url_before_listening(tmp_path: Path, how: str) -> None:
    argv = [*TOKENTRAIL, "serve", "--data-dir", str(tmp_path / "data"), "--grpc-port", "0", "--http-port", "0",
            "--api-port", "0"]
    env = {**os.environ, "TOKENTRAIL_TRACE_URL": "https://tempo.example/trace"} if how == "variable" else None
    if how == "option":
        argv += ["--trace-url", "https://tempo.example/trace"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tokentrail serve: --trace-url must contain {trace_id} where the trace id goes, got "
        "'https://tempo.example/trace'"
    ]


def test_pyproject_ships_every_dashboard_file() -> None:
    """``pip install .`` must carry the page: every file beside the module matches the package data globs."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = config["package-data"]["tokentrail.processor.api.dashboard"]
    files = [p.name for p in DASHBOARD_DIR.iterdir() if p.is_file() and p.suffix != ".py"]
    assert {"index.html", *ASSETS} <= set(files)
    assert all(any(fnmatch(name, glob) for glob in globs) for name in files)


def test_the_demo_prints_the_dashboard_url(tmp_path: Path) -> None:
    result = subprocess.run([*TOKENTRAIL, "demo", "--data-dir", str(tmp_path / "demo"), "--calls", "1"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "dashboard" in line]
    assert re.fullmatch(r"  and open the dashboard: http://127\.0\.0\.1:8787/\?start_date=(\d{4}-\d\d-\d\d)"
                        r"&end_date=\1&bucket=hour", line), line
