"""Crash and resume: a real ``sci-fetch download`` process, SIGKILLed or signalled mid-run."""

from __future__ import annotations

import hashlib
import json
import random
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from contextlib import closing

import pytest
from helpers import animl_image, download_command, final_files, random_blobs, seed, wait_until, write_coco

from sci_fetch.manifest.models import State
from sci_fetch.manifest.store import Manifest

KB = 1024


@pytest.fixture(scope="module")
def dataset(s3, tmp_path_factory):
    project = "kill" + uuid.uuid4().hex[:6]
    blobs = random_blobs(240, seed=11, sizes=[20 * KB, 150 * KB, 600 * KB])
    images = [animl_image(project, b, camera=f"CAM{i % 3}") for i, b in enumerate(blobs)]
    seed(s3, "test-bucket", images, blobs)
    return write_coco(tmp_path_factory.mktemp("coco") / "coco.json", images), images, blobs


def start(s3, coco, out, *extra: str) -> subprocess.Popen:
    cmd, env = download_command(s3, coco, out, "--flush-interval", "0.3", *extra)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_running(out, proc, minimum: int = 1, timeout: float = 60) -> None:
    """Until the run has installed its signal handlers and finished ``minimum`` images (status.json says so)."""
    status = out / ".sci-fetch" / "status.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            data = json.loads(status.read_text())
        except (OSError, ValueError):
            data = None
        if data and data["state"] == "running" and data["images"]["done"] >= minimum:
            return
        time.sleep(0.05)
    raise AssertionError("the download did not start")


def done_rows(out) -> int:
    path = out / ".sci-fetch" / "manifest.sqlite"
    if not path.exists():
        return 0
    try:  # read while the run writes it; a manifest still being created counts as none
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            return db.execute("SELECT count(*) FROM images WHERE state = 'done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def check_consistent(out, images, blobs) -> dict[str, int]:
    """No file under a final name is incomplete, and no done row lacks its file; returns done attempts."""
    expected = {r["file_name"]: d for r, d in zip(images, blobs, strict=False)}
    for path in out.rglob("*.jpg"):
        rel = path.relative_to(out).as_posix()
        assert hashlib.md5(path.read_bytes()).digest() == hashlib.md5(expected[rel]).digest(), f"{rel} is incomplete"
    m = Manifest(out / ".sci-fetch" / "manifest.sqlite", readonly=True)
    try:
        done = {r.image_id: r.attempts for r in m.rows([State.done])}
        for row in m.rows([State.done]):
            assert (out / row.dest).stat().st_size == row.bytes, f"manifest says done but {row.dest} is not on disk"
    finally:
        m.close()
    return done


def test_sigkill_at_random_moments_then_resume(s3_env, dataset, tmp_path):
    coco, images, blobs = dataset
    out = tmp_path / "out"
    rng = random.Random(5)
    done_before: dict[str, int] = {}
    # Kill points are progress (images on disk), never the clock, so every kill lands mid-run on any machine.
    thresholds = sorted(rng.sample(range(5, len(images) - 10), 4))
    for round_, target in enumerate(thresholds):
        # Throttled so the run lasts a few seconds and the kill lands mid-run.
        proc = start(
            s3_env, coco, out, "--concurrency", "8", "--max-requests-per-second", "40", "--status-interval", "0.1"
        )
        wait_until(lambda target=target: final_files(out) >= target, f"{target} images on disk", proc=proc)
        if round_ == 0:  # and the manifest has caught up with some of them
            wait_until(lambda: done_rows(out), "a done row in the manifest", proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        done_now = check_consistent(out, images, blobs)
        if round_ == 0:
            assert 0 < len(done_now) < len(images), "the first kill should land mid-run"
        # An image done in an earlier round was not fetched again (its attempt count did not move).
        assert {k: done_now[k] for k in done_before} == done_before, f"round {round_}: done images were fetched again"
        done_before = done_now
    proc = start(s3_env, coco, out, "--concurrency", "16")
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    done = check_consistent(out, images, blobs)
    assert len(done) == len(images)
    assert {k: done[k] for k in done_before} == done_before
    assert not list(out.rglob("*.partial"))
    for record, data in zip(images, blobs, strict=False):
        assert (out / record["file_name"]).read_bytes() == data


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_within_grace_with_consistent_manifest(s3_env, dataset, tmp_path, sig, code):
    coco, images, blobs = dataset
    out = tmp_path / "out"
    proc = start(
        s3_env,
        coco,
        out,
        "--concurrency",
        "8",
        "--max-requests-per-second",
        "20",
        "--grace-seconds",
        "2",
        "--status-interval",
        "0.1",
    )
    wait_running(out, proc, minimum=10)
    sent = time.monotonic()
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=60)
    # The grace time is 2 s and the throttled run has minutes left: a bound far below that, with room for a
    # loaded machine, shows the stop did not wait for the run to finish.
    assert time.monotonic() - sent < 2 + 15, "did not stop within the grace time"
    assert proc.returncode == code, output
    assert f"stopped by {sig.name}" in output and "sci-fetch summary" in output
    done = check_consistent(out, images, blobs)
    assert 0 < len(done) < len(images)
    # every image of the COCO file is accounted for, the ones not attempted as pending
    counts = re.search(
        r"images in this COCO file: done (\d+), failed (\d+), missing (\d+), forbidden (\d+), "
        r"pending (\d+), invalid (\d+), duplicates (\d+)",
        output,
    )
    assert counts, output
    assert sum(int(n) for n in counts.groups()) == len(images) and int(counts.group(1)) == len(done)
    assert not list(out.rglob("*.partial"))
