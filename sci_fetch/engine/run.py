"""The asyncio producer-consumer engine: COCO records -> bounded queue -> N workers -> manifest.

The producer reads and plans records in a thread, a batch at a time, and blocks on a bounded queue,
so memory does not grow with the data set. Workers call the storage layer, which owns retries.
Outcomes are written to the manifest in batches by one flusher. Stop requests (signals, a fatal
credential or disk error) stop the producer at once, give in-flight downloads a bounded grace time,
then cancel them; ``.partial`` files are removed as their tasks unwind.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import ijson

from sci_fetch.coco.source import iter_images
from sci_fetch.engine import feed, quick
from sci_fetch.engine.progress import choose_mode, report
from sci_fetch.engine.stats import Stats
from sci_fetch.errors import (
    DiskError,
    FatalError,
    FetchError,
    ForbiddenError,
    InputError,
    MissingError,
    RecordError,
    SciFetchError,
)
from sci_fetch.files.durable import sync_filesystem
from sci_fetch.files.partial import OutputRoot, file_md5
from sci_fetch.files.sink import VerifiedFile
from sci_fetch.files.verify import content_problem, read_head
from sci_fetch.keys.mapping import UnsafePathError, make_task
from sci_fetch.keys.shard import process_of, shard_of
from sci_fetch.manifest.models import Action, Decision, Outcome, State
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe.metrics import serve as serve_metrics
from sci_fetch.observe.status_file import keep_writing, snapshot, write_final
from sci_fetch.settings import Settings
from sci_fetch.storage.base import SinkFactory, Storage
from sci_fetch.storage.retry import forbidden_hint

log = logging.getLogger("sci_fetch")

BATCH = 512  # records planned per manifest transaction
COUNT_AFTER = 2.0  # seconds before the COCO file is counted for the ETA (see _count_total)

# Exit codes, documented in README.md ("Exit codes").
EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_FATAL = 3
EXIT_DISK = 4
EXIT_INTERNAL = 70  # a bug (sysexits' EX_SOFTWARE): the log has its traceback
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

# A run whose first this-many fetched keys are all missing is mapping keys wrongly (bucket, variant, key
# template): it stops with exit 2 instead of recording 110,000 misses. A run with an earlier success goes on.
FIRST_MISSES = 20
PREVIEW = 5  # key -> destination pairs a dry run shows

Reject = tuple[str, str, str | None, str | None, str | None, str]


@dataclass(frozen=True)
class Role:
    """What an engine does beside downloading. Alone (the default) it owns its run: it registers it, counts
    the COCO file, writes status.json, serves metrics and draws progress. As process K of N of a run
    (engine.processes) it takes its share of the keys under the parent's run id and reports its figures
    to the parent, which observes for all."""

    run_id: int | None = None  # given by the parent; None: begin and end a run of its own
    share: tuple[int, int] = (0, 1)  # (index, count) of the process split
    observe: bool = True
    report: Callable[[Stats], None] | None = None  # called about twice a second with this engine's figures


@dataclass
class RunResult:
    run_id: int
    stats: Stats
    exit_code: int
    stop_reason: str | None
    message: str | None
    counts: dict[str, int]


def count_images(path: Path, shard_count: int = 1, shard_index: int = 0) -> int | None:
    """How many records ``images`` holds (this shard's share, by the same hash of the id), for the ETA and
    so that the counts account for every image; a cheap pass that builds no objects."""
    try:
        with open(path, "rb") as fh:
            if shard_count > 1:
                return sum(
                    1
                    for prefix, event, value in ijson.parse(fh)
                    if prefix == "images.item.id"
                    and event in ("string", "number")
                    and shard_of(str(value), shard_count) == shard_index
                )
            return sum(
                1
                for prefix, event, _ in ijson.parse(fh)
                if prefix == "images.item"
                and event in ("start_map", "start_array", "string", "number", "null", "boolean")
            )
    except (OSError, ijson.JSONError):
        return None


class Engine:
    def __init__(self, settings: Settings, storage: Storage, manifest: Manifest, role: Role | None = None) -> None:
        self.settings = settings
        self.role = role or Role()
        self.storage = storage
        self.manifest = manifest
        self.root = OutputRoot(settings.output)
        self.stats = Stats()
        self.run_id = 0
        self._queue: asyncio.Queue[Decision | None] = asyncio.Queue(maxsize=max(2 * settings.concurrency, BATCH))
        self._outcomes: list[Outcome] = []
        self._stop = asyncio.Event()
        self._stop_reason: str | None = None
        self._message: str | None = None
        self._busy: set[asyncio.Task] = set()
        self._last_errors: deque[str] = deque(maxlen=10)
        self._held_missing: list[Outcome] = []  # 404s before any success: kept back until the keys prove right
        self._planner = ThreadPoolExecutor(1, thread_name_prefix="sci-fetch-plan")
        self._previewed = 0
        self._last_heartbeat = 0.0
        self._writing: tuple[asyncio.Future[None], list[Outcome]] | None = None  # the batch being written
        self._feed_from: list[int] = []  # the earlier runs whose leftovers the feed hands out (engine/feed.py)
        self.stats.retries = getattr(storage, "retries", self.stats.retries)  # the storage layer's live counter

    def live_stats(self) -> Stats:
        """Stats with the request count brought up to date (read by the status file and metrics)."""
        self.stats.requests = self.storage.requests
        gate = getattr(self.storage, "reachability", None)  # S3Storage's outage gate; a fake storage has none
        self.stats.unreachable_since = gate.down_since if gate is not None else None
        return self.stats

    # ---- stopping ---------------------------------------------------------------------------
    def request_stop(self, reason: str, message: str | None = None) -> None:
        """First reason wins: a fatal error during a SIGTERM shutdown is still reported as fatal."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._message = message
            if message:
                log.error(message)
            elif reason in ("SIGINT", "SIGTERM"):
                log.warning(
                    "%s received: taking no new keys, %ss grace for %d in-flight downloads",
                    reason,
                    self.settings.grace_seconds,
                    self.stats.in_flight,
                )
        self._stop.set()

    # ---- producer ---------------------------------------------------------------------------
    def _records(self) -> Iterator[tuple[list[Decision], list[Reject]]]:
        """Runs in a thread: the feed's pages (what an earlier run over the same file left) in turn with
        the COCO file's planned batches; see engine/feed.py."""
        planned = self._planned()
        if not self._feed_from:
            return planned
        pages = feed.decisions(self.manifest, self.settings, self.run_id, self._feed_from)
        fed: Iterator[tuple[list[Decision], list[Reject]]] = ((page, []) for page in pages)
        return feed.interleave(fed, planned)

    def _planned(self) -> Iterator[tuple[list[Decision], list[Reject]]]:
        """Runs in a thread: read, validate, map and plan one batch at a time."""
        settings = self.settings
        images = _numbered(iter_images(settings.coco), settings.limit)
        process, processes = self.role.share
        while not self._stop.is_set():  # the planning thread stops with the run
            chunk = list(islice(images, BATCH))
            if not chunk:
                return
            tasks, rejects = [], []
            for index, item in chunk:
                if isinstance(item, RecordError):
                    if (
                        settings.shard_index == 0 and self.role.share[0] == 0
                    ):  # reported once, not by every shard/process
                        rejects.append(("invalid", f"images[{item.index}]", item.record_id, None, None, item.reason))
                    continue
                if settings.shard_count > 1 and shard_of(item.id, settings.shard_count) != settings.shard_index:
                    continue
                if processes > 1 and process_of(item.id, processes) != process:
                    continue
                try:
                    tasks.append(make_task(item, settings.variant, settings.key_template, settings.verify_id_md5))
                except (UnsafePathError, ValueError, KeyError, IndexError) as exc:
                    rejects.append(("invalid", f"images[{index}]", item.id, None, item.file_name, str(exc)))
            decisions = self.manifest.plan(tasks, self.run_id, settings.output, settings.retry_missing)
            for d in decisions:
                if d.action in (Action.duplicate_id, Action.duplicate_dest):
                    what = "id" if d.action is Action.duplicate_id else f"destination (already used by {d.other})"
                    rejects.append(
                        (
                            "duplicate",
                            "images[]",
                            d.task.image_id,
                            d.task.key,
                            d.task.dest,
                            f"duplicate {what}; fetched once",
                        )
                    )
            self.manifest.add_rejects(self.run_id, rejects)
            yield decisions, rejects

    async def _produce(self) -> None:
        batches = self._records()
        sentinel = object()
        loop = asyncio.get_running_loop()
        try:
            while not self._stop.is_set():
                batch = await loop.run_in_executor(self._planner, next, batches, sentinel)
                if batch is sentinel:
                    break
                decisions, rejects = batch
                self.stats.invalid += sum(1 for r in rejects if r[0] == "invalid")
                self.stats.duplicates += sum(1 for r in rejects if r[0] == "duplicate")
                fetch = self._tally(decisions)  # the whole batch is in the manifest now: count it whole
                if self.settings.dry_run:
                    for d in fetch[:PREVIEW]:
                        self._preview(d)
                    continue
                for d in fetch:
                    await self._queue.put(d)
                    if self._stop.is_set():
                        break
        except InputError as exc:
            self.request_stop("input", str(exc))
        except DiskError as exc:  # the manifest cannot be written while planning (disk full)
            self.request_stop("disk", f"stopping: {exc}")
        except SciFetchError as exc:
            self.request_stop("usage", str(exc))
        except Exception as exc:  # a bug or an unmapped error: loud, and a partly planned run never exits 0
            log.exception("internal error while planning")
            self.request_stop("internal", f"stopping: internal error while planning: {type(exc).__name__}: {exc}")
        finally:
            if not self._stop.is_set():  # on a stop the workers are cancelled instead
                for _ in range(self.settings.concurrency):
                    await self._queue.put(None)

    def _tally(self, decisions: list[Decision]) -> list[Decision]:
        """Count a planned batch; returns the decisions that need a worker."""
        fetch = []
        for d in decisions:
            if d.action in (Action.duplicate_id, Action.duplicate_dest, Action.queued):  # queued: counted when fed
                continue
            self.stats.planned += 1
            if d.action is Action.skip_done:
                self.stats.skipped_done += 1
            elif d.action is Action.skip_missing:
                self.stats.skipped_missing += 1
            else:
                self.stats.to_fetch += 1
                fetch.append(d)
        return fetch

    def _preview(self, decision: Decision) -> None:
        """A dry run shows the first few resolved keys, so a wrong bucket, variant or template shows before a real run."""
        if self._previewed >= PREVIEW:
            return
        self._previewed += 1
        task = decision.task
        src = f"s3://{self.settings.bucket}/{task.key}"
        dest = str(Path(self.settings.output) / task.dest)
        log.info(
            "would fetch %s -> %s", src, dest, extra={"plan": {"key": task.key, "source": src, "destination": dest}}
        )

    # ---- workers ----------------------------------------------------------------------------
    async def _worker(self) -> None:
        me = asyncio.current_task()
        while not self._stop.is_set():
            decision = await self._queue.get()
            if decision is None or self._stop.is_set():
                return
            self._busy.add(me)
            self.stats.in_flight += 1
            try:
                outcome = await self._process(decision)
            finally:
                self.stats.in_flight -= 1
                self._busy.discard(me)
            if outcome is not None:
                self._settle(outcome)

    def _settle(self, outcome: Outcome) -> None:
        """Count an outcome and queue it for the manifest; 404s wait while no image has succeeded yet."""
        held = outcome.state is State.missing and self._succeeded() == 0
        if held and self._stop_reason == "keys":
            return  # stopped for wrong keys: like the first misses, the image stays pending
        self._count(outcome)
        if outcome.error:
            self._last_errors.append(f"{outcome.state.value}: {outcome.error}")
        if held:
            self._held_missing.append(outcome)
            if len(self._held_missing) >= FIRST_MISSES and self._stop_reason is None:
                self.stats.missing -= len(
                    self._held_missing
                )  # they stay pending: once the keys are right they are fetched
                self._held_missing.clear()
                self.request_stop(
                    "keys",
                    f"stopping: the first {FIRST_MISSES} keys fetched were all missing, e.g. "
                    f"{outcome.error}; check the bucket ({self.settings.bucket}), the variant "
                    f"({self.settings.variant.value}) and the key template "
                    f"({self.settings.key_template or 'Animl serving_bucket_key'}); "
                    "`sci-fetch download --dry-run` shows the keys it would fetch",
                )
            return
        if self._held_missing and outcome.state is State.done:
            self._outcomes.extend(self._held_missing)
            self._held_missing.clear()
        self._outcomes.append(outcome)

    def _succeeded(self) -> int:
        return self.stats.done + self.stats.adopted

    def _count(self, outcome: Outcome) -> None:
        if outcome.state is State.done:
            self.stats.bytes += outcome.bytes or 0
            if outcome.attempts == 0:
                self.stats.adopted += 1
            else:
                self.stats.done += 1
        elif outcome.state is State.failed:
            self.stats.failed += 1
        elif outcome.state is State.missing:
            self.stats.missing += 1
        elif outcome.state is State.forbidden:
            self.stats.forbidden += 1

    async def _process(self, decision: Decision) -> Outcome | None:
        task = decision.task
        try:
            dest = self.root.path_for(task.dest)
            if decision.action is Action.adopt:
                adopted = await self._adopt(decision, dest)
                if adopted is not None:
                    return adopted
            info = await self.storage.download(task.key, self._sink_for(dest, task.expected_md5), str(dest))
            return Outcome(
                image_id=task.image_id,
                state=State.done,
                bytes=info.size,
                md5=info.md5,
                etag=info.etag,
                attempts=info.attempts,
                checks=info.checks,
            )
        except MissingError as exc:
            return Outcome(image_id=task.image_id, state=State.missing, attempts=max(exc.attempts, 1), error=str(exc))
        except ForbiddenError as exc:
            if self._succeeded() == 0:  # nothing of this run got through: it is the credentials or the bucket
                self.request_stop(
                    "fatal",
                    f"stopping: {exc}: no object of this run has been readable yet, so "
                    f"{forbidden_hint(self.settings.anonymous)}",
                )
                return None
            return Outcome(image_id=task.image_id, state=State.forbidden, attempts=max(exc.attempts, 1), error=str(exc))
        except FatalError as exc:
            self.request_stop("fatal", f"stopping: {exc}")
            return None  # the image stays pending: nothing is wrong with it
        except DiskError as exc:
            self.request_stop("disk", f"stopping: {exc}")
            return None
        except FetchError as exc:
            return Outcome(image_id=task.image_id, state=State.failed, attempts=max(exc.attempts, 1), error=str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, not a bad image: one traceback, the run stops, the image stays pending
            if self._stop_reason != "internal":
                log.exception("internal error while fetching %s", task.key)
            self.request_stop(
                "internal",
                f"stopping: internal error while fetching {task.key}: {type(exc).__name__}: "
                f"{exc}; the traceback is in the log above; please report it",
            )
            return None

    def _sink_for(self, dest: Path, expected_md5: str | None) -> SinkFactory:
        """The storage reads, files/ keeps: a fresh verified .partial per attempt. No fsync per file when
        durability is batched (one syncfs before the manifest records the batch, see _flush)."""
        chunk = self.settings.chunk_size
        return lambda: VerifiedFile(dest, expected_md5, fsync=False, spill_at=chunk)

    async def _adopt(self, decision: Decision, dest: Path) -> Outcome | None:
        """A file is already where the image belongs (an older tool, or a crash before the manifest
        caught up): keep it when it verifies, against the id's md5 without a request, else against HEAD."""
        task = decision.task
        try:
            size = dest.stat().st_size
            if content_problem(await asyncio.to_thread(read_head, dest), size) is not None:
                return None  # empty or an HTML page: fetch it, which fails it with the reason
        except OSError:
            return None
        if task.expected_md5 is not None:
            local = await asyncio.to_thread(file_md5, dest)
            if local == task.expected_md5:
                return Outcome(
                    image_id=task.image_id, state=State.done, bytes=size, md5=local, attempts=0, checks="id-md5"
                )
            return None
        head = await self.storage.head(task.key)
        if head.size == size and head.md5 is not None:
            local = await asyncio.to_thread(file_md5, dest)
            if local == head.md5:
                return Outcome(
                    image_id=task.image_id,
                    state=State.done,
                    bytes=size,
                    md5=local,
                    etag=head.etag,
                    attempts=0,
                    checks="size,etag",
                )
        return None

    # ---- manifest flushing ------------------------------------------------------------------
    async def _flush(self) -> None:
        """Write the outcomes so far in one transaction; a batch that cannot be written is kept, never dropped.

        The write runs in a thread that a cancellation cannot stop, so it is shielded: when the run ends
        while a batch is being written, _final_flush waits for that write instead of writing the batch
        again beside it (which would count its attempts twice)."""
        if self._writing is not None:
            await self._settle_write()
        if not self._outcomes:
            now = time.monotonic()
            if now - self._last_heartbeat >= 1.0:  # about every second, not every flush: the WAL stays small
                self._last_heartbeat = now
                await asyncio.to_thread(self.manifest.heartbeat)
            return
        self._last_heartbeat = time.monotonic()
        batch, self._outcomes = self._outcomes, []
        self._writing = (asyncio.ensure_future(asyncio.to_thread(self._record, batch)), batch)
        await self._settle_write()

    async def _settle_write(self) -> None:
        """Wait for the batch being written; on failure put it back (its files are on disk) and stop or raise."""
        assert self._writing is not None
        future, batch = self._writing
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done():
                raise  # we were cancelled: the write goes on, and the final flush settles it
            self._writing = None
            self._outcomes = batch + self._outcomes
            raise
        except DiskError as exc:  # disk full: keep the batch and stop
            self._writing = None
            self._outcomes = batch + self._outcomes
            self.request_stop("disk", f"stopping: {exc}")
        except BaseException:
            self._writing = None
            self._outcomes = batch + self._outcomes
            raise
        else:
            self._writing = None

    def _record(self, batch: list[Outcome]) -> None:
        """In a thread: the files of the batch's done rows reach the disk first (one syncfs), then the
        rows: "done" never leads the disk, not even after a power cut."""
        if self.settings.fsync and any(o.state is State.done for o in batch):
            try:
                sync_filesystem(self.settings.output)
            except OSError as exc:  # the disk cannot take the batch: stop (exit 4), the rows stay unwritten
                raise DiskError(f"sync {self.settings.output}: {exc.strerror or exc}") from exc
        self.manifest.record(batch)

    async def _flush_loop(self) -> None:
        """Also the heartbeat: about every flush_interval, whether or not images finish."""
        while True:
            await asyncio.sleep(self.settings.flush_interval)
            await self._flush()

    async def _supervised(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """A background task that fails stops the run loudly (exit 70) instead of ending unnoticed."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("internal error in the %s", name)
            self.request_stop("internal", f"stopping: internal error in the {name}: {type(exc).__name__}: {exc}")

    async def _status_loop(self) -> None:
        """Rewrite the status file every few seconds; the last one is written as the run ends."""
        shard = f"{self.settings.shard_index}/{self.settings.shard_count}"
        await keep_writing(
            self.settings.state_file("status", "json"),
            self.settings.status_interval,
            self.live_stats,
            lambda stats, rates: snapshot(stats, rates, list(self._last_errors), "running", shard),
        )

    async def _final_flush(self) -> None:
        try:
            await self._flush()
        except Exception as exc:  # the files are on disk: the next run adopts them (the manifest lags, never leads)
            log.error(
                "the manifest could not record the last %d outcomes: %s: %s; their files are kept and the "
                "next run checks and adopts them",
                len(self._outcomes),
                type(exc).__name__,
                exc,
            )
            self.request_stop("internal", f"stopping: the manifest could not be written: {type(exc).__name__}: {exc}")

    def _final_status(self, exit_code: int) -> None:
        shard = f"{self.settings.shard_index}/{self.settings.shard_count}"
        state = self._stop_reason or "finished"
        data = snapshot(self.live_stats(), (0.0, 0.0), list(self._last_errors), state, shard)
        write_final(self.settings.state_file("status", "json"), data | {"exit_code": exit_code})

    async def _count_total(self) -> None:
        """The ETA's total, counted only when the run lasts: a short run (a resume of a finished job) ends
        before the delay and takes its total from its own tally instead of parsing the file twice."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=COUNT_AFTER)
        except TimeoutError:
            pass
        self.stats.total = await count_total(self.settings, self.manifest)

    async def _settle_total(self) -> None:
        if self.stats.total is None and self.role.observe:
            s = self.settings
            self.stats.total = self.stats.planned + self.stats.invalid + self.stats.duplicates
            await asyncio.to_thread(self.manifest.set_meta, f"images_in_coco{s.shard_suffix}", str(self.stats.total))

    # ---- the run ----------------------------------------------------------------------------
    def _helpers(self) -> list[asyncio.Task[None]]:
        """The supervised background tasks this engine's role asks for."""
        settings = self.settings
        work: list[tuple[str, Coroutine[Any, Any, None]]] = [("manifest flusher", self._flush_loop())]
        if self.role.observe:
            work += [
                ("status file writer", self._status_loop()),
                ("progress display", report(self.stats, choose_mode(settings.progress), settings.log_interval)),
            ]
        if self.role.report is not None:
            work.append(("figures reporter", self._report_loop(self.role.report)))
        return [asyncio.create_task(self._supervised(name, coro)) for name, coro in work]

    async def _report_loop(self, send: Callable[[Stats], None]) -> None:
        while True:
            send(self.live_stats())
            await asyncio.sleep(0.5)

    async def run(self) -> RunResult:
        settings = self.settings
        stop_metrics = None
        if settings.metrics_port and self.role.observe:
            stop_metrics = serve_metrics(
                settings.metrics_port,
                settings.metrics_host,
                self.live_stats,
                f"{settings.shard_index}/{settings.shard_count}",
            )
        if self.role.run_id is None:
            earlier = await asyncio.to_thread(feed.earlier_runs, self.manifest, settings)
            self.run_id = await asyncio.to_thread(self.manifest.begin_run, settings.model_dump(mode="json"))
            await asyncio.to_thread(quick.forget, self.manifest)
            await asyncio.to_thread(feed.started, self.manifest, settings, self.run_id, earlier)
            self._feed_from = [] if settings.dry_run else earlier
        else:
            self.run_id = self.role.run_id
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        restore_gc = quiet_gc()
        counting = asyncio.create_task(
            self._supervised("image count", self._count_total()) if self.role.observe else asyncio.sleep(0)
        )
        helpers = self._helpers()
        producer = asyncio.create_task(self._produce())
        workers = [asyncio.create_task(self._worker()) for _ in range(settings.concurrency)]
        everything = asyncio.gather(producer, *workers)
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait([everything, stopper], return_when=asyncio.FIRST_COMPLETED)
            if self._stop.is_set():
                await self._shutdown(producer, workers)
            await asyncio.gather(everything, return_exceptions=True)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            stopper.cancel()
            for h in helpers:
                h.cancel()
            await asyncio.gather(stopper, *helpers, return_exceptions=True)
            await asyncio.to_thread(self._planner.shutdown, True)  # the planning thread has ended too
            if self._stop_reason != "keys":  # ended with only misses, fewer than FIRST_MISSES: record them
                self._outcomes.extend(self._held_missing)
            self._held_missing.clear()
            await self._final_flush()
            if self._stop_reason is None:  # every record was read: the tally is the exact count, no second pass
                counting.cancel()
                await asyncio.gather(counting, return_exceptions=True)
                await self._settle_total()
            else:  # stopped early: the images never read count as pending, so the count is needed
                await asyncio.gather(counting, return_exceptions=True)
            restore_gc()
        self.live_stats()
        counts = self.stats.with_unread(await asyncio.to_thread(self.manifest.counts, self.run_id))
        exit_code = self._exit_code(counts)
        if self.role.report is not None:
            self.role.report(self.live_stats())  # the last figures, before the result
        if self.role.observe:
            await asyncio.to_thread(self._final_status, exit_code)
        if stop_metrics is not None:
            stop_metrics()
        if self.role.run_id is None:
            try:
                await asyncio.to_thread(self.manifest.end_run, self.run_id, exit_code, self.stats.as_dict())
                if exit_code == EXIT_OK and not settings.dry_run:
                    await asyncio.to_thread(quick.remember, self.manifest, settings, self.run_id)
            except DiskError as exc:
                log.error("%s", exc)
        return RunResult(self.run_id, self.stats, exit_code, self._stop_reason, self._message, counts)

    async def _shutdown(self, producer: asyncio.Task, workers: list[asyncio.Task]) -> None:
        """Idle workers go at once; busy ones get the grace time (none after a fatal error)."""
        producer.cancel()
        for w in workers:
            if w not in self._busy:
                w.cancel()
        grace = (
            self.settings.grace_seconds if self._stop_reason in ("SIGINT", "SIGTERM", "input", "usage", "keys") else 0.0
        )
        busy = [w for w in workers if not w.done()]
        if busy:
            _done, late = await asyncio.wait(busy, timeout=grace)
            for w in late:
                w.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def _exit_code(self, counts: dict[str, int]) -> int:
        return exit_code_for(self._stop_reason, counts, self.stats.invalid, self.settings.dry_run)


def quiet_gc() -> Callable[[], None]:
    """Keep the garbage collector out of the hot path (8% of the client's CPU in the profile): what start-up
    made (modules, the botocore service model) is frozen out of every collection, and young collections
    run every 50,000 allocations instead of 700 (objects per download are few and short-lived). Returns
    what puts the process back as it was (a notebook's kernel lives on after the run)."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)

    def restore() -> None:
        gc.set_threshold(*before)
        gc.unfreeze()

    return restore


async def count_total(settings: Settings, manifest: Manifest) -> int | None:
    """The images of the COCO file this run answers for (its shard's share, at most ``limit``); kept in the
    manifest so that ``status`` accounts for every image too."""
    total = await asyncio.to_thread(count_images, settings.coco, settings.shard_count, settings.shard_index or 0)
    if total is None:
        return None
    total = min(total, settings.limit) if settings.limit else total
    await asyncio.to_thread(manifest.set_meta, f"images_in_coco{settings.shard_suffix}", str(total))
    return total


STOP_CODES = {
    "fatal": EXIT_FATAL,
    "disk": EXIT_DISK,
    "SIGINT": EXIT_SIGINT,
    "SIGTERM": EXIT_SIGTERM,
    "input": EXIT_USAGE,
    "usage": EXIT_USAGE,
    "keys": EXIT_USAGE,
    "internal": EXIT_INTERNAL,
}


def exit_code_for(stop_reason: str | None, counts: dict[str, int], invalid: int, dry_run: bool) -> int:
    """From the manifest, not from what was printed: anything not done makes it non-zero."""
    if stop_reason in STOP_CODES:
        return STOP_CODES[stop_reason]
    if dry_run:
        return EXIT_INCOMPLETE if invalid else EXIT_OK
    if counts.get("failed") or counts.get("missing") or counts.get("forbidden") or counts.get("pending") or invalid:
        return EXIT_INCOMPLETE
    return EXIT_OK


def _numbered(records: Iterator[object], limit: int | None) -> Iterator[tuple[int, object]]:
    """Number the records and stop after ``limit`` valid ones (invalid ones are still reported)."""
    valid = 0
    for index, record in enumerate(records):
        if limit is not None and valid >= limit:
            return
        if not isinstance(record, RecordError):
            valid += 1
        yield index, record


async def run_download(settings: Settings, storage_factory: Callable[..., Storage]) -> RunResult:
    """One engine on this event loop, or (--processes N, not for a dry run) N engines in N processes;
    either way after the space check (plan.check), which refuses a run that clearly cannot fit (exit 4)."""
    from sci_fetch.engine.processes import Processes, process_count  # it builds on this module

    resumed = await quick.quick_resume(settings)
    if resumed is not None:  # a finished job, unchanged: nothing to read, plan or request
        run_id, stats, counts = resumed
        return RunResult(run_id, stats, EXIT_OK, None, None, counts)
    count = process_count(settings.processes)
    if count > 1 and not settings.dry_run:
        if _space_matters(settings):
            async with storage_factory(settings.storage_options()) as storage:
                refused = await _space_refusal(settings, storage)
            if refused is not None:
                return refused
        return await Processes(settings, count, verbose=logging.getLogger().level <= logging.DEBUG).run()
    manifest = Manifest(settings.manifest_path)
    try:
        async with storage_factory(settings.storage_options()) as storage:
            if _space_matters(settings):
                refused = await _space_refusal(settings, storage)
                if refused is not None:
                    return refused
            return await Engine(settings, storage, manifest).run()
    finally:
        manifest.close()


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


async def _space_refusal(settings: Settings, storage: Storage) -> RunResult | None:
    from sci_fetch.plan.check import space_check

    try:
        verdict = await space_check(settings, storage)
    except FatalError as exc:  # the check's HEADs met what the run would have: stop the same way (exit 3)
        log.error("stopping: %s", exc)
        return RunResult(0, Stats(), EXIT_FATAL, "fatal", f"stopping: {exc}", {})
    except DiskError as exc:
        log.error("stopping: %s", exc)
        return RunResult(0, Stats(), EXIT_DISK, "disk", f"stopping: {exc}", {})
    if not verdict.refuse:
        if verdict.message:
            log.warning("%s", verdict.message)
        return None
    message = f"stopping: {verdict.message}"
    log.error("%s", message)
    return RunResult(0, Stats(), EXIT_DISK, "disk", message, {})
