"""Every golden fixture (``tests/processor/normalize/golden/``: spans captured from the real instrumentations, and
hand-built ones for the Vercel AI SDK and for bent input) normalizes to exactly its stored records, counts, errors and
warnings, through both entry points the receiver calls. Re-capture with ``python -m tests.helpers.golden capture``
only when a change of the numbers is intended."""

from __future__ import annotations

import pytest
from tokentrail.processor.normalize.reader import DIALECTS, normalize_bytes, normalize_request

from tests.helpers import golden
from tests.helpers.dialect_producers import PRODUCERS


def test_there_is_a_fixture_for_every_producer_and_every_dialect() -> None:
    assert set(golden.names()) == {*PRODUCERS, *golden.HANDBUILT}
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
        from_bytes = normalize_bytes(request.SerializeToString())
        if from_bytes is not None:  # None: the receiver takes the protobuf path above
            assert golden.result_to_json(from_bytes) == expected, (name, i)
