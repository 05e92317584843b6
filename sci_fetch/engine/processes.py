"""``--processes N``: one run on N event loops in N processes, over disjoint shares of its keys.

One Python event loop uses one core; s5cmd, rclone and the CRT use them all. Each child runs a whole
``Pipeline`` (its own storage, opened by the run's one storage factory, and its own connection pool) over the
images whose ``process_of(id, N) == k``, under the parent's run id, and sends its figures up a pipe twice a
second. The children share the run's one manifest (SQLite in WAL mode; each flush is one short transaction),
so a job resumes correctly whatever the process count of the earlier run, and ``status`` sees one job.

A crashed job's leftovers (engine/feed.py) are not split by share: every child's feed claims pages of them
in turn, each page in one transaction (``Manifest.claim``, BEGIN IMMEDIATE: the write lock, so two children
never read the same unclaimed page), so a child that finds its share planned helps with the rest. The
children share the run id, so a row one child claimed is ``queued`` (never fetched again) when another
child's COCO pass meets it in its share, and a row a COCO pass reached first is the run's and no feed's.
A claim cut short by a crash keeps the run's id (negated), which the next run's feed hands out again.

``Processes`` is the parent's ``Work`` for the run owner (engine.run), which registers the run, counts the
COCO file, shows one progress display, status.json and metrics endpoint, and computes the exit code. Here:
start the children, merge their figures, forward a stop (each child then stops within the grace time),
report a child that dies (its unfinished images stay pending; the run never waits for it) and settle the
run's stop reason from the children's.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from sci_fetch.engine.loop import run as run_loop
from sci_fetch.engine.pipeline import Pipeline
from sci_fetch.engine.stop import Stop, cancel_all, catch_signals, start_supervised
from sci_fetch.errors import SciFetchError
from sci_fetch.exits import SEVERITY, STOP_CODES, StopReason
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe import logs
from sci_fetch.observe.stats import Stats
from sci_fetch.settings import Settings
from sci_fetch.storage.base import StorageFactory
from sci_fetch.storage.factory import for_processes

log = logging.getLogger("sci_fetch")

Result = tuple[StopReason | None, str | None]


@dataclass(frozen=True)
class ChildJob:
    """What a child is given (pickled into the spawned process): its share of the run."""

    settings: Settings
    storage: StorageFactory
    run_id: int
    index: int
    count: int
    verbose: bool
    feed_from: tuple[int, ...] = ()  # earlier runs whose leftovers the children fetch first (engine/feed.py)


def _child(job: ChildJob, conn: Connection) -> None:
    """A child process: a pipeline over share ``index`` of ``count``; its result goes up the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the pipeline's handlers are in: the parent forwards stops
    logs.configure(job.settings.log_format, job.verbose)

    def send(stats: Stats) -> None:
        try:
            conn.send(("stats", stats))
        except OSError:  # the parent is gone (killed): stop as on SIGTERM, with the grace time
            os.kill(os.getpid(), signal.SIGTERM)

    result: Result
    try:
        result = run_loop(_child_run(job, send))
    except SciFetchError as exc:  # a setting no storage could use (a profile that does not exist, ...)
        result = StopReason.usage, str(exc)
    except Exception as exc:  # a bug: its traceback in the log, and the parent stops the run
        where = f"process {job.index + 1} of {job.count}"
        log.exception("internal error in %s", where)
        result = StopReason.internal, f"stopping: internal error in {where}: {type(exc).__name__}: {exc}"
    try:
        conn.send(("result", result[0], result[1]))
        conn.close()
    except OSError:
        pass  # nobody is listening any more


async def _child_run(job: ChildJob, send: Callable[[Stats], None]) -> Result:
    stop = Stop()
    manifest = Manifest(job.settings.manifest_path, check=False)  # the run owner's open checks it
    try:
        async with job.storage(job.settings.storage_options()) as storage:
            pipeline = Pipeline(job.settings, storage, manifest, stop, share=(job.index, job.count))
            pipeline.feed_from = list(job.feed_from)
            reporter = start_supervised(stop, [("figures reporter", _report_loop(pipeline, send))])
            try:
                with catch_signals(stop, pipeline.on_signal):
                    await pipeline.run(job.run_id)
            finally:
                await cancel_all(reporter)
            send(pipeline.live_stats())  # the last figures, before the result
            return stop.reason, stop.message
    finally:
        manifest.close()


async def _report_loop(pipeline: Pipeline, send: Callable[[Stats], None]) -> None:
    while True:
        send(pipeline.live_stats())
        await asyncio.sleep(0.5)


