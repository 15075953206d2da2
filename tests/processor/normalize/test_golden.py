"""Every golden fixture (``tests/processor/normalize/golden/``: spans captured from the real instrumentations, and
hand-built ones for the Vercel AI SDK and for bent input) normalizes to exactly its stored records, counts, errors and
warnings, both from the message and from its serialized bytes as the receiver parses them. Re-capture with ``python -m tests.helpers.golden capture``
only when a change of the numbers is intended."""

from __future__ import annotations

import pytest
from tokentrail.processor.normalize.otlp import parse_export_request
from tokentrail.processor.normalize.reader import DIALECTS, normalize_request

from tests.helpers import golden
from tests.helpers.dialect_producers import PRODUCERS


def test_there_is_a_fixture_for_every_producer_and_every_dialect() -> None:
    assert set(golden.names()) == {*PRODUCERS, *golden.HANDBUILT, *golden.NODE_CAPTURED}
    sources = {
        record["source"]
        for name in golden.names()
        for _, expected in golden.load(name)
        for record in expected["records"]
    }
    assert sources == {d.source for d in DIALECTS}


@pytest.mark.parametrize("name", golden.names())
def test_fixture_normalizes_to_its_records(name: str) -> None:
    for i, (request, expected) in enumerate(golden.load(name)):
        actual = golden.result_to_json(normalize_request(request))
        for field in ("received", "skipped", "rejected", "errors", "warnings", "dropped_fields"):
            assert actual[field] == expected[field], (name, i, field)
        assert len(actual["records"]) == len(expected["records"]), (name, i)
        for got, want in zip(actual["records"], expected["records"]):
            assert got == want, (name, i, {k: (got[k], want[k]) for k in want if got[k] != want[k]})
        parsed, warnings = parse_export_request(request.SerializeToString())  # as the receiver reads a body
        assert warnings == [], (name, i)
        assert golden.result_to_json(normalize_request(parsed)) == expected, (name, i)
