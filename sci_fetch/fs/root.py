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
        self._checked: dict[str, bool] = {}

    def contains(self, rel: str) -> bool:
        """Whether ``rel``'s folder, as it is on disk, is inside the output dir (creates nothing): what the
        planner asks before it trusts a file already there. Asked of the disk once per folder while the
        folder is remembered (as ``path_for`` makes each folder once): a million images sit in a few
        thousand folders, and a realpath per image was a fifth of a resume's CPU."""
        parent = os.path.dirname(os.path.join(self.root, rel))
        inside = self._checked.get(parent)
        if inside is None:
            if len(self._checked) >= CHECKED_FOLDERS:  # bounded: one folder per image must not fill the memory
                self._checked.clear()
            inside = self._checked[parent] = _within(os.path.realpath(parent), str(self.real))
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


def _within(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def leads_outside(path: Path | str, root: Path | str) -> str | None:
    """Where ``path`` really is, when a symbolic link on the way takes it out of ``root``; else None. The one
    containment rule, for image folders (OutputRoot) and the state folder (manifest.checks) alike."""
    real = os.path.realpath(path)
    return None if _within(real, os.path.realpath(root)) else real
