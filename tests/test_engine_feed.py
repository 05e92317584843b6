"""A crashed job resumes by fetching what its manifest says is left before its COCO file is planned."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from helpers import last_summary, settings_for, wait_until
from test_reliability_support import KB, seeded_dataset

from sci_fetch.coco.source import iter_images
from sci_fetch.commands.download import download

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

    monkeypatch.setattr("sci_fetch.engine.pipeline.iter_images", gated)
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
