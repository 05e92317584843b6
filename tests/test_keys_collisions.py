"""Destinations that are one file on macOS and Windows (issue 21.8): warned once, and with
case_insensitive_names treated as duplicates, in plan, --dry-run and download, in bounded memory."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import unicodedata
import uuid

import pytest
from helpers import animl_image, failures, random_blobs, seed, settings_for, write_coco
from test_manifest_folds import broken_flags

from sci_fetch.commands.download import download
from sci_fetch.keys.collisions import FoldCheck, fold
from sci_fetch.keys.mapping import Task
from sci_fetch.manifest.folds import TempFolds
from sci_fetch.manifest.store import Manifest

NFC = unicodedata.normalize("NFC", "café.jpg")
NFD = unicodedata.normalize("NFD", "café.jpg")
NAMES = ["Cat.jpg", "cat.jpg", "CAT.JPG", NFC, NFD]


def tasks(names: list[str], prefix: str = "p") -> list[Task]:
    return [Task(f"{prefix}:{i}", f"k/{i}", f"d/{n}") for i, n in enumerate(names)]


def test_fold_joins_case_and_unicode_form():
    assert NFC != NFD
    assert len({fold(n) for n in NAMES}) == 2
    assert fold("d/Ǆ.JPG") == fold("d/ǆ.jpg")
    assert fold("a/b.jpg") != fold("a/c.jpg")


def test_the_warning_names_the_pairs_and_what_to_do():
    check = FoldCheck(TempFolds().claim)
    kept, rejects = check.apply(tasks(NAMES))
    assert len(kept) == 5 and rejects == []
    message = check.warning()
    assert message is not None and message.startswith("3 destination(s) differ")
    assert "'d/Cat.jpg' and 'd/cat.jpg'" in message and "'d/Cat.jpg' and 'd/CAT.JPG'" in message
    assert ascii("d/" + NFC) + " and " + ascii("d/" + NFD) in message
    assert "--case-insensitive-names" in message and "rename them" in message


def test_as_duplicates_the_later_names_are_rejects():
    check = FoldCheck(TempFolds().claim, as_duplicates=True)
    kept, rejects = check.apply(tasks(NAMES))
    assert [t.dest for t in kept] == ["d/Cat.jpg", "d/" + NFC]
    assert [r[4] for r in rejects] == ["d/cat.jpg", "d/CAT.JPG", "d/" + NFD]
    assert all(r[0] == "duplicate" and "same file as d/" in r[5] for r in rejects)


def test_claims_span_batches_and_a_new_run_starts_clean(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    assert m.claim_folds(run, [("p:0", "d/Cat.jpg")]) == []
    (found,) = m.claim_folds(run, [("p:1", "d/CAT.jpg"), ("p:2", "d/dog.jpg")])
    assert (found.first_id, found.first_dest, found.image_id, found.dest) == ("p:0", "d/Cat.jpg", "p:1", "d/CAT.jpg")
    assert m.claim_folds(run, [("p:0", "d/Cat.jpg")]) == []  # the same image listed again: not a collision
    assert m.claim_folds(run, [("p:9", "d/dog.jpg")]) == []  # exactly equal: the planner's duplicate check
    run2 = m.begin_run({})
    assert m.claim_folds(run2, [("p:1", "d/CAT.jpg")]) == []  # last run's claims do not count
    m.close()


def test_many_names_are_checked_without_a_python_set():
    """Memory stays with SQLite: 50,000 names in batches, the colliding pair planted at both ends."""
    import tracemalloc

    check = FoldCheck(TempFolds().claim)
    rng = random.Random(5)
    tracemalloc.start()
    for start in range(0, 50_000, 500):
        names = [f"{rng.getrandbits(64):016x}-{i}.jpg" for i in range(start, start + 500)]
        if start == 0:
            names[0] = "First.jpg"
        if start == 49_500:
            names[-1] = "FIRST.jpg"
        check.apply(tasks(names, prefix=f"p{start}"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert check.found == 1 and check.examples[0].dest == "d/FIRST.jpg"
    assert peak < 20_000_000, f"{peak / 1e6:.0f} MB held in Python"


# ---- through the engine, against SeaweedFS --------------------------------------------------------------


@pytest.fixture(scope="module")
def colliding(s3, tmp_path_factory):
    project = "fold" + uuid.uuid4().hex[:6]
    blobs = random_blobs(6, seed=21, sizes=[2000])
    images = [animl_image(project, b) for b in blobs]
    for record, name in zip(images, [*NAMES, "dog.jpg"], strict=True):
        record["file_name"] = f"{project}/{name}"
    seed(s3, "test-bucket", images, blobs)
    return write_coco(tmp_path_factory.mktemp("coco") / "coco.json", images), images


def fold_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "differ from another only in letter case" in r.getMessage()]


def test_download_warns_once_and_fetches_all_by_default(s3_env, colliding, tmp_path, caplog):
    coco, images = colliding
    caplog.set_level(logging.WARNING, logger="sci_fetch")
    settings = settings_for(s3_env, coco, tmp_path / "out")
    assert download(settings) == 0
    (warning,) = fold_warnings(caplog)
    assert warning.startswith("3 destination(s)") and "cat.jpg" in warning
    caplog.clear()
    dry = settings_for(s3_env, coco, tmp_path / "out2", dry_run=True)
    download(dry)
    assert len(fold_warnings(caplog)) == 1


def test_case_insensitive_names_fetches_one_of_each(s3_env, colliding, tmp_path, caplog):
    coco, images = colliding
    caplog.set_level(logging.WARNING, logger="sci_fetch")
    settings = settings_for(s3_env, coco, tmp_path / "out", case_insensitive_names=True)
    assert download(settings) == 0
    on_disk = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file() and ".sci-fetch" not in p.parts)
    assert on_disk == sorted(["Cat.jpg", NFC, "dog.jpg"])
    rows = failures(settings)
    assert sorted(r["destination"].rsplit("/", 1)[1] for r in rows) == sorted(["cat.jpg", "CAT.JPG", NFD])
    assert all("same file as" in r["reason"] for r in rows)
    assert "left out as a duplicate" in fold_warnings(caplog)[0]


def manifest_flags(settings) -> tuple[list, dict[str, int]]:
    """The broken flags (none, if the invariant holds) and each row's flag, read beside the manifest."""
    db = sqlite3.connect(f"file:{settings.manifest_path}?mode=ro", uri=True)
    try:
        return broken_flags(db), dict(db.execute("SELECT dest, fold_claimed FROM images").fetchall())
    finally:
        db.close()


