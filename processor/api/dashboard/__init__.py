"""The dashboard at ``GET /`` of the report API: an HTML shell, our own script and style sheet, nothing else.

It exists so finance and product people can look at TokenTrail without a terminal, and engineers can click from a
cost to the calls behind it. The page holds no data: the shell and its assets are static files shipped as package
data (no build step, no npm, no CDN: it works offline), and the script reads every figure from the same ``/v1/``
endpoints any client uses, so the page and the API cannot disagree. That is also why the shell and assets need no
token: with ``--api-token`` the page asks for it and sends it on every data request, and the data stays behind it.

The shell is rendered once at start with the two facts the script needs before any request: whether a token is
required, and the trace link template (``--trace-url``, which must contain ``{trace_id}`` and be an http(s) URL,
checked here so a bad one stops the server from starting). Every answer carries a strict Content-Security-Policy
(``default-src 'self'``, no inline script or style): a value that slipped into the page could not run.

Each file is also gzipped once at start and sent so to a client that accepts gzip (every browser): about a quarter
of the bytes over a slow VPN link, for no work per request.
"""

from __future__ import annotations

import gzip
import html
from collections.abc import Mapping
from importlib import resources
from typing import Final
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tokentrail.processor.errors import TokenTrailError

__all__ = [
    "ASSETS",
    "accepts_gzip",
    "CONTENT_SECURITY_POLICY",
    "DASHBOARD_PATH",
    "TRACE_ID_PLACEHOLDER",
    "TraceUrlError",
    "check_trace_url",
    "dashboard_routes",
]

DASHBOARD_PATH: Final = "/"
TRACE_ID_PLACEHOLDER: Final = "{trace_id}"
# The files a page loads, by the name it asks for under /assets/, and their media types.
ASSETS: Final[Mapping[str, str]] = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # a trace link must not tell the tracing backend the dashboard's filters
    "Cache-Control": "no-store",
    "Server": "tokentrail",
}
_HTML: Final = "text/html; charset=utf-8"


class TraceUrlError(TokenTrailError, ValueError):
    """A ``--trace-url`` the page could not link with: refused at start, in one line naming the problem."""


def check_trace_url(template: str) -> str:
    """``template`` stripped, if it is an http(s) URL containing ``{trace_id}`` (other braces are kept: a Grafana
    Explore link holds JSON). A ``javascript:`` or relative link, or one that could not name a trace, is refused."""
    text = template.strip()
    if TRACE_ID_PLACEHOLDER not in text:
        raise TraceUrlError(f"--trace-url must contain {TRACE_ID_PLACEHOLDER} where the trace id goes, got {text!r}")
    parts = urlsplit(text.replace(TRACE_ID_PLACEHOLDER, "0" * 32))
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise TraceUrlError(f"--trace-url must be an http:// or https:// URL, got {text!r}")
    return text


def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


def _shell(token_required: bool, trace_url: str | None) -> bytes:
    text = _read("index.html").decode("utf-8")
    for name, value in (("token_required", "true" if token_required else "false"), ("trace_url", trace_url or "")):
        text = text.replace("{{" + name + "}}", html.escape(value, quote=True))
    return text.encode("utf-8")


class _File:
    """One file as sent: its bytes, the same gzipped (``mtime=0``: the same bytes on every start), its media type."""

    __slots__ = ("plain", "gzipped", "media")

    def __init__(self, plain: bytes, media: str) -> None:
        self.plain = plain
        self.gzipped = gzip.compress(plain, 9, mtime=0)
        self.media = media

    def response(self, request: Request) -> Response:
        headers = {**_HEADERS, "Vary": "Accept-Encoding"}
        if accepts_gzip(request.headers.get("accept-encoding", "")):
            return Response(self.gzipped, 200, {**headers, "Content-Encoding": "gzip"}, self.media)
        return Response(self.plain, 200, headers, self.media)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value admits gzip (RFC 9110: ``gzip`` or ``*`` without ``q=0``)."""
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.partition(";")
        if coding.strip() not in ("gzip", "x-gzip", "*"):
            continue
        q = params.strip().removeprefix("q=").strip() if params.strip().startswith("q=") else "1"
        try:
            return float(q) > 0
        except ValueError:
            return False
    return False


def dashboard_routes(*, token_required: bool, trace_url: str | None = None) -> list[Route]:
    """``GET /`` (the shell) and ``GET /assets/{name}``, every file read once, here: a missing asset fails the
    server's construction, not a visitor's page. An unknown asset is the API's 404."""
    shell = _File(_shell(token_required, check_trace_url(trace_url) if trace_url is not None else None), _HTML)
    assets = {name: _File(_read(name), media) for name, media in ASSETS.items()}

    async def page(request: Request) -> Response:
        return shell.response(request)

    async def asset(request: Request) -> Response:
        found = assets.get(request.path_params["name"])
        if found is None:
            raise HTTPException(404)
        return found.response(request)

    return [
        Route(DASHBOARD_PATH, page, methods=["GET"]),
        Route("/assets/{name}", asset, methods=["GET"]),
    ]
