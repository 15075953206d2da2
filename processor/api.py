"""``GET /v1/report``: Vercel AI Gateway's Custom Reporting endpoint, served from the local Parquet dataset.

The handler only translates HTTP: query string in, ``report.py`` answers, JSON out. The standard library's
threading server is enough for a report endpoint (each query is one DuckDB scan) and adds no dependency.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final
from urllib.parse import parse_qs, urlsplit

from .report import Report, ReportParameterError, report_json

__all__ = ["DEFAULT_API_HOST", "DEFAULT_API_PORT", "REPORT_PATH", "ReportServer"]

logger = logging.getLogger(__name__)

DEFAULT_API_HOST: Final = "127.0.0.1"
DEFAULT_API_PORT: Final = 8787
REPORT_PATH: Final = "/v1/report"
HEALTH_PATH: Final = "/healthz"
_MAX_FIELDS: Final = 100  # a report has ten parameters; thousands would only be an attack on parse_qs


def _error_body(message: str, kind: str) -> str:
    """OpenAI-style error object, which is what Vercel's gateway answers and what its clients parse."""
    return json.dumps({"error": {"message": message, "type": kind}})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never blocks stop()

    def __init__(self, address: tuple[str, int], report: Report, token: str | None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.report = report
        self.token = token
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive for clients that poll; every response sets Content-Length
    server_version = "TokenTrail"
    timeout = 30  # seconds a connection may sit idle: a stuck client must not hold a thread forever

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        if path == HEALTH_PATH:
            self._send(HTTPStatus.OK, json.dumps({"status": "ok"}))
        elif path == REPORT_PATH:
            if not self._authorized():
                self._send(
                    HTTPStatus.UNAUTHORIZED,
                    _error_body("missing or wrong bearer token", "authentication_error"),
                    {"WWW-Authenticate": 'Bearer realm="tokentrail"'},
                )
                return
            self._report(url.query)
        else:
            self._send(HTTPStatus.NOT_FOUND, _error_body(f"no such endpoint: {url.path}", "not_found_error"))

    def _report(self, query_string: str) -> None:
        try:
            params = parse_qs(query_string, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
            body = report_json(self.server.report.from_params(params))
        except ReportParameterError as exc:
            self._send(HTTPStatus.BAD_REQUEST, _error_body(exc.message, "invalid_request_error"))
        except ValueError as exc:  # parse_qs: too many fields
            self._send(HTTPStatus.BAD_REQUEST, _error_body(str(exc), "invalid_request_error"))
        except Exception:
            logger.exception("report failed for %r", query_string)
            self._send(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                _error_body("the report failed; the server log has the details", "api_error"),
            )
        else:
            self._send(HTTPStatus.OK, body)

    def _authorized(self) -> bool:
        token = self.server.token
        if not token:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())

    def _not_allowed(self) -> None:
        body = _error_body("only GET is supported", "invalid_request_error")
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, body, {"Allow": "GET"})

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed  # noqa: N815

    def _send(self, status: HTTPStatus, body: str, headers: dict[str, str] | None = None) -> None:
        data = (body + "\n").encode("utf-8")  # the same bytes `tokentrail report --format json` prints
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature from http.server)
        logger.debug("%s " + format, self.address_string(), *args)


class ReportServer:
    """The report API on its own thread. ``port=0`` picks a free port; read ``port`` after ``start()``.

    ``token``: when set, ``/v1/report`` requires ``Authorization: Bearer <token>`` (``/healthz`` stays open for
    probes). Bind to a non-loopback host only with a token or behind a proxy that authenticates.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        host: str = DEFAULT_API_HOST,
        port: int = DEFAULT_API_PORT,
        *,
        token: str | None = None,
    ) -> None:
        self._report = Report(data_dir)
        self._host = host
        self._port = port
        self._token = token
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port once started (the real one when asked for 0), else the configured one."""
        if self._httpd is not None:
            return int(self._httpd.server_address[1])
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._httpd is not None:
            raise RuntimeError("ReportServer already started")
        self._httpd = _HTTPServer((self._host, self._port), self._report, self._token)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="tokentrail-report-api", daemon=True
        )
        self._thread.start()
        logger.info("report API listening on %s%s", self.url, REPORT_PATH)

    def stop(self) -> None:
        """Stop accepting, close the socket, wait for the serving thread. Safe to call twice."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ReportServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
