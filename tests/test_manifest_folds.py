"""images.fold_claimed: a row whose image holds the fold claim of its own dest is not asked again.

One invariant carries it: a flagged row's folded name is held by that row's image under that row's dest.
These tests check it after every change that can break it (a takeover, a dest change, a migration) and
that skipping the look-up changes no decision: the same scenarios planned with every flag cleared first
(so every name is looked up, as before the flag) give the same decisions, rejects and claims.
"""

from __future__ import annotations

import sqlite3
import tempfile
import unicodedata
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sci_fetch.keys.collisions import FoldCheck, fold
from sci_fetch.keys.mapping import Task
from sci_fetch.manifest.folds import TempFolds
from sci_fetch.manifest.models import Action, Outcome, State
from sci_fetch.manifest.store import SCHEMA_VERSION, Manifest

NFC = unicodedata.normalize("NFC", "café.jpg")
NFD = unicodedata.normalize("NFD", "café.jpg")
NAMES = ["Cat.jpg", "cat.jpg", "CAT.JPG", NFC, NFD, "dog.jpg", "Dog.jpg", "emu.jpg"]


def task(image: str, name: str) -> Task:
    return Task(image, f"k/{image}", f"d/{name}")


def broken_flags(m: Manifest | sqlite3.Connection) -> list[tuple[str, str]]:
    """(image_id, dest) of the flagged rows whose folded name is not held by their image under their dest."""
    db = m._db if isinstance(m, Manifest) else m
    flagged = db.execute("SELECT image_id, dest FROM images WHERE fold_claimed = 1").fetchall()
    claims = {r[0]: (r[1], r[2]) for r in db.execute("SELECT fold, image_id, dest FROM folded")}
    return [(i, d) for i, d in flagged if claims.get(fold(d)) != (i, d)]


def flags(m: Manifest) -> dict[str, int]:
    return dict(m._db.execute("SELECT image_id, fold_claimed FROM images").fetchall())


def look_ups(m: Manifest, statements: list[str]) -> int:
    return sum("FROM folded" in s for s in statements)


def traced(m: Manifest) -> list[str]:
    statements: list[str] = []
    m._db.set_trace_callback(statements.append)
    return statements


def plan(m: Manifest, run: int, out: Path, tasks: list[Task], as_duplicates: bool = True) -> tuple[list, list]:
    check = FoldCheck(TempFolds().claim, as_duplicates=as_duplicates)
    decisions, rejects = m.plan_checked(tasks, run, out, False, check)
    return [(d.task.image_id, d.task.dest, d.action, d.other) for d in decisions], rejects


