"""Crashes and stops: SIGKILL at five random moments compared to a clean run, signals while downloads
hang mid-body, and cancellation at the first await of a file write."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import time
import uuid
from contextlib import closing

import pytest
from fault_proxy import FaultProxy
from helpers import animl_image, final_files, random_blobs, settings_for, wait_until, write_coco
from test_reliability_support import (
    KB,
    check_manifest_equals_disk,
    check_manifest_never_leads,
    leftovers,
    rows,
    seed_parallel,
    start,
    tree,
)

from sci_fetch.commands.download import download
from sci_fetch.files.partial import PartialFile
from sci_fetch.files.verify import check_rows
from sci_fetch.manifest.models import State

N = 300


@pytest.fixture(scope="module")
def dataset(s3, tmp_path_factory):
    project = "crash" + uuid.uuid4().hex[:6]
    blobs = random_blobs(N, seed=41, sizes=[4 * KB, 24 * KB, 64 * KB, 160 * KB])
    images = [animl_image(project, b, camera=f"CAM{i % 5}") for i, b in enumerate(blobs)]
    seed_parallel(s3, images, blobs)
    return write_coco(tmp_path_factory.mktemp("coco") / "coco.json", images), images, blobs


def has_run_row(path) -> bool:
    """The manifest exists with its tables and this run's row (start-up is over, planning begins)."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            return db.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def comparable(manifest_path) -> dict:
    """The manifest rows without what legitimately differs between runs: times, attempt counts, and the
    ETag, which a file adopted after a crash does not get (it is checked against its id's md5, no request)."""
    by_id = rows(manifest_path)
    assert all(r.etag in (None, r.md5) for r in by_id.values())
    return {i: (r.key, r.dest, r.state, r.bytes, r.md5, r.last_error) for i, r in by_id.items()}


def test_five_sigkills_then_resume_ends_byte_identical_to_a_clean_run(s3_env, dataset, tmp_path):
    coco, images, blobs = dataset
    expected = {r["file_name"]: b for r, b in zip(images, blobs, strict=False)}
    clean = settings_for(s3_env, coco, tmp_path / "clean")
    assert download(clean) == 0

    out = tmp_path / "out"
    manifest = out / ".sci-fetch" / "manifest.sqlite"
    rng = random.Random(2024)
    done_before: dict[str, int] = {}
    moments = []
    # Kill points are progress, not wall-clock time: the first round dies while starting up (its manifest
    # exists, nothing downloaded), the others once this many images are on disk, whatever the machine's speed.
    thresholds = sorted(rng.sample(range(10, N - 20), 4))
    for round_ in range(5):
        # Throttled so a run lasts a few seconds on any machine: the kill lands mid-run.
        proc = start(s3_env, coco, out, "--concurrency", "8", "--max-requests-per-second", "30")
        if round_ == 0:
            wait_until(lambda: has_run_row(manifest), "the run is registered in the manifest", proc=proc)
            target = 0
        else:
            target = thresholds[round_ - 1]
            wait_until(lambda target=target: final_files(out) >= target, f"{target} images on disk", proc=proc)
        proc.kill()
        proc.wait(timeout=60)
        done = {k: r.attempts for k, r in check_manifest_never_leads(out, manifest, expected).items()}
        moments.append((target, len(done)))
        # What an earlier round finished is never fetched again (its attempt count does not move).
        assert {k: done[k] for k in done_before} == done_before, f"round {round_}: done images were fetched again"
        done_before = done
    assert 0 < len(done_before) < N, f"the kills should land mid-run: {moments}"

    proc = start(s3_env, coco, out, "--concurrency", "16")
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    print(f"\nkills at (images on disk, images done): {moments}")

    assert tree(out) == tree(tmp_path / "clean") == expected  # byte for byte, and no other file
    assert leftovers(out) == []  # no .partial, no .tmp (failures.csv, status.json) anywhere
    check_manifest_equals_disk(out, manifest)
    assert comparable(manifest) == comparable(clean.manifest_path)
    assert {k: rows(manifest)[k].attempts for k in done_before} == done_before
    assert check_rows(out, rows(manifest).values()) == (N, [])


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_while_downloads_hang_mid_body_ends_within_grace(s3_env, dataset, tmp_path, sig, code):
    """The grace time is a bound, not a hope: eight downloads stuck mid-body are cancelled when it ends."""
    coco, images, blobs = dataset
    expected = {r["file_name"]: b for r, b in zip(images, blobs, strict=False)}
    out = tmp_path / "out"
    with FaultProxy(s3_env.endpoint_url, stall_seconds=60) as proxy:
        proc = start(
            s3_env,
            coco,
            out,
            "--concurrency",
            "8",
            "--grace-seconds",
            "1.5",
            "--read-timeout",
            "30",
            "--chunk-size",
            "4096",
            endpoint=proxy.url,
        )
        wait_until(lambda: proxy.forwarded >= 40, "40 requests forwarded", proc=proc)
        proxy.set_rates(stall=1.0)  # from now on every body stops half-way
        # eight downloads hang half-way through their bodies
        wait_until(lambda: proxy.injected["stall"] >= 8, "eight stalled bodies", proc=proc)
        # those past one chunk have a .partial on disk; smaller ones are still held in memory
        assert len(list(out.rglob("*.partial"))) <= 8
        sent = time.monotonic()
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    # At least the grace time, and far less than the stall (60 s) or the read timeout (30 s) the hung bodies
    # would otherwise take: the bound is what cancels them. The upper bound leaves room for a loaded machine.
    assert 1.5 <= took < 20, f"stopped {took:.1f}s after the signal; grace was 1.5s, the bodies hang for 60s"
    assert proc.returncode == code, output
    assert f"stopped by {sig.name}" in output and "sci-fetch summary" in output
    assert leftovers(out) == []
    done = check_manifest_never_leads(out, out / ".sci-fetch" / "manifest.sqlite", expected)
    states = [r.state for r in rows(out / ".sci-fetch" / "manifest.sqlite").values()]
    assert states.count(State.failed) == 0  # the hung images are not blamed: they stay pending
    assert len(done) == states.count(State.done) and 40 <= len(done) < N


async def test_cancelled_at_the_first_await_of_a_write_leaves_no_partial(tmp_path):
    """What a shutdown does to an in-flight download, at the earliest point it can."""
    dest = tmp_path / "a.jpg"

    async def write() -> None:
        async with PartialFile(dest) as out:
            await out.write(b"x" * 10)
            await asyncio.sleep(10)

    for _ in range(20):
        task = asyncio.create_task(write())
        await asyncio.sleep(0)  # the task runs to its first await
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.sleep(0.3)  # a worker thread still opening a file would have created it by now
    assert list(tmp_path.iterdir()) == []
