"""The admission bounds: exports and bytes in flight, never blocking, one export alone always admitted."""

from __future__ import annotations

import threading

import pytest
from tokentrail.processor.ingest.admission import Admission


def test_the_export_bound_refuses_the_next_and_a_release_lets_it_in() -> None:
    admission = Admission(max_exports=2, max_bytes=1 << 20)
    first, second = admission.admit(10), admission.admit(10)
    assert first is not None and second is not None
    assert admission.admit(10) is None
    first.release()
    first.release()  # idempotent: a second release gives nothing back twice
    assert admission.in_flight == (1, 10)
    third = admission.admit(10)
    assert third is not None
    assert admission.in_flight == (2, 20)


def test_the_byte_bound_refuses_what_would_pass_it_but_one_export_alone_always_gets_in() -> None:
    admission = Admission(max_exports=8, max_bytes=100)
    big = admission.admit(500)  # alone: admitted whatever its size, or a large batch could never get in
    assert big is not None
    assert admission.admit(1) is None  # anything more passes the bound
    big.release()
    small = admission.admit(60)
    assert small is not None
    assert admission.admit(41) is None
    assert admission.admit(40) is not None


def test_grow_adds_bytes_learnt_after_admission_or_refuses_without_adding() -> None:
    admission = Admission(max_exports=8, max_bytes=100)
    a, b = admission.admit(0), admission.admit(0)
    assert a is not None and b is not None
    assert a.grow(70)
    assert not b.grow(40)  # 70 + 40 > 100
    assert admission.in_flight == (2, 70)
    assert b.grow(30)
    a.release()
    assert admission.in_flight == (1, 30)
    assert b.grow(500)  # b alone now: grows whatever the size
    b.release()
    assert admission.in_flight == (0, 0)


def test_bounds_hold_under_threads() -> None:
    admission = Admission(max_exports=3, max_bytes=1 << 30)
    peak = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal peak
        for _ in range(2000):
            ticket = admission.admit(1)
            if ticket is None:
                continue
            with lock:
                peak = max(peak, admission.in_flight[0])
            ticket.release()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= peak <= 3
    assert admission.in_flight == (0, 0)


@pytest.mark.parametrize(("exports", "nbytes"), [(0, 10), (1, 0), (-1, -1)])
def test_bounds_must_be_positive(exports: int, nbytes: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        Admission(exports, nbytes)
