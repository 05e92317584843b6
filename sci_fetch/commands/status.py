"""``sci-fetch status``: what a download has done so far, read from its manifests (also while it runs).

All manifests in the output dir are merged, so N shards writing into one folder read as one job.
``--health`` turns the heartbeat into an exit code for Docker's HEALTHCHECK.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from sci_fetch.commands.common import add_common_flags, add_output_flag, output_from
from sci_fetch.errors import UsageError
from sci_fetch.exits import ExitCode
from sci_fetch.fs.layout import STATE_DIR
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe.outputs import ErrorLine, RunRecord, StatusReport
from sci_fetch.observe.units import format_duration
from sci_fetch.settings import load_settings

HELP = "show the progress of a download from its manifests (safe while the download runs)"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        help=HELP,
        description=HELP + ". Reads the same settings as download (settings.toml, SCI_FETCH_*), so a plain "
        "`sci-fetch status` finds the download's output. Exit code 0 when every image is done, 1 otherwise; "
        "with --health, 0 while the run is alive (fresh heartbeat) or ended well, 1 when it stalled or failed.",
    )
    add_common_flags(parser)
    add_output_flag(
        parser, positional=True, what=f"the download's output folder; every manifest in OUTPUT/{STATE_DIR}/ is read"
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        action="append",
        default=None,
        help="read this manifest file instead (may be given several times; default: the settings' "
        "manifest, else every one under OUTPUT)",
    )
    parser.add_argument(
        "--errors",
        "--show",
        dest="errors",
        type=int,
        default=5,
        metavar="N",
        help="how many of the latest errors to show (default: 5)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--health",
        action="store_true",
        help="print one line and exit 0 if the run is alive or ended with exit code 0, else 1",
    )
    parser.add_argument(
        "--max-age",
        type=float,
        default=120.0,
        help="with --health: seconds without a manifest write after which a running job counts as stalled (default: 120)",
    )
    parser.set_defaults(run=run)


def manifests_from(args: argparse.Namespace) -> tuple[Path, list[Path]]:
    """The output folder and manifests a download with the same settings wrote (flags > env > settings.toml).

    Every shard's manifest is read, so the shard settings themselves do not matter here.
    """
    settings = load_settings(args.config, {"output": output_from(args), "shard_count": 1, "shard_index": 0})
    if args.manifest:
        return settings.output, list(args.manifest)
    if settings.manifest is not None:
        return settings.output, [settings.manifest]
    return settings.output, find_manifests(settings.output)


def find_manifests(output: Path) -> list[Path]:
    found = sorted((output / STATE_DIR).glob("manifest*.sqlite"))
    if not found:
        raise UsageError(f"no manifest in {output / STATE_DIR}; has a download been started with this output dir?")
    return found


def read_one(path: Path, errors: int) -> dict[str, Any]:
    manifest = Manifest(path, readonly=True)
    try:
        heartbeat = manifest.meta("heartbeat")
        counts = manifest.counts()
        expected = manifest.images_in_coco()
        if expected is not None:  # images of the COCO file not read yet (a stopped run) are pending too
            counts["pending"] += max(0, expected - sum(counts.values()))
        return {
            "path": str(path),
            "counts": counts,
            "bytes": manifest.bytes_done(),
            "rate": manifest.rate(60.0),
            "heartbeat": float(heartbeat) if heartbeat else None,
            "errors": manifest.last_errors(errors),
            "last_run": manifest.last_run(),
        }
    finally:
        manifest.close()


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {state: sum(p["counts"][state] for p in parts) for state in parts[0]["counts"]}
    errors = sorted((e for p in parts for e in p["errors"]), key=lambda r: r.updated_at or 0, reverse=True)
    heartbeats = [p["heartbeat"] for p in parts if p["heartbeat"]]
    return {
        "counts": counts,
        "bytes": sum(p["bytes"] for p in parts),
        "images_per_second": sum(p["rate"][0] for p in parts),
        "bytes_per_second": sum(p["rate"][1] for p in parts),
        "heartbeat": max(heartbeats) if heartbeats else None,
        "errors": errors,
        "runs": [p["last_run"] for p in parts],
        "manifests": [p["path"] for p in parts],
    }


def health(part: dict[str, Any], max_age: float, now: float) -> tuple[bool, str]:
    """One manifest's health: alive if running with a fresh heartbeat, or finished with exit 0."""
    last = part["last_run"]
    name = Path(part["path"]).name
    if last is None:
        return False, f"{name}: no run recorded"
    if last["ended_at"] is None:
        age = now - part["heartbeat"] if part["heartbeat"] else float("inf")
        if age <= max_age:
            return True, f"{name}: running, last manifest write {age:.0f}s ago"
        return False, f"{name}: stalled, no manifest write for {age:.0f}s (limit {max_age:.0f}s)"
    if last["exit_code"] == 0:
        return True, f"{name}: finished, all images done"
    return False, f"{name}: last run ended with exit code {last['exit_code']}"


