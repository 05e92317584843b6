"""A crashed job resumes by fetching what its manifest says is left before its COCO file is planned."""

from __future__ import annotations

import sqlite3
from collections import Counter
from contextlib import closing
from urllib.parse import unquote

import pytest
from fault_proxy import FaultProxy
from helpers import last_summary, settings_for, wait_until
from test_reliability_support import KB, seeded_dataset

from sci_fetch.coco.source import iter_images
from sci_fetch.commands.download import download
from sci_fetch.plan import check

TAIL = 8


@pytest.fixture(scope="module")
def dataset(s3, tmp_path_factory):
    return seeded_dataset(s3, tmp_path_factory.mktemp("coco"), "feed", 40, 41, [2 * KB, 9 * KB])


def crash(settings, images) -> None:
    """What a run killed near its end leaves: the last TAIL images pending with no file, the run not ended."""
    for record in images[-TAIL:]:
        (settings.output / record["file_name"]).unlink()
    with closing(sqlite3.connect(settings.manifest_path)) as db, db:
        db.executemany(
            "UPDATE images SET state = 'pending', bytes = NULL, md5 = NULL, attempts = 0 WHERE image_id = ?",
            [(r["id"],) for r in images[-TAIL:]],
        )
        db.execute("UPDATE runs SET ended_at = NULL, exit_code = NULL WHERE run_id = (SELECT MAX(run_id) FROM runs)")
        db.execute("DELETE FROM meta WHERE name = 'finished_fingerprint'")  # a killed run never wrote it


def tail_done(settings, images) -> bool:
    with closing(sqlite3.connect(f"file:{settings.manifest_path}?mode=ro", uri=True)) as db:
        marks = ",".join("?" * TAIL)
        query = f"SELECT COUNT(*) FROM images WHERE state = 'done' AND image_id IN ({marks})"
        return db.execute(query, [r["id"] for r in images[-TAIL:]]).fetchone()[0] > 0


def test_a_crashed_job_fetches_its_pending_images_before_planning_and_each_once(
    s3_env, dataset, tmp_path, monkeypatch, capsys
):
    coco, images, blobs = dataset
    settings = settings_for(s3_env, coco, tmp_path / "out", concurrency=2)
    assert download(settings) == 0
    crash(settings, images)

    def gated(path, *args, **kwargs):
        # Not one record of the COCO file is read until a pending image is done: only the feed can get there.
        wait_until(lambda: tail_done(settings, images), "a pending image fetched before the COCO file is read")
        yield from iter_images(path, *args, **kwargs)

    monkeypatch.setattr("sci_fetch.engine.reader.iter_images", gated)
    capsys.readouterr()
    assert download(settings) == 0
    printed = capsys.readouterr().out
    assert "done 40, failed 0, missing 0, forbidden 0, pending 0, invalid 0, duplicates 0" in printed
    summary = last_summary(settings)
    assert (summary["fetched"], summary["already_done"], summary["requests"]) == (TAIL, 40 - TAIL, TAIL)
    for record, data in zip(images, blobs, strict=True):
        assert (settings.output / record["file_name"]).read_bytes() == data


def test_no_feed_when_the_coco_file_changed_since_the_crashed_run(s3_env, dataset, tmp_path):
    coco, images, blobs = dataset
    local = tmp_path / "coco.json"
    local.write_bytes(coco.read_bytes())
    settings = settings_for(s3_env, local, tmp_path / "out", concurrency=2)
    assert download(settings) == 0
    crash(settings, images)
    local.write_bytes(coco.read_bytes() + b"\n")  # another file for all the run knows: the COCO pass plans it all
    with closing(sqlite3.connect(settings.manifest_path)) as db:
        before = db.execute("SELECT value FROM meta WHERE name = 'run_fingerprint'").fetchone()[0]
    assert download(settings) == 0
    summary = last_summary(settings)
    assert (summary["fetched"], summary["already_done"], summary["requests"]) == (TAIL, 40 - TAIL, TAIL)
    with closing(sqlite3.connect(settings.manifest_path)) as db:
        after = db.execute("SELECT value FROM meta WHERE name = 'run_fingerprint'").fetchone()[0]
        claimed = db.execute("SELECT COUNT(*) FROM images WHERE run_id < 0").fetchone()[0]
    assert before != after and claimed == 0


