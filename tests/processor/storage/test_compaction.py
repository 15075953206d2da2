"""Rewriting a day: ``rewrite_day`` is atomic for readers and safe against flushers; compaction merges a day's files
and keeps exactly one record per call."""

from __future__ import annotations

import os
import shutil
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import tokentrail.processor.cli.main as cli
from tokentrail.processor.reports.report import ReportQuery, run_report
from tokentrail.processor.schema import ARROW_SCHEMA, PRICED, UsageRecord
from tokentrail.processor.storage.compaction import (
    VERSIONS_DIR,
    RewriteError,
    compact,
    compact_day,
    dedupe_table,
    read_day,
    rewrite_day,
)
from tokentrail.processor.storage.parquet import flush_segment, part_name, write_partitions
from tokentrail.processor.storage.wal import WriteAheadLog, list_segments

DAY = date(2025, 6, 1)
T = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


def rec(i: int, *, response_id: str | None = None, provider: str = "openai", **overrides: Any) -> UsageRecord:
    fields: dict[str, Any] = dict(
        timestamp=T + timedelta(seconds=i),
        trace_id=f"{i:032x}",
        span_id=f"{i:016x}",
        response_id=response_id,
        provider=provider,
        model="gpt-4o",
        input_tokens=100,
        output_tokens=10,
        total_cost=Decimal("0.001"),
        market_cost=Decimal("0.001"),
        price_status=PRICED,
    )
    fields.update(overrides)
    return UsageRecord(**fields)


def write_files(usage: Path, groups: list[list[UsageRecord]], rid: str = "r1", first_seq: int = 1) -> None:
    for n, records in enumerate(groups):
        write_partitions(records, usage, rid, first_seq + n)


def files_of(usage: Path, day: date = DAY) -> list[str]:
    directory = usage / f"date={day.isoformat()}"
    return sorted(n for n in os.listdir(directory) if n.endswith(".parquet"))


def day_report(data_dir: Path, group_by: str = "model") -> list[dict]:
    return run_report(data_dir, ReportQuery.from_params({"start_date": "2025-06-01", "end_date": "2025-06-01", "group_by": group_by}))


def set_model(model: str):  # noqa: ANN201
    def transform(table: pa.Table) -> pa.Table:
        return table.set_column(table.schema.get_field_index("model"), "model", pa.array([model] * table.num_rows))

    return transform


# -- rewrite_day ----------------------------------------------------------------------------------------------


