"""The manifest side of a crash resume's feed: what an earlier run left is handed out once, in pages, and
the COCO pass that meets it afterwards plans it as ``queued``, never as a second fetch."""

from __future__ import annotations

from sci_fetch.engine.feed import interleave
from sci_fetch.keys.mapping import Task
from sci_fetch.manifest.models import Action, Outcome, State
from sci_fetch.manifest.store import Manifest


def task(n: int) -> Task:
    return Task(image_id=f"p:{n}", key=f"original/p:{n}.jpg", dest=f"p/{n}.jpg")


def crashed(tmp_path, n: int = 30) -> tuple[Manifest, int]:
    """A run that planned ``n`` images, got the first two thirds done and one failed, then died."""
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    m.plan([task(i) for i in range(n)], run, tmp_path)
    (tmp_path / "p").mkdir()
    for i in range(2 * n // 3):
        if i != 3:  # the failed one has no file
            (tmp_path / f"p/{i}.jpg").write_bytes(b"x")
    m.record([Outcome(image_id=f"p:{i}", state=State.done, bytes=1, attempts=1) for i in range(2 * n // 3)])
    m.record([Outcome(image_id="p:3", state=State.failed, attempts=5, error="503")])
    return m, run


def test_the_feed_hands_out_every_left_row_once_in_pages_pending_first(tmp_path):
    m, old = crashed(tmp_path)
    run = m.begin_run({})
    pages = list(m.claim(run, [old], [State.pending, State.failed], page=4))
    assert [len(p) for p in pages] == [4, 4, 2, 1]
    assert [r.image_id for p in pages for r in p] == [f"p:{i}" for i in range(20, 30)] + ["p:3"]
    assert list(m.claim(run, [old], [State.pending, State.failed])) == []  # claimed: never handed out twice
    assert m.counts(run) == {"pending": 10, "failed": 1, "done": 0, "missing": 0, "forbidden": 0}
    assert [r.image_id for r in m.rows([State.failed], run_id=run)] == ["p:3"]


def test_the_coco_pass_plans_fed_rows_as_queued_and_a_repeated_record_as_a_duplicate(tmp_path):
    m, old = crashed(tmp_path)
    run = m.begin_run({})
    fed = next(m.claim(run, [old], [State.pending], page=5))
    assert [r.image_id for r in fed] == ["p:20", "p:21", "p:22", "p:23", "p:24"]
    actions = {d.task.image_id: d.action for d in m.plan([task(i) for i in range(30)], run, tmp_path)}
    assert {i for i, a in actions.items() if a is Action.queued} == {f"p:{i}" for i in range(20, 25)}
    assert {i for i, a in actions.items() if a is Action.fetch} == {"p:3"} | {f"p:{i}" for i in range(25, 30)}
    assert list(m.claim(run, [old], [State.pending])) == []  # the rest are this run's now: the planner had them
    again = m.plan([task(21)], run, tmp_path)
    assert [d.action for d in again] == [Action.duplicate_id]
    assert m.get("p:21").state is State.pending and m.counts(run)["pending"] == 10


def test_a_feed_cut_short_by_a_crash_is_handed_out_again_by_the_next_run(tmp_path):
    m, old = crashed(tmp_path)
    second = m.begin_run({})
    next(m.claim(second, [old], [State.pending], page=3))  # then it dies: 3 rows claimed, never met by its COCO pass
    m.close()
    m = Manifest(tmp_path / "m.sqlite")
    third = m.begin_run({})
    again = [r.image_id for p in m.claim(third, [second], [State.pending]) for r in p]
    assert again == ["p:20", "p:21", "p:22"]  # the second run's claim; the rest still belong to the first run
    rest = [r.image_id for p in m.claim(third, [old, second], [State.pending]) for r in p]
    assert rest == [f"p:{i}" for i in range(23, 30)]


def test_a_fed_row_done_before_the_coco_pass_meets_it_stays_done_and_is_not_fetched(tmp_path):
    m, old = crashed(tmp_path)
    run = m.begin_run({})
    next(m.claim(run, [old], [State.pending], page=2))
    m.record([Outcome(image_id="p:20", state=State.done, bytes=1, attempts=1)])
    (d,) = m.plan([task(20)], run, tmp_path)
    assert d.action is Action.queued and m.get("p:20").state is State.done
    assert m.counts(run)["done"] == 1


def test_interleave_yields_a_fed_page_before_asking_the_planner_then_lets_planning_run_ahead():
    asked: list[str] = []

    def planned():
        for n in range(1, 6):
            asked.append(f"plan {n}")
            yield f"plan {n}"

    merged = interleave(iter(["fed 1", "fed 2", "fed 3"]), planned(), ahead=2)
    assert next(merged) == "fed 1" and asked == []
    assert list(merged) == ["plan 1", "plan 2", "fed 2", "plan 3", "plan 4", "fed 3", "plan 5"]
    assert list(interleave(iter(["f1", "f2", "f3"]), iter(["p1"]), ahead=2)) == ["f1", "p1", "f2", "f3"]
