"""One download per output folder: an advisory ``flock(2)`` on a file in the state folder (``.sci-fetch/``).

Two downloads into one folder unlink each other's ``.partial`` files and race on the manifest. The lock is held
by the open file, so the kernel releases it when the holder's process ends, however it ends: a SIGKILL or a
power cut never leaves a stale lock, and there is nothing to clean up. The file keeps the holder's PID for the
refusal message; ``status`` and ``verify`` never take the lock, so they read while a download runs. The
children of ``--processes`` are spawned fresh (no inherited descriptors) and never ask for it: the parent holds
it for the whole run. Shards of one job run side by side, so each shard has a lock of its own.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from sci_fetch.errors import BusyError, DiskError


class JobLock:
    """``with JobLock(path, output):`` holds the lock or raises BusyError naming the running PID."""

    def __init__(self, path: Path, output: Path) -> None:
        self.path = path
        self.output = output
        self._fd: int | None = None

    def __enter__(self) -> JobLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DiskError(f"cannot create the job lock {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"PID {holder}" if holder else "another process"
            raise BusyError(
                f"another sci-fetch download ({who}) is running on {self.output}; wait for it to end, or stop it "
                f"first (`sci-fetch status` shows its progress)"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise DiskError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        self._fd = fd
        _write_pid(fd)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file stays (unlinking it would race a new holder)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isascii() and text.isdigit() else None


def _write_pid(fd: int) -> None:
    """Best effort: the PID only serves the message a second download prints."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
