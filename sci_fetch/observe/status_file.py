"""The status file: a JSON snapshot of the run, atomically replaced every few seconds.

Anything outside the process (a sidecar, ``cat`` in ``docker exec``, a cron check) can read it without
touching SQLite; a reader never sees a half-written file because it is renamed into place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sci_fetch.fs import atomic
from sci_fetch.observe.outputs import SnapshotImages, SnapshotRates, StatusSnapshot
from sci_fetch.observe.stats import Stats

log = logging.getLogger("sci_fetch")


class RateWindow:
    """Current rate over the last snapshots (the average since start hides a recent stall)."""

    def __init__(self, span: float = 30.0) -> None:
        self.span = span
        self._points: deque[tuple[float, int, int]] = deque()

    def add(self, stats: Stats) -> tuple[float, float]:
        now = time.monotonic()
        self._points.append((now, stats.done + stats.adopted, stats.bytes))
        while len(self._points) > 2 and now - self._points[0][0] > self.span:
            self._points.popleft()
        t0, n0, b0 = self._points[0]
        dt = now - t0
        if dt <= 0:
            return 0.0, 0.0
        return (stats.done + stats.adopted - n0) / dt, (stats.bytes - b0) / dt


def snapshot(
    stats: Stats, current: tuple[float, float], last_errors: list[str], state: str, shard: str
) -> StatusSnapshot:
    """The status file's document for these figures; ``current`` is the recent (images/s, bytes/s)."""
    eta = stats.eta_seconds()
    return StatusSnapshot(
        time=time.time(),
        state=state,
        shard=shard,
        images=SnapshotImages(
            total=stats.total,
            done=stats.skipped_done + stats.done + stats.adopted,
            fetched=stats.done,
            adopted=stats.adopted,
            already_done=stats.skipped_done,
            failed=stats.failed,
            missing=stats.missing + stats.skipped_missing,
            forbidden=stats.forbidden,
            invalid=stats.invalid,
            duplicates=stats.duplicates,
            in_flight=stats.in_flight,
            pending=_pending(stats),
        ),
        bytes=stats.bytes,
        rates=SnapshotRates(
            images_per_second=round(current[0], 2),
            bytes_per_second=round(current[1]),
            average_images_per_second=round(stats.images_per_second(), 2),
            average_bytes_per_second=round(stats.bytes / stats.elapsed()),
        ),
        eta_seconds=round(eta) if eta is not None else None,
        elapsed_seconds=round(stats.elapsed(), 1),
        requests=stats.requests,
        unreachable_since=stats.unreachable_since,
        request_rate=round(stats.request_rate, 1) if stats.request_rate is not None else None,
        slowdowns=stats.slowdowns,
        retries=dict(stats.retries),
        last_errors=last_errors,
    )


def _pending(stats: Stats) -> int | None:
    """Every image of the COCO file not finished or rejected yet, those not read yet included."""
    if stats.total is None:
        return None
    accounted = stats.skipped_done + stats.skipped_missing + stats.finished() + stats.invalid + stats.duplicates
    return max(0, stats.total - accounted)


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace the status file whole (files.atomic: no half-written file, no temp left on a full disk)."""
    atomic.write_atomic(path, json.dumps(data, indent=1))


async def keep_writing(
    path: Path,
    interval: float,
    stats: Callable[[], Stats],
    make: Callable[[Stats, tuple[float, float]], StatusSnapshot],
) -> None:
    """Rewrite the status file every ``interval`` seconds until cancelled; ``make`` turns the figures and the
    current rates into the snapshot. A write that fails (disk full for a moment) is tried again next time."""
    window = RateWindow()
    while True:
        current = stats()
        try:
            await asyncio.to_thread(write_atomic, path, make(current, window.add(current)).document())
        except OSError as exc:
            log.debug("status file not written: %s", exc)
        await asyncio.sleep(interval)


def write_final(path: Path, data: StatusSnapshot) -> None:
    """The last snapshot of a run; a convenience, so a failure is one warning and the run's result stands."""
    try:
        write_atomic(path, data.document())
    except OSError as exc:
        log.warning("status file not written: %s", exc.strerror or exc)
