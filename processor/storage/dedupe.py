"""One call, one record, at ingest: a bounded window of recently seen record identities.

Exporters and collectors retry, and two instrumentations may report the same call, so the same identity arrives
more than once. The window catches the repeats that arrive close together (the common case); compaction dedupes
exactly later.

Ingest must not lose a record whose first copy never reached disk. So a batch *claims* its new identities, and
the claim is committed after the WAL fsync or aborted (identities forgotten) if the write failed. A request whose
records duplicate another request's claim still in flight waits for that claim's outcome before it acknowledges.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any, Final

import pyarrow as pa
from tokentrail.processor.errors import TokenTrailError
from tokentrail.processor.schema import UsageColumns, UsageRecord

__all__ = [
    "DEFAULT_WINDOW",
    "Claim",
    "DedupeWindow",
    "DuplicateInFlightFailed",
    "InvalidWindow",
    "column_keys",
    "identity_key",
    "keys_of",
    "record_key",
    "table_keys",
]

# Retries arrive within minutes: this covers hours of busy traffic (its memory: docs/ARCHITECTURE.md, Performance).
DEFAULT_WINDOW: Final = 1_000_000


def record_key(provider: str, response_id: str | None, trace_id: str, span_id: str) -> str:
    """A record's identity as one exact string: ``<len>:<provider><response id>`` when the provider gave a response
    id, else the trace and span ids in hex. Exact (no digest, so no collision can ever drop a real record), and the
    two forms never meet: only the first holds a colon. Cheaper to build than a digest, too."""
    if response_id:
        return f"{len(provider)}:{provider}{response_id}"
    return trace_id + span_id


def identity_key(identity: tuple[str, str]) -> str:
    """``record_key`` of a ``UsageRecord.identity``: (provider, response id), or ("span", "<trace>:<span>")."""
    first, second = identity
    if first == "span" and len(second) == 49 and second[32] == ":":
        return second[:32] + second[33:]
    return f"{len(first)}:{first}{second}"


def column_keys(columns: UsageColumns) -> list[str]:
    """``record_key`` of every row."""
    return keys_of(columns["provider"], columns["response_id"], columns["trace_id"], columns["span_id"])


def table_keys(table: pa.Table) -> list[str]:
    """``record_key`` of every row of a table in the usage schema (a WAL segment, a Parquet file), without building
    records."""
    return keys_of(*(table[name].to_pylist() for name in ("provider", "response_id", "trace_id", "span_id")))


def keys_of(
    providers: Iterable[str], response_ids: Iterable[str | None], trace_ids: Iterable[str], span_ids: Iterable[str]
) -> list[str]:
    """``record_key`` of each (provider, response id, trace id, span id), in one pass."""
    return [
        f"{len(p)}:{p}{r}" if r else t + s for p, r, t, s in zip(providers, response_ids, trace_ids, span_ids)
    ]


class InvalidWindow(TokenTrailError, ValueError):
    """A dedupe window size that cannot work (below 1)."""


class DuplicateInFlightFailed(TokenTrailError, RuntimeError):
    """A record this request carried was being written by another request, and that write failed."""


class Claim:
    """The new records of one batch (``fresh``: the records, or the row indices for ``claim_keys``), and the claims
    of other batches it duplicated while they were in flight."""

    __slots__ = ("_done", "_ok", "_window", "fresh", "duplicates", "waits_on", "_identities")

    def __init__(self, window: DedupeWindow, fresh: list[Any], identities: list[str]) -> None:
        self._window = window
        self._done = threading.Event()
        self._ok = False
        self._identities = identities
        self.fresh: list[Any] = fresh  # records (``claim``) or row indices (``claim_keys``)
        self.duplicates = 0
        self.waits_on: list[Claim] = []

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def commit(self) -> None:
        """The fresh records are durable: later copies are dropped for good.

        Drops its references to the records: the window keeps the claim (not the records) until it ages out."""
        self._ok = True
        self._identities = []
        self.fresh = []
        self._done.set()

    def abort(self) -> None:
        """The fresh records were not stored: forget them so the exporter's retry is accepted."""
        self._window._forget(self._identities, self)
        self._identities = []
        self.fresh = []
        self.waits_on = []
        self._done.set()

    def wait_for_others(self, timeout: float | None = 30.0) -> None:
        """Blocks until every claim this batch duplicated is settled; raises if one of them was not stored.

        Acknowledging a duplicate means vouching for the first copy, so it waits for the first copy's fsync."""
        try:
            for other in self.waits_on:
                if not other._done.wait(timeout):
                    raise DuplicateInFlightFailed("a duplicate of this request's records is still being written")
                if not other._ok:
                    raise DuplicateInFlightFailed("another request carrying these records failed to store them")
        finally:
            self.waits_on = []  # no chains of settled claims kept alive by the window


