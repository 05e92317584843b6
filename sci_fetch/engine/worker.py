"""One worker's job: a planned decision becomes an outcome (done, adopted, failed, missing, forbidden) or a stop.

The storage reads, files/ keeps: the worker composes a storage download with a verified ``.partial`` sink, and
maps the storage contract's errors to outcomes; an error that concerns the whole run stops it instead.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from sci_fetch.engine.outcomes import Settler
from sci_fetch.engine.stop import Stop
from sci_fetch.errors import DiskError, FatalError, FetchError, ForbiddenError, MissingError
from sci_fetch.exits import StopReason
from sci_fetch.files.partial import OutputRoot, file_md5
from sci_fetch.files.sink import VerifiedFile
from sci_fetch.files.verify import content_problem, read_head
from sci_fetch.keys.mapping import Task
from sci_fetch.manifest.models import Action, Decision, Outcome, State
from sci_fetch.settings import Settings
from sci_fetch.storage.base import SinkFactory, Storage

log = logging.getLogger("sci_fetch")


class Fetcher:
    """What the pipeline's N workers run."""

    def __init__(self, settings: Settings, storage: Storage, stop: Stop, settler: Settler) -> None:
        self.settings = settings
        self.storage = storage
        self.stop = stop
        self.settler = settler
        self.root = OutputRoot(settings.output)
        self._busy: set[asyncio.Task[None] | None] = set()

    def is_busy(self, worker: asyncio.Task[None]) -> bool:
        return worker in self._busy

    async def work(self, queue: asyncio.Queue[Decision | None]) -> None:
        me = asyncio.current_task()
        stats = self.settler.stats
        while not self.stop.is_set():
            decision = await queue.get()
            if decision is None or self.stop.is_set():
                return
            self._busy.add(me)
            stats.in_flight += 1
            try:
                outcome = await self.fetch(decision)
            finally:
                stats.in_flight -= 1
                self._busy.discard(me)
            if outcome is not None:
                self.settler.settle(outcome)

    async def fetch(self, decision: Decision) -> Outcome | None:
        """The image's outcome, or None when the run stops instead (the image stays pending)."""
        task = decision.task
        dest: Path | None = None
        try:
            dest = self.root.path_for(task.dest)
            if decision.action is Action.adopt:
                adopted = await self._adopt(task, dest)
                if adopted is not None:
                    return adopted
            info = await self.storage.download(task.key, self._sink_for(dest, task.expected_md5))
        except FetchError as exc:
            if exc.dst is None and dest is not None:
                exc.dst = str(dest)  # the storage reads keys; the destination is named here
            return self._failed(task, exc)
        except DiskError as exc:
            self.stop.request(StopReason.disk, f"stopping: {exc}")
            return None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, not a bad image: one traceback, the run stops, the image stays pending
            if self.stop.reason is not StopReason.internal:
                log.exception("internal error while fetching %s", task.key)
            self.stop.request(
                StopReason.internal,
                f"stopping: internal error while fetching {task.key}: {type(exc).__name__}: "
                f"{exc}; the traceback is in the log above; please report it",
            )
            return None
        return Outcome(
            image_id=task.image_id,
            state=State.done,
            bytes=info.size,
            md5=info.md5,
            etag=info.etag,
            attempts=info.attempts,
            checks=info.checks,
        )

    def _failed(self, task: Task, exc: FetchError) -> Outcome | None:
        """The storage contract's error as the image's outcome, or a stop when it concerns the whole run."""
        attempts = max(exc.attempts, 1)
        if isinstance(exc, MissingError):
            return Outcome(image_id=task.image_id, state=State.missing, attempts=attempts, error=str(exc))
        if isinstance(exc, ForbiddenError):
            if self.settler.succeeded() == 0:  # nothing of this run got through: it is the credentials or the bucket
                message = f"stopping: {exc}: no object of this run has been readable yet, so {exc.hint}"
                self.stop.request(StopReason.fatal, message)
                return None
            return Outcome(image_id=task.image_id, state=State.forbidden, attempts=attempts, error=str(exc))
        if isinstance(exc, FatalError):
            self.stop.request(StopReason.fatal, f"stopping: {exc}")
            return None  # the image stays pending: nothing is wrong with it
        return Outcome(image_id=task.image_id, state=State.failed, attempts=attempts, error=str(exc))

    def _sink_for(self, dest: Path, expected_md5: str | None) -> SinkFactory:
        """A fresh verified .partial per attempt. No fsync per file when durability is batched (one syncfs
        before the manifest records the batch, see engine.outcomes)."""
        chunk = self.settings.chunk_size
        return lambda: VerifiedFile(dest, expected_md5, fsync=False, spill_at=chunk)

    async def _adopt(self, task: Task, dest: Path) -> Outcome | None:
        """A file is already where the image belongs (an older tool, or a crash before the manifest
        caught up): keep it when it verifies, against the id's md5 without a request, else against HEAD."""
        try:
            size = dest.stat().st_size
            if content_problem(await asyncio.to_thread(read_head, dest), size) is not None:
                return None  # empty or an HTML page: fetch it, which fails it with the reason
        except OSError:
            return None
        if task.expected_md5 is not None:
            local = await asyncio.to_thread(file_md5, dest)
            if local != task.expected_md5:
                return None
            return Outcome(image_id=task.image_id, state=State.done, bytes=size, md5=local, attempts=0, checks="id-md5")
        head = await self.storage.head(task.key)
        if head.size != size or head.md5 is None:
            return None
        local = await asyncio.to_thread(file_md5, dest)
        if local != head.md5:
            return None
        return Outcome(
            image_id=task.image_id,
            state=State.done,
            bytes=size,
            md5=local,
            etag=head.etag,
            attempts=0,
            checks="size,etag",
        )
