"""The plan's requests: HEAD every sampled key, then GET a few of the objects found to time the bytes.

Everything goes through the Storage interface (retries, error mapping, anonymous access as for a real
run). A credentials or bucket error (FatalError) propagates: every other key would fail alike. The GETs
go to a throw-away folder and are deleted; they are only there to measure a byte rate.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sci_fetch.errors import DiskError, FatalError, FetchError, ForbiddenError, MissingError
from sci_fetch.files.sink import VerifiedFile
from sci_fetch.keys.mapping import Task
from sci_fetch.storage.base import Storage

T = TypeVar("T")


@dataclass
class Probe:
    sizes: list[int] = field(default_factory=list)  # of the sampled keys that exist
    missing: list[str] = field(default_factory=list)  # sampled keys that do not exist
    errors: list[str] = field(default_factory=list)  # "key: error" for keys that gave no answer after retries
    head_seconds: float = 0.0  # wall time of all HEADs
    get_count: int = 0
    get_bytes: int = 0
    get_seconds: float = 0.0

    @property
    def heads(self) -> int:
        return len(self.sizes) + len(self.missing) + len(self.errors)


async def _all(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """gather, but the first error cancels the rest (a fatal error must not leave requests running)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _heads(storage: Storage, tasks: list[Task], concurrency: int, probe: Probe) -> list[Task]:
    limit = asyncio.Semaphore(max(1, concurrency))
    found: list[Task] = []

    async def one(task: Task) -> None:
        async with limit:
            try:
                info = await storage.head(task.key)
            except MissingError:
                probe.missing.append(task.key)
                return
            except ForbiddenError as exc:  # "missing, or no permission": which one, only a success can tell
                forbidden.append(exc)
                return
            except FatalError:
                raise
            except FetchError as exc:
                probe.errors.append(f"{task.key}: {exc.err}")
                return
        probe.sizes.append(info.size)
        found.append(task)

    forbidden: list[ForbiddenError] = []
    started = time.monotonic()
    await _all([one(t) for t in tasks])
    probe.head_seconds = time.monotonic() - started
    if forbidden and not probe.sizes:  # as a download does: no key readable at all is the credentials or the bucket
        first = forbidden[0]
        raise FatalError(first.op, first.src, None, f"{first.err}: no sampled key was readable, so {first.hint}")
    probe.missing.extend(e.src for e in forbidden)
    return found


async def _gets(storage: Storage, tasks: list[Task], probe: Probe) -> None:
    """GET ``tasks`` at once into a temp folder, timing the whole batch; failures just leave them out."""
    if not tasks:
        return
    with tempfile.TemporaryDirectory(prefix="sci-fetch-plan-") as tmp:

        async def one(index: int, task: Task) -> int:
            try:
                dest = Path(tmp) / f"{index}.bin"
                info = await storage.download(task.key, lambda: VerifiedFile(dest, task.expected_md5))
            except FatalError:
                raise
            except (FetchError, DiskError):
                return -1
            return info.size

        started = time.monotonic()
        sizes = await _all([one(i, t) for i, t in enumerate(tasks)])
        probe.get_seconds = time.monotonic() - started
    probe.get_count = sum(1 for s in sizes if s >= 0)
    probe.get_bytes = sum(s for s in sizes if s >= 0)


async def probe_sample(
    storage: Storage, tasks: list[Task], concurrency: int, gets: int = 0, anonymous: bool = False
) -> Probe:
    """HEAD each of ``tasks`` (``concurrency`` at a time), then GET up to ``gets`` of those found.
    ``anonymous`` is no longer read: what to check on a 403 travels on the storage's ForbiddenError."""
    probe = Probe()
    found = await _heads(storage, tasks, concurrency, probe)
    await _gets(storage, found[: max(0, gets)], probe)
    return probe
