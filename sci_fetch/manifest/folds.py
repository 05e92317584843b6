"""The claim table behind keys.collisions: which image of a run holds each folded destination.

One row per folded name (the name folded, as spelled, the image id, the run): a million names cost a
few hundred MB on disk and nothing in memory. The key is the folded name itself, not a hash of it, so
the names of one folder sit on neighbouring pages and a batch dirties few of them (3.6x faster to commit
than random 16-byte keys). The manifest keeps the table (so the processes of one run share it);
``plan``, which writes no manifest, uses a private temporary database.

In the manifest, a row of ``images`` whose ``fold_claimed`` is 1 holds its own dest's name here, so a
resume asks this table nothing for it (claim_planned): a look-up per image is a random page of a b-tree
larger than SQLite's cache, and on a resume its answer is always "this image holds its name".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence, Set

from sci_fetch.keys.collisions import Collision, fold
from sci_fetch.manifest.sql import select_in

SCHEMA = """
CREATE TABLE IF NOT EXISTS folded (
    fold      TEXT PRIMARY KEY,
    image_id  TEXT NOT NULL,
    dest      TEXT NOT NULL,
    run_id    INTEGER NOT NULL
) WITHOUT ROWID;
"""


# The manifest's own (``plan`` has no ``images``): ``images.fold_claimed`` = 1 promises that ``folded`` holds the
# row's folded dest for the row's image under the row's dest, so a resume need not ask (Manifest.plan_checked).
# Whatever writes ``folded`` (every claim is an upsert) and moves a name away from an image under its
# spelling clears that image's flag here, in SQL, so no writer of ``folded`` can forget it.
FLAG_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS folded_taken AFTER UPDATE OF image_id, dest ON folded
WHEN old.image_id IS NOT new.image_id OR old.dest IS NOT new.dest
BEGIN
    UPDATE images SET fold_claimed = 0 WHERE image_id = old.image_id AND fold_claimed = 1;
END;
"""

_WRITE = (
    "INSERT INTO folded VALUES (?, ?, ?, ?) "
    "ON CONFLICT (fold) DO UPDATE SET image_id = excluded.image_id, dest = excluded.dest, run_id = excluded.run_id"
)

Held = dict[str, tuple[str, str, int]]  # folded name -> (image_id, dest, run_id) of its holder
Pair = tuple[str, str]  # (image_id, dest)


def claim(db: sqlite3.Connection, run_id: int, pairs: Sequence[Pair], planned: bool = False) -> list[Collision]:
    """Claim each (image_id, dest) for ``run_id``; returns those whose folded name another image of this run
    holds under another spelling. An exactly equal destination is not reported here: the planner's
    duplicate-destination check names it. Call inside the caller's transaction (or autocommit).

    ``planned``: the caller plans the same images into the manifest's ``images`` table in this transaction
    (Manifest.plan_checked). Then a name an image already holds from an earlier run, with the same spelling,
    is not written again (on a resume: none of a million names is), and a holder from an earlier run counts
    as this run's when its image's row says this run met it with that destination."""
    keyed = _keyed(pairs)
    return _settle(db, run_id, keyed, _held(db, [k for k, _i, _d in keyed]), planned)


def claim_planned(
    db: sqlite3.Connection, run_id: int, pairs: Sequence[Pair], holding: Set[Pair]
) -> tuple[list[Collision], set[Pair]]:
    """``claim(planned=True)`` that asks ``folded`` nothing for the pairs in ``holding`` (their rows' flag says
    they hold their name: on a resume, every image), and says which pairs hold their name afterwards (their
    rows' flag to write). A pair of ``holding`` is still claimed in the batch's order, with itself as its
    holder unless an earlier name of the batch took the name over: a collision is found as without the flag."""
    if all(pair in holding for pair in pairs):
        # By the flags' invariant no two of these hold one name, so nothing collides and nothing is written:
        # not even a name is folded (a resume's every batch).
        return [], set(pairs)
    keyed = _keyed(pairs)
    held = _held(db, [k for k, image_id, dest in keyed if (image_id, dest) not in holding])
    found = _settle(db, run_id, keyed, held, True, holding)
    return found, {(image_id, dest) for key, image_id, dest in keyed if held[key][:2] == (image_id, dest)}


class PlannedClaims:
    """keys.collisions' claim for one batch of Manifest.plan_checked: ``holding`` (the pairs whose rows are
    flagged) in, ``holds`` (the pairs that hold their name after the batch: their rows' new flag) out."""

    def __init__(self, db: sqlite3.Connection, run_id: int, holding: Set[Pair]) -> None:
        self.db, self.run_id, self.holding = db, run_id, holding
        self.holds: set[Pair] = set()

    def __call__(self, pairs: Sequence[Pair]) -> list[Collision]:
        found, self.holds = claim_planned(self.db, self.run_id, pairs, self.holding)
        return found


def _keyed(pairs: Sequence[Pair]) -> list[tuple[str, str, str]]:
    return [(fold(dest), image_id, dest) for image_id, dest in pairs]


def _settle(
    db: sqlite3.Connection,
    run_id: int,
    keyed: list[tuple[str, str, str]],
    held: Held,
    planned: bool,
    holding: Set[Pair] = frozenset(),
) -> list[Collision]:
    """The claims in the batch's order against ``held`` (updated to what ``folded`` holds after them), then
    the names claimed anew (new, respelled or taken over) written in one statement."""
    met = _met_in_run(db, run_id, keyed, held) if planned else set()
    found: list[Collision] = []
    writes: list[tuple[str, str, str, int]] = []
    for key, image_id, dest in keyed:
        holder = held.get(key)
        if holder is None and (image_id, dest) in holding:
            holder = (image_id, dest, run_id)  # its row's flag: it holds the name (not looked up)
        if holder is not None and holder[0] != image_id and (holder[2] == run_id or (holder[0], holder[1]) in met):
            if holder[1] != dest:
                found.append(Collision(holder[0], holder[1], image_id, dest))
            continue
        held[key] = (image_id, dest, run_id)
        if not (planned and holder is not None and holder[:2] == (image_id, dest)):
            writes.append((key, image_id, dest, run_id))
    db.executemany(_WRITE, writes)
    return found


def _held(db: sqlite3.Connection, keys: list[str]) -> Held:
    rows = select_in(db, "SELECT fold, image_id, dest, run_id FROM folded WHERE fold IN ({})", keys)
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _met_in_run(db: sqlite3.Connection, run_id: int, keyed: list[tuple[str, str, str]], held: Held) -> set[Pair]:
    """(image_id, dest) of the holders from earlier runs, held for another image, that this run has planned
    already (their claim was kept, not rewritten): read from ``images``. Only collisions and stale names ask."""
    asked = {
        holder[:2]
        for key, image_id, _dest in keyed
        if (holder := held.get(key)) is not None and holder[0] != image_id and holder[2] != run_id
    }
    met: set[Pair] = set()
    for image_id, dest in asked:
        row = db.execute(
            "SELECT 1 FROM images WHERE image_id = ? AND dest = ? AND run_id = ?", (image_id, dest, run_id)
        )
        if row.fetchone() is not None:
            met.add((image_id, dest))
    return met


class TempFolds:
    """A claim table in a private temporary database (SQLite spills it to a temporary file as it grows)."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", isolation_level=None)
        self._db.executescript(SCHEMA)

    def claim(self, pairs: Sequence[tuple[str, str]]) -> list[Collision]:
        self._db.execute("BEGIN")
        try:
            found = claim(self._db, 0, pairs)
        finally:
            self._db.execute("COMMIT")
        return found

    def close(self) -> None:
        self._db.close()
