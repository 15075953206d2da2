"""``tokentrail wal verify``: checks every WAL segment of a data directory offline, reading only (a receiver may be
running: its newest segment may end in a frame being written, which is reported as a torn tail, not damage).

For each segment: intact frames and rows, each damaged range (offsets, why, frames lost at least), a torn tail;
then what ``wal/quarantine/`` already holds. Exit 1 when any segment is damaged, so a script can stop before a
receiver's recovery quarantines it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

from tokentrail.processor import environment
from tokentrail.processor.storage.wal import QUARANTINE_DIR, Damage, list_segments, read_segment

__all__ = ["register", "verify_wal"]

EXIT_OK: Final = 0
EXIT_DAMAGED: Final = 1


def register(commands: Any, default_data_dir: Path) -> None:
    parser = commands.add_parser(
        "wal",
        help="check the write-ahead log for damaged frames (read-only)",
        description="Inspects DATA_DIR/wal without modifying it.",
    )
    actions = parser.add_subparsers(dest="wal_command", metavar="ACTION")
    actions.required = True
    verify = actions.add_parser(
        "verify",
        help="every segment: intact frames, damaged ranges with offsets; exit 1 when anything is damaged",
        description="Reads every WAL segment and reports what a receiver's recovery would keep, quarantine or drop. "
        "Modifies nothing.",
    )
    verify.add_argument("--data-dir", type=Path, default=default_data_dir, help=f"(env {environment.DATA_DIR})")
    verify.add_argument("--json", action="store_true", help="one JSON object instead of text")
    verify.set_defaults(handler=_verify)


def _damage(d: Damage) -> dict[str, Any]:
    return {"start": d.start, "end": d.end, "bytes": d.size, "reason": d.reason, "frames_lost": d.frames}


def verify_wal(wal_dir: Path) -> dict[str, Any]:
    """What each segment under ``wal_dir`` holds, as recovery would read it (the newest segment of each receiver
    may end in a torn frame; any other short ending is damage)."""
    segments = list_segments(wal_dir)
    newest = {rid: seq for rid, seq, _ in segments}  # sorted oldest first: the last seq seen per receiver wins
    out: list[dict[str, Any]] = []
    for rid, seq, path in segments:
        try:
            read = read_segment(path, tail_may_be_torn=newest[rid] == seq)
        except FileNotFoundError:
            continue  # flushed and deleted by a running receiver while we listed
        out.append(
            {
                "segment": path.name,
                "bytes": read.size,
                "frames_ok": read.frames,
                "rows_ok": read.num_rows,
                "damaged": [_damage(d) for d in read.damage],
                "damaged_frames": read.damaged_frames,
                "damaged_bytes": read.damaged_bytes,
                "torn_tail": _damage(read.torn_tail) if read.torn_tail is not None else None,
            }
        )
    quarantine_dir = wal_dir / QUARANTINE_DIR
    quarantined = sorted(p.name for p in quarantine_dir.iterdir() if not p.name.startswith(".")) if (
        quarantine_dir.is_dir()
    ) else []
    return {
        "wal_dir": str(wal_dir),
        "segments": out,
        "damaged_segments": sum(1 for s in out if s["damaged"]),
        "damaged_frames": sum(s["damaged_frames"] for s in out),
        "damaged_bytes": sum(s["damaged_bytes"] for s in out),
        "quarantined": quarantined,
    }


def _verify(args: argparse.Namespace) -> int:
    wal_dir = Path(args.data_dir) / "wal"
    if not wal_dir.is_dir():
        what = "is not a folder" if wal_dir.exists() else "does not exist (no receiver has run on this data dir)"
        print(f"tokentrail wal verify: {wal_dir} {what}", file=sys.stderr)
        return EXIT_DAMAGED if wal_dir.exists() else EXIT_OK
    report = verify_wal(wal_dir)
    code = EXIT_DAMAGED if report["damaged_segments"] else EXIT_OK
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return code
    for s in report["segments"]:
        state = "DAMAGED" if s["damaged"] else "ok"
        print(f"{s['segment']}  {state}: {s['frames_ok']} frame(s) intact ({s['rows_ok']} row(s)), {s['bytes']} B")
        for d in s["damaged"]:
            print(
                f"  bytes {d['start']}-{d['end']} ({d['bytes']} B) unreadable: {d['reason']}; at least "
                f"{d['frames_lost']} frame(s) lost"
            )
        torn = s["torn_tail"]
        if torn is not None:
            print(
                f"  torn tail at bytes {torn['start']}-{torn['end']} ({torn['bytes']} B): a frame cut short by a "
                "crash mid-write, never acknowledged (recovery drops it)"
            )
    print(
        f"{len(report['segments'])} segment(s), {report['damaged_segments']} damaged: {report['damaged_frames']} "
        f"frame(s), {report['damaged_bytes']} B unreadable"
        + ("; a receiver's recovery stores every intact frame and moves the damaged bytes to "
           f"{wal_dir / QUARANTINE_DIR}" if code else "")
    )
    if report["quarantined"]:
        print(f"quarantine holds {len(report['quarantined'])} file(s) of damaged bytes from earlier recoveries: "
              f"{wal_dir / QUARANTINE_DIR}")
    return code
