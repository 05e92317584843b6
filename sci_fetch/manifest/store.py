"""The resume manifest: one SQLite row per image, in WAL mode so ``status`` can read during a run.

SQLite is embedded (no server to run beside a download) and its transactions make each batch of
outcomes land whole or not at all. Writes are batched by the engine: one transaction per few hundred
images keeps the database far from being the bottleneck.

Invariant kept by the engine: a row becomes ``done`` only after its file was renamed into place, so
after a crash the manifest may lag the disk (those files are adopted next run) but never lead it.
"""

from __future__ import annotations

import functools
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sci_fetch.errors import DiskError, UsageError
from sci_fetch.fs.root import OutputRoot
from sci_fetch.keys.collisions import Collision, FoldCheck, Reject
from sci_fetch.keys.mapping import Task
from sci_fetch.manifest import folds
from sci_fetch.manifest.checks import IntegrityCheck, check_state_folder, check_version, damaged
from sci_fetch.manifest.models import Action, Decision, ManifestRow, Outcome, State
from sci_fetch.manifest.sql import select_in

P = ParamSpec("P")
R = TypeVar("R")
Row = tuple[Any, ...]

SCHEMA_VERSION = 3  # 2: state "forbidden", column "checks"; 3: column "fold_claimed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    image_id    TEXT PRIMARY KEY,
    key         TEXT NOT NULL,
    dest        TEXT NOT NULL UNIQUE,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed', 'missing', 'forbidden')),
    bytes       INTEGER,
    md5         TEXT,
    etag        TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    run_id      INTEGER,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    checks      TEXT,
    fold_claimed INTEGER NOT NULL DEFAULT 0  -- 1: this image holds its dest's folded name (folds.FLAG_TRIGGER)
);
CREATE INDEX IF NOT EXISTS images_state ON images (state);
CREATE INDEX IF NOT EXISTS images_updated ON images (updated_at);
CREATE TABLE IF NOT EXISTS runs (
    run_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at  REAL NOT NULL,
    ended_at    REAL,
    exit_code   INTEGER,
    settings    TEXT,
    summary     TEXT
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS rejects (
    run_id      INTEGER NOT NULL,
    kind        TEXT NOT NULL,      -- 'invalid' record or 'duplicate' id/destination
    record      TEXT NOT NULL,      -- where in the COCO file: images[123]
    image_id    TEXT,
    key         TEXT,
    dest        TEXT,
    reason      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rejects_run ON rejects (run_id);
"""

_COLUMNS = "image_id, key, dest, state, bytes, md5, etag, attempts, last_error, created_at, updated_at, checks"

# Version 1 knew neither the state 'forbidden' (its CHECK rejects it) nor the column 'checks': SQLite
# cannot change a CHECK in place, so the table is rebuilt (in the current shape), in one transaction, on
# first open for writing.
_MIGRATE_1 = (
    """
ALTER TABLE images RENAME TO images_v1;
DROP INDEX IF EXISTS images_state;
DROP INDEX IF EXISTS images_updated;
"""
    + _SCHEMA.split("CREATE TABLE IF NOT EXISTS runs")[0]
    + """
INSERT INTO images (image_id, key, dest, state, bytes, md5, etag, attempts, last_error, run_id, created_at, updated_at)
    SELECT image_id, key, dest, state, bytes, md5, etag, attempts, last_error, run_id, created_at, updated_at FROM images_v1;
DROP TABLE images_v1;
"""
)
# Version 2 lacks 'fold_claimed': added in place (O(1): SQLite stores no value for a column added with a
# default), every row 0 (unknown); the first resume asks each name once and flags the rows that hold theirs.
_MIGRATE_2 = "ALTER TABLE images ADD COLUMN fold_claimed INTEGER NOT NULL DEFAULT 0"
_SET_VERSION = f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE name = 'schema_version';"


def _disk_error(path: Path, exc: sqlite3.Error) -> DiskError | None:
    """SQLITE_FULL / SQLITE_IOERR as sci_fetch's DiskError, which stops a run like a full image disk (exit 4)."""
    if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
        return DiskError(f"manifest {path} cannot be written: {exc}; free some space and run the same command again")
    return None


def _disk_errors(method: Callable[Concatenate[Manifest, P], R]) -> Callable[Concatenate[Manifest, P], R]:
    """Decorates the methods that touch the database: a full or failing disk raises DiskError, a damaged
    file one line that says how to start over, never sqlite3's error."""

    def wrapper(self: Manifest, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            mapped = damaged(self.path, exc) or _disk_error(self.path, exc)
            if mapped is not None:
                raise mapped from exc
            raise

    functools.update_wrapper(wrapper, method)
    return wrapper


_NAMES = tuple(c.strip() for c in _COLUMNS.split(","))


def _row(values: tuple[Any, ...]) -> ManifestRow:
    return ManifestRow(**dict(zip(_NAMES, values, strict=True)))


class Manifest:
    """Thread-safe (one lock) so the engine can call it from worker threads with asyncio.to_thread."""

    def __init__(self, path: Path, readonly: bool = False, check: bool = True) -> None:
        """``check=False``: a writable open whose integrity another open of the same run checks (the
        processes of a ``--processes`` run, failures.csv after a run); every other writable open checks."""
        self.path = path
        self._integrity: IntegrityCheck | None = None
        self._lock = threading.Lock()
        self._columns = _COLUMNS
        self._output: OutputRoot | None = None  # the planner's, kept across batches: its folder checks are cached
        self._rows = _RowFinder()  # where the planner's next rows are expected
        check_state_folder(path)
        try:
            self._db = self._open_readonly() if readonly else self._open_writable(check)
        except sqlite3.DatabaseError as exc:
            raise (
                damaged(path, exc) or _disk_error(path, exc) or UsageError(f"manifest {path} cannot be opened: {exc}")
            ) from exc
        except OSError as exc:
            raise UsageError(f"manifest {path} cannot be created: {exc.strerror or exc}") from exc

    def _open_readonly(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise UsageError(f"no manifest at {self.path}; has a download been started with this output dir?")
        self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, timeout=30)
        version = self._version()
        check_version(version, SCHEMA_VERSION, self.path)
        if version == "1":  # read as it is; the next download upgrades it
            self._columns = _COLUMNS.replace(", checks", ", NULL AS checks")
        return self._db

    def _open_writable(self, check: bool) -> sqlite3.Connection:
        """Checked before anything is written: a newer schema; damaged pages by a quick_check in a thread
        that runs beside the run (IntegrityCheck), waited for before a v1 manifest is rebuilt and before a run
        ends; then made current."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.is_file() and self.path.stat().st_size > 0  # a new file has nothing to check
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        check_version(self._version(), SCHEMA_VERSION, self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA + folds.SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        if check and existed:  # after the switch to WAL: a reader beside the writer
            self._integrity = IntegrityCheck(self.path)
        self._migrate()
        self._db.executescript(folds.FLAG_TRIGGER)
        return self._db

    def _migrate(self) -> None:
        """An older manifest made current, each step in one transaction. Version 2's step reads the version
        again inside its transaction: the processes of a run open the manifest one after another."""
        if self.meta("schema_version") == "1":
            self.confirm_intact()  # a damaged table is not copied into the new one
            self._db.executescript("BEGIN IMMEDIATE;" + _MIGRATE_1 + _SET_VERSION + "COMMIT;")
        if self.meta("schema_version") == "2":
            with self._transaction(heartbeat=False) as db:
                if db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0] == "2":
                    db.execute(_MIGRATE_2)
                    db.execute(_SET_VERSION)

    @_disk_errors
    def confirm_intact(self) -> None:
        """Wait for this open's integrity check: the damaged-manifest line (UsageError) if it found damage.
        The run waits on it beside its work (a finding stops it) and again before it reports how it ended."""
        if self._integrity is not None:
            self._integrity.wait()

    def close(self) -> None:
        """Closes the connection, then waits for the integrity check and raises what it found."""
        with self._lock:
            self._db.close()
            if self._output is not None:
                self._output.close()
        self.confirm_intact()

    @contextmanager
    def _transaction(self, heartbeat: bool = True) -> Iterator[sqlite3.Connection]:
        """The one way to write several statements: under the lock, BEGIN IMMEDIATE (the write lock at
        once, so no deadlock between two writers upgrading), the heartbeat with it, COMMIT or ROLLBACK."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                if heartbeat:
                    self._heartbeat_locked()
                db.execute("COMMIT")
            except BaseException as exc:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.OperationalError:
                    pass  # SQLite already rolled back (it does after SQLITE_FULL): keep the original error
                mapped = _disk_error(self.path, exc) if isinstance(exc, sqlite3.OperationalError) else None
                if mapped is not None:
                    raise mapped from exc
                raise

    def _pages(self, select: str, where: str, params: Row, page: int) -> Iterator[Row]:
        """The one keyset pager: rows matching ``where`` (which must pin ``state = ?``) in rowid order.

        ``state = ? AND rowid > ?`` is one range of the (state, rowid) index, so every page starts where
        the last ended and costs its own rows only: a pass over n rows is O(n). (OFFSET, or ORDER BY a
        column the index does not hold, re-reads and re-sorts everything before the page: O(n) per
        page, O(n²) per pass.) Rowid order is the order rows entered the manifest (the COCO file's, for
        one export), so the table's pages are read forwards. The lock is held for one page at a time.
        """
        after = 0
        while True:
            with self._lock:
                fetched = self._db.execute(
                    f"SELECT rowid, {select} FROM images WHERE {where} AND rowid > ? ORDER BY rowid LIMIT ?",
                    (*params, after, page),
                ).fetchall()
            yield from (r[1:] for r in fetched)
            if len(fetched) < page:
                return
            after = fetched[-1][0]

    # ---- runs -------------------------------------------------------------------------------
    @_disk_errors
    def begin_run(self, settings: dict[str, Any]) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO runs (started_at, settings) VALUES (?, ?)",
                (time.time(), json.dumps(settings, default=str)),
            )
            self._heartbeat_locked()
            assert cur.lastrowid is not None  # an INSERT into a rowid table always has one
            return cur.lastrowid

    @_disk_errors
    def end_run(self, run_id: int, exit_code: int, summary: dict[str, Any]) -> None:
        self.confirm_intact()  # a run on a damaged manifest does not end as if it were sound
        with self._lock:
            self._db.execute(
                "UPDATE runs SET ended_at = ?, exit_code = ?, summary = ? WHERE run_id = ?",
                (time.time(), exit_code, json.dumps(summary, default=str), run_id),
            )
            self._heartbeat_locked()

    @_disk_errors
    def heartbeat(self) -> None:
        """'This run is alive', written about every second even while no image finishes (long backoff,
        an outage), so ``status --health`` does not call a waiting run stalled."""
        with self._lock:
            self._heartbeat_locked()

    @_disk_errors
    def set_meta(self, name: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    @_disk_errors
    def delete_meta(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM meta WHERE name = ?", (name,))

    def _heartbeat_locked(self) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('heartbeat', ?)", (repr(time.time()),))

    # ---- planning ---------------------------------------------------------------------------
    @_disk_errors
    def plan(self, tasks: list[Task], run_id: int, root: Path, retry_missing: bool = False) -> list[Decision]:
        """Decide for each task whether to fetch it, and register new ones as ``pending``, in one transaction.

        One query per batch for the rows and one for the destinations, then plain dict look-ups: a resume
        of 110,000 images must cost seconds, not a query per image. Touches the disk only to stat
        destinations: a done row is trusted when its file has its recorded size.
        """
        with self._transaction() as db:
            found = self._rows.find(db, tasks)
            decisions = _Planner(db, tasks, found, run_id, self._output_root(root).size_of, retry_missing).run()
        return decisions

    def _output_root(self, root: Path) -> OutputRoot:
        if self._output is None or self._output.root != root:
            if self._output is not None:
                self._output.close()
            self._output = OutputRoot(root)
        return self._output

    @_disk_errors
    def plan_checked(
        self,
        tasks: list[Task],
        run_id: int,
        root: Path,
        retry_missing: bool,
        check: FoldCheck,
        sizes: Mapping[str, int | None] | None = None,
    ) -> tuple[list[Decision], list[Reject]]:
        """``plan``, with the batch's folded destinations claimed first (keys.collisions) in the same
        transaction: a resume then rewrites none of the claims its images already hold, and another process
        of the run sees an image's claim and its row's run id together (folds.claim, ``planned``).

        The batch's rows are read before the claims: a row whose flag (``fold_claimed``) says its image holds
        its dest's folded name, with the task's dest, is not looked up in ``folded`` (on a resume, none is),
        and each row's flag is written with the batch's own (folds.claim_planned).

        ``sizes``: each task's file size, already asked of the disk (engine.reader's child does); None: asked here."""
        with self._transaction() as db:
            found = self._rows.find(db, tasks)
            claims = folds.PlannedClaims(db, run_id, {(r[0], r[2]) for r in found if r[7]})
            kept, rejects = check.apply(tasks, claims)
            size_of = self._output_root(root).size_of if sizes is None else sizes.__getitem__
            decisions = _Planner(db, kept, found, run_id, size_of, retry_missing).run(claims.holds)
        return decisions, rejects

    @_disk_errors
    def claim_folds(self, run_id: int, pairs: Sequence[tuple[str, str]]) -> list[Collision]:
        """Claim each (image_id, dest)'s case- and Unicode-folded name for this run, in one transaction;
        returns the destinations another image of the run holds under another spelling (keys.collisions)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                found = folds.claim(self._db, run_id, pairs)
                self._db.execute("COMMIT")
            except BaseException:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.OperationalError:
                    pass  # SQLite already rolled back (it does after SQLITE_FULL): keep the original error
                raise
        return found

    # ---- outcomes ---------------------------------------------------------------------------
    @_disk_errors
    def record(self, outcomes: Iterable[Outcome]) -> None:
        """Apply a batch of outcomes in one transaction (the engine calls this every second or so)."""
        now = time.time()
        rows = [
            (o.state.value, o.bytes, o.md5, o.etag, o.attempts, o.error, now, o.checks, o.image_id) for o in outcomes
        ]
        with self._transaction() as db:
            db.executemany(
                "UPDATE images SET state = ?, bytes = COALESCE(?, bytes), md5 = COALESCE(?, md5), "
                "etag = COALESCE(?, etag), attempts = attempts + ?, last_error = ?, updated_at = ?, "
                "checks = COALESCE(?, checks) WHERE image_id = ?",
                rows,
            )

    @_disk_errors
    def mark_pending(self, image_ids: Iterable[str], reason: str) -> int:
        """Send images back to ``pending`` (``verify`` uses this for files that no longer check out)."""
        return self.mark_pending_each([(image_id, reason) for image_id in image_ids])

    @_disk_errors
    def mark_pending_each(self, reasons: Iterable[tuple[str, str]]) -> int:
        """(image id, reason) pairs back to ``pending``, in one transaction whatever their number."""
        now = time.time()
        with self._transaction(heartbeat=False) as db:
            cur = db.executemany(
                "UPDATE images SET state = 'pending', last_error = ?, updated_at = ? WHERE image_id = ?",
                [(reason, now, image_id) for image_id, reason in reasons],
            )
            return int(cur.rowcount)

    @_disk_errors
    def add_rejects(self, run_id: int, rejects: list[tuple[str, str, str | None, str | None, str | None, str]]) -> None:
        """Keep (kind, record, image_id, key, dest, reason) of records this run could not use."""
        if not rejects:
            return
        with self._transaction(heartbeat=False) as db:
            db.executemany("INSERT INTO rejects VALUES (?, ?, ?, ?, ?, ?, ?)", [(run_id, *r) for r in rejects])

    @_disk_errors
    def carry_rejects(self, trusted: int, run_id: int) -> dict[str, int]:
        """List the records a trusted earlier run could not use as this run's too, and count them by kind: the
        quick check reads no COCO file, and its failures.csv and counts must still name every unusable record."""
        with self._transaction(heartbeat=False) as db:
            db.execute(
                "INSERT INTO rejects SELECT ?, kind, record, image_id, key, dest, reason FROM rejects "
                "WHERE run_id = ? ORDER BY rowid",
                (run_id, trusted),
            )
            kinds = db.execute("SELECT kind, COUNT(*) FROM rejects WHERE run_id = ? GROUP BY kind", (run_id,))
            return {kind: int(count) for kind, count in kinds.fetchall()}

    @_disk_errors
    def rejects(self, run_id: int) -> list[tuple[str, str, str | None, str | None, str | None, str]]:
        with self._lock:
            return self._db.execute(
                "SELECT kind, record, image_id, key, dest, reason FROM rejects WHERE run_id = ? ORDER BY rowid",
                (run_id,),
            ).fetchall()

    # ---- reading ----------------------------------------------------------------------------
    @_disk_errors
    def counts(self, run_id: int | None = None) -> dict[str, int]:
        """Rows per state; with ``run_id``, only the images that run's COCO file named."""
        query = (
            "SELECT state, COUNT(*) FROM images"
            + (" WHERE run_id IN (?, ?)" if run_id is not None else "")
            + " GROUP BY state"
        )
        with self._lock:
            rows = self._db.execute(query, (run_id, -run_id) if run_id is not None else ()).fetchall()
        counts = {s.value: 0 for s in State}
        counts.update({state: n for state, n in rows})
        return counts

    @_disk_errors
    def bytes_done(self) -> int:
        with self._lock:
            return int(
                self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM images WHERE state = 'done'").fetchone()[0]
            )

    @_disk_errors
    def rate(self, window: float = 60.0) -> tuple[float, float]:
        """Images and bytes per second done over the last ``window`` seconds, from row times. The window
        never reaches back before the latest run started: 2 s into a run, the rate is over those 2 s."""
        now = time.time()
        with self._lock:
            started = self._db.execute("SELECT MAX(started_at) FROM runs").fetchone()[0]
            span = min(window, now - started) if started is not None else window
            span = max(span, 1.0)
            n, b = self._db.execute(  # +state: walk the updated_at index over the window, not every done row
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM images WHERE +state = 'done' AND updated_at >= ?",
                (now - span,),
            ).fetchone()
        return n / span, b / span

    def rows(
        self, states: Iterable[State] | None = None, run_id: int | None = None, page: int = 2000
    ) -> Iterator[ManifestRow]:
        """Rows of the given states (in that order), each state's in the order they entered the manifest,
        a page at a time, so a million failed images are listed in flat memory and linear time."""
        for state in states if states else list(State):
            where, params = _state_where(state, run_id)
            yield from (_row(r) for r in self._pages(self._columns, where, params, page))

    @_disk_errors
    def get(self, image_id: str) -> ManifestRow | None:
        with self._lock:
            r = self._db.execute(f"SELECT {self._columns} FROM images WHERE image_id = ?", (image_id,)).fetchone()
        return _row(r) if r else None

    @_disk_errors
    def last_errors(self, limit: int = 5) -> list[ManifestRow]:
        """The latest errors of images not done: only those rows are read (the state index), not every row."""
        others = [s.value for s in State if s is not State.done]
        with self._lock:
            fetched = self._db.execute(
                f"SELECT {self._columns} FROM images WHERE state IN ({','.join('?' * len(others))}) "
                "AND last_error IS NOT NULL ORDER BY updated_at DESC LIMIT ?",
                (*others, limit),
            ).fetchall()
        return [_row(r) for r in fetched]

    @_disk_errors
    def _fetch(self, query: str, params: Iterable[Any]) -> list[Any]:
        """One page of a paged read, under the lock (the generators above cannot be decorated)."""
        with self._lock:
            return self._db.execute(query, list(params)).fetchall()

    def _version(self) -> str | None:
        try:
            return self.meta("schema_version")
        except sqlite3.OperationalError:  # a file a killed run left before it made its tables
            return None

    def done_files(self, run_id: int) -> Iterator[tuple[str, int]]:
        """(destination, bytes) of every done image of a run, as plain tuples: the quick check stats every
        file and needs nothing else of the rows."""
        where, params = _state_where(State.done, run_id)
        return self._pages("dest, bytes", where, params, 5000)

    def not_done(self, run_id: int) -> int:
        """How many images of a run are not done: only the (few) rows of the other states are read."""
        others = [s.value for s in State if s is not State.done]
        query = f"SELECT COUNT(*) FROM images WHERE state IN ({','.join('?' * len(others))}) AND run_id IN (?, ?)"
        with self._lock:
            return int(self._db.execute(query, (*others, run_id, -run_id)).fetchone()[0])

    def claim(
        self, run_id: int, earlier: Iterable[int], states: Iterable[State], page: int = 512
    ) -> Iterator[list[ManifestRow]]:
        """The feed of a resume: pages of the rows the ``earlier`` runs left in ``states``, each page claimed for
        ``run_id`` (as ``-run_id``: handed out, not yet met in this run's COCO pass) in the transaction
        that reads it.

        The run fetches these before (and while) it plans its COCO file: the manifest already knows what
        is left. A claimed row is planned as ``queued`` when the COCO pass meets it, so no image is fetched
        twice; a row the planner reached first has this run's id and is no longer ``earlier``'s, so the feed
        skips it. Keyset on (state, rowid): the first page costs one page, whatever the job's size.
        """
        owners = [r for run in earlier for r in (run, -run)]
        marks = ",".join("?" * len(owners))
        for state in states:
            after = 0
            while True:
                with self._transaction(heartbeat=False) as db:
                    fetched = db.execute(
                        f"SELECT rowid, {self._columns} FROM images WHERE state = ? AND run_id IN ({marks}) "
                        "AND rowid > ? ORDER BY rowid LIMIT ?",
                        (state.value, *owners, after, page),
                    ).fetchall()
                    db.executemany("UPDATE images SET run_id = ? WHERE rowid = ?", [(-run_id, r[0]) for r in fetched])
                if fetched:
                    yield [_row(r[1:]) for r in fetched]
                if len(fetched) < page:
                    break
                after = fetched[-1][0]

    def sample_left(
        self, runs: Sequence[int], states: Sequence[State], size: int, rng: random.Random
    ) -> tuple[list[ManifestRow], int]:
        """A uniform random sample of ``size`` of the rows ``runs`` left in ``states`` (their feeds' claims
        included), and how many such rows there are: what a crashed job's space check HEADs.

        Reservoir sampling (Algorithm R) over their rowids, read a page at a time along the (state, rowid)
        index like every paged pass: time linear in the rows left (not the job), memory the sample's size."""
        owners = [r for run in runs for r in (run, -run)]
        where = f"state = ? AND run_id IN ({','.join('?' * len(owners))})"
        chosen: list[int] = []
        seen = 0
        for state in states:
            for (rowid,) in self._pages("rowid", where, (state.value, *owners), 5000):
                seen += 1
                if len(chosen) < size:
                    chosen.append(rowid)
                    continue
                slot = rng.randrange(seen)  # the i-th row replaces a random slot with probability size/i
                if slot < size:
                    chosen[slot] = rowid
        by_rowid = {r[0]: _row(r[1:]) for r in self._by_rowid(chosen)}
        return [by_rowid[rowid] for rowid in chosen], seen

    @_disk_errors
    def _by_rowid(self, rowids: list[int]) -> list[Row]:
        with self._lock:
            return select_in(self._db, f"SELECT rowid, {self._columns} FROM images WHERE rowid IN ({{}})", rowids)

    @_disk_errors
    def states_of(self, image_ids: Sequence[str]) -> dict[str, State]:
        """The state of each of these images the manifest holds: one primary-key look-up per id, in one query
        per IN_LIST ids (a planned batch's), so a pass over a COCO file never holds the whole manifest in memory."""
        with self._lock:
            rows = select_in(self._db, "SELECT image_id, state FROM images WHERE image_id IN ({})", image_ids)
        return {image_id: State(state) for image_id, state in rows}

    @_disk_errors
    def images_in_coco(self) -> int | None:
        """How many images the last run's COCO file holds (its shard's share), as the run counted them."""
        with self._lock:
            r = self._db.execute("SELECT value FROM meta WHERE name LIKE 'images_in_coco%' LIMIT 1").fetchone()
        return int(r[0]) if r else None

    @_disk_errors
    def meta(self, name: str) -> str | None:
        with self._lock:
            r = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return r[0] if r else None

    @_disk_errors
    def last_run(self) -> dict[str, Any] | None:
        with self._lock:
            r = self._db.execute(
                "SELECT run_id, started_at, ended_at, exit_code, summary FROM runs ORDER BY run_id DESC LIMIT 1"
            ).fetchone()
        if r is None:
            return None
        return {
            "run_id": r[0],
            "started_at": r[1],
            "ended_at": r[2],
            "exit_code": r[3],
            "summary": json.loads(r[4]) if r[4] else None,
        }


def _state_where(state: State, run_id: int | None) -> tuple[str, Row]:
    """The WHERE of a per-state pass: ``state = ?`` first, so the pager walks the (state, rowid) index."""
    if run_id is None:
        return "state = ?", (state.value,)
    return "state = ? AND run_id IN (?, ?)", (state.value, run_id, -run_id)  # -run_id: claimed by its feed


_ROW = "image_id, key, dest, state, bytes, run_id, rowid, fold_claimed"  # what the planner reads of a row


class _RowFinder:
    """The rows of a batch's image ids, read ahead in rowid order where the last batch's rows ended.

    A job's rows entered the manifest in its COCO file's order, and a resume reads that file in the same
    order: the next batch's rows are usually the next rows of the table, read as a few neighbouring pages.
    Ids not among them are looked up through the id index (a random page each: at a million rows, more
    than SQLite's cache holds). Any row found is the row of its id, so where the guess is wrong (a new
    export, a fresh download) only the cost changes, and a batch whose rows were few or scattered stops
    the reading ahead until a batch's rows sit together again."""

    SLACK = 16  # rows read beyond the batch's size: records new to the manifest do not move the window

    def __init__(self) -> None:
        self.after: int | None = 0  # the rowid the next batch's rows are expected after; None: not guessing

    def find(self, db: sqlite3.Connection, tasks: list[Task]) -> list[Row]:
        wanted = {t.image_id for t in tasks}
        found: dict[str, Row] = {}
        if self.after is not None:
            ahead = db.execute(
                f"SELECT {_ROW} FROM images WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (self.after, len(wanted) + self.SLACK),
            ).fetchall()
            found = {r[0]: r for r in ahead if r[0] in wanted}
        rest = [i for i in wanted if i not in found]
        found.update((r[0], r) for r in select_in(db, f"SELECT {_ROW} FROM images WHERE image_id IN ({{}})", rest))
        self.after = self._next(tasks, found)
        return list(found.values())

    def _next(self, tasks: list[Task], found: dict[str, Row]) -> int | None:
        """Where to read the next batch's rows: after this batch's last row, when most of its rows were
        found and sit together (not a fresh download, not one process's share of interleaved rows)."""
        rowids = [r[6] for r in found.values()]
        span = 2 * (len(tasks) + self.SLACK)
        if not rowids or len(rowids) * 2 < len(tasks) or max(rowids) - min(rowids) > span:
            return None
        return int(next(found[t.image_id][6] for t in reversed(tasks) if t.image_id in found))


class _Planner:
    """One batch of planning: rows and destination holders read up front, writes collected and applied at the end."""

    def __init__(
        self,
        db: sqlite3.Connection,
        tasks: list[Task],
        found: list[Row],
        run_id: int,
        size_of: Callable[[str], int | None],
        retry_missing: bool,
    ) -> None:
        """``size_of``: the size of the file at a destination (OutputRoot.size_of, or what the reader asked)."""
        self.db, self.tasks, self.run_id, self.retry_missing = db, tasks, run_id, retry_missing
        self.now = time.time()
        self.size_of = size_of
        self.rows = {r[0]: r for r in found}
        # dest is unique: a row found by id holds its own dest, so only the other dests need a look-up (on a
        # resume, none: one index search per image instead of two, each a random page of a large index).
        self.holders = {r[2]: (r[0], r[5]) for r in found}
        dests = list({t.dest for t in tasks} - self.holders.keys())
        self.holders.update(
            {
                r[1]: (r[0], r[2])
                for r in select_in(db, "SELECT image_id, dest, run_id FROM images WHERE dest IN ({})", dests)
            }
        )
        self.inserts: list[Row] = []
        self.touched: list[Row] = []
        self.reset: list[Row] = []
        self.holds: set[tuple[str, str]] | None = None

    def run(self, holds: set[tuple[str, str]] | None = None) -> list[Decision]:
        """``holds``: the (image_id, dest) pairs that hold their folded name after this batch's claims
        (plan_checked), their rows' new ``fold_claimed``; None (``plan``, no claims): a row keeps its flag
        while its dest stays, and loses it when its dest changes."""
        self.holds = holds
        decisions = [self._one(task) for task in self.tasks]
        db = self.db
        db.executemany(
            "INSERT INTO images (image_id, key, dest, state, attempts, run_id, created_at, updated_at, fold_claimed) "
            "VALUES (?, ?, ?, 'pending', 0, ?, ?, ?, ?)",
            self.inserts,
        )
        # rowid: no index search
        db.executemany("UPDATE images SET run_id = ?, fold_claimed = ? WHERE rowid = ?", self.touched)
        db.executemany(
            "UPDATE images SET state = 'pending', last_error = ?, updated_at = ? WHERE rowid = ?", self.reset
        )
        return decisions

    def _claimed(self, task: Task, flag: int) -> int:
        """The row's ``fold_claimed`` once this task is planned into it (``flag``: the row's, its dest kept)."""
        return flag if self.holds is None else int((task.image_id, task.dest) in self.holds)

    def _queued(self, task: Task, row: Row) -> Decision:
        """The COCO pass meets a row this run's feed handed out: it is this run's now, and not fetched again."""
        self.touched.append((self.run_id, self._claimed(task, row[7]), row[6]))
        self.rows[task.image_id] = (*row[:5], self.run_id, *row[6:])
        self.holders[task.dest] = (task.image_id, self.run_id)
        return Decision(task=task, action=Action.queued)

    def _one(self, task: Task) -> Decision:
        image_id, run_id = task.image_id, self.run_id
        row = self.rows.get(image_id)
        if row is not None and row[5] == run_id:
            return Decision(task=task, action=Action.duplicate_id, other=image_id)
        if row is not None and row[5] == -run_id and row[1] == task.key and row[2] == task.dest:
            return self._queued(task, row)
        holder = self.holders.get(task.dest)
        if holder is not None and holder[0] != image_id:
            if holder[1] in (run_id, -run_id):
                return Decision(task=task, action=Action.duplicate_dest, other=holder[0])
            self.db.execute("DELETE FROM images WHERE image_id = ?", (holder[0],))  # a stale row from an older export
            self.rows.pop(holder[0], None)
        size_on_disk = self.size_of(task.dest)  # None: absent, or its folder leads outside
        found = Action.adopt if size_on_disk is not None else Action.fetch
        self.holders[task.dest] = (image_id, run_id)
        if row is None:
            self.inserts.append((image_id, task.key, task.dest, run_id, self.now, self.now, self._claimed(task, 0)))
            self.rows[image_id] = (image_id, task.key, task.dest, State.pending.value, None, run_id, None, 0)
            return Decision(task=task, action=found)
        _, key, dest, state, size, _, rowid, flag = row
        self.rows[image_id] = (image_id, key, dest, state, size, run_id, rowid, flag)
        if key != task.key or dest != task.dest:
            # Another variant or template than last time: the old row says nothing about this object.
            self.holders.pop(dest, None)
            self.db.execute(
                "UPDATE images SET key = ?, dest = ?, state = 'pending', bytes = NULL, md5 = NULL, etag = NULL, "
                "attempts = 0, last_error = NULL, run_id = ?, updated_at = ?, fold_claimed = ? WHERE image_id = ?",
                (
                    task.key,
                    task.dest,
                    run_id,
                    self.now,
                    self._claimed(task, flag if dest == task.dest else 0),
                    image_id,
                ),
            )
            return Decision(task=task, action=found)
        self.touched.append((run_id, self._claimed(task, flag), rowid))
        if state == State.done.value:
            if size_on_disk is not None and size_on_disk == size:
                return Decision(task=task, action=Action.skip_done)
            self.reset.append(("file was done but is gone or changed on disk", self.now, rowid))
            return Decision(task=task, action=Action.fetch)
        if state == State.missing.value and not self.retry_missing:
            return Decision(task=task, action=Action.skip_missing)
        return Decision(task=task, action=found)
