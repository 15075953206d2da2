"""SIGKILL at random points, with Collector-style senders that keep sending through it: nothing acknowledged is lost,
nothing is stored twice.

The receiver (``tokentrail serve``) is killed under load while ingesting, while its flusher writes Parquet, and while
it recovers from the previous kill; ``tokentrail compact`` and ``tokentrail reprice`` are killed mid-rewrite while a
receiver ingests into the same days (and the receiver too, once, meanwhile). The senders never stop: a refused or
unanswered batch is resent with back-off to the same endpoint until the restarted receiver acknowledges it. Then, after
a clean stop: every acknowledged span is stored exactly once (``oracle``), ``tokentrail wal verify`` finds the WAL
clean and nothing was quarantined (a kill tears at most a never-acknowledged tail, never damages).

Kill points come from ``rng`` (its seed is printed; ``TOKENTRAIL_FAULT_SEED`` replays it).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from tokentrail.processor.storage.wal import QUARANTINE_DIR

from tests.fault.collector import GrpcExporter, Ledger, make_batch, send_forever
from tests.fault.oracle import assert_exactly_once
from tests.fault.serve import Serve, run_cli, spawn_cli
from tests.fault.sizes import Size
from tests.helpers.receiver import read_usage

DAYS = 3  # spans spread over 2025-06-01..03: compaction and re-pricing rewrite several days
BATCH = 20


@contextmanager
def senders(
    serve: Serve, ledger: Ledger, n: int, rng: random.Random, days: int = 1, pace: float = 0.0
) -> Iterator[threading.Event]:
    """``n`` exporters sending to ``serve``'s gRPC port until the block ends; then each finishes the batch it was
    retrying (the receiver must be up by then). ``pace``: seconds between a sender's batches."""
    stop, abort = threading.Event(), threading.Event()
    threads = []
    for _ in range(n):
        own = random.Random(rng.random())
        exporter = GrpcExporter(serve.ports.grpc, ledger, rng=own)
        threads.append(
            threading.Thread(
                target=send_forever, args=(exporter, stop, lambda o=own: make_batch(BATCH, days, o), abort, pace)
            )
        )
    for t in threads:
        t.start()
    try:
        yield stop
    except BaseException:
        abort.set()
        raise
    finally:
        stop.set()
        for t in threads:
            t.join(180)
        assert not any(t.is_alive() for t in threads), "a sender never got its last batch acknowledged"


