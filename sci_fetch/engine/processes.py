"""``--processes N``: one run on N event loops in N processes, over disjoint shares of its keys.

One Python event loop uses one core; s5cmd, rclone and the CRT use them all. Each child is a whole
``Engine`` (its own S3 client and connection pool) with ``Role(run_id, (k, N))``: it plans the images whose
``process_of(id, N) == k`` under the parent's run id and sends its figures up a pipe twice a second. The
children share the run's one manifest (SQLite in WAL mode; each flush is one short transaction), so a job
resumes correctly whatever the process count of the earlier run, and ``status`` sees one job.

The parent registers the run, counts the COCO file, merges the figures into one progress display,
status.json and metrics endpoint, forwards SIGINT/SIGTERM (each child then stops within the grace time),
reports a child that dies (its unfinished images stay pending; the run never waits for it) and computes
one exit code from the manifest.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from sci_fetch.engine import quick
from sci_fetch.engine.loop import run as run_loop
from sci_fetch.engine.progress import choose_mode, report
from sci_fetch.engine.run import STOP_CODES, Engine, Role, RunResult, count_total, exit_code_for
from sci_fetch.engine.stats import Stats
from sci_fetch.errors import SciFetchError
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe import logs
from sci_fetch.observe.metrics import serve as serve_metrics
from sci_fetch.observe.status_file import keep_writing, snapshot, write_final
from sci_fetch.settings import Settings
from sci_fetch.storage.rate import SharedRate
from sci_fetch.storage.s3 import S3Storage

log = logging.getLogger("sci_fetch")

# When several children stop for different reasons, the run reports the most serious one.
_SEVERITY = ["internal", "fatal", "disk", "SIGTERM", "SIGINT", "keys", "usage", "input", "died"]


def _child(
    settings: Settings, run_id: int, index: int, count: int, conn: Connection, verbose: bool, rate: SharedRate
) -> None:
    """A child process: a whole engine over share ``index`` of ``count``; its result goes up the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the engine's handlers are in: the parent forwards stops
    logs.configure(settings.log_format, verbose)

    def send(stats: Stats) -> None:
        try:
            conn.send(("stats", stats))
        except OSError:  # the parent is gone (killed): stop as on SIGTERM, with the grace time
            os.kill(os.getpid(), signal.SIGTERM)

    async def main() -> tuple[str | None, str | None]:
        manifest = Manifest(settings.manifest_path)
        try:
            async with S3Storage(settings.storage_options(), rate=rate) as storage:  # one request rate for the run
                result = await Engine(settings, storage, manifest, Role(run_id, (index, count), False, send)).run()
                return result.stop_reason, result.message
        finally:
            manifest.close()

    try:
        reason, message = run_loop(main())
    except SciFetchError as exc:  # a setting no storage could use (a profile that does not exist, ...)
        reason, message = "usage", str(exc)
    except Exception as exc:  # a bug: its traceback in the log, and the parent stops the run
        log.exception("internal error in process %d of %d", index + 1, count)
        reason, message = (
            "internal",
            f"stopping: internal error in process {index + 1} of {count}: {type(exc).__name__}: {exc}",
        )
    try:
        conn.send(("result", reason, message))
        conn.close()
    except OSError:
        pass  # nobody is listening any more