@dataclass
class _Child:
    index: int
    process: Any  # multiprocessing.Process (spawn context)
    conn: Connection
    stats: Stats = field(default_factory=Stats)
    result: Result | None = None

    def drain(self) -> None:
        """Read what the child sent so far; a broken pipe means it is gone (its exit code tells why)."""
        try:
            while self.conn.poll():
                message = self.conn.recv()
                if message[0] == "stats":
                    self.stats = message[1]
                else:
                    self.result = (message[1], message[2])
        except (EOFError, OSError):
            pass


class Processes:
    """The parent's Work in a multi-process run."""

    def __init__(self, settings: Settings, count: int, storage: StorageFactory, stop: Stop, verbose: bool) -> None:
        self.settings = settings
        self.count = count
        self.storage = for_processes(storage, count, settings.max_requests_per_second)  # one request rate for all
        self.stop = stop
        self.verbose = verbose
        self.stats = Stats()
        self.extra: dict[str, Any] = {"processes": count}
        self.feed_from: list[int] = []  # set by the run owner: every child's feed hands out from these runs' leftovers
        self._children: list[_Child] = []
        self._forwarded = False

    def live_stats(self) -> Stats:
        return self.stats

    def last_errors(self) -> list[str]:
        return []

    def on_signal(self, name: str) -> None:
        if self.stop.reason is None:
            log.warning(
                "%s received: stopping %d processes (%ss grace for downloads in flight)",
                name,
                self.count,
                self.settings.grace_seconds,
            )

    async def run(self, run_id: int) -> None:
        self._start(run_id)
        await self._wait()
        self.stop.settle(*self._outcome())

    def _start(self, run_id: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited loop, threads or locks
        for index in range(self.count):
            receive, send = ctx.Pipe(duplex=False)
            job = ChildJob(self.settings, self.storage, run_id, index, self.count, self.verbose, tuple(self.feed_from))
            process = ctx.Process(
                target=_child, name=f"sci-fetch-{index + 1}-of-{self.count}", daemon=True, args=(job, send)
            )
            process.start()
            send.close()
            self._children.append(_Child(index, process, receive))

    def _forward(self) -> None:
        """A stop of the run: every child is asked to stop (SIGTERM: no new keys, grace for the rest)."""
        self._forwarded = True
        for child in self._children:
            if child.process.is_alive():
                os.kill(child.process.pid, signal.SIGTERM)

    async def _wait(self) -> None:
        """Until every child has exited; after a stop, those still running past grace + 15 s are killed."""
        deadline: float | None = None
        while True:
            for child in self._children:
                child.drain()
            self.stats.absorb([c.stats for c in self._children])
            alive = [c for c in self._children if c.process.is_alive()]
            if not alive:
                break
            if self.stop.is_set() and not self._forwarded:
                self._forward()
                deadline = time.monotonic() + self.settings.grace_seconds + 15
            if deadline is not None and time.monotonic() > deadline:
                for child in alive:
                    child.process.kill()
            await asyncio.sleep(0.1)
        for child in self._children:
            child.process.join()
            child.drain()
        self.stats.absorb([c.stats for c in self._children])

    def _outcome(self) -> Result:
        """The run's stop reason and message: the parent's own stop (a signal, a failed helper), a child that
        died, or the most serious reason any child gave."""
        reasons = [r for r in map(self._reason_of, self._children) if r is not None]
        own = self.stop.reason
        if own in (StopReason.SIGINT, StopReason.SIGTERM):
            if not any(r in STOP_CODES and r not in (StopReason.SIGINT, StopReason.SIGTERM) for r, _ in reasons):
                return own, None
        elif own is not None:
            reasons.append((own, self.stop.message))
        if not reasons:
            return None, None
        return min(reasons, key=lambda r: SEVERITY.index(r[0]) if r[0] in SEVERITY else len(SEVERITY))

    def _reason_of(self, child: _Child) -> tuple[StopReason, str | None] | None:
        if child.result is None:
            code = child.process.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
            text = (
                f"process {child.index + 1} of {self.count} died ({how}); the images it had not finished stay "
                "pending: run the same command again to fetch them"
            )
            log.error("%s", text)
            return StopReason.died, text
        reason, message = child.result
        return (reason, message) if reason is not None else None


def process_count(setting: int | str) -> int:
    """``auto`` means one per core this process may use."""
    if setting == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return max(1, int(setting))