class DedupeWindow:
    """The last ``max_size`` identities stored -> the claim that stored them (None once seeded from disk), oldest
    forgotten first. Thread-safe.

    A dict and, beside it, the order identities arrived in (two deques: the identity and the claim that added it, so
    a stale position, left by an identity forgotten and added again, never evicts the newer entry). Retries arrive
    within minutes, so forgetting by age of arrival covers what refreshing on every hit would, in C loops for the
    common batch of all-new rows."""

    def __init__(self, max_size: int = DEFAULT_WINDOW) -> None:
        if max_size < 1:
            raise InvalidWindow(f"the dedupe window must hold at least 1 identity, got {max_size}")
        self._max_size = max_size
        self._seen: dict[str, Claim | None] = {}
        self._order: deque[str] = deque()
        self._owners: deque[Claim | None] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, identity: object) -> bool:
        return isinstance(identity, tuple) and identity_key(identity) in self._seen

    def seed(self, identities: Iterable[str | tuple[str, str]]) -> None:
        """Identities already durable (replayed from the WAL at start), so retries of them are dropped: ``record_key``
        strings, or ``UsageRecord.identity`` tuples."""
        keys = [i if isinstance(i, str) else identity_key(i) for i in identities]
        with self._lock:
            self._seen.update(zip(keys, repeat(None)))
            self._order.extend(keys)
            self._owners.extend(repeat(None, len(keys)))
            self._trim()

    def claim(self, records: Sequence[UsageRecord]) -> Claim:
        """Splits ``records`` into new ones (claimed, pending commit) and duplicates (dropped)."""
        keys = [record_key(r.provider, r.response_id, r.trace_id, r.span_id) for r in records]
        claim = self.claim_keys(keys)
        claim.fresh = [records[i] for i in claim.fresh]
        return claim

    def claim_keys(self, keys: Sequence[str]) -> Claim:
        """Splits rows (by their ``record_key``) into new ones (claimed, pending commit) and duplicates; the claim's
        ``fresh`` lists the new rows' indices in order."""
        fresh: list[int] = []
        identities: list[str] = []
        claim = Claim(self, fresh, identities)
        seen = self._seen
        with self._lock:
            if len(set(keys)) == len(keys) and seen.keys().isdisjoint(keys):
                # The common case, in C loops: every row is new, and no row repeats another of the batch.
                seen.update(zip(keys, repeat(claim)))
                fresh.extend(range(len(keys)))
                identities.extend(keys)
            else:
                for i, identity in enumerate(keys):
                    if identity in seen:
                        owner = seen[identity]
                        claim.duplicates += 1
                        if owner is not None and owner is not claim and not owner.done:
                            if owner not in claim.waits_on:
                                claim.waits_on.append(owner)
                        continue
                    seen[identity] = claim
                    fresh.append(i)
                    identities.append(identity)
            self._order.extend(identities)
            self._owners.extend(repeat(claim, len(identities)))
            self._trim()
        return claim

    def filter(self, records: Sequence[UsageRecord]) -> list[UsageRecord]:
        """Claim and commit at once, for callers with no write to wait for."""
        claim = self.claim(records)
        fresh = claim.fresh
        claim.commit()
        return fresh

    def _forget(self, identities: list[str], claim: Claim) -> None:
        with self._lock:
            for identity in identities:
                if self._seen.get(identity) is claim:
                    del self._seen[identity]

    def _trim(self) -> None:
        seen, order, owners, limit = self._seen, self._order, self._owners, self._max_size
        # Positions of forgotten identities make the order longer than the window: it is kept within twice.
        while len(seen) > limit or len(order) > 2 * limit:
            identity, owner = order.popleft(), owners.popleft()
            if identity in seen and seen[identity] is owner:
                del seen[identity]