def test_a_resume_asks_no_fold_of_a_flagged_row_and_decides_the_same(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    out = tmp_path / "out"
    batches = [[task(f"p:{b}-{i}", f"{b}/{i}.jpg") for i in range(50)] for b in range(4)]
    batches[3][7] = task("p:3-7", "0/1.JPG")  # collides with p:0-1 across batches: left out as a duplicate
    run = m.begin_run({})
    first = [plan(m, run, out, b) for b in batches]
    assert broken_flags(m) == [] and sum(flags(m).values()) == 199  # every image planned holds its name
    m.record([Outcome(image_id="p:0-0", state=State.done, bytes=3, attempts=1)])
    (out / "d/0").mkdir(parents=True)
    (out / "d/0/0.jpg").write_bytes(b"abc")
    run2 = m.begin_run({})
    statements = traced(m)
    again = [plan(m, run2, out, b) for b in batches]
    assert look_ups(m, statements) == 1  # the duplicate's batch: its row is absent, so its name is asked
    assert [d[:3] for d in again[0][0][:2]] == [
        ("p:0-0", "d/0/0.jpg", Action.skip_done),
        ("p:0-1", "d/0/1.jpg", Action.fetch),
    ]
    assert [r for _, r in again] == [r for _, r in first] and again[3][1][0][2] == "p:3-7"
    m._db.execute("UPDATE images SET fold_claimed = 0")  # the same resume, every name asked
    run3 = m.begin_run({})
    statements.clear()
    asked = [plan(m, run3, out, b) for b in batches]
    assert look_ups(m, statements) == 4 and asked == again
    assert broken_flags(m) == [] and sum(flags(m).values()) == 199
    m.close()


def test_a_takeover_clears_the_old_holders_flag(tmp_path):
    """An image gone from the export holds 'Cat.jpg' from the last run; a new image's 'CAT.jpg' takes it."""
    m = Manifest(tmp_path / "m.sqlite")
    out = tmp_path / "out"
    run = m.begin_run({})
    plan(m, run, out, [task("p:0", "Cat.jpg"), task("p:1", "dog.jpg")])
    assert flags(m) == {"p:0": 1, "p:1": 1}
    run2 = m.begin_run({})
    decisions, rejects = plan(m, run2, out, [task("q:0", "CAT.jpg"), task("p:1", "dog.jpg")])
    assert [d[0] for d in decisions] == ["q:0", "p:1"] and rejects == []
    assert flags(m) == {"p:0": 0, "p:1": 1, "q:0": 1} and broken_flags(m) == []
    assert m._db.execute("SELECT image_id, dest FROM folded WHERE fold = ?", (fold("d/Cat.jpg"),)).fetchone() == (
        "q:0",
        "d/CAT.jpg",
    )
    # and the old holder, back in a later batch of the run, now collides with the new one (asked, not skipped)
    decisions, rejects = plan(m, run2, out, [task("p:0", "Cat.jpg")])
    assert decisions == [] and [(r[2], r[4]) for r in rejects] == [("p:0", "d/Cat.jpg")]
    assert broken_flags(m) == []
    m.close()


def test_a_takeover_inside_one_batch_is_still_caught(tmp_path):
    """The flagged image comes after a new image that takes its name in the same batch: the in-memory claim
    is asked first, so the flagged image collides instead of keeping a name it no longer holds."""
    m = Manifest(tmp_path / "m.sqlite")
    out = tmp_path / "out"
    run = m.begin_run({})
    plan(m, run, out, [task("p:0", "Cat.jpg")])
    run2 = m.begin_run({})
    decisions, rejects = plan(m, run2, out, [task("q:0", "CAT.jpg"), task("p:0", "Cat.jpg"), task("q:1", "cAt.jpg")])
    assert [d[0] for d in decisions] == ["q:0"]
    assert [(r[2], r[4]) for r in rejects] == [("p:0", "d/Cat.jpg"), ("q:1", "d/cAt.jpg")]
    assert flags(m) == {"p:0": 0, "q:0": 1} and broken_flags(m) == []
    m.close()


def test_a_dest_change_clears_the_flag_or_sets_it_for_the_new_claim(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    out = tmp_path / "out"
    run = m.begin_run({})
    plan(m, run, out, [task("p:0", "a.jpg"), task("p:1", "b.jpg")])
    assert flags(m) == {"p:0": 1, "p:1": 1}
    run2 = m.begin_run({})
    m.plan([task("p:0", "other.jpg")], run2, out)  # planned without claims: the row's flag says nothing now
    assert flags(m)["p:0"] == 0 and broken_flags(m) == []
    run3 = m.begin_run({})
    plan(m, run3, out, [task("p:0", "A.jpg"), task("p:1", "c.jpg")])  # claimed with the new dest
    assert flags(m) == {"p:0": 1, "p:1": 1} and broken_flags(m) == []
    assert m._db.execute("SELECT image_id, dest FROM folded WHERE fold = 'd/a.jpg'").fetchone() == ("p:0", "d/A.jpg")
    m.close()


def test_claim_folds_taking_a_name_clears_the_holders_flag(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    plan(m, run, tmp_path / "out", [task("p:0", "Cat.jpg")])
    run2 = m.begin_run({})
    assert m.claim_folds(run2, [("q:0", "d/CAT.jpg")]) == []
    assert flags(m) == {"p:0": 0} and broken_flags(m) == []
    m.close()


_V2 = """
CREATE TABLE images (image_id TEXT PRIMARY KEY, key TEXT NOT NULL, dest TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed', 'missing', 'forbidden')), bytes INTEGER,
    md5 TEXT, etag TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, run_id INTEGER,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, checks TEXT);
CREATE TABLE runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT, started_at REAL NOT NULL, ended_at REAL,
    exit_code INTEGER, settings TEXT, summary TEXT);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE folded (fold TEXT PRIMARY KEY, image_id TEXT NOT NULL, dest TEXT NOT NULL, run_id INTEGER NOT NULL)
    WITHOUT ROWID;
INSERT INTO meta VALUES ('schema_version', '2');
INSERT INTO runs (started_at) VALUES (1.0);
INSERT INTO images VALUES ('p:0', 'k/p:0', 'd/Cat.jpg', 'done', 3, NULL, NULL, 1, NULL, 1, 1.0, 1.0, NULL);
INSERT INTO images VALUES ('p:1', 'k/p:1', 'd/dog.jpg', 'done', 3, NULL, NULL, 1, NULL, 1, 1.0, 1.0, NULL);
INSERT INTO folded VALUES ('d/cat.jpg', 'p:0', 'd/Cat.jpg', 1);
INSERT INTO folded VALUES ('d/dog.jpg', 'p:1', 'd/dog.jpg', 1);
"""


def test_a_version_2_manifest_migrates_and_heals_its_flags(tmp_path):
    """Upgraded in place (one column, every row unknown); the first resume asks every name once and flags
    the rows that hold theirs, the next asks none."""
    path = tmp_path / "m.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_V2)
    db.close()
    old = Manifest(path, readonly=True)  # read as it is
    assert [r.image_id for r in old.rows()] == ["p:0", "p:1"]
    old.close()
    m = Manifest(path)
    assert m.meta("schema_version") == str(SCHEMA_VERSION) == "3" and flags(m) == {"p:0": 0, "p:1": 0}
    out = tmp_path / "out"
    statements = traced(m)
    batch = [task("p:0", "Cat.jpg"), task("p:1", "dog.jpg"), task("q:0", "CAT.jpg")]
    healing = plan(m, m.begin_run({}), out, batch)
    assert look_ups(m, statements) == 1 and flags(m) == {"p:0": 1, "p:1": 1} and broken_flags(m) == []
    statements.clear()
    healed = plan(m, m.begin_run({}), out, batch)
    assert look_ups(m, statements) == 1  # q:0 only: it has no row, so its name is asked
    assert healed == healing and [(r[2], r[4]) for r in healed[1]] == [("q:0", "d/CAT.jpg")]
    m.close()
    reopened = Manifest(path)  # a second open migrates nothing
    assert reopened.meta("schema_version") == "3" and flags(reopened) == {"p:0": 1, "p:1": 1}
    reopened.close()


# ---- the same decisions with and without the flag: random scenarios -----------------------------------

_BATCH = st.lists(st.tuples(st.integers(0, 5), st.sampled_from(NAMES)), min_size=1, max_size=6)
_RUN = st.tuples(st.booleans(), st.lists(_BATCH, min_size=1, max_size=3))


def _state(m: Manifest) -> tuple[list, list]:
    folded = m._db.execute("SELECT fold, image_id, dest, run_id FROM folded ORDER BY fold").fetchall()
    images = m._db.execute("SELECT image_id, key, dest, state, run_id FROM images ORDER BY image_id").fetchall()
    return folded, images


@settings(max_examples=150, deadline=None)
@given(st.lists(_RUN, min_size=1, max_size=4))
def test_the_flag_changes_no_decision_in_one_or_two_processes(runs):
    """Runs of batches over colliding names (case, NFC/NFD, one image renamed, an id twice, names taken over
    from images an export dropped), planned by two connections in turn as --processes does, warned or
    left out: with the flags kept, and with every flag cleared before each batch (every name asked)."""
    with tempfile.TemporaryDirectory() as tmp:
        flagged = [Manifest(Path(tmp, "a.sqlite")) for _ in range(2)]
        asked = [Manifest(Path(tmp, "b.sqlite")) for _ in range(2)]
        out = Path(tmp, "out")
        for as_duplicates, batches in runs:
            run, run_b = flagged[0].begin_run({}), asked[0].begin_run({})
            for n, batch in enumerate(batches):
                tasks = [task(f"p:{i}", name) for i, name in batch]
                asked[n % 2]._db.execute("UPDATE images SET fold_claimed = 0")
                expected = plan(asked[n % 2], run_b, out, tasks, as_duplicates)
                assert plan(flagged[n % 2], run, out, tasks, as_duplicates) == expected
                assert broken_flags(flagged[0]) == []
            assert _state(flagged[0]) == _state(asked[0])
        for m in flagged + asked:
            m.close()