@dataclass
class _Child:
    index: int
    process: Any  # multiprocessing.Process (spawn context)
    conn: Connection
    stats: Stats = field(default_factory=Stats)
    result: tuple[str | None, str | None] | None = None

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
    """The parent of one multi-process run."""

    def __init__(self, settings: Settings, count: int, verbose: bool = False) -> None:
        self.settings = settings
        self.count = count
        self.verbose = verbose
        self.stats = Stats()
        self._signal: str | None = None
        self._children: list[_Child] = []
        self.rate = SharedRate(count, settings.max_requests_per_second)  # the run's one request rate (storage.rate)

    def _start(self, run_id: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited loop, threads or locks
        for index in range(self.count):
            receive, send = ctx.Pipe(duplex=False)
            process = ctx.Process(
                target=_child,
                name=f"sci-fetch-{index + 1}-of-{self.count}",
                daemon=True,
                args=(self.settings, run_id, index, self.count, send, self.verbose, self.rate),
            )
            process.start()
            send.close()
            self._children.append(_Child(index, process, receive))

    def _forward(self, name: str) -> None:
        """SIGINT/SIGTERM to the parent: every child is asked to stop (SIGTERM: no new keys, grace for the rest)."""
        if self._signal is None:
            self._signal = name
            log.warning(
                "%s received: stopping %d processes (%ss grace for downloads in flight)",
                name,
                self.count,
                self.settings.grace_seconds,
            )
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
            if self._signal is not None and deadline is None:
                deadline = time.monotonic() + self.settings.grace_seconds + 15
            if deadline is not None and time.monotonic() > deadline:
                for child in alive:
                    child.process.kill()
            await asyncio.sleep(0.1)
        for child in self._children:
            child.process.join()
            child.drain()
        self.stats.absorb([c.stats for c in self._children])

    def _outcome(self) -> tuple[str | None, str | None]:
        """The run's stop reason and message: a child that died, or the most serious reason any child gave."""
        reasons: list[tuple[str, str | None]] = []
        for child in self._children:
            if child.result is None:
                code = child.process.exitcode
                how = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
                text = (
                    f"process {child.index + 1} of {self.count} died ({how}); the images it had not finished stay "
                    "pending: run the same command again to fetch them"
                )
                log.error("%s", text)
                reasons.append(("died", text))
            elif child.result[0] is not None:
                reasons.append((child.result[0], child.result[1]))
        if self._signal is not None and not any(r in STOP_CODES and r not in ("SIGINT", "SIGTERM") for r, _ in reasons):
            return self._signal, None
        if not reasons:
            return None, None
        reason, message = min(reasons, key=lambda r: _SEVERITY.index(r[0]) if r[0] in _SEVERITY else len(_SEVERITY))
        return reason, message

    async def run(self) -> RunResult:
        settings = self.settings
        manifest = Manifest(settings.manifest_path)
        try:
            return await self._run(manifest)
        finally:
            manifest.close()

    async def _run(self, manifest: Manifest) -> RunResult:
        settings = self.settings
        run_id = await asyncio.to_thread(manifest.begin_run, settings.model_dump(mode="json"))
        await asyncio.to_thread(quick.forget, manifest)
        shard = f"{settings.shard_index}/{settings.shard_count}"
        stop_metrics = (
            serve_metrics(settings.metrics_port, settings.metrics_host, lambda: self.stats, shard)
            if settings.metrics_port
            else None
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._forward, sig.name)
        self._start(run_id)
        helpers = [
            asyncio.create_task(self._count(manifest)),
            asyncio.create_task(self._status_loop(shard)),
            asyncio.create_task(report(self.stats, choose_mode(settings.progress), settings.log_interval)),
        ]
        try:
            await self._wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            for task in helpers[1:]:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if stop_metrics is not None:
                stop_metrics()
        reason, message = self._outcome()
        counts = self.stats.with_unread(await asyncio.to_thread(manifest.counts, run_id))
        code = exit_code_for(reason if reason != "died" else None, counts, self.stats.invalid, settings.dry_run)
        final = snapshot(self.stats, (0.0, 0.0), [], reason or "finished", shard)
        await asyncio.to_thread(
            write_final, settings.state_file("status", "json"), final | {"exit_code": code, "processes": self.count}
        )
        await asyncio.to_thread(manifest.end_run, run_id, code, self.stats.as_dict() | {"processes": self.count})
        if code == 0:
            await asyncio.to_thread(quick.remember, manifest, settings, run_id)
        return RunResult(run_id, self.stats, code, reason, message, counts)

    async def _count(self, manifest: Manifest) -> None:
        self.stats.total = await count_total(self.settings, manifest)

    async def _status_loop(self, shard: str) -> None:
        await keep_writing(
            self.settings.state_file("status", "json"),
            self.settings.status_interval,
            lambda: self.stats,
            lambda stats, rates: snapshot(stats, rates, [], "running", shard) | {"processes": self.count},
        )


def process_count(setting: int | str) -> int:
    """``auto`` means one per core this process may use."""
    if setting == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return max(1, int(setting))
