"""The output folder as a boundary: every file sci_fetch writes, or trusts as already written, is inside it.

A ``file_name`` is checked as text (keys.mapping); this checks the disk, where a folder inside the output
may be a symbolic link that leads out of it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from sci_fetch.errors import DiskError, PermanentError

CHECKED_FOLDERS = 65_536  # folders remembered as checked or made (a COCO file lists a folder's images together)
OPEN_FOLDERS = 16  # folder descriptors ``size_of`` keeps open (the least recently opened one is closed first)
_BY_DESCRIPTOR = os.stat in os.supports_dir_fd
_FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EMFILE})


def map_os_error(exc: OSError, op: str, path: Path) -> Exception:
    """Disk full or no permission stops the run (DiskError); anything else fails just this file."""
    text = f"{op} {path}: {exc.strerror or exc}"
    if exc.errno in _FATAL_ERRNOS:
        return DiskError(
            text
            + ("; free some space and run the same command again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "")
        )
    return PermanentError(op, str(path), None, exc.strerror or str(exc), reason="local-file")


class OutputRoot:
    """The output dir: makes parent folders once each and refuses paths that leave it through a symlink."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real = Path(os.path.realpath(root))
        self._made: set[str] = set()
        self._checked: dict[str, bool] = {}  # folder (relative, as in a checked file_name) -> inside the output dir
        self._open: dict[str, int] = {}  # folder (relative, checked inside) -> its descriptor, oldest first
        self._root: int | None = None  # the output dir's descriptor, once size_of has asked
        self._last: str | None = None  # the folder size_of was last asked about

    def size_of(self, rel: str) -> int | None:
        """The size of the file at ``rel`` when its folder is inside the output dir (``contains``); None when
        the folder leads out of it or the file is not there. What the planner asks of every done image.

        Asked relative to a descriptor, not by a walk of the whole path: the output dir's (the folders below
        it only), or, once two images of one folder come in a row, that folder's, kept while its images pass
        (at most OPEN_FOLDERS; a job whose folders interleave never opens one). A descriptor holds the folder
        that was checked when it was opened, so a link put in its place later is not followed either."""
        folder, _, name = rel.rpartition("/")
        fd = self._open.get(folder)
        if fd is None:
            if not self._inside(folder):
                return None
            fd, name = (self._open_folder(folder), name) if folder == self._last else (self._root_fd(), rel)
            self._last = folder
            if fd is None:  # no descriptor to ask through (or no dir_fd on this system): the whole path
                return _size(os.path.join(self.root, rel))
        return _size(name, fd)

    def _root_fd(self) -> int | None:
        if self._root is None and _BY_DESCRIPTOR:
            self._root = _open_dir(str(self.root))
        return self._root

    def _open_folder(self, folder: str) -> int | None:
        if not _BY_DESCRIPTOR:
            return None
        if len(self._open) >= OPEN_FOLDERS:
            self._close_one(next(iter(self._open)))
        fd = _open_dir(os.path.join(self.root, folder))
        if fd is not None:  # not there (yet): asked again next time, as a worker may make it meanwhile
            self._open[folder] = fd
        return fd

    def _close_one(self, folder: str) -> None:
        os.close(self._open.pop(folder))

    def close(self) -> None:
        """Closes the descriptors ``size_of`` keeps."""
        while self._open:
            self._close_one(next(iter(self._open)))
        if self._root is not None:
            os.close(self._root)
            self._root = None
        self._last = None

    def contains(self, rel: str) -> bool:
        """Whether ``rel``'s folder, as it is on disk, is inside the output dir (creates nothing): what the
        planner asks before it trusts a file already there. Asked of the disk once per folder while the
        folder is remembered (as ``path_for`` makes each folder once): a million images sit in a few
        thousand folders, and a realpath per image was a fifth of a resume's CPU."""
        return self._inside(rel.rpartition("/")[0])

    def _inside(self, folder: str) -> bool:
        """``contains`` for a relative folder, keyed by its text (no path joined per image)."""
        inside = self._checked.get(folder)
        if inside is None:
            if len(self._checked) >= CHECKED_FOLDERS:  # bounded: one folder per image must not fill the memory
                self._checked.clear()
            inside = self._checked[folder] = _within(os.path.realpath(os.path.join(self.root, folder)), str(self.real))
        return inside

    def path_for(self, rel: str) -> Path:
        """The absolute destination for a checked relative path; creates its folder (once per folder while it is
        remembered: bounded like ``contains``, so a job with a folder per image does not keep every name)."""
        dest = self.root / rel
        parent = str(dest.parent)
        if parent not in self._made:
            if len(self._made) >= CHECKED_FOLDERS:
                self._made.clear()
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


def _open_dir(path: str) -> int | None:
    try:
        return os.open(path, _FOLDER_FLAGS)
    except OSError:
        return None


def _size(path: str, dir_fd: int | None = None) -> int | None:
    """None when the file is not there (or cannot be asked about): it is fetched again."""
    try:
        return os.stat(path, dir_fd=dir_fd).st_size
    except OSError:
        return None


def _within(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def leads_outside(path: Path | str, root: Path | str) -> str | None:
    """Where ``path`` really is, when a symbolic link on the way takes it out of ``root``; else None. The one
    containment rule, for image folders (OutputRoot) and the state folder (manifest.checks) alike."""
    real = os.path.realpath(path)
    return None if _within(real, os.path.realpath(root)) else real
