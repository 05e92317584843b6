import sqlite3

from sci_fetch.keys.mapping import Task
from sci_fetch.manifest.models import Action, Outcome, State
from sci_fetch.manifest.store import Manifest


def task(n: int, dest: str | None = None) -> Task:
    return Task(image_id=f"p:{n}", key=f"original/p:{n}.jpg", dest=dest or f"p/{n}.jpg")


def test_new_rows_are_pending_and_wal_mode(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    decisions = m.plan([task(1), task(2)], run, tmp_path)
    assert [d.action for d in decisions] == [Action.fetch, Action.fetch]
    assert m.counts() == {"pending": 2, "done": 0, "failed": 0, "missing": 0, "forbidden": 0}
    mode = sqlite3.connect(tmp_path / "m.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_state_changes_and_resume_decisions(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    m.plan([task(1), task(2), task(3), task(4)], run, tmp_path)
    (tmp_path / "p").mkdir()
    (tmp_path / "p/1.jpg").write_bytes(b"12345")
    m.record(
        [
            Outcome(image_id="p:1", state=State.done, bytes=5, md5="m1", etag="e1", attempts=1),
            Outcome(image_id="p:2", state=State.failed, attempts=5, error="503 SlowDown"),
            Outcome(image_id="p:3", state=State.missing, attempts=1, error="404"),
        ]
    )
    row = m.get("p:1")
    assert (row.state, row.bytes, row.md5, row.attempts) == (State.done, 5, "m1", 1)
    assert m.get("p:2").last_error == "503 SlowDown" and m.get("p:2").attempts == 5
    run2 = m.begin_run({})
    actions = {d.task.image_id: d.action for d in m.plan([task(1), task(2), task(3), task(4)], run2, tmp_path)}
    assert actions == {"p:1": Action.skip_done, "p:2": Action.fetch, "p:3": Action.skip_missing, "p:4": Action.fetch}
    run3 = m.begin_run({})
    assert m.plan([task(3)], run3, tmp_path, retry_missing=True)[0].action is Action.fetch


def test_done_row_whose_file_changed_is_fetched_again(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    m.plan([task(1)], run, tmp_path)
    m.record([Outcome(image_id="p:1", state=State.done, bytes=5, attempts=1)])
    run2 = m.begin_run({})
    assert m.plan([task(1)], run2, tmp_path)[0].action is Action.fetch  # file never written
    assert m.get("p:1").state is State.pending
    (tmp_path / "p").mkdir()
    (tmp_path / "p/1.jpg").write_bytes(b"123")  # wrong size
    run3 = m.begin_run({})
    assert m.plan([task(1)], run3, tmp_path)[0].action is Action.adopt


def test_file_without_row_is_adopted_not_trusted(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p/1.jpg").write_bytes(b"x")
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    assert m.plan([task(1)], run, tmp_path)[0].action is Action.adopt
    assert m.get("p:1").state is State.pending


def test_duplicates_in_one_run_are_reported_once_fetched(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    decisions = m.plan([task(1), task(1), Task(image_id="p:9", key="k", dest="p/1.jpg")], run, tmp_path)
    assert [d.action for d in decisions] == [Action.fetch, Action.duplicate_id, Action.duplicate_dest]
    assert decisions[2].other == "p:1"
    assert m.counts()["pending"] == 1


def test_changed_key_resets_the_row(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    m.plan([task(1)], run, tmp_path)
    m.record([Outcome(image_id="p:1", state=State.done, bytes=1, attempts=1)])
    run2 = m.begin_run({})
    moved = Task(image_id="p:1", key="medium/p:1-medium.jpg", dest="p/1.jpg")
    assert m.plan([moved], run2, tmp_path)[0].action is Action.fetch
    row = m.get("p:1")
    assert row.key == "medium/p:1-medium.jpg" and row.state is State.pending and row.attempts == 0


def test_counts_per_run_and_rejects(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    m.plan([task(1), task(2)], run, tmp_path)
    run2 = m.begin_run({})
    m.plan([task(2)], run2, tmp_path)
    assert m.counts(run2)["pending"] == 1 and m.counts()["pending"] == 2
    m.add_rejects(run2, [("invalid", "images[3]", None, None, "../x.jpg", "file_name has a '..' path part")])
    assert m.rejects(run2) == [("invalid", "images[3]", None, None, "../x.jpg", "file_name has a '..' path part")]
    assert m.rejects(run) == []


def test_readonly_open_sees_a_running_writer(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    m.plan([task(1)], run, tmp_path)
    reader = Manifest(tmp_path / "m.sqlite", readonly=True)
    assert reader.counts()["pending"] == 1
    m.record([Outcome(image_id="p:1", state=State.done, bytes=3, attempts=1)])
    assert reader.counts()["done"] == 1 and reader.bytes_done() == 3


def test_rows_are_paged_by_state_in_the_order_they_entered_the_manifest(tmp_path):
    """Each state's rows in planning (COCO) order, states in the order asked, every row once across pages."""
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    m.plan([task(n) for n in range(25)], run, tmp_path)
    m.record([Outcome(image_id=f"p:{n}", state=State.failed, attempts=1, error="x") for n in range(0, 25, 2)])
    m.record([Outcome(image_id=f"p:{n}", state=State.missing, attempts=1, error="x") for n in range(1, 25, 6)])
    dests = [r.dest for r in m.rows([State.missing, State.failed], page=4)]
    assert dests == [f"p/{n}.jpg" for n in range(1, 25, 6)] + [f"p/{n}.jpg" for n in range(0, 25, 2)]
    assert sorted(r.image_id for r in m.rows(page=3)) == sorted(f"p:{n}" for n in range(25))
    assert [r.image_id for r in m.rows([State.failed], run_id=run + 1)] == []
    assert list(m.done_files(run)) == [] and m.not_done(run) == 25


def test_a_version_1_manifest_is_upgraded_in_place_and_keeps_its_rows(tmp_path):
    """Manifests written before 'forbidden' and 'checks' existed: read as they are, upgraded on first write."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
    CREATE TABLE images (image_id TEXT PRIMARY KEY, key TEXT NOT NULL, dest TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed', 'missing')), bytes INTEGER, md5 TEXT,
        etag TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, run_id INTEGER, created_at REAL NOT NULL,
        updated_at REAL NOT NULL);
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT);
    INSERT INTO meta VALUES ('schema_version', '1');
    INSERT INTO images VALUES ('p:1', 'k1', 'a/1.jpg', 'done', 10, 'abc', 'abc', 1, NULL, 1, 1.0, 1.0);
    """)
    db.commit()
    db.close()
    old = Manifest(path, readonly=True)
    assert [(r.image_id, r.state, r.checks) for r in old.rows()] == [("p:1", State.done, None)]
    old.close()
    m = Manifest(path)
    assert m.meta("schema_version") == "3"  # rebuilt in the current shape: fold_claimed with it, 0 (unknown)
    assert m._db.execute("SELECT fold_claimed FROM images").fetchall() == [(0,)]
    m.record([Outcome(image_id="p:1", state=State.forbidden, error="missing, or no permission", checks=None)])
    (row,) = list(m.rows())
    assert row.state is State.forbidden and row.bytes == 10 and row.md5 == "abc"
    m.close()


def test_every_paged_pass_reads_one_index_range_per_page_never_a_sort(tmp_path):
    """The passes over rows (quick check, verify, failures.csv, the crash feed) stay linear only while each
    page is one range of the (state, rowid) index: a sort or a scan per page is O(n) per page, O(n²) per pass.
    Checked on SQLite's own plan of the statements the passes send, so no timing is involved."""
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    m.plan([task(n) for n in range(30)], run, tmp_path)
    m.record([Outcome(image_id=f"p:{n}", state=State.done, bytes=1, attempts=1) for n in range(20)])
    sent: list[str] = []
    m._db.set_trace_callback(sent.append)
    list(m.rows([State.done, State.failed], page=7))
    list(m.rows([State.pending], run_id=run, page=7))
    list(m.done_files(run))
    later = m.begin_run({})
    list(m.claim(later, [run], [State.pending], page=4))
    m._db.set_trace_callback(None)
    pages = {s for s in sent if s.startswith("SELECT rowid")}
    assert len(pages) >= 4
    for statement in pages:
        plan = " | ".join(r[3] for r in m._db.execute("EXPLAIN QUERY PLAN " + statement))
        assert "USING INDEX images_state (state=? AND rowid>?)" in plan and "TEMP B-TREE" not in plan, (statement, plan)
    m.close()


def test_the_space_checks_look_ups_use_an_index_and_the_sample_is_of_the_rows_left(tmp_path):
    """A crashed job's sample: only rows the earlier runs left in the states asked for (their feed's claims
    included), drawn over every such row; the COCO pass's batched look-up: one primary-key search per id.
    Checked on SQLite's own plan of the statements sent, so the cost stays linear in the rows read."""
    import random

    m = Manifest(tmp_path / "m.sqlite")
    old = m.begin_run({})
    m.plan([task(n) for n in range(40)], old, tmp_path)
    m.record([Outcome(image_id=f"p:{n}", state=State.done, bytes=1, attempts=1) for n in range(40) if n % 4])
    m.record([Outcome(image_id="p:4", state=State.missing, attempts=1)])
    other = m.begin_run({})
    m.plan([task(8)], other, tmp_path)  # a row another run (another fingerprint) reached: not the feed's
    m._db.execute("UPDATE images SET run_id = ? WHERE image_id = 'p:12'", (-old,))  # a claim cut short
    sent: list[str] = []
    m._db.set_trace_callback(sent.append)
    left = {f"p:{n}" for n in range(0, 40, 4)} - {"p:4", "p:8"}
    drawn: set[str] = set()
    for seed in range(30):
        rows, count = m.sample_left([old], [State.pending, State.failed], 3, random.Random(seed))
        assert count == len(left) and len(rows) == 3 and {r.image_id for r in rows} <= left
        drawn |= {r.image_id for r in rows}
    assert drawn == left  # every row left can be drawn
    assert m.sample_left([old], [State.pending], 50, random.Random(1))[0] != []
    assert m.states_of(["p:1", "p:4", "p:0", "absent"]) == {
        "p:1": State.done,
        "p:4": State.missing,
        "p:0": State.pending,
    }
    m._db.set_trace_callback(None)
    for statement in {s for s in sent if s.startswith("SELECT")}:
        plan = " | ".join(r[3] for r in m._db.execute("EXPLAIN QUERY PLAN " + statement))
        assert "SCAN" not in plan and "TEMP B-TREE" not in plan, (statement, plan)
        if "run_id IN" in statement:
            assert "USING INDEX images_state (state=? AND rowid>?)" in plan, (statement, plan)


def test_the_rows_read_ahead_are_the_rows_of_the_batch_whatever_the_order(tmp_path):
    """The planner reads a batch's rows ahead in rowid order (manifest.store._RowFinder): whatever order the
    next file lists its records in (the same, shuffled, new ones between, some gone, one process's share),
    each batch gets exactly the rows its ids have, as the id index would give them."""
    import random

    from sci_fetch.manifest.store import _ROW, _RowFinder

    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    ids = list(range(3000))
    for start in range(0, len(ids), 512):
        m.plan([task(n) for n in ids[start : start + 512]], run, tmp_path)
    rng = random.Random(7)
    middle = ids[1000:1600]
    rng.shuffle(middle)
    orders = {
        "same": ids,
        "shuffled": rng.sample(ids, len(ids)),
        "a shuffled stretch": ids[:1000] + middle + ids[1600:],
        "new records between, some gone": [n for i in ids if i % 7 for n in ((i,) if i % 5 else (i, 10_000 + i))],
        "one process's share": ids[::2],
    }
    for name, order in orders.items():
        finder = _RowFinder()
        for start in range(0, len(order), 512):
            batch = [task(n) for n in order[start : start + 512]]
            found = finder.find(m._db, batch)
            marks = ",".join("?" * len(batch))
            indexed = m._db.execute(
                f"SELECT {_ROW} FROM images WHERE image_id IN ({marks})", [t.image_id for t in batch]
            ).fetchall()
            assert sorted(found) == sorted(indexed), (name, start)
            if name == "same":  # read ahead: the next batch's rows are expected after this one's
                assert finder.after == max(r[6] for r in found)
    m.close()
