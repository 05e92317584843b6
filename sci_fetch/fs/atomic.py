"""Write a file so that a reader, or a crash at any instant, sees either the old file or the whole new one.

Every file sci_fetch writes goes through here: the bytes go to a temp file beside the destination (same
folder, so the same filesystem and an atomic ``os.replace``), optionally fsynced, then renamed over it;
on any error the temp file is removed and the destination left as it was. The temp name is unique per
writer (``.<name>.<random>.partial``) so two writers of one file never share a temp file.

Written here rather than taken from a library: the maintained ones (``atomicwrites`` is archived) do
not create with ``O_EXCL`` (a planted symbolic link at the temp name would be followed) nor keep the
file's permissions to the umask as ``open`` does. Imports nothing from the package but the layout, so a
crop worker process can use it without pydantic.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from sci_fetch.fs.layout import PARTIAL_SUFFIX


def temp_path(dest: Path) -> Path:
    """A fresh hidden name beside ``dest``, ending in ``.partial`` as every unfinished file does."""
    return dest.with_name(f".{dest.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")


def create_new(path: Path) -> IO[bytes]:
    """``path`` created anew (see ``_new_fd``), opened for binary writing."""
    return os.fdopen(_new_fd(path), "wb")


def _new_fd(path: Path) -> int:
    """A new empty file at ``path``, opened for writing. Whatever was there is removed first (an old
    .partial, or a symbolic link planted to make sci_fetch write elsewhere); O_EXCL refuses to follow
    a link that appears in between. Created first and unlinked only when something is there: one
    syscall per file instead of two in the usual case."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except FileExistsError:
        os.unlink(path)
        fd = os.open(path, flags, 0o666)
    return fd


def commit(fh: IO[Any], tmp: Path, dest: Path, fsync: bool) -> None:
    """Flush, (fsync), close and rename ``tmp`` over ``dest``: after this the file is whole under its name."""
    fh.flush()
    if fsync:
        os.fsync(fh.fileno())
    fh.close()
    os.replace(tmp, dest)


def discard(fh: IO[Any] | None, tmp: Path) -> None:
    """Close and remove a temp file on a path that is already failing: never raises over that error."""
    try:
        if fh is not None:
            fh.close()
    except OSError:
        pass
    try:
        os.unlink(tmp)
    except OSError:
        pass


class AtomicFile:
    """``with AtomicFile(dest) as out: out.fh.write(...); out.commit()``; leaving the block without
    ``commit()`` (an error, an interrupt) removes the temp file. Text mode writes UTF-8 with no newline
    translation (what the csv module wants). Raises OSError; callers map it to their own error."""

    def __init__(self, dest: Path, *, binary: bool = False, fsync: bool = False) -> None:
        self.dest = dest
        self.fsync = fsync
        self.tmp = temp_path(dest)
        self.committed = False
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = _new_fd(self.tmp)
        try:
            self.fh: IO[Any] = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")
        except BaseException:
            os.close(fd)
            discard(None, self.tmp)
            raise

    def commit(self) -> None:
        try:
            commit(self.fh, self.tmp, self.dest, self.fsync)
        except BaseException:
            discard(self.fh, self.tmp)
            raise
        self.committed = True

    def discard(self) -> None:
        if not self.committed:
            discard(self.fh, self.tmp)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


def write_atomic(dest: Path, data: str | bytes, *, fsync: bool = False) -> None:
    """``dest`` holds ``data``, whole, or is as it was (the OSError is raised)."""
    with AtomicFile(dest, binary=isinstance(data, bytes), fsync=fsync) as out:
        out.fh.write(data)
        out.commit()
