"""What a finished run tells people: failures.csv lists every image not done and every unusable record; the summary."""

from __future__ import annotations

import csv
import dataclasses
import errno
import os
from collections import Counter
from pathlib import Path

import sci_fetch.observe.stats as stats_module
from sci_fetch.keys.mapping import Task
from sci_fetch.manifest.models import Outcome, State
from sci_fetch.manifest.report import FailureRow, summary_text, write_failures
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe.stats import Stats


def task(n: int) -> Task:
    return Task(image_id=f"p:{n}", key=f"original/p:{n}.jpg", dest=f"p/{n}.jpg")


def manifest_of_one_run(tmp_path: Path) -> tuple[Manifest, int]:
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    m.plan([task(n) for n in range(1, 6)], run, tmp_path)
    m.record(
        [
            Outcome(image_id="p:1", state=State.done, bytes=5, attempts=1),
            Outcome(image_id="p:2", state=State.failed, attempts=5, error="503 SlowDown"),
            Outcome(image_id="p:3", state=State.missing, attempts=1),
            Outcome(image_id="p:4", state=State.forbidden, attempts=1, error="403 AccessDenied"),
        ]
    )
    m.add_rejects(run, [("invalid", "images[7]", None, None, None, "no file_name")])
    return m, run


def test_failures_csv_lists_each_image_not_done_and_each_rejected_record(tmp_path):
    m, run = manifest_of_one_run(tmp_path)
    path = tmp_path / "out" / "failures.csv"
    try:
        assert write_failures(m, run, path) == 5
    finally:
        m.close()
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == [f.name for f in dataclasses.fields(FailureRow)]
    assert sorted(rows[1:]) == sorted(
        [
            ["original/p:2.jpg", "p/2.jpg", "503 SlowDown", "5", "p:2", "failed", ""],
            ["original/p:3.jpg", "p/3.jpg", "missing", "1", "p:3", "missing", ""],
            ["original/p:4.jpg", "p/4.jpg", "403 AccessDenied", "1", "p:4", "forbidden", ""],
            ["original/p:5.jpg", "p/5.jpg", "not attempted (the run was stopped)", "0", "p:5", "pending", ""],
            ["", "", "no file_name", "0", "", "invalid", "images[7]"],
        ]
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["failures.csv"]


def test_a_failures_file_that_cannot_be_written_is_one_error_and_no_leftover(tmp_path, monkeypatch, caplog):
    m, run = manifest_of_one_run(tmp_path)
    out = tmp_path / "out"

    def disk_full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)  # the atomic writer (fs.atomic) renames the file into place
    try:
        assert write_failures(m, run, out / "failures.csv") == 0
    finally:
        m.close()
    assert [r.getMessage() for r in caplog.records] == [
        f"{out / 'failures.csv'} not written: No space left on device; "
        "'sci-fetch status' shows the same from the manifest"
    ]
    assert list(out.iterdir()) == []  # the half-written .tmp is gone


def test_the_summary_reads_the_manifest_counts_and_this_runs_figures(monkeypatch):
    monkeypatch.setattr(stats_module.time, "monotonic", lambda: 20.0)
    stats = Stats(started=0.0, done=8, adopted=1, skipped_done=3, invalid=2, duplicates=1, bytes=40_000_000)
    stats.requests, stats.to_fetch = 11, 9
    stats.retries = Counter({"timeout": 1, "slowdown": 2})
    counts = {"done": 12, "failed": 1, "missing": 0, "forbidden": 0, "pending": 2}
    text = summary_text(stats, counts, Path("out/failures.csv"), 3, Path("out/m.sqlite"), dry_run=True)
    assert text.splitlines() == [
        "sci-fetch summary",
        "  images in this COCO file: done 12, failed 1, missing 0, forbidden 0, pending 2, invalid 2, duplicates 1",
        "  this run: fetched 8, adopted 1, already done 3",
        "  40.0 MB in 20s: 0.5 images/s, 2.0 MB/s, 11 S3 requests, retries: slowdown 2, timeout 1",
        "  manifest: out/m.sqlite",
        "  failures: 3 listed in out/failures.csv",
        "  dry run: 9 images would be fetched or verified; no request was sent",
    ]
    quiet = summary_text(Stats(), {}, Path("f.csv"), 0, Path("m.sqlite"))
    assert "retries: none" in quiet and "failures:" not in quiet and "dry run" not in quiet