def crash_spread(settings, images, every: int = 3) -> list[str]:
    """A crashed job whose images left are spread through the COCO file (every ``every``-th), a third of them
    claimed by the dead run's own feed (run id negated: handed out, never fetched); returns their ids."""
    left = [r["id"] for r in images[::every]]
    for record in images[::every]:
        (settings.output / record["file_name"]).unlink()
    with closing(sqlite3.connect(settings.manifest_path)) as db, db:
        run = db.execute("SELECT MAX(run_id) FROM runs").fetchone()[0]
        db.executemany(
            "UPDATE images SET state = 'pending', bytes = NULL, md5 = NULL, attempts = 0 WHERE image_id = ?",
            [(i,) for i in left],
        )
        db.executemany("UPDATE images SET run_id = ? WHERE image_id = ?", [(-run, i) for i in left[::3]])
        db.execute("UPDATE runs SET ended_at = NULL, exit_code = NULL WHERE run_id = ?", (run,))
        db.execute("DELETE FROM meta WHERE name = 'finished_fingerprint'")
    return left


def no_coco_pass_in_the_space_check(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the space check of a crashed job parsed the COCO file")

    monkeypatch.setattr("sci_fetch.plan.population.iter_images", refuse)


def test_a_crashed_job_on_a_nearly_full_disk_is_refused_from_its_manifest_alone(
    s3_env, dataset, tmp_path, monkeypatch, capsys
):
    coco, images, blobs = dataset
    settings = settings_for(s3_env, coco, tmp_path / "out", concurrency=2)
    assert download(settings) == 0
    crash(settings, images)
    no_coco_pass_in_the_space_check(monkeypatch)
    real_free_space = check.free_space
    monkeypatch.setattr(check, "free_space", lambda path: (tmp_path, 4 * KB))
    capsys.readouterr()
    checked = settings_for(s3_env, coco, tmp_path / "out", concurrency=2, space_check=True)
    assert download(checked) == 4
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert f"the {TAIL} images left need about" in text and "free some space or choose another --output" in text
    assert "--no-space-check" in text and f"from HEADs of {TAIL} random keys left" in text
    assert not any((settings.output / r["file_name"]).exists() for r in images[-TAIL:])
    monkeypatch.setattr(check, "free_space", real_free_space)
    roomy = settings_for(s3_env, coco, tmp_path / "out", concurrency=2, space_check=True)
    assert download(roomy) == 0
    summary = last_summary(roomy)
    assert (summary["fetched"], summary["requests"]) == (TAIL, TAIL + TAIL)  # a HEAD per key left, a GET per key
    for record, data in zip(images, blobs, strict=True):
        assert (settings.output / record["file_name"]).read_bytes() == data


def test_a_crashed_job_resumed_with_two_processes_fetches_each_image_left_once(s3_env, dataset, tmp_path):
    coco, images, blobs = dataset
    settings = settings_for(s3_env, coco, tmp_path / "out", concurrency=2)
    assert download(settings) == 0
    left = crash_spread(settings, images)
    with closing(sqlite3.connect(settings.manifest_path)) as db:
        keys = dict(db.execute("SELECT image_id, key FROM images").fetchall())
    with FaultProxy(s3_env.endpoint_url) as proxy:
        resumed = settings_for(
            s3_env, coco, tmp_path / "out", endpoint_url=proxy.url, processes="2", concurrency=4, space_check=True
        )
        assert download(resumed) == 0
        gets = Counter(unquote(target.split("?")[0]) for _, method, target, _ in proxy.history if method == "GET")
    assert gets == Counter({f"/test-bucket/{keys[i]}": 1 for i in left})
    summary = last_summary(resumed)
    assert (summary["fetched"], summary["already_done"], summary["processes"]) == (len(left), 40 - len(left), 2)
    for record, data in zip(images, blobs, strict=True):
        assert (settings.output / record["file_name"]).read_bytes() == data
    with closing(sqlite3.connect(settings.manifest_path)) as db:
        assert db.execute("SELECT COUNT(*) FROM images WHERE state != 'done' OR run_id < 0").fetchone()[0] == 0
