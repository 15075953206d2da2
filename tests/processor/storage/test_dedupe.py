"""The ingest dedupe window: exact identity keys, the all-new batch path and the row-by-row path agree, the oldest
identities are forgotten first, and an identity forgotten and added again is never evicted by its stale position."""

from __future__ import annotations

import pytest
from tokentrail.processor.storage.dedupe import DedupeWindow, identity_key, keys_of, record_key


def test_keys_are_exact_and_the_two_forms_never_meet() -> None:
    assert record_key("openai", "chatcmpl-1", "a" * 32, "b" * 16) == "6:openaichatcmpl-1"
    assert record_key("openai", None, "a" * 32, "b" * 16) == "a" * 32 + "b" * 16
    assert record_key("openai", "", "a" * 32, "b" * 16) == "a" * 32 + "b" * 16  # an empty id is no id
    # The length prefix keeps (provider, id) pairs apart however they split.
    assert record_key("ab", "c", "", "") != record_key("a", "bc", "", "")
    assert identity_key(("openai", "chatcmpl-1")) == record_key("openai", "chatcmpl-1", "", "")
    assert identity_key(("span", f"{'a' * 32}:{'b' * 16}")) == record_key("x", None, "a" * 32, "b" * 16)
    assert keys_of(["p"], [None], ["t"], ["s"]) == ["ts"]


@pytest.mark.parametrize("batch", [["a", "b", "c"], ["a", "b", "a"], ["x", "a", "y"]])
def test_a_batch_claims_each_new_identity_once_and_counts_repeats(batch: list[str]) -> None:
    window = DedupeWindow()
    window.claim_keys(["x"]).commit()
    claim = window.claim_keys(batch)
    expected = [i for i, k in enumerate(batch) if k != "x" and k not in batch[:i]]
    assert claim.fresh == expected
    assert claim.duplicates == len(batch) - len(expected)


def test_the_oldest_identities_are_forgotten_first() -> None:
    window = DedupeWindow(max_size=3)
    window.claim_keys(["a", "b"]).commit()
    window.claim_keys(["c", "d"]).commit()
    assert len(window) == 3
    assert window.claim_keys(["a"]).fresh == [0]  # aged out
    assert window.claim_keys(["c", "d"]).fresh == []


def test_an_identity_forgotten_and_added_again_outlives_its_stale_position() -> None:
    window = DedupeWindow(max_size=3)
    aborted = window.claim_keys(["a"])
    aborted.abort()  # the write failed: forgotten, its position in the order is now stale
    window.claim_keys(["b", "a"]).commit()  # the exporter's retry
    window.claim_keys(["c"]).commit()  # window full: the stale position of "a" is dropped, not the new entry
    assert len(window) == 3
    assert window.claim_keys(["a"]).duplicates == 1
    for i in range(100):
        window.claim_keys([f"k{i}"]).abort()
    assert len(window._order) <= 2 * 3  # stale positions are bounded too


def test_seeded_identities_are_duplicates_with_nothing_to_wait_for() -> None:
    window = DedupeWindow()
    window.seed(["a", ("openai", "chatcmpl-1")])
    claim = window.claim_keys(["a", record_key("openai", "chatcmpl-1", "", ""), "b"])
    assert (claim.fresh, claim.duplicates, claim.waits_on) == ([2], 2, [])
    assert ("openai", "chatcmpl-1") in window
