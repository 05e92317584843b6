"""The pipeline: COCO records -> planned decisions -> bounded queue -> N workers -> outcomes -> manifest.

The producer reads and plans records in a thread, a batch at a time, and blocks on a bounded queue, so memory
does not grow with the data set. Workers call the storage layer, which owns retries. Outcomes are written to
the manifest in batches by one flusher. A stop (a signal, a fatal credential or disk error) stops the
producer at once, gives in-flight downloads a bounded grace time, then cancels them; ``.partial`` files are
removed as their tasks unwind. The pipeline owns no run: engine.run (one process) or engine.processes (one
child of several) begins and ends it around this.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from sci_fetch.engine import feed, reader
from sci_fetch.engine.outcomes import Flusher, Settler
from sci_fetch.engine.reader import BATCH, ReaderDied, ReadSpec, Sizes
from sci_fetch.engine.stop import Stop, cancel_all, start_supervised
from sci_fetch.engine.worker import Fetcher
from sci_fetch.errors import DiskError, InputError, SciFetchError
from sci_fetch.exits import GRACEFUL, StopReason
from sci_fetch.keys.collisions import FoldCheck, Reject
from sci_fetch.keys.mapping import Task
from sci_fetch.manifest.models import Action, Decision
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe.stats import Stats
from sci_fetch.settings import Settings
from sci_fetch.storage.base import Storage

log = logging.getLogger("sci_fetch")

PREVIEW = 5  # key -> destination pairs a dry run shows


class Pipeline:
    """Turns the COCO file's records into outcomes in the manifest, for one run id and one share of the keys
    (``share`` = (index, count) of a --processes split)."""

    def __init__(
        self, settings: Settings, storage: Storage, manifest: Manifest, stop: Stop, share: tuple[int, int] = (0, 1)
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.manifest = manifest
        self.stop = stop
        self.share = share
        self.stats = Stats()
        self.stats.retries = storage.retries  # the storage layer's live counter
        self.extra: dict[str, Any] = {}  # the Work protocol: one process adds nothing to status.json
        self.errors: deque[str] = deque(maxlen=10)  # the latest, for status.json
        self.run_id = 0
        self.feed_from: list[int] = []  # earlier runs whose leftovers are fetched first (set by the run owner)
        self._queue: asyncio.Queue[Decision | None] = asyncio.Queue(maxsize=max(2 * settings.concurrency, BATCH))
        self._planner = ThreadPoolExecutor(1, thread_name_prefix="sci-fetch-plan")
        self._previewed = 0
        self.flusher = Flusher(settings, manifest, stop)
        self.settler = Settler(settings, self.stats, stop, self.flusher, self.errors)
        self.fetcher = Fetcher(settings, storage, stop, self.settler)

    def live_stats(self) -> Stats:
        """Stats with the request count and the outage brought up to date (for status file, metrics, parent)."""
        self.stats.requests = self.storage.requests
        self.stats.unreachable_since = self.storage.reachability.down_since
        self.stats.request_rate, self.stats.slowdowns = self.storage.rate.current(), self.storage.rate.slowdowns
        return self.stats

    def last_errors(self) -> list[str]:
        return list(self.errors)

    def on_signal(self, name: str) -> None:
        if self.stop.reason is None:
            log.warning(
                "%s received: taking no new keys, %ss grace for %d in-flight downloads",
                name,
                self.settings.grace_seconds,
                self.stats.in_flight,
            )

    # ---- the run ----------------------------------------------------------------------------
    async def run(self, run_id: int) -> None:
        """Until every record is settled or the run is stopped; the last outcomes are in the manifest after."""
        self.run_id = run_id
        restore_gc = quiet_gc()
        helpers = start_supervised(self.stop, [("manifest flusher", self.flusher.loop())])
        producer = asyncio.create_task(self._produce())
        workers = [asyncio.create_task(self.fetcher.work(self._queue)) for _ in range(self.settings.concurrency)]
        everything: asyncio.Future[Any] = asyncio.gather(producer, *workers)
        stopper = asyncio.create_task(self.stop.wait())
        either: list[asyncio.Future[Any]] = [everything, stopper]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if self.stop.is_set():
                await self._shutdown(producer, workers)
            await asyncio.gather(everything, return_exceptions=True)
        finally:
            await cancel_all([stopper, *helpers])
            await asyncio.to_thread(self._planner.shutdown, True)  # the planning thread has ended too
            self.settler.release_held()
            await self.flusher.final()
            restore_gc()

    async def _shutdown(self, producer: asyncio.Task[None], workers: list[asyncio.Task[None]]) -> None:
        """Idle workers go at once; busy ones get the grace time (none after a fatal error)."""
        producer.cancel()
        for w in workers:
            if not self.fetcher.is_busy(w):
                w.cancel()
        grace = self.settings.grace_seconds if self.stop.reason in GRACEFUL else 0.0
        busy = [w for w in workers if not w.done()]
        if busy:
            _done, late = await asyncio.wait(busy, timeout=grace)
            for w in late:
                w.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # ---- producer ---------------------------------------------------------------------------
    async def _produce(self) -> None:
        planned = self._planned()
        batches = self._batches(planned)
        loop = asyncio.get_running_loop()
        try:
            while not self.stop.is_set():
                batch = await loop.run_in_executor(self._planner, next, batches, None)
                if batch is None:
                    self.stats.read_all = not self.stop.is_set()  # a stop ends the pass early too
                    break
                await self._hand_out(*batch)
        except InputError as exc:
            self.stop.request(StopReason.input, str(exc))
        except ReaderDied as exc:  # killed or out of memory: what it did not read stays unplanned, the counts decide
            self.stop.request(StopReason.died, str(exc))
        except DiskError as exc:  # the manifest cannot be written while planning (disk full)
            self.stop.request(StopReason.disk, f"stopping: {exc}")
        except SciFetchError as exc:
            self.stop.request(StopReason.usage, str(exc))
        except Exception as exc:  # a bug or an unmapped error: loud, and a partly planned run never exits 0
            log.exception("internal error while planning")
            message = f"stopping: internal error while planning: {type(exc).__name__}: {exc}"
            self.stop.request(StopReason.internal, message)
        finally:
            # In the planning thread, after its last step: the COCO reader (and its child process) ends here
            # at the latest, however the pass ended (engine/reader.py).
            await loop.run_in_executor(self._planner, planned.close)
            if not self.stop.is_set():  # on a stop the workers are cancelled instead
                for _ in range(self.settings.concurrency):
                    await self._queue.put(None)

    async def _hand_out(self, decisions: list[Decision], rejects: list[Reject]) -> None:
        """Count a planned batch (it is in the manifest whole now) and queue what needs a worker."""
        self.stats.invalid += sum(1 for r in rejects if r[0] == "invalid")
        self.stats.duplicates += sum(1 for r in rejects if r[0] == "duplicate")
        fetch = tally(self.stats, decisions)
        if self.settings.dry_run:
            for d in fetch[:PREVIEW]:
                self._preview(d)
            return
        for d in fetch:
            await self._queue.put(d)
            if self.stop.is_set():
                return

    def _batches(
        self, planned: Iterator[tuple[list[Decision], list[Reject]]]
    ) -> Iterator[tuple[list[Decision], list[Reject]]]:
        """Runs in a thread: the feed's pages (what earlier runs over the same file left: engine/feed.py) in turn
        with the COCO file's planned batches, so a crashed job's first GET waits for no planning."""
        if not self.feed_from:
            return planned
        pages = feed.decisions(self.manifest, self.settings, self.run_id, self.feed_from)
        fed: Iterator[tuple[list[Decision], list[Reject]]] = ((page, []) for page in pages)
        return feed.interleave(fed, planned)

    def _planned(self) -> Generator[tuple[list[Decision], list[Reject]], None, None]:
        """Plan the COCO file's batches of tasks (engine/reader.py: read here or in a child process) one at a
        time; the manifest's work stays in this thread, and so does the stat of each file unless the child
        asked it (reader.Sizes)."""
        spec = ReadSpec.of(self.settings, self.share)
        # Destinations that are one file on macOS/Windows (case, Unicode form): claimed in the manifest, warned once.
        folds = FoldCheck(partial(self.manifest.claim_folds, self.run_id), self.settings.case_insensitive_names)
        with reader.batches(spec, self.stop.is_set, self.settings.dry_run) as batches:
            for tasks, rejects, sizes in batches:
                if self.stop.is_set():  # the planning thread stops with the run
                    return
                yield self._plan(tasks, rejects, sizes, folds)
        if not self.stop.is_set():
            folds.warn(log)

    def _plan(
        self, tasks: list[Task], rejects: list[Reject], sizes: Sizes | None, folds: FoldCheck
    ) -> tuple[list[Decision], list[Reject]]:
        settings = self.settings
        # folds drops the later names of a group when they count as duplicates
        decisions, folded = self.manifest.plan_checked(
            tasks, self.run_id, settings.output, settings.retry_missing, folds, sizes
        )
        rejects += folded
        rejects += duplicates(decisions)
        self.manifest.add_rejects(self.run_id, rejects)
        return decisions, rejects

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


def tally(stats: Stats, decisions: list[Decision]) -> list[Decision]:
    """Count a planned batch; returns the decisions that need a worker."""
    fetch = []
    for d in decisions:
        if d.action in (Action.duplicate_id, Action.duplicate_dest, Action.queued):  # queued: counted when fed
            continue
        stats.planned += 1
        if d.action is Action.skip_done:
            stats.skipped_done += 1
        elif d.action is Action.skip_missing:
            stats.skipped_missing += 1
        else:
            stats.to_fetch += 1
            fetch.append(d)
    return fetch


def duplicates(decisions: list[Decision]) -> list[Reject]:
    """The rejects rows of the batch's duplicate ids and destinations (each image is fetched once)."""
    rows: list[Reject] = []
    for d in decisions:
        if d.action in (Action.duplicate_id, Action.duplicate_dest):
            what = "id" if d.action is Action.duplicate_id else f"destination (already used by {d.other})"
            rows.append(
                ("duplicate", "images[]", d.task.image_id, d.task.key, d.task.dest, f"duplicate {what}; fetched once")
            )
    return rows


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