def report(job: dict[str, Any], now: float, errors: int) -> StatusReport:
    """``status --json`` of the merged manifests (docs/schema/status-command.json)."""
    counts = job["counts"]
    eta = eta_seconds(job)
    age = now - job["heartbeat"] if job["heartbeat"] else None
    runs = [RunRecord(**r) if r else None for r in job["runs"]]
    return StatusReport(
        manifests=job["manifests"],
        counts=counts,
        images=sum(counts.values()),
        bytes_done=job["bytes"],
        images_per_second_last_minute=round(job["images_per_second"], 2),
        bytes_per_second_last_minute=round(job["bytes_per_second"]),
        eta_seconds=round(eta) if eta is not None else None,
        heartbeat_age_seconds=round(age, 1) if age is not None else None,
        running=any(r and r["ended_at"] is None for r in job["runs"]),
        last_run=runs[0] if len(runs) == 1 else None,
        last_runs=runs,
        last_errors=[ErrorLine(key=r.key, state=r.state.value, error=r.last_error) for r in job["errors"][:errors]],
    )


def eta_seconds(job: dict[str, Any]) -> float | None:
    """Seconds left for the pending and failed images at the last minute's rate; None when nothing moves."""
    left = job["counts"]["pending"] + job["counts"]["failed"]
    return left / job["images_per_second"] if job["images_per_second"] > 0 else None


def run(args: argparse.Namespace) -> int:
    _output, paths = manifests_from(args)
    parts = [read_one(p, args.errors) for p in paths]
    now = time.time()
    if args.health:
        verdicts = [health(p, args.max_age, now) for p in parts]
        ok = all(v[0] for v in verdicts)
        print(("healthy: " if ok else "unhealthy: ") + "; ".join(v[1] for v in verdicts))
        return ExitCode.OK if ok else ExitCode.INCOMPLETE
    job = merge(parts)
    print(report(job, now, args.errors).to_json() if args.json else "\n".join(text_lines(job, now, args.errors)))
    counts = job["counts"]
    total = sum(counts.values())
    return ExitCode.OK if counts["done"] == total and total > 0 else ExitCode.INCOMPLETE


def text_lines(job: dict[str, Any], now: float, errors: int) -> list[str]:
    """The report a person reads: counts, bytes, the last minute's rate and ETA, each run's state, the latest errors."""
    counts = job["counts"]
    eta = eta_seconds(job)
    age = now - job["heartbeat"] if job["heartbeat"] else None
    lines = [
        "manifest " + ", ".join(job["manifests"]),
        f"  images {sum(counts.values())}: done {counts['done']}, pending {counts['pending']}, "
        f"failed {counts['failed']}, missing {counts['missing']}, forbidden {counts['forbidden']}",
        f"  {job['bytes'] / 1e6:.1f} MB on disk; last minute: {job['images_per_second']:.1f} images/s, "
        f"{job['bytes_per_second'] / 1e6:.1f} MB/s" + (f", ETA {format_duration(eta)}" if eta is not None else ""),
    ]
    for last in job["runs"]:
        if last:
            state = "running" if last["ended_at"] is None else f"ended with exit code {last['exit_code']}"
            lines.append(f"  last run #{last['run_id']}: {state}")
    if age is not None:
        lines.append(f"  last manifest write {format_duration(age)} ago")
    if job["errors"]:
        lines.append("  latest errors:")
        lines.extend(f"    {r.state.value}: {r.key}: {r.last_error}" for r in job["errors"][:errors])
    return lines
