"""From a worker's outcome to a manifest row: counted, held back while the keys may be wrong, then written in
batches that reach the disk before the manifest says ``done``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from sci_fetch.engine.stop import Stop
from sci_fetch.errors import DiskError
from sci_fetch.exits import StopReason
from sci_fetch.files.durable import sync_filesystem
from sci_fetch.manifest.models import Outcome, State
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe.stats import Stats
from sci_fetch.settings import Settings

log = logging.getLogger("sci_fetch")

# A run whose first this-many fetched keys are all missing is mapping keys wrongly (bucket, variant, key
# template): it stops with exit 2 instead of recording 110,000 misses. A run with an earlier success goes on.
FIRST_MISSES = 20


class Flusher:
    """Writes the outcomes so far in one transaction about every flush_interval; also the heartbeat."""

    def __init__(self, settings: Settings, manifest: Manifest, stop: Stop) -> None:
        self.settings = settings
        self.manifest = manifest
        self.stop = stop
        self.pending: list[Outcome] = []
        self._writing: tuple[asyncio.Future[None], list[Outcome]] | None = None  # the batch being written
        self._last_heartbeat = 0.0

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval)
            await self.flush()

    async def flush(self) -> None:
        """Write the outcomes so far in one transaction; a batch that cannot be written is kept, never dropped.

        The write runs in a thread that a cancellation cannot stop, so it is shielded: when the run ends
        while a batch is being written, final() waits for that write instead of writing the batch again
        beside it (which would count its attempts twice)."""
        if self._writing is not None:
            await self._settle_write()
        if not self.pending:
            now = time.monotonic()
            if now - self._last_heartbeat >= 1.0:  # about every second, not every flush: the WAL stays small
                self._last_heartbeat = now
                await asyncio.to_thread(self.manifest.heartbeat)
            return
        self._last_heartbeat = time.monotonic()
        batch, self.pending = self.pending, []
        self._writing = (asyncio.ensure_future(asyncio.to_thread(self._record, batch)), batch)
        await self._settle_write()

    async def final(self) -> None:
        try:
            await self.flush()
        except Exception as exc:  # the files are on disk: the next run adopts them (the manifest lags, never leads)
            log.error(
                "the manifest could not record the last %d outcomes: %s: %s; their files are kept and the "
                "next run checks and adopts them",
                len(self.pending),
                type(exc).__name__,
                exc,
            )
            message = f"stopping: the manifest could not be written: {type(exc).__name__}: {exc}"
            self.stop.request(StopReason.internal, message)

    async def _settle_write(self) -> None:
        """Wait for the batch being written; on failure put it back (its files are on disk) and stop or raise."""
        assert self._writing is not None
        future, batch = self._writing
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done():
                raise  # we were cancelled: the write goes on, and the final flush settles it
            self._put_back(batch)
            raise
        except DiskError as exc:  # disk full: keep the batch and stop
            self._put_back(batch)
            self.stop.request(StopReason.disk, f"stopping: {exc}")
        except BaseException:
            self._put_back(batch)
            raise
        else:
            self._writing = None

    def _put_back(self, batch: list[Outcome]) -> None:
        self._writing = None
        self.pending = batch + self.pending

    def _record(self, batch: list[Outcome]) -> None:
        """In a thread: the files of the batch's done rows reach the disk first (one syncfs), then the
        rows: "done" never leads the disk, not even after a power cut."""
        if self.settings.fsync and any(o.state is State.done for o in batch):
            try:
                sync_filesystem(self.settings.output)
            except OSError as exc:  # the disk cannot take the batch: stop (exit 4), the rows stay unwritten
                raise DiskError(f"sync {self.settings.output}: {exc.strerror or exc}") from exc
        self.manifest.record(batch)


class Settler:
    """Counts each outcome and queues it for the manifest; 404s wait while no image has succeeded yet."""

    def __init__(self, settings: Settings, stats: Stats, stop: Stop, flusher: Flusher, errors: deque[str]) -> None:
        self.settings = settings
        self.stats = stats
        self.stop = stop
        self.flusher = flusher
        self.last_errors = errors
        self.held_missing: list[Outcome] = []  # 404s before any success: kept back until the keys prove right

    def succeeded(self) -> int:
        return self.stats.done + self.stats.adopted

    def settle(self, outcome: Outcome) -> None:
        held = outcome.state is State.missing and self.succeeded() == 0
        if held and self.stop.reason is StopReason.keys:
            return  # stopped for wrong keys: like the first misses, the image stays pending
        count(self.stats, outcome)
        if outcome.error:
            self.last_errors.append(f"{outcome.state.value}: {outcome.error}")
        if held:
            self._hold(outcome)
            return
        if self.held_missing and outcome.state is State.done:
            self.flusher.pending.extend(self.held_missing)
            self.held_missing.clear()
        self.flusher.pending.append(outcome)

    def _hold(self, outcome: Outcome) -> None:
        self.held_missing.append(outcome)
        if len(self.held_missing) < FIRST_MISSES or self.stop.reason is not None:
            return
        self.stats.missing -= len(self.held_missing)  # they stay pending: once the keys are right they are fetched
        self.held_missing.clear()
        s = self.settings
        self.stop.request(
            StopReason.keys,
            f"stopping: the first {FIRST_MISSES} keys fetched were all missing, e.g. {outcome.error}; check the "
            f"bucket ({s.bucket}), the variant ({s.variant.value}) and the key template "
            f"({s.key_template or 'Animl serving_bucket_key'}); "
            "`sci-fetch download --dry-run` shows the keys it would fetch",
        )

    def release_held(self) -> None:
        """At the end: a run that ended with only misses, fewer than FIRST_MISSES, records them."""
        if self.stop.reason is not StopReason.keys:
            self.flusher.pending.extend(self.held_missing)
        self.held_missing.clear()


def count(stats: Stats, outcome: Outcome) -> None:
    if outcome.state is State.done:
        stats.bytes += outcome.bytes or 0
        if outcome.attempts == 0:
            stats.adopted += 1
        else:
            stats.done += 1
    elif outcome.state is State.failed:
        stats.failed += 1
    elif outcome.state is State.missing:
        stats.missing += 1
    elif outcome.state is State.forbidden:
        stats.forbidden += 1
