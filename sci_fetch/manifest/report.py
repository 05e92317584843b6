"""What a finished run tells people: failures.csv and the printed summary, both read from the manifest."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from sci_fetch.manifest.models import State
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe.stats import Stats, format_duration

log = logging.getLogger("sci_fetch")

FAILURE_COLUMNS = ["key", "destination", "reason", "attempts", "image_id", "state", "record"]


def write_failures(manifest: Manifest, run_id: int, path: Path) -> int:
    """Every image of this run that is not done, and every record it could not use; atomic replace."""
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(FAILURE_COLUMNS)
            for row in manifest.rows([State.failed, State.missing, State.forbidden, State.pending], run_id=run_id):
                reason = row.last_error or (
                    "not attempted (the run was stopped)" if row.state is State.pending else row.state.value
                )
                writer.writerow([row.key, row.dest, reason, row.attempts, row.image_id, row.state.value, ""])
                count += 1
            for kind, record, image_id, key, dest, reason in manifest.rejects(run_id):
                writer.writerow([key or "", dest or "", reason, 0, image_id or "", kind, record])
                count += 1
        os.replace(tmp, path)
    except OSError as exc:  # disk full: say so, leave no half-written file, keep the run's exit code
        tmp.unlink(missing_ok=True)
        log.error("%s not written: %s; 'sci-fetch status' shows the same from the manifest", path, exc.strerror or exc)
        return 0
    return count


def summary_text(
    stats: Stats, counts: dict[str, int], failures: Path, failures_count: int, manifest: Path, dry_run: bool = False
) -> str:
    retries = ", ".join(f"{k} {v}" for k, v in sorted(stats.retries.items())) or "none"
    lines = [
        "sci-fetch summary",
        f"  images in this COCO file: done {counts.get('done', 0)}, failed {counts.get('failed', 0)}, "
        f"missing {counts.get('missing', 0)}, forbidden {counts.get('forbidden', 0)}, pending {counts.get('pending', 0)}, "
        f"invalid {stats.invalid}, duplicates {stats.duplicates}",
        f"  this run: fetched {stats.done}, adopted {stats.adopted}, already done {stats.skipped_done}",
        f"  {stats.bytes / 1e6:.1f} MB in {format_duration(stats.elapsed())}: {stats.images_per_second():.1f} images/s, "
        f"{stats.mb_per_second():.1f} MB/s, {stats.requests} S3 requests, retries: {retries}",
        f"  manifest: {manifest}",
    ]
    if failures_count:
        lines.append(f"  failures: {failures_count} listed in {failures}")
    if dry_run:
        lines.append(f"  dry run: {stats.to_fetch} images would be fetched or verified; no request was sent")
    return "\n".join(lines)
