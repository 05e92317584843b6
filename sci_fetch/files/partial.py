"""Write a file so that a crash at any instant leaves either nothing or the whole file under its name.

Bytes go to ``<dest>.partial`` beside the destination (same filesystem, so the rename is atomic), are
fsynced, and only then renamed, as rclone does. A killed process leaves at most a ``.partial``, which
the next attempt on that key overwrites.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import aiofiles.os

from sci_fetch.errors import DiskError, PermanentError
from sci_fetch.keys.mapping import PARTIAL_SUFFIX

_FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EMFILE})


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PARTIAL_SUFFIX)


def map_os_error(exc: OSError, op: str, path: Path) -> Exception:
    """Disk full or no permission stops the run (DiskError); anything else fails just this file."""
    text = f"{op} {path}: {exc.strerror or exc}"
    if exc.errno in _FATAL_ERRNOS:
        return DiskError(
            text
            + ("; free some space and run the same command again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "")
        )
    return PermanentError(op, str(path), None, exc.strerror or str(exc), reason="local-file")


def leads_outside(path: Path | str, root: Path | str) -> str | None:
    """Where ``path`` really is, when a symbolic link on the way takes it out of ``root``; else None."""
    real = os.path.realpath(path)
    real_root = os.path.realpath(root)
    if real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep):
        return None
    return real


class OutputRoot:
    """The output dir: makes parent folders once each and refuses paths that leave it through a symlink."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real = Path(os.path.realpath(root))
        self._made: set[str] = set()

    def path_for(self, rel: str) -> Path:
        """The absolute destination for a checked relative path; creates its folder."""
        dest = self.root / rel
        parent = str(dest.parent)
        if parent not in self._made:
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                raise map_os_error(exc, "mkdir", dest.parent) from exc
            real_parent = leads_outside(parent, self.real)
            if real_parent is not None:
                raise PermanentError(
                    "write",
                    rel,
                    str(dest),
                    f"folder {dest.parent} leads outside the output dir (symbolic link to {real_parent})",
                    reason="unsafe-path",
                )
            self._made.add(parent)
        return dest


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
        self._held: list[bytes] = []  # received, not yet on disk
        self._held_size = 0
        self._fh: BinaryIO | None = None  # the open .partial, once spilled
        self._committed = False

    async def __aenter__(self) -> PartialFile:
        return self

    async def write(self, data: bytes) -> None:
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

    async def commit(self, check: Callable[[str], None] | None = None) -> None:
        """Hash the held tail, ``check(md5)`` (it raises to refuse the bytes), then write, flush, (fsync),
        close and rename, all in one hop: hashing runs off the event loop (hashlib releases the GIL), and
        after this returns the file is complete under its name. The thread either renames or removes the
        .partial itself, so a cancel that lands while it runs leaves no temporary file behind."""
        tail, self._held, self._held_size = self._held, [], 0
        try:
            if self._fh is None:
                await _hop(_write_whole)(self._md5, tail, check, self.fsync, self.partial, self.dest)
            else:
                await _hop(_finish)(self._md5, self._fh, tail, check, self.fsync, self.partial, self.dest)
        except OSError as exc:
            raise map_os_error(exc, "commit", self.dest) from exc
        self._fh = None
        self._committed = True

    async def __aexit__(self, exc_type, exc, tb) -> None:
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


async def _open_owned(path: Path) -> BinaryIO:
    """Create ``path`` in a worker thread (an open costs ~0.3 ms here, too much for the event loop). If the
    waiting task is cancelled meanwhile (shutdown, a fatal stop), the file is closed and removed by
    whichever side comes second, the thread or the cancelled task, under one lock: nothing depends on the
    loop still running when the thread finishes, and no .partial is left that no ``__aexit__`` knows of."""
    lock = threading.Lock()
    state: dict[str, Any] = {"abandoned": False, "raw": None}

    def create() -> BinaryIO | None:
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


def _discard(raw: BinaryIO, path: Path) -> None:
    """Best-effort clean-up on a path already failing or cancelled: it must not replace that error."""
    try:
        raw.close()
        os.unlink(path)
    except OSError:
        pass


def _hash_and_write(md5, raw, chunks: list[bytes]) -> None:
    for chunk in chunks:
        md5.update(chunk)
    raw.writelines(chunks)


def _write_whole(md5, chunks: list[bytes], check, fsync: bool, partial: Path, dest: Path) -> None:
    for chunk in chunks:
        md5.update(chunk)
    if check is not None:
        check(md5.hexdigest())  # before anything is on disk
    raw = _create(partial)
    try:
        _finish(None, raw, chunks, None, fsync, partial, dest)
    except BaseException:
        raw.close()
        try:
            os.unlink(partial)
        except FileNotFoundError:
            pass
        raise


def _finish(md5, raw, chunks: list[bytes], check, fsync: bool, partial: Path, dest: Path) -> None:
    if md5 is not None:
        for chunk in chunks:
            md5.update(chunk)
    if check is not None:
        check(md5.hexdigest())
    if chunks:
        raw.writelines(chunks)
    raw.flush()
    if fsync:
        os.fsync(raw.fileno())
    raw.close()
    os.replace(partial, dest)


def _create(path: Path):
    """A new empty file at ``path``, opened for writing. Whatever was there is removed first (an old
    .partial, or a symbolic link planted to make sci_fetch write elsewhere); O_EXCL refuses to follow
    a link that appears in between. Created first and unlinked only when something is there: one
    syscall per object instead of two in the usual case."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except FileExistsError:
        os.unlink(path)
        fd = os.open(path, flags, 0o666)
    return os.fdopen(fd, "wb")


_wrapped: dict[Callable[..., Any], Callable[..., Any]] = {}


def _hop(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` as a coroutine run in the thread pool, wrapped once per function: aiofiles' wrap() builds
    a new wrapper per call (functools.wraps, an iscoroutinefunction check), which was 5% of the event
    loop's CPU when done per object. Looked up by the function called, so a replaced helper is used."""
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