def test_rewrite_day_replaces_the_days_rows_with_the_transforms_output(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    write_files(usage, [[rec(1), rec(2)], [rec(3)]])
    rewrite_day(usage, DAY, set_model("gpt-4o-repriced"))
    table = read_day(usage, DAY)
    assert table.num_rows == 3
    assert set(table["model"].to_pylist()) == {"gpt-4o-repriced"}
    assert table.schema.equals(ARROW_SCHEMA)


def test_the_transform_sees_every_row_of_the_day_in_the_shared_schema(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    write_files(usage, [[rec(1)], [rec(2)], [rec(3, timestamp=T + timedelta(days=1))]])
    seen: list[pa.Table] = []
    def keep(table: pa.Table) -> pa.Table:
        seen.append(table)
        return table

    rewrite_day(usage, DAY, keep)
    (table,) = seen
    assert table.schema.equals(ARROW_SCHEMA)
    assert sorted(table["trace_id"].to_pylist()) == [rec(1).trace_id, rec(2).trace_id]


def test_the_first_rewrite_turns_the_day_into_a_link_to_a_version_and_later_ones_swap_it(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    write_files(usage, [[rec(1)], [rec(2)]])
    link = usage / "date=2025-06-01"
    assert link.is_dir() and not link.is_symlink()
    rewrite_day(usage, DAY, lambda t: t)
    assert link.is_symlink()
    assert not os.path.isabs(os.readlink(link))  # relative: the dataset can be moved
    first = os.path.realpath(link)
    rewrite_day(usage, DAY, lambda t: t)
    second = os.path.realpath(link)
    assert first != second
    assert os.listdir(usage / VERSIONS_DIR / "2025-06-01") == [os.path.basename(second)]  # the old version is gone
    assert not [n for n in os.listdir(usage) if n.startswith(".swap")]


def test_rewritten_files_never_reuse_a_name_an_earlier_version_had(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    write_files(usage, [[rec(1)], [rec(2)]])
    names: set[str] = set(files_of(usage))
    for _ in range(3):
        rewrite_day(usage, DAY, lambda t: t)
        current = set(files_of(usage))
        assert not current & names
        names |= current


def test_a_day_without_files_is_left_alone(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    usage.mkdir()
    called: list[int] = []

    def count(table: pa.Table) -> pa.Table:
        called.append(1)
        return table

    rewrite_day(usage, DAY, count)
    assert called == [] and not (usage / "date=2025-06-01").exists()


def test_a_transform_that_raises_leaves_the_day_unchanged(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    write_files(usage, [[rec(1)], [rec(2)]])
    before = files_of(usage)

    def boom(table: pa.Table) -> pa.Table:
        raise ValueError("pricing catalog unavailable")

    with pytest.raises(ValueError, match="catalog"):
        rewrite_day(usage, DAY, boom)
    assert files_of(usage) == before
    assert read_day(usage, DAY).num_rows == 2


def test_a_transform_cannot_move_rows_to_another_day(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    write_files(usage, [[rec(1)]])
    rewrite_day(usage, DAY, lambda t: t)  # now in the versioned layout
    before = (os.path.realpath(usage / "date=2025-06-01"), files_of(usage))

    def shift(table: pa.Table) -> pa.Table:
        shifted = pc.add(table["timestamp"], pa.scalar(timedelta(days=1)))
        return table.set_column(0, "timestamp", shifted)

    with pytest.raises(RewriteError, match="outside 2025-06-01"):
        rewrite_day(usage, DAY, shift)
    assert (os.path.realpath(usage / "date=2025-06-01"), files_of(usage)) == before
    assert os.listdir(usage / VERSIONS_DIR / "2025-06-01") == [os.path.basename(before[0])]


def test_transform_output_is_conformed_to_the_schema_or_refused(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    write_files(usage, [[rec(1)]])
    rewrite_day(usage, DAY, lambda t: t.drop_columns(["service"]).select(list(reversed([c for c in t.column_names if c != "service"]))))
    assert read_day(usage, DAY).schema.equals(ARROW_SCHEMA)
    with pytest.raises(RewriteError, match="required column 'model'"):
        rewrite_day(usage, DAY, lambda t: t.drop_columns(["model"]))
    with pytest.raises(RewriteError, match="pyarrow.Table"):
        rewrite_day(usage, DAY, lambda t: None)  # the wrong type on purpose
    assert read_day(usage, DAY).num_rows == 1


def test_an_empty_result_empties_the_day(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    write_files(usage, [[rec(1)]])
    rewrite_day(usage, DAY, lambda t: t.slice(0, 0))
    assert files_of(usage) == []
    assert day_report(tmp_path) == []


def test_leftovers_of_a_crashed_rewrite_are_removed_by_the_next_one(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    write_files(usage, [[rec(1)], [rec(2)]])
    rewrite_day(usage, DAY, lambda t: t)
    versions = usage / VERSIONS_DIR / "2025-06-01"
    (versions / "v000000099").mkdir()  # a version written but never swapped in
    os.symlink("nowhere", usage / ".swap-2025-06-01-deadbeef")
    rewrite_day(usage, DAY, lambda t: t)
    assert len(os.listdir(versions)) == 1
    assert not [n for n in os.listdir(usage) if n.startswith(".swap")]
    assert read_day(usage, DAY).num_rows == 2


def test_flushes_after_a_rewrite_land_in_the_current_version(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    write_files(usage, [[rec(1)]])
    rewrite_day(usage, DAY, lambda t: t)
    write_partitions([rec(2)], usage, "r1", 2)
    assert read_day(usage, DAY).num_rows == 2
    assert part_name("r1", 2) in files_of(usage)


def test_readers_never_see_a_half_rewritten_day(tmp_path: Path) -> None:
    """Rewrites flip every row's model between two values while readers run the real report: each answer has every
    row under one model, never some of each, and never a missing or doubled row."""
    usage = tmp_path / "usage"
    write_files(usage, [[rec(i * 10 + j) for j in range(10)] for i in range(8)])
    rewrite_day(usage, DAY, set_model("m-0"))
    stop = threading.Event()
    answers: list[list[tuple[str, int]]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        import duckdb

        while not stop.is_set():
            try:
                rows = day_report(tmp_path)
            except duckdb.IOException:
                continue  # three listings in a row lost the race: a retry, not an inconsistency
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return
            answers.append([(r["model"], r["request_count"]) for r in rows])

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        # At least 40 rewrites, and on until the readers have answered a few times: on a loaded machine a reader can
        # lose every race of the first 40 (each a retry), which would leave nothing checked.
        n, deadline = 0, time.monotonic() + 120
        while n < 40 or (len(answers) < 5 and time.monotonic() < deadline):
            n += 1
            rewrite_day(usage, DAY, set_model(f"m-{n % 2}"))
            if n >= 40:
                time.sleep(0.05)  # room for a read between two swaps
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert answers
    assert all(len(a) == 1 and a[0][1] == 80 for a in answers), [a for a in answers if len(a) != 1 or a[0][1] != 80]


@pytest.mark.parametrize("legacy", [True, False], ids=["plain-directory", "versioned"])
def test_a_listing_that_opened_the_old_version_before_its_deletion_is_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool
) -> None:
    """The race CI once caught (a report with no rows): a reader opens the day directory, a whole rewrite runs (swap,
    then delete the old version), and only then does the reader read the entries, from a directory now deleted.
    Reproduced exactly: the directory is opened before the rewrite and read by its descriptor after it."""
    from tokentrail.processor.storage import parquet as storage

    usage = tmp_path / "usage"
    write_files(usage, [[rec(i * 10 + j) for j in range(10)] for i in range(4)])
    if not legacy:
        rewrite_day(usage, DAY, set_model("m-0"))
    day_dir = usage / f"date={DAY.isoformat()}"
    real_listdir = os.listdir
    raced: list[str] = []

    def listdir_racing_a_rewrite(path: str) -> list[str]:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if not raced:
                raced.append(path)
                rewrite_day(usage, DAY, set_model("m-1"))
            return real_listdir(fd)
        finally:
            os.close(fd)

    monkeypatch.setattr(storage.os, "listdir", listdir_racing_a_rewrite)
    names = storage.list_day(day_dir)
    monkeypatch.undo()
    assert raced
    assert len(names) == 1 and names[0].startswith("rewrite-"), names
    assert [(r["model"], r["request_count"]) for r in day_report(tmp_path)] == [("m-1", 40)]


@pytest.mark.parametrize("legacy", [True, False], ids=["plain-directory", "versioned"])
def test_at_every_step_of_a_rewrite_a_reader_lists_exactly_one_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool
) -> None:
    """Deterministic: the reader's listing (``report.dataset_files``) and a read of what it lists are checked after
    each file write and each directory sync of the rewrite."""
    import tokentrail.processor.storage.compaction as compaction
    from tokentrail.processor.storage.dataset import dataset_files

    usage = tmp_path / "usage"
    write_files(usage, [[rec(i * 10 + j) for j in range(10)] for i in range(3)])
    if not legacy:
        rewrite_day(usage, DAY, set_model("old"))
    old_model = "old" if not legacy else "gpt-4o"
    checks: list[str] = []

    def check() -> None:
        files = dataset_files(tmp_path, DAY, DAY)
        models = [m for f in files for m in pq.read_table(f, columns=["model"])["model"].to_pylist()]
        assert len(models) == 30 and len(set(models)) == 1, (files, set(models))
        checks.append(models[0])

    real_write, real_sync = compaction._write_file, compaction.fsync_dir

    def write_then_check(table: pa.Table, path: Path) -> None:
        real_write(table, path)
        check()

    def sync_then_check(path: Path) -> None:
        real_sync(path)
        check()

    monkeypatch.setattr(compaction, "_write_file", write_then_check)
    monkeypatch.setattr(compaction, "fsync_dir", sync_then_check)
    rewrite_day(usage, DAY, set_model("new"))
    assert checks[0] == old_model and checks[-1] == "new"
    assert len(checks) >= 4


def test_rewrites_never_race_a_flusher(tmp_path: Path) -> None:
    """A flusher keeps adding files while the day is compacted over and over: every row ends up exactly once."""
    usage = tmp_path / "usage"
    write_files(usage, [[rec(0)]])
    done = threading.Event()

    def flusher() -> None:
        for seq in range(1, 61):
            write_partitions([rec(seq)], usage, "r1", 100 + seq)
        done.set()

    thread = threading.Thread(target=flusher)
    thread.start()
    while not done.is_set():
        compact_day(usage, DAY, min_files=1)
    thread.join()
    compact_day(usage, DAY, min_files=1)
    ids = read_day(usage, DAY)["trace_id"].to_pylist()
    assert sorted(ids) == sorted(rec(i).trace_id for i in range(61))


def test_a_replayed_segment_that_compaction_already_merged_is_not_written_again(tmp_path: Path) -> None:
    # The receiver died after its Parquet file was renamed into place but before its WAL segment was deleted.
    wal_dir, usage = tmp_path / "wal", tmp_path / "usage"
    wal = WriteAheadLog(wal_dir, "r1")
    wal.append([rec(1), rec(2)])
    wal.close()
    (segment,) = [p for _, _, p in list_segments(wal_dir)]
    backup = segment.read_bytes()
    flush_segment(segment, usage)
    segment.write_bytes(backup)  # the delete never reached the disk
    write_files(usage, [[rec(3)]], first_seq=50)
    compact_day(usage, DAY)
    flush_segment(segment, usage)  # the restart replays the segment
    assert sorted(read_day(usage, DAY)["trace_id"].to_pylist()) == [rec(i).trace_id for i in (1, 2, 3)]
    compact_day(usage, DAY, min_files=1)  # the absorbed list survives further rewrites while the segment exists
    flush_segment(segment, usage) if segment.exists() else None
    assert read_day(usage, DAY).num_rows == 3


def test_a_legacy_plain_day_directory_stays_readable_and_is_converted_atomically(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    legacy = usage / "date=2025-06-01"
    legacy.mkdir(parents=True)
    write_files(tmp_path / "scratch", [[rec(1)], [rec(2)]])
    for name in files_of(tmp_path / "scratch"):
        shutil.copy(tmp_path / "scratch" / "date=2025-06-01" / name, legacy / name)
    assert day_report(tmp_path)[0]["request_count"] == 2
    compact_day(usage, DAY)
    assert legacy.is_symlink()
    assert day_report(tmp_path)[0]["request_count"] == 2


# -- compaction -----------------------------------------------------------------------------------------------


def test_compaction_merges_a_days_files_into_one(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    write_files(usage, [[rec(i)] for i in range(5)])
    result = compact_day(usage, DAY)
    assert result is not None
    assert (result.files_before, result.files_after, result.rows_before, result.rows_after) == (5, 1, 5, 5)
    assert len(files_of(usage)) == 1


def test_compaction_drops_exact_duplicates_by_response_id_and_by_span(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    ours = rec(1, response_id="chatcmpl-1", source="tokentrail")
    theirs = rec(2, response_id="chatcmpl-1", source="otel-genai")  # another instrumentation saw the same call
    other_provider = rec(3, response_id="chatcmpl-1", provider="azure")  # a different call that shares the id
    retried = rec(4)
    write_files(usage, [[ours, retried], [theirs, retried], [other_provider, rec(5)]])
    result = compact_day(usage, DAY)
    assert result is not None and result.duplicates_removed == 2
    table = read_day(usage, DAY)
    assert sorted(table["trace_id"].to_pylist()) == [rec(i).trace_id for i in (1, 3, 4, 5)]
    same_call = pc.and_(pc.equal(table["response_id"], "chatcmpl-1"), pc.equal(table["provider"], "openai"))
    kept = table.filter(same_call)
    assert kept["source"].to_pylist() == ["tokentrail"]  # the first copy ingested wins, as at ingest


def test_compaction_changes_no_report_total_except_duplicates(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    write_files(usage, [[rec(i) for i in range(3)], [rec(3), rec(4)], [rec(0)]])  # rec(0) twice
    before = day_report(tmp_path, "none")[0]
    compact(usage)
    after = day_report(tmp_path, "none")[0]
    assert before["request_count"] == 6 and after["request_count"] == 5
    assert after["total_cost"] == Decimal("0.005")


def test_compaction_skips_days_with_fewer_files_than_asked(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    write_files(usage, [[rec(1), rec(1)]])
    assert compact_day(usage, DAY) is None
    result = compact_day(usage, DAY, min_files=1)
    assert result is not None and result.rows_after == 1


def test_dedupe_table_keeps_the_first_copy_and_sorts_by_time() -> None:
    from tokentrail.processor.schema import records_to_table

    table = records_to_table([rec(3), rec(1), rec(3, source="second"), rec(2)])
    out = dedupe_table(table)
    assert out["trace_id"].to_pylist() == [rec(i).trace_id for i in (1, 2, 3)]
    assert out.filter(pc.equal(out["trace_id"], rec(3).trace_id))["source"].to_pylist() == ["tokentrail"]


def test_tokentrail_compact_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    usage = tmp_path / "usage"
    write_files(usage, [[rec(1)], [rec(1)], [rec(2, timestamp=T + timedelta(days=1))], [rec(3, timestamp=T + timedelta(days=1))]])
    code = cli.main(["compact", "--data-dir", str(tmp_path), "--end-date", "2025-06-01", "--json"])
    assert code == 0
    import json

    (line,) = capsys.readouterr().out.strip().splitlines()
    assert json.loads(line) == {
        "day": "2025-06-01",
        "files_before": 2,
        "files_after": 1,
        "rows_before": 2,
        "rows_after": 1,
        "duplicates_removed": 1,
    }
    assert len(files_of(usage, date(2025, 6, 2))) == 2  # outside the range asked
    assert cli.main(["compact", "--data-dir", str(tmp_path)]) == 0
    assert len(files_of(usage, date(2025, 6, 2))) == 1
