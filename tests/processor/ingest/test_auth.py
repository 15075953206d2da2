"""The head checks both HTTP ports share: an ambiguous head is named (and so refused), a plain one passes."""

from __future__ import annotations

import pytest
from tokentrail.processor.ingest.auth import framing_problem


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ([(b"host", b"a"), (b"content-length", b"2")], None),
        ([(b"host", b"a"), (b"transfer-encoding", b"chunked")], None),
        ([(b"host", b"a"), (b"host", b"b")], "more than one Host header"),
        ([(b"content-length", b"2"), (b"content-length", b"2")], "more than one Content-Length header"),
        ([(b"transfer-encoding", b"chunked"), (b"content-length", b"7")], "both Content-Length and Transfer-Encoding: send one"),
    ],
)
def test_an_ambiguous_head_is_named_and_a_plain_one_passes(headers: list[tuple[bytes, bytes]], problem: str | None) -> None:
    assert framing_problem(headers) == problem
