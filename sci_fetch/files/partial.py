"""Write a file so that a crash at any instant leaves either nothing or the whole file under its name.

Bytes go to ``<dest>.partial`` beside the destination (same filesystem, so the rename is atomic), are
fsynced, and only then renamed, as rclone does. A killed process leaves at most a ``.partial``, which
the next attempt on that key overwrites.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, ParamSpec, TypeVar

import aiofiles.os

from sci_fetch.fs import atomic
from sci_fetch.fs.atomic import create_new as _create
from sci_fetch.fs.atomic import discard
from sci_fetch.fs.layout import partial_path
from sci_fetch.fs.root import OutputRoot as OutputRoot  # where the engine has always imported it from
from sci_fetch.fs.root import map_os_error

Chunk = bytes | bytearray  # what a body arrives in: the buffer the wire read it into, kept as it is

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

P = ParamSpec("P")
R = TypeVar("R")
Check = Callable[[str], None]  # refuses the bytes (raises) given their MD5


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a commit puts the bytes: the .partial, the name it is renamed to, and whether to fsync first."""

    partial: Path
    dest: Path
    fsync: bool


class PartialFile:
    """Async writer of ``<dest>.partial`` that hashes as it writes and commits by rename.

    Bytes are held in memory, as the chunks received (no copy), up to ``spill_at``: an object smaller than
    that (most camera-trap originals) touches the disk only in commit, in a single hop to the thread pool
    that hashes, checks, creates, writes and renames. Larger objects spill to the file, hashed and written
    in one hop per ``spill_at`` bytes. With ``fsync`` each file is fsynced before its rename; the engine
    instead makes a whole batch durable with one ``syncfs`` before the manifest records it (files.durable).
    """

    def __init__(self, dest: Path, fsync: bool = True, spill_at: int = 1 << 20) -> None:
        self.dest = dest
        self.partial = partial_path(dest)
        self.fsync = fsync
        self.spill_at = spill_at
        self.size = 0
        self._md5 = hashlib.md5()
        self._held: list[Chunk] = []  # received, not yet on disk
        self._held_size = 0
        self._fh: IO[bytes] | None = None  # the open .partial, once spilled
        self._committed = False

    async def __aenter__(self) -> PartialFile:
        return self

    async def write(self, data: Chunk) -> None:  # a kept buffer: held, never copied
        self.size += len(data)
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size < self.spill_at:
            return
        if self._fh is None:
            self._fh = await _open_owned(self.partial)
        chunks, self._held, self._held_size = self._held, [], 0
        try:
            await _hop(_hash_and_write)(self._md5, self._fh, chunks)
        except OSError as exc:
            raise map_os_error(exc, "write", self.partial) from exc

    def md5(self) -> str:
        """The MD5 of everything written; complete once commit has hashed the held tail."""
        return self._md5.hexdigest()

    async def commit(self, check: Check | None = None) -> None:
        """Hash the held tail, ``check(md5)`` (it raises to refuse the bytes), then write, flush, (fsync),
        close and rename, all in one hop: hashing runs off the event loop (hashlib releases the GIL), and
        after this returns the file is complete under its name. The thread either renames or removes the
        .partial itself, so a cancel that lands while it runs leaves no temporary file behind."""
        tail, self._held, self._held_size = self._held, [], 0
        target = _Target(self.partial, self.dest, self.fsync)
        try:
            if self._fh is None:
                await _hop(_write_whole)(self._md5, tail, check, target)
            else:
                await _hop(_finish_spilled)(self._md5, self._fh, tail, check, target)
        except OSError as exc:
            raise map_os_error(exc, "commit", self.dest) from exc
        self._fh = None
        self._committed = True

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._committed:
            return
        # Plain syscalls here: this also runs while the task is being cancelled at shutdown.
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
        try:  # also a stale .partial a killed run left for this key
            os.unlink(self.partial)
        except FileNotFoundError:
            pass
        except OSError as err:  # read-only now, a directory in the way, ...: typed, never a bare OSError
            if exc_type is None:
                raise map_os_error(err, "remove", self.partial) from err
            # an error (or a cancellation) is already on its way out: it says more than this one


async def _open_owned(path: Path) -> IO[bytes]:
    """Create ``path`` in a worker thread (an open costs ~0.3 ms here, too much for the event loop). If the
    waiting task is cancelled meanwhile (shutdown, a fatal stop), the file is closed and removed by
    whichever side comes second, the thread or the cancelled task, under one lock: nothing depends on the
    loop still running when the thread finishes, and no .partial is left that no ``__aexit__`` knows of."""
    lock = threading.Lock()
    state: dict[str, Any] = {"abandoned": False, "raw": None}

    def create() -> IO[bytes] | None:
        raw = _create(path)
        with lock:
            if state["abandoned"]:
                _discard(raw, path)
                return None
            state["raw"] = raw
        return raw

    future = asyncio.get_running_loop().run_in_executor(None, create)
    try:
        raw = await asyncio.shield(future)
    except asyncio.CancelledError:
        with lock:
            state["abandoned"] = True
            created, state["raw"] = state["raw"], None
        if created is not None:
            _discard(created, path)
        raise
    except OSError as exc:
        raise map_os_error(exc, "open", path) from exc
    assert raw is not None
    return raw


def _discard(raw: IO[bytes], path: Path) -> None:
    """Best-effort clean-up on a path already failing or cancelled: it must not replace that error."""
    discard(raw, path)


def _hash_and_write(md5: Hash, raw: IO[bytes], chunks: list[Chunk]) -> None:
    for chunk in chunks:
        md5.update(chunk)
    raw.writelines(chunks)


def _hash_and_check(md5: Hash, chunks: list[Chunk], check: Check | None) -> None:
    for chunk in chunks:
        md5.update(chunk)
    if check is not None:
        check(md5.hexdigest())


def _write_whole(md5: Hash, chunks: list[Chunk], check: Check | None, target: _Target) -> None:
    """A file held whole in memory: hashed and checked before anything is on disk, then written at once."""
    _hash_and_check(md5, chunks, check)
    raw = _create(target.partial)
    try:
        _finish(raw, chunks, target)
    except BaseException:
        _discard(raw, target.partial)
        raise


def _finish_spilled(md5: Hash, raw: IO[bytes], chunks: list[Chunk], check: Check | None, target: _Target) -> None:
    """A file partly on disk already: the held tail hashed and checked, then written and committed. On an
    error the open .partial stays for ``__aexit__`` to remove."""
    _hash_and_check(md5, chunks, check)
    _finish(raw, chunks, target)


def _finish(raw: IO[bytes], chunks: list[Chunk], target: _Target) -> None:
    if chunks:
        raw.writelines(chunks)
    atomic.commit(raw, target.partial, target.dest, target.fsync)


_wrapped: dict[Callable[..., Any], Callable[..., Awaitable[Any]]] = {}


def _hop(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``func`` as a coroutine run in the thread pool, wrapped once per function: aiofiles' wrap() builds a new
    wrapper per call (functools.wraps, an iscoroutinefunction check), which was 5% of the event loop's CPU when
    done per object. Looked up by the function called, so a replaced helper is used."""
    hop = _wrapped.get(func)
    if hop is None:
        hop = _wrapped[func] = aiofiles.os.wrap(func)
    return hop


def file_md5(path: Path, chunk_size: int = 1 << 20) -> str:
    """MD5 of a file on disk, for adopting files an older tool left (run in a thread)."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
