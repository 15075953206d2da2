"""The admission bounds: exports and bytes in flight, never blocking, one export alone always admitted; a
reservation (gRPC's, for the largest message it may read) shrunk to the real size once known."""

from __future__ import annotations

import threading

import pytest
from tokentrail.processor.ingest.admission import Admission, AdmissionPass, Busy


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


def test_a_refusal_names_the_bound_it_met() -> None:
    admission = Admission(max_exports=2, max_bytes=100)
    first = admission.try_admit(80)
    assert isinstance(first, AdmissionPass)
    assert admission.try_admit(30) is Busy.BYTES
    assert admission.admit(30) is None  # ``admit`` is the same decision, without the reason
    assert isinstance(admission.try_admit(20), AdmissionPass)
    assert admission.try_admit(0) is Busy.EXPORTS  # both bounds met: the exports are named
    assert admission.in_flight == (2, 100)


def test_a_reservation_for_the_largest_message_holds_others_out_until_shrunk_to_the_real_size() -> None:
    # As gRPC admits: 64 (its message limit) reserved before the message is read, of 100 in flight at most.
    admission = Admission(max_exports=8, max_bytes=100)
    reading = admission.try_admit(64)
    assert isinstance(reading, AdmissionPass)
    assert admission.try_admit(64) is Busy.BYTES  # a second message of up to 64 might not fit beside the first
    reading.shrink_to(10)  # the message read was 10 bytes
    assert (reading.nbytes, admission.in_flight) == (10, (1, 10))
    second = admission.try_admit(64)
    assert isinstance(second, AdmissionPass)
    assert admission.in_flight == (2, 74)
    reading.release()
    second.release()
    assert admission.in_flight == (0, 0)


def test_shrinking_always_succeeds_even_past_the_bound_and_never_grows() -> None:
    admission = Admission(max_exports=8, max_bytes=100)
    alone = admission.try_admit(500)  # alone: admitted over the bound
    assert isinstance(alone, AdmissionPass)
    alone.shrink_to(400)  # still over the bound: shrinking is never refused
    assert admission.in_flight == (1, 400)
    alone.shrink_to(400)  # to the same size: nothing changes
    with pytest.raises(ValueError, match="cannot shrink"):
        alone.shrink_to(401)
    with pytest.raises(ValueError, match="cannot shrink"):
        alone.shrink_to(-1)
    assert admission.in_flight == (1, 400)
    alone.shrink_to(0)
    assert admission.in_flight == (1, 0)
    alone.release()
    assert admission.in_flight == (0, 0)


def test_a_released_pass_shrinks_without_giving_back_twice() -> None:
    admission = Admission(max_exports=8, max_bytes=100)
    done, other = admission.try_admit(60), admission.try_admit(30)
    assert isinstance(done, AdmissionPass) and isinstance(other, AdmissionPass)
    done.release()
    done.shrink_to(5)  # after its release: the 60 were given back once, by the release
    assert admission.in_flight == (1, 30)
    other.release()
    assert admission.in_flight == (0, 0)


def test_reservations_shrunk_and_released_under_threads_leave_nothing_behind() -> None:
    admission = Admission(max_exports=4, max_bytes=256)
    peak_bytes = 0
    lock = threading.Lock()

    def worker(size: int) -> None:
        nonlocal peak_bytes
        for _ in range(2000):
            reserved = admission.try_admit(64)
            if isinstance(reserved, Busy):
                continue
            with lock:
                peak_bytes = max(peak_bytes, admission.in_flight[1])
            reserved.shrink_to(size)
            reserved.release()

    threads = [threading.Thread(target=worker, args=(size,)) for size in (0, 1, 17, 63, 64, 5, 40, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 64 <= peak_bytes <= 256
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
