"""The manifest as input: a file sci_fetch did not necessarily write, checked before it is trusted.

Three things are refused, each with one line that says what is wrong and what to do: a damaged database
(SQLite's CORRUPT / NOTADB), a schema version newer than this sci-fetch knows (it would be misread and
then written in an older shape), and a state folder that is a symbolic link leading out of the output
folder (the manifest, failures.csv and status.json would be written wherever it points).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from sci_fetch.errors import UsageError
from sci_fetch.fs.layout import STATE_DIR
from sci_fetch.fs.root import leads_outside

_DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def damaged(path: Path, exc: sqlite3.Error) -> UsageError | None:
    """SQLITE_CORRUPT / SQLITE_NOTADB as one line that says how to start over without fetching again."""
    if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) not in _DAMAGED:
        return None
    return UsageError(
        f"manifest {path} is damaged ({exc}); move it aside with `mv {path} {path}.damaged` (and its -wal and "
        "-shm files, if any) and run the same command again: the next run checks the images already on disk "
        "and adopts them without fetching them again"
    )


def _quick_check(db: sqlite3.Connection) -> tuple[str] | None:
    """Every page read once (sqlite3 releases the GIL while it runs); ``('ok',)`` when nothing is wrong."""
    found: tuple[str] | None = db.execute("PRAGMA quick_check(1)").fetchone()
    return found


def _problem(path: Path, found: tuple[str] | None) -> UsageError | None:
    if found is not None and found[0] == "ok":
        return None
    problem = " ".join(str(found[0]).replace("*** in database main ***", "").split())[:200] if found else "?"
    return UsageError(
        f"manifest {path} is damaged ({problem}); move it aside with `mv {path} {path}.damaged` (and its "
        "-wal and -shm files, if any) and run the same command again: the next run checks the images "
        "already on disk and adopts them without fetching them again"
    )


class IntegrityCheck:
    """SQLite's quick_check off the critical path: on its own read-only connection, in a thread,
    while the run plans (a million rows take seconds; the run's own work need not wait for them).

    The run waits for it beside its work and stops with its line when it finds damage (the outcomes
    recorded meanwhile stay: their files are on disk), and waits again before it reports how it ended; the
    manifest's ``close`` waits too, so an open for writing never ends with its check unfinished or unsaid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._found: tuple[str] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="manifest quick_check", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, timeout=30)
            try:
                self._found = _quick_check(db)
            finally:
                db.close()
        except BaseException as exc:  # handed to the thread that waits: it maps what it knows, re-raises the rest
            self._error = exc

    def wait(self) -> None:
        """Until the check has ended; the damaged-manifest line (UsageError) if it found damage."""
        self._thread.join()
        error = self._error
        if isinstance(error, sqlite3.DatabaseError):
            raise (damaged(self.path, error) or error) from error
        if error is not None:
            raise error
        problem = _problem(self.path, self._found)
        if problem is not None:
            raise problem


def check_version(found: str | None, known: int, path: Path) -> None:
    """A manifest from a newer sci-fetch is neither read nor written: its rows may mean something else."""
    if found is None:
        return
    try:
        version = int(found)
    except ValueError:
        raise UsageError(
            f"manifest {path} has schema version {found!r}, which no sci-fetch writes; move it aside with "
            f"`mv {path} {path}.damaged` and run the same command again"
        ) from None
    if version > known:
        raise UsageError(
            f"manifest {path} has schema version {version}, written by a newer sci-fetch; this one knows versions "
            f"up to {known} and never writes a newer one: upgrade sci-fetch (or use another output folder)"
        )


def check_state_folder(manifest: Path) -> None:
    """The same containment rule as the image folders: ``<output>/.sci-fetch`` (or the manifest in it) may
    not be a symbolic link that leads out of the output folder."""
    folder = manifest.parent
    if folder.name != STATE_DIR:
        return  # a manifest the user placed elsewhere with --manifest: their choice
    output = folder.parent
    for path in (folder, manifest):
        real = leads_outside(path, output)
        if real is not None:
            raise UsageError(
                f"{path} is a symbolic link to {real}, outside the output folder {output}; sci_fetch would write "
                f"its manifest, failures.csv and status.json there: replace the link with a real folder "
                f"({STATE_DIR}/ and the files in it), or name a manifest elsewhere with --manifest"
            )
