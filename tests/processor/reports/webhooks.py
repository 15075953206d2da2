"""A webhook receiver on loopback for the alert tests (budgets, spikes): a real HTTP server that records every POST
by path, answering with the statuses it is given, and a check that a body has the shape of a Slack Block Kit
message (the parts of https://api.slack.com/reference/block-kit/blocks our messages use, with Slack's limits)."""

from __future__ import annotations

import json
import re
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Hook", "dashboard_links", "slack_text", "validate_slack"]


class Hook:
    """Records ``(path, headers, body)`` of each POST; answers ``statuses`` in turn, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self._changed = threading.Condition()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])), parse_float=Decimal)
                with hook._changed:
                    code = hook.statuses.pop(0) if hook.statuses else 200
                    if code == 200:
                        hook.requests.append((self.path, dict(self.headers), body))
                    hook._changed.notify_all()
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
        """The delivered requests once there are at least ``count`` (fails after ``timeout`` seconds)."""
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.requests) >= count, timeout), self.requests
            return list(self.requests)

    def by_path(self, path: str) -> list[dict[str, Any]]:
        return [body for p, _, body in self.requests if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_BLOCK_TYPES = {"header", "section", "context", "actions", "divider"}


def _text_object(obj: Any, limit: int) -> None:
    assert isinstance(obj, dict) and obj.get("type") in ("plain_text", "mrkdwn"), obj
    assert isinstance(obj["text"], str) and 0 < len(obj["text"]) <= limit, obj


def validate_slack(body: dict[str, Any]) -> None:
    """Fails unless ``body`` is a Slack incoming-webhook message: ``text`` and ``blocks`` within Slack's limits."""
    assert set(body) == {"text", "blocks"}, set(body)
    assert isinstance(body["text"], str) and body["text"].strip()
    blocks = body["blocks"]
    assert isinstance(blocks, list) and 0 < len(blocks) <= 50
    for block in blocks:
        assert block["type"] in _BLOCK_TYPES, block
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            _text_object(block["text"], 150)
        elif block["type"] == "section":
            assert "text" in block or "fields" in block, block
            if "text" in block:
                _text_object(block["text"], 3000)
            for field in block.get("fields", []):
                _text_object(field, 2000)
            assert len(block.get("fields", [])) <= 10
        elif block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
            for element in block["elements"]:
                _text_object(element, 3000)


def slack_text(body: dict[str, Any]) -> str:
    """Every text of a Slack message, one per line: what a person reads."""
    parts = [body["text"]]
    for block in body["blocks"]:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts += [field["text"] for field in block.get("fields", [])]
        parts += [element["text"] for element in block.get("elements", [])]
    return "\n".join(parts)


_LINK = re.compile(r"<(https?://[^|>]+)\|([^>]+)>")


def dashboard_links(body: dict[str, Any]) -> list[tuple[str, str, dict[str, list[str]]]]:
    """``(scheme://host/path, link text, query)`` of each mrkdwn link in the blocks."""
    links = []
    for block in body["blocks"]:
        for match in _LINK.finditer(block.get("text", {}).get("text", "")):
            parts = urlsplit(match[1])
            links.append((f"{parts.scheme}://{parts.netloc}{parts.path}", match[2], parse_qs(parts.query)))
    return links
