"""``tokentrail status``: each receiver's counters (from ``DATA_DIR/status/<receiver>.json``, refreshed every few
seconds by a running receiver), what waits in the WAL, and what the Parquet dataset holds."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tokentrail.processor import environment
from tokentrail.processor.ingest.status import StatusReadError, read_status_files
from tokentrail.processor.reports.dataset import USAGE_DIR, require_dataset
from tokentrail.processor.storage.parquet import list_day
from tokentrail.processor.storage.wal import QUARANTINE_DIR, list_segments

__all__ = ["collect_status", "register"]

STALE_SECONDS = 30.0
EXIT_FAILURE = 1


def register(commands: Any, default_data_dir: Path) -> None:
    parser = commands.add_parser(
        "status",
        help="receiver counters, WAL backlog and dataset size",
        description="Reads the data directory only: works whether or not receivers are running.",
    )
    parser.add_argument("--data-dir", type=Path, default=default_data_dir, help=f"(env {environment.DATA_DIR})")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    parser.set_defaults(handler=_status)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect_status(data_dir: Path) -> dict[str, Any]:
    """Receivers, WAL backlog and dataset size of ``data_dir``; ``StatusReadError`` when its ``status/`` or
    ``wal/`` is there but not a folder (a guess of "nothing there" would hide it)."""
    now = time.time()
    receivers = []
    for status in read_status_files(data_dir):
        updated = status.get("updated_at")
        fresh = isinstance(updated, (int, float)) and now - updated < STALE_SECONDS
        status["state"] = (
            "running" if status.get("running") and fresh and _alive(status.get("pid")) else "stopped"
        )
        receivers.append(status)
    wal_dir = data_dir / "wal"
    if wal_dir.exists() and not wal_dir.is_dir():  # listing it would raise NotADirectoryError
        raise StatusReadError(
            f"cannot read the WAL: {wal_dir} is a file, not the wal/ folder receivers write (move it away, or point "
            "--data-dir at your receiver's data directory)"
        )
    segments = list_segments(wal_dir)
    wal_bytes = 0
    for _, _, path in segments:
        try:
            wal_bytes += path.stat().st_size
        except OSError:
            pass
    corrupt = sorted(p.name for p in wal_dir.glob("*.corrupt")) if wal_dir.is_dir() else []
    quarantined: list[str] = []
    quarantined_bytes = 0
    quarantine_dir = wal_dir / QUARANTINE_DIR
    if quarantine_dir.is_dir():  # damaged WAL bytes a recovery or flush kept: acknowledged records may be lost
        for kept in sorted(os.scandir(quarantine_dir), key=lambda e: e.name):
            if kept.name.startswith("."):
                continue
            quarantined.append(kept.name)
            try:
                quarantined_bytes += kept.stat().st_size
            except OSError:
                pass
    days: dict[str, dict[str, int]] = {}
    usage = data_dir / USAGE_DIR
    if usage.is_dir():
        for entry in sorted(os.listdir(usage)):
            if not entry.startswith("date="):
                continue
            directory = usage / entry
            names = list_day(directory)
            size = 0
            for name in names:
                try:
                    size += (directory / name).stat().st_size
                except OSError:
                    pass
            days[entry.removeprefix("date=")] = {"files": len(names), "bytes": size}
    return {
        "data_dir": str(data_dir),
        "receivers": receivers,
        "wal": {
            "segments": len(segments),
            "bytes": wal_bytes,
            "corrupt_segments": corrupt,
            "quarantined": quarantined,
            "quarantined_bytes": quarantined_bytes,
        },
        "dataset": {
            "days": len(days),
            "files": sum(d["files"] for d in days.values()),
            "bytes": sum(d["bytes"] for d in days.values()),
            "by_day": days,
        },
    }


def _status(args: argparse.Namespace) -> int:
    try:
        status = collect_status(require_dataset(args.data_dir))
    except StatusReadError as exc:
        print(f"tokentrail status: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True, default=str))
        return 0
    out = sys.stdout
    print(f"data dir   {status['data_dir']}", file=out)
    if not status["receivers"]:
        print("receivers  none has run on this data dir", file=out)
    for r in status["receivers"]:
        m = r.get("metrics", {})
        ports = f"grpc {r.get('grpc_port')}" + (f", http {r.get('http_port')}" if r.get("http_port") is not None else "")
        print(f"receiver   {r.get('receiver_id')} ({r['state']}, pid {r.get('pid')}, {ports})", file=out)
        print(
            "           spans received {spans_received:.0f}, accepted {spans_accepted:.0f}, rejected "
            "{spans_rejected:.0f}, deduplicated {spans_deduplicated:.0f}, skipped {spans_skipped:.0f}, "
            "unpriced {records_unpriced:.0f}".format(**{k: m.get(k, 0) for k in (
                "spans_received", "spans_accepted", "spans_rejected", "spans_deduplicated", "spans_skipped",
                "records_unpriced")}),
            file=out,
        )
        print(
            "           requests ok {a:.0f}, invalid {b:.0f}, unauthenticated {c:.0f}, unavailable {d:.0f}; "
            "WAL pending {e:.0f} B, flush lag {f:.1f} s".format(
                a=m.get("requests_ok", 0),
                b=m.get("requests_invalid", 0),
                c=m.get("requests_unauthenticated", 0),
                d=m.get("requests_unavailable", 0),
                e=m.get("wal_pending_bytes", 0),
                f=m.get("flush_lag_seconds", 0),
            ),
            file=out,
        )
        print(  # OTLP metrics and logs are acknowledged and dropped: TokenTrail bills from spans
            "           metric points ignored {a:.0f}, log records ignored {b:.0f}".format(
                a=m.get("metric_points_ignored", 0), b=m.get("log_records_ignored", 0)
            ),
            file=out,
        )
        if m.get("wal_corrupt_frames", 0) or m.get("wal_torn_tails", 0):
            print(
                "           WAL damaged frames {a:.0f} (quarantined), torn tails {b:.0f} (never acknowledged)".format(
                    a=m.get("wal_corrupt_frames", 0), b=m.get("wal_torn_tails", 0)
                ),
                file=out,
            )
    wal = status["wal"]
    print(f"wal        {wal['segments']} segment(s), {wal['bytes']} B waiting for Parquet", file=out)
    if wal["corrupt_segments"]:
        print(f"           corrupt segments kept for inspection: {', '.join(wal['corrupt_segments'])}", file=out)
    if wal["quarantined"]:
        print(
            f"           DAMAGED: {len(wal['quarantined'])} range(s) of unreadable WAL bytes ({wal['quarantined_bytes']} B)"
            f" in {Path(status['data_dir']) / 'wal' / QUARANTINE_DIR}: {', '.join(wal['quarantined'])}",
            file=out,
        )
    ds = status["dataset"]
    print(f"dataset    {ds['days']} day(s), {ds['files']} file(s), {ds['bytes']} B", file=out)
    return 0