def test_a_resume_of_colliding_names_keeps_its_decisions_and_flags(s3_env, colliding, tmp_path, capsys):
    """The second run asks no name its images hold (their flags), and leaves out the same later names."""
    coco, images = colliding
    settings = settings_for(s3_env, coco, tmp_path / "out", case_insensitive_names=True)
    assert download(settings) == 0
    first = failures(settings)
    broken, flagged = manifest_flags(settings)
    project = images[0]["file_name"].split("/")[0]
    kept = {f"{project}/{n}" for n in ["Cat.jpg", NFC, "dog.jpg"]}
    assert broken == [] and flagged == dict.fromkeys(kept, 1)
    capsys.readouterr()
    later = coco.stat().st_mtime + 10
    os.utime(coco, (later, later))  # the COCO file seems changed: the whole file is planned again, no quick check
    assert download(settings) == 0
    assert "already done 3" in capsys.readouterr().out
    assert failures(settings) == first and manifest_flags(settings) == ([], flagged)


def test_case_insensitive_names_in_two_processes(s3_env, colliding, tmp_path):
    """Two processes claim in one manifest: one image of each group is fetched, whichever process planned
    first, the others left out; a resume in two processes again keeps one of each and the flags true."""
    coco, images = colliding
    settings = settings_for(s3_env, coco, tmp_path / "out", case_insensitive_names=True, processes="2")
    for run in range(2):
        later = coco.stat().st_mtime + 10 * run
        os.utime(coco, (later, later))  # a second run plans the whole file again, no quick check
        assert download(settings) == 0
        on_disk = [p.name for p in (tmp_path / "out").rglob("*") if p.is_file() and ".sci-fetch" not in p.parts]
        assert sorted({fold(n) for n in on_disk}) == sorted({fold(n) for n in NAMES + ["dog.jpg"]})
        left_out = [r["destination"].rsplit("/", 1)[1] for r in failures(settings)]
        assert len(left_out) == 3 and all("same file as" in r["reason"] for r in failures(settings))
        broken, flagged = manifest_flags(settings)
        assert broken == [] and sorted(d.rsplit("/", 1)[1] for d, f in flagged.items() if f) == sorted(
            set(NAMES + ["dog.jpg"]) - set(left_out)
        )


def test_plan_warns_and_counts_them_as_left_out(s3_env, colliding, tmp_path, caplog):
    from sci_fetch.plan.population import sample_remaining

    coco, _images = colliding
    caplog.set_level(logging.WARNING, logger="sci_fetch")
    population = sample_remaining(settings_for(s3_env, coco, tmp_path / "out"), 10, random.Random(1))
    assert population.images == 6 and len(fold_warnings(caplog)) == 1
    caplog.clear()
    folded = settings_for(s3_env, coco, tmp_path / "out", case_insensitive_names=True)
    population = sample_remaining(folded, 10, random.Random(1))
    assert population.images == 3 and population.invalid == 3


def test_a_resume_keeps_the_claims_it_holds_and_still_finds_collisions(tmp_path):
    """Planned with the claims (Manifest.plan_checked): a resume writes none of the names its images already
    hold, yet a new image colliding with a kept claim is found, and a name last run's image no longer
    holds goes to the new image without a collision."""
    m = Manifest(tmp_path / "m.sqlite")
    out = tmp_path / "out"
    first = tasks(["Cat.jpg", "dog.jpg"])
    run = m.begin_run({})
    m.plan_checked(first, run, out, False, FoldCheck(TempFolds().claim))
    claims = m._db.execute("SELECT fold, image_id, dest, run_id FROM folded ORDER BY fold").fetchall()
    run2 = m.begin_run({})
    check = FoldCheck(TempFolds().claim, as_duplicates=True)
    decisions, rejects = m.plan_checked(first[:1], run2, out, False, check)  # dog.jpg's image is gone
    assert [d.task.image_id for d in decisions] == ["p:0"] and rejects == []
    assert m._db.execute("SELECT fold, image_id, dest, run_id FROM folded ORDER BY fold").fetchall() == claims
    later = [Task("q:1", "k/q1", "d/CAT.jpg"), Task("q:2", "k/q2", "d/DOG.jpg")]
    decisions, rejects = m.plan_checked(later, run2, out, False, check)
    assert [d.task.image_id for d in decisions] == ["q:2"]
    assert [(r[2], r[4]) for r in rejects] == [("q:1", "d/CAT.jpg")] and "same file as d/Cat.jpg (of p:0)" in rejects[
        0
    ][5]
    assert check.found == 1
    m.close()
