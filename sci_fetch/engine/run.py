"""The owner of a run, one for a single-process and for a ``--processes`` run: it begins and ends the run in
the manifest, catches SIGINT/SIGTERM, supervises the helpers (status file, progress, the image count), serves
the metrics, and computes the exit code from the manifest.

What does the work is a ``Work``: the pipeline itself (engine.pipeline) or the parent of N processes that
each run a pipeline (engine.processes). The owner never downloads, the work never owns the run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from sci_fetch.coco.source import count_images
from sci_fetch.engine import feed, quick
from sci_fetch.engine.stop import Stop, cancel_all, catch_signals, start_supervised, supervised
from sci_fetch.errors import DiskError, UsageError
from sci_fetch.exits import ExitCode, StopReason, exit_code_for
from sci_fetch.keys.shard import in_shard
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe.metrics import serve as serve_metrics
from sci_fetch.observe.progress import choose_mode, report
from sci_fetch.observe.stats import Stats
from sci_fetch.observe.status_file import keep_writing, snapshot, write_final
from sci_fetch.settings import Settings

log = logging.getLogger("sci_fetch")

COUNT_AFTER = 2.0  # seconds before the COCO file is counted for the ETA (see RunOwner._count_total)
REAL_DOWNLOAD = 512  # images handed to the workers that make a run worth counting its COCO file for
WATCH_EVERY = 0.25  # seconds between two looks at the run's figures while the total is not known


@dataclass
class RunResult:
    run_id: int
    stats: Stats
    exit_code: ExitCode
    stop_reason: StopReason | None
    message: str | None
    counts: dict[str, int]


class Work(Protocol):
    """What a run owner runs: the pipeline, or the processes that each run one."""

    extra: dict[str, Any]  # added to status.json and the run's summary ({"processes": N})
    feed_from: list[int]  # earlier runs whose leftovers to fetch first (engine/feed.py; each process claims pages)

    def live_stats(self) -> Stats: ...

    def last_errors(self) -> list[str]: ...

    def on_signal(self, name: str) -> None:
        """Say what a SIGINT/SIGTERM does (the stop itself is the owner's)."""

    async def run(self, run_id: int) -> None:
        """Until the work is done or the owner's Stop is set; may settle the Stop's reason at its end."""


class RunOwner:
    def __init__(self, settings: Settings, manifest: Manifest, work: Work, stop: Stop) -> None:
        self.settings = settings
        self.manifest = manifest
        self.work = work
        self.stop = stop
        self.shard = f"{settings.shard_index}/{settings.shard_count}"
        self._exact = False  # whether the live total is the exact count (else none, or an earlier run's)

    async def run(self) -> RunResult:
        settings = self.settings
        earlier = await asyncio.to_thread(feed.earlier_runs, self.manifest, settings)
        run_id = await asyncio.to_thread(self.manifest.begin_run, settings.model_dump(mode="json"))
        await asyncio.to_thread(quick.forget, self.manifest)
        await asyncio.to_thread(feed.started, self.manifest, settings, run_id, earlier)
        self.work.feed_from = [] if settings.dry_run else earlier
        stop_metrics = None
        if settings.metrics_port:
            stop_metrics = serve_metrics(settings.metrics_port, settings.metrics_host, self.work.live_stats, self.shard)
        counting = asyncio.create_task(supervised("image count", self._count_total(), self.stop))
        helpers = start_supervised(self.stop, self._helpers())
        try:
            with catch_signals(self.stop, self.work.on_signal):
                await self.work.run(run_id)
        finally:
            await cancel_all(helpers)
            await self._settle_total(counting)
            if stop_metrics is not None:
                stop_metrics()
        return await self._end(run_id)

    def _helpers(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        settings, stats = self.settings, self.work.live_stats()
        return [
            ("status file writer", self._status_loop()),
            ("progress display", report(stats, choose_mode(settings.progress), settings.log_interval)),
            ("manifest check", self._watch_manifest()),
        ]

    async def _watch_manifest(self) -> None:
        """The manifest's quick_check runs beside the run (manifest.checks.IntegrityCheck): damage it finds
        stops the run with its one line (exit 2), as a damaged manifest refused at the start would."""
        try:
            await asyncio.to_thread(self.manifest.confirm_intact)
        except UsageError as exc:
            self.stop.request(StopReason.usage, str(exc))
        except DiskError as exc:
            self.stop.request(StopReason.disk, f"stopping: {exc}")

    async def _end(self, run_id: int) -> RunResult:
        """The exit code from the manifest; the last status.json; the run ended in the manifest."""
        settings, stop = self.settings, self.stop
        await asyncio.to_thread(self.manifest.confirm_intact)  # damage found by its check: exit 2, one line
        stats = self.work.live_stats()
        counts = stats.with_unread(await asyncio.to_thread(self.manifest.counts, run_id))
        code = exit_code_for(stop.reason, counts, stats.invalid, settings.dry_run)
        final = snapshot(stats, (0.0, 0.0), self.work.last_errors(), stop.reason or "finished", self.shard)
        extra = self.work.extra
        await asyncio.to_thread(write_final, settings.state_file("status", "json"), final | {"exit_code": code} | extra)
        try:
            await asyncio.to_thread(self.manifest.end_run, run_id, code, stats.as_dict() | extra)
            if code == ExitCode.OK and not settings.dry_run:
                await asyncio.to_thread(quick.remember, self.manifest, settings, run_id)
        except DiskError as exc:
            log.error("%s", exc)
        return RunResult(run_id, stats, code, stop.reason, stop.message, counts)

    async def _status_loop(self) -> None:
        """Rewrite the status file every few seconds; the last one is written as the run ends."""
        await keep_writing(
            self.settings.state_file("status", "json"),
            self.settings.status_interval,
            self.work.live_stats,
            lambda stats, rates: (
                snapshot(stats, rates, self.work.last_errors(), "running", self.shard) | self.work.extra
            ),
        )

    async def _count_total(self) -> None:
        """The ETA's total, without a second parse of the COCO file when the run's own pass gives it.

        Until it is known the total is the manifest's count from an earlier run (provisional: the file may
        have changed). The pass's tally is exact once it reads the last record, and a pass that runs free
        over skips (a resume of done images) gets there within seconds. Only a real download holds its pass
        back behind the workers, for hours perhaps: once it has handed ``REAL_DOWNLOAD`` images to them
        (and ``COUNT_AFTER`` seconds have passed) the file is counted beside it. A stop before the last
        record counts it too: the images never read are pending in the run's counts."""
        stats = self.work.live_stats()
        stats.total = await asyncio.to_thread(self._provisional)
        started = asyncio.get_running_loop().time()
        while not self.stop.is_set():
            stats = self.work.live_stats()
            if stats.read_all:
                await self._take_tally(stats)
                return
            late = asyncio.get_running_loop().time() - started >= COUNT_AFTER
            if late and stats.to_fetch >= REAL_DOWNLOAD:
                break
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=WATCH_EVERY)
            except TimeoutError:
                pass
        stats = self.work.live_stats()
        if stats.read_all:
            await self._take_tally(stats)
            return
        stats.total = await count_total(self.settings, self.manifest)
        self._exact = True

    def _provisional(self) -> int | None:
        """The total an earlier run counted (its shard's share), at most ``limit``; None on a first run."""
        settings = self.settings
        value = self.manifest.meta(f"images_in_coco{settings.shard_suffix}")
        if value is None or not value.isdigit():
            return None
        return min(int(value), settings.limit) if settings.limit else int(value)

    async def _take_tally(self, stats: Stats) -> None:
        """Every record was read: the tally is the exact count, kept in the manifest for ``status``."""
        stats.total = stats.planned + stats.invalid + stats.duplicates
        self._exact = True
        key = f"images_in_coco{self.settings.shard_suffix}"
        await asyncio.to_thread(self.manifest.set_meta, key, str(stats.total))

    async def _settle_total(self, counting: asyncio.Task[None]) -> None:
        """Every record was read: the tally is the exact count, no second pass. Stopped early: the images
        never read count as pending, so the count is needed."""
        if self.stop.reason is not None:
            await asyncio.gather(counting, return_exceptions=True)
            return
        await cancel_all([counting])
        if not self._exact:
            await self._take_tally(self.work.live_stats())


async def count_total(settings: Settings, manifest: Manifest) -> int | None:
    """The images of the COCO file this run answers for (its shard's share, at most ``limit``); kept in the
    manifest so that ``status`` accounts for every image too."""
    assert settings.coco is not None
    total = await asyncio.to_thread(
        count_images, settings.coco, in_shard(settings.shard_count, settings.shard_index or 0)
    )
    if total is None:
        return None
    total = min(total, settings.limit) if settings.limit else total
    await asyncio.to_thread(manifest.set_meta, f"images_in_coco{settings.shard_suffix}", str(total))
    return total
