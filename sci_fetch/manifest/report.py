"""What a finished run tells people: failures.csv and the printed summary, both read from the manifest."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sci_fetch.errors import DiskError
from sci_fetch.fs.csv_out import CsvWriter
from sci_fetch.manifest.models import State
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe.stats import Stats
from sci_fetch.observe.units import format_duration

log = logging.getLogger("sci_fetch")

NOT_DONE = [State.failed, State.missing, State.forbidden, State.pending]


@dataclass(frozen=True, slots=True)
class FailureRow:
    """One image of the run that is not done, or one record it could not use (``record`` says which)."""

    key: str
    destination: str
    reason: str
    attempts: int
    image_id: str
    state: str
    record: str


def failure_rows(manifest: Manifest, run_id: int) -> Iterator[FailureRow]:
    """Every image of this run that is not done, then every record it could not use, in manifest order."""
    for row in manifest.rows(NOT_DONE, run_id=run_id):
        reason = row.last_error or (
            "not attempted (the run was stopped)" if row.state is State.pending else row.state.value
        )
        yield FailureRow(row.key, row.dest, reason, row.attempts, row.image_id, row.state.value, "")
    for kind, record, image_id, key, dest, reason in manifest.rejects(run_id):
        yield FailureRow(key or "", dest or "", reason, 0, image_id or "", kind, record)


def write_failures(manifest: Manifest, run_id: int, path: Path) -> int:
    """failures.csv of a run, replaced whole (fs.csv_out); the number of rows. A disk that fails is one
    error line and no half-written file: the run's exit code stands and ``status`` shows the same."""
    count = 0
    try:
        with CsvWriter(path, FailureRow, lineterminator="\r\n") as out:
            for failure in failure_rows(manifest, run_id):
                out.add(failure)
                count += 1
            out.commit()
    except DiskError as exc:
        cause = exc.__cause__
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else exc
        log.error("%s not written: %s; 'sci-fetch status' shows the same from the manifest", path, why)
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
