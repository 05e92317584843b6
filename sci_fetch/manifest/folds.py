"""The claim table behind keys.collisions: which image of a run holds each folded destination.

One row per folded name (the name folded, as spelled, the image id, the run): a million names cost a
few hundred MB on disk and nothing in memory. The key is the folded name itself, not a hash of it, so
the names of one folder sit on neighbouring pages and a batch dirties few of them (3.6x faster to commit
than random 16-byte keys). The manifest keeps the table (so the processes of one run share it);
``plan``, which writes no manifest, uses a private temporary database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from sci_fetch.keys.collisions import Collision, fold

SCHEMA = """
CREATE TABLE IF NOT EXISTS folded (
    fold      TEXT PRIMARY KEY,
    image_id  TEXT NOT NULL,
    dest      TEXT NOT NULL,
    run_id    INTEGER NOT NULL
) WITHOUT ROWID;
"""


def claim(db: sqlite3.Connection, run_id: int, pairs: Sequence[tuple[str, str]]) -> list[Collision]:
    """Claim each (image_id, dest) for ``run_id``; returns those whose folded name another image of this run
    holds under another spelling. An exactly equal destination is not reported here: the planner's
    duplicate-destination check names it. Call inside the caller's transaction (or autocommit)."""
    keyed = [(fold(dest), image_id, dest) for image_id, dest in pairs]
    held: dict[str, tuple[str, str, int]] = {}
    for i in range(0, len(keyed), 900):
        chunk = [k for k, _i, _d in keyed[i : i + 900]]
        query = f"SELECT fold, image_id, dest, run_id FROM folded WHERE fold IN ({','.join('?' * len(chunk))})"
        held.update({r[0]: (r[1], r[2], r[3]) for r in db.execute(query, chunk)})
    found: list[Collision] = []
    writes: list[tuple[str, str, str, int]] = []
    for key, image_id, dest in keyed:
        holder = held.get(key)
        if holder is not None and holder[2] == run_id and holder[0] != image_id:
            if holder[1] != dest:
                found.append(Collision(holder[0], holder[1], image_id, dest))
            continue
        held[key] = (image_id, dest, run_id)
        writes.append((key, image_id, dest, run_id))
    db.executemany("INSERT OR REPLACE INTO folded VALUES (?, ?, ?, ?)", writes)
    return found


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