def wait_for_acks(ledger: Ledger, more_than: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while ledger.acked_spans <= more_than:
        assert time.monotonic() < deadline, "no export acknowledged: the receiver is not answering"
        time.sleep(0.01)


def assert_wal_clean(data_dir: Path) -> None:
    verify = run_cli("wal", "verify", "--data-dir", str(data_dir))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert not (data_dir / "wal" / QUARANTINE_DIR).exists(), "a kill was taken for damage"


@pytest.mark.parametrize("flush_interval", ["30", "0.02"], ids=["ingest", "flush"])
def test_receiver_sigkilled_at_random_points_loses_nothing_acknowledged(
    flush_interval: str, tmp_path: Path, rng: random.Random, size: Size
) -> None:
    """``ingest``: records wait in the WAL (kills land mid-append and mid-fsync; recovery replays it all).
    ``flush``: the flusher writes Parquet every 20 ms (kills land mid-flush too). Some restarts are killed again
    before or just after they finish recovering."""
    serve = Serve(tmp_path, "--flush-interval", flush_interval).start()
    ledger = Ledger()
    kills = recovery_kills = 0
    with senders(serve, ledger, size.senders, rng):
        for _ in range(size.kill_rounds):
            wait_for_acks(ledger, ledger.acked_spans)  # under load: this run has acknowledged something
            time.sleep(rng.uniform(0.0, 0.5))
            kills += serve.kill()
            time.sleep(rng.uniform(0.0, 0.3))  # the senders meet a closed port meanwhile
            if rng.random() < 0.4:
                serve.spawn()
                time.sleep(rng.uniform(0.0, 0.6))  # during recovery, or just after it
                recovery_kills += serve.kill()
            serve.start()
        assert serve.healthz() == 200
    assert kills == size.kill_rounds, "every kill hit a live receiver"
    assert ledger.retries > 0, "no sender ever had to resend: the kills landed nowhere"
    assert serve.terminate() == 0
    assert_exactly_once(tmp_path, ledger)
    assert_wal_clean(tmp_path)
    print(f"receiver kills survived: {kills} (+{recovery_kills} during recovery), {ledger.acked_spans} spans, "
          f"{ledger.retries} resends")


def tool_kill_points(data_dir: Path, command: list[str], idle: list[str]) -> tuple[float, float]:
    """(seconds a run of ``command`` takes doing nothing, seconds it takes on the data): kills are drawn between
    them, so most land mid-rewrite rather than while Python imports."""
    t0 = time.monotonic()
    assert run_cli(*idle).returncode == 0
    t1 = time.monotonic()
    done = run_cli(*command)
    assert done.returncode == 0, done.stdout + done.stderr
    return t1 - t0, time.monotonic() - t1


def kill_tool_repeatedly(
    serve: Serve, command: list[str], idle: list[str], rng: random.Random, size: Size
) -> tuple[int, int]:
    """``command`` started and SIGKILLed ``size.tool_kills`` times at random points while the receiver ingests;
    halfway, the receiver is SIGKILLed and restarted too. Returns (kills that hit a running tool, rounds)."""
    low, high = tool_kill_points(serve.data_dir, command, idle)
    mid_run = 0
    for i in range(size.tool_kills):
        proc = spawn_cli(*command)
        time.sleep(rng.uniform(0.8 * low, max(high, low) * 1.05))
        if proc.poll() is None:
            proc.kill()
            mid_run += 1
        proc.wait(30)
        if i == size.tool_kills // 2:
            serve.kill()
            serve.start()
    return mid_run, size.tool_kills


def test_compaction_sigkilled_at_random_points_loses_and_duplicates_nothing(
    tmp_path: Path, rng: random.Random, size: Size
) -> None:
    serve = Serve(tmp_path, "--flush-interval", "0.05").start()
    ledger = Ledger()
    data = str(tmp_path)
    command = ["compact", "--data-dir", data, "--min-files", "1"]
    idle = ["compact", "--data-dir", data, "--start-date", "2099-01-01"]
    with senders(serve, ledger, size.senders, rng, days=DAYS, pace=0.02):
        wait_for_acks(ledger, 40 * BATCH)
        mid_run, rounds = kill_tool_repeatedly(serve, command, idle, rng, size)
        done = run_cli(*command)  # a compaction that finishes, with the receiver still writing
        assert done.returncode == 0, done.stdout + done.stderr
        assert serve.healthz() == 200
    assert mid_run >= 1, "no kill landed while compaction ran"
    assert serve.terminate() == 0
    done = run_cli(*command)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_exactly_once(tmp_path, ledger)
    assert_wal_clean(tmp_path)
    print(f"compaction kills survived: {mid_run} mid-run of {rounds}, {ledger.acked_spans} spans")


DISCOUNT = '[[rule]]\nprovider = "openai"\ndiscount_percent = 10\n'


def test_repricing_sigkilled_at_random_points_loses_and_duplicates_nothing(
    tmp_path: Path, rng: random.Random, size: Size
) -> None:
    pricing = tmp_path / "pricing.toml"
    pricing.write_text(DISCOUNT)
    data_dir = tmp_path / "data"
    serve = Serve(data_dir, "--flush-interval", "0.05").start()
    ledger = Ledger()
    command = ["reprice", "--data-dir", str(data_dir), "--start-date", "2025-06-01", "--end-date", "2025-06-03",
               "--pricing", str(pricing)]
    idle = [*command[:3], "--start-date", "2099-01-01", "--end-date", "2099-01-01"]
    with senders(serve, ledger, size.senders, rng, days=DAYS, pace=0.02):
        wait_for_acks(ledger, 40 * BATCH)
        mid_run, rounds = kill_tool_repeatedly(serve, command, idle, rng, size)
        assert serve.healthz() == 200
    assert mid_run >= 1, "no kill landed while re-pricing ran"
    assert serve.terminate() == 0
    done = run_cli(*command)  # once more, to the end: every record now carries the discount
    assert done.returncode == 0, done.stdout + done.stderr
    assert_exactly_once(data_dir, ledger)
    rows = read_usage(data_dir)
    assert len({r["price_version"] for r in rows}) == 1, "a day was left half re-priced"
    for r in rows:
        assert r["total_cost"] == (r["market_cost"] * Decimal("0.9")).quantize(r["total_cost"]), r
    assert_wal_clean(data_dir)
    print(f"re-pricing kills survived: {mid_run} mid-run of {rounds}, {ledger.acked_spans} spans")
