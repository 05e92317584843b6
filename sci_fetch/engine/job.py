"""One download job, from typed settings to its result: what ``sci-fetch download`` and ``sci_fetch.download``
both call.

Before anything is created the inputs are checked; then the output folder's job lock is taken (engine.lock),
a finished job is resumed by the quick check (engine.quick), the space check may refuse the run (plan.check),
and the run owner (engine.run) runs one pipeline on this event loop or, with ``--processes N``, N pipelines in
N processes. failures.csv is written from the manifest at the end.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sci_fetch.engine import feed, quick
from sci_fetch.engine.lock import JobLock
from sci_fetch.engine.loop import run_coroutine
from sci_fetch.engine.pipeline import Pipeline
from sci_fetch.engine.processes import Processes, process_count
from sci_fetch.engine.run import RunOwner, RunResult
from sci_fetch.engine.stop import Stop
from sci_fetch.errors import DiskError, FatalError, SciFetchError, UsageError
from sci_fetch.exits import ExitCode, StopReason
from sci_fetch.fs.layout import STATE_DIR
from sci_fetch.manifest.checks import check_state_folder
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe.stats import Stats
from sci_fetch.plan.population import Leftovers
from sci_fetch.settings import Settings
from sci_fetch.storage.base import Storage, StorageFactory
from sci_fetch.storage.factory import s3_storage

log = logging.getLogger("sci_fetch")


@dataclass(frozen=True)
class DownloadResult:
    """What a download run leaves: the figures of the summary, read from the manifest."""

    exit_code: int  # as the command's: 0 all done, 1 some failed/missing/invalid, 3/4/130/143 stopped
    counts: dict[str, int]  # images of the COCO file per state: done, failed, missing, pending, ...
    failures_path: Path  # every image not done and every unusable record, as CSV
    failures_count: int
    manifest_path: Path
    output: Path
    stop_reason: str | None = None
    message: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)  # this run's counters (fetched, bytes, rates, retries)
    run_stats: Any = field(default=None, repr=False, compare=False)  # the same as the engine's Stats, for the summary

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def lock_path(settings: Settings) -> Path:
    """The job lock of this output folder (one per shard: the shards of one job run side by side)."""
    return settings.output / STATE_DIR / f"download{settings.shard_suffix}.lock"


def download_with(settings: Settings, storage_factory: StorageFactory | None = None) -> DownloadResult:
    """Run one download from typed settings and write failures.csv; what the command and the API share.
    Raises UsageError/InputError before anything is created, BusyError when another download holds the folder."""
    from sci_fetch.manifest.report import write_failures

    check_download_inputs(settings)
    factory = storage_factory or s3_storage
    with JobLock(lock_path(settings), settings.output):
        result = run_coroutine(lambda: run_download(settings, factory))
        failures_path = settings.state_file("failures", "csv")
        manifest = Manifest(settings.manifest_path, check=False)  # only read: the run has checked it
        try:
            failures_count = write_failures(manifest, result.run_id, failures_path)
        finally:
            manifest.close()
    return DownloadResult(
        exit_code=int(result.exit_code),
        counts=dict(result.counts),
        failures_path=failures_path,
        failures_count=failures_count,
        manifest_path=settings.manifest_path,
        output=settings.output,
        stop_reason=None if result.stop_reason is None else str(result.stop_reason),
        message=result.message,
        stats=result.stats.as_dict(),
        run_stats=result.stats,
    )


def check_download_inputs(settings: Settings) -> None:
    """Everything that makes a run pointless, checked before the output folder or manifest is created."""
    coco = settings.coco
    if coco is None:
        raise UsageError("no COCO file given: sci-fetch download COCO.json (or set 'coco' in settings.toml)")
    coco = Path(coco)
    if coco.is_dir():
        raise UsageError(f"COCO file {coco} is a directory; give the COCO JSON file")
    if not coco.is_file():
        raise UsageError(f"COCO file {coco} does not exist")
    check_coco_opening(coco)
    if settings.output.exists() and not settings.output.is_dir():
        raise UsageError(f"output {settings.output} is a file; give a folder for the images")
    check_state_folder(settings.manifest_path)  # before the lock file is made in it
    settings.check_profile()


def check_coco_opening(coco: Path) -> None:
    """Raise InputError unless the file is readable JSON whose ``images`` array starts (and its first record parses)."""
    from sci_fetch.coco.source import iter_images

    records = iter_images(coco)
    try:
        next(records, None)  # a bad first record is a RecordError value, listed by the run; not raised
    finally:
        close = getattr(records, "close", None)  # a generator: close it so the file is closed now
        if close is not None:
            close()


async def run_download(settings: Settings, storage_factory: StorageFactory) -> RunResult:
    """One pipeline on this event loop, or (--processes N, not for a dry run) N pipelines in N processes;
    either way after the space check (plan.check), which refuses a run that clearly cannot fit (exit 4)."""
    resumed = await quick.quick_resume(settings)
    if resumed is not None:  # a finished job, unchanged: nothing to read, plan or request
        run_id, stats, counts = resumed
        return RunResult(run_id, stats, ExitCode.OK, None, None, counts)
    count = process_count(settings.processes)
    if count > 1 and not settings.dry_run:
        if _space_matters(settings):
            async with storage_factory(settings.storage_options()) as storage:
                refused = await _space_refusal(settings, storage)
            if refused is not None:
                return refused
        with closing(Manifest(settings.manifest_path)) as manifest:
            stop = Stop()
            work = Processes(settings, count, storage_factory, stop, _verbose())
            return await RunOwner(settings, manifest, work, stop).run()
    with closing(Manifest(settings.manifest_path)) as manifest:
        async with storage_factory(settings.storage_options()) as storage:
            if _space_matters(settings):
                refused = await _space_refusal(settings, storage)
                if refused is not None:
                    return refused
            stop = Stop()
            return await RunOwner(settings, manifest, Pipeline(settings, storage, manifest, stop), stop).run()


def _verbose() -> bool:
    return logging.getLogger().level <= logging.DEBUG


def _space_matters(settings: Settings) -> bool:
    """No check on a dry run, when turned off, or when the manifest says nothing is left (a resume of a
    finished job sends no request at all)."""
    if not settings.space_check or settings.dry_run:
        return False
    if not settings.manifest_path.exists():
        return True
    try:
        manifest = Manifest(settings.manifest_path, readonly=True)
    except SciFetchError:
        return True
    try:
        total = manifest.meta(f"images_in_coco{settings.shard_suffix}")
        return total is None or manifest.counts()["done"] < int(total)
    finally:
        manifest.close()


def _leftovers(settings: Settings) -> Leftovers | None:
    """What the crash-resume feed will fetch first (engine.feed), when it applies: the space check then
    samples it from the manifest and never parses the COCO file before the first GET."""
    if not settings.manifest_path.exists():
        return None
    try:
        manifest = Manifest(settings.manifest_path, readonly=True)
    except SciFetchError:  # the run itself says what is wrong with it
        return None
    with closing(manifest):
        runs = feed.earlier_runs(manifest, settings)
    return Leftovers(tuple(runs), tuple(feed.fetchable(settings))) if runs else None


async def _space_refusal(settings: Settings, storage: Storage) -> RunResult | None:
    from sci_fetch.plan.check import space_check

    try:
        leftovers = await asyncio.to_thread(_leftovers, settings)
        verdict = await space_check(settings, storage, leftovers=leftovers)
    except FatalError as exc:  # the check's HEADs met what the run would have: stop the same way (exit 3)
        return _refused(StopReason.fatal, f"stopping: {exc}")
    except DiskError as exc:
        return _refused(StopReason.disk, f"stopping: {exc}")
    if not verdict.refuse:
        if verdict.message:
            log.warning("%s", verdict.message)
        return None
    return _refused(StopReason.disk, f"stopping: {verdict.message}")


def _refused(reason: StopReason, message: str) -> RunResult:
    log.error("%s", message)
    code = ExitCode.FATAL if reason is StopReason.fatal else ExitCode.DISK
    return RunResult(0, Stats(), code, reason, message, {})
