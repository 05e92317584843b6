"""``sci-fetch status``: what a download has done so far, read from its manifest (also while it runs)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sci_fetch.engine.stats import format_duration
from sci_fetch.keys.mapping import STATE_DIR
from sci_fetch.manifest.store import Manifest

HELP = "show the progress of a download from its manifest (safe while the download runs)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help=HELP, description=HELP + ". Exit code 0 when every image is done, 1 otherwise.")
    parser.add_argument("output", nargs="?", type=Path, default=Path("images"),
                        help="the download's output dir (default: images)")
    parser.add_argument("--manifest", type=Path, default=None, help=f"manifest file (default: OUTPUT/{STATE_DIR}/manifest.sqlite)")
    parser.add_argument("--errors", type=int, default=5, help="how many of the latest errors to show (default: 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = args.manifest or args.output / STATE_DIR / "manifest.sqlite"
    manifest = Manifest(path, readonly=True)
    try:
        counts = manifest.counts()
        done_bytes = manifest.bytes_done()
        img_rate, byte_rate = manifest.rate(60.0)
        heartbeat = manifest.meta("heartbeat")
        errors = manifest.last_errors(args.errors)
        last = manifest.last_run()
    finally:
        manifest.close()
    total = sum(counts.values())
    left = counts["pending"] + counts["failed"]
    eta = left / img_rate if img_rate > 0 else None
    age = time.time() - float(heartbeat) if heartbeat else None
    running = bool(last and last["ended_at"] is None)
    if args.json:
        print(json.dumps({
            "manifest": str(path), "counts": counts, "images": total, "bytes_done": done_bytes,
            "images_per_second_last_minute": round(img_rate, 2), "bytes_per_second_last_minute": round(byte_rate),
            "eta_seconds": round(eta) if eta is not None else None, "heartbeat_age_seconds": round(age, 1) if age is not None else None,
            "running": running, "last_run": last,
            "last_errors": [{"key": r.key, "state": r.state.value, "error": r.last_error} for r in errors],
        }, default=str))
    else:
        print(f"manifest {path}")
        print(f"  images {total}: done {counts['done']}, pending {counts['pending']}, failed {counts['failed']}, missing {counts['missing']}")
        print(f"  {done_bytes / 1e6:.1f} MB on disk; last minute: {img_rate:.1f} images/s, {byte_rate / 1e6:.1f} MB/s"
              + (f", ETA {format_duration(eta)}" if eta is not None else ""))
        if last:
            state = "running" if running else f"ended with exit code {last['exit_code']}"
            print(f"  last run #{last['run_id']}: {state}" + (f"; last manifest write {age:.0f}s ago" if age is not None else ""))
        if errors:
            print("  latest errors:")
            for r in errors:
                print(f"    {r.state.value}: {r.key}: {r.last_error}")
    return 0 if counts["done"] == total and total > 0 else 1
