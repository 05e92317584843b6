"""--processes N: one run on N event loops in N processes, against a real SeaweedFS.

Each test waits on progress (files on disk, manifest rows, status.json), never on the clock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from helpers import final_files, settings_for, wait_until
from test_reliability_support import (
    KB,
    check_manifest_equals_disk,
    check_manifest_never_leads,
    leftovers,
    rows,
    seeded_dataset,
    start,
    tree,
)

from sci_fetch.commands.download import download
from sci_fetch.keys.shard import process_of
from sci_fetch.manifest.models import State

N = 240


@pytest.fixture(scope="module")
def dataset(s3, tmp_path_factory):
    return seeded_dataset(s3, tmp_path_factory.mktemp("coco"), "proc", N, 21, [3 * KB, 30 * KB, 120 * KB])


def expected_tree(images, blobs) -> dict[str, bytes]:
    return {r["file_name"]: b for r, b in zip(images, blobs, strict=False)}


def children_of(pid: int) -> list[int]:
    """The engine processes a parent started (multiprocessing's resource tracker is a child too: not counted)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            pids = [int(p) for p in fh.read().split()]
    except OSError:
        return []
    workers = []
    for child in pids:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as fh:
                if b"spawn_main" in fh.read():
                    workers.append(child)
        except OSError:
            pass
    return workers


def test_process_of_splits_evenly_and_apart_from_the_shard_hash():
    ids = [f"p:{i:032x}" for i in range(4000)]
    shares = [sum(1 for i in ids if process_of(i, 2) == k) for k in (0, 1)]
    assert abs(shares[0] - shares[1]) < 300
    from sci_fetch.keys.shard import shard_of

    in_shard = [i for i in ids if shard_of(i, 2) == 0]  # one shard's images still split over both processes
    assert {process_of(i, 2) for i in in_shard} == {0, 1}


def test_two_processes_give_the_same_files_and_one_manifest(s3_env, dataset, tmp_path, capsys):
    coco, images, blobs = dataset
    settings = settings_for(s3_env, coco, tmp_path / "out", processes="2", concurrency=8)
    assert download(settings) == 0
    printed = capsys.readouterr().out
    assert "done 240, failed 0" in printed and "fetched 240" in printed
    assert tree(tmp_path / "out") == expected_tree(images, blobs) and leftovers(tmp_path / "out") == []
    check_manifest_equals_disk(tmp_path / "out", settings.manifest_path)
    status = json.loads(settings.state_file("status", "json").read_text())
    assert status["processes"] == 2 and status["images"]["done"] == N and status["exit_code"] == 0
    # resumed with one process: nothing is fetched again, whatever the count before
    one = settings_for(s3_env, coco, tmp_path / "out", processes="1")
    assert download(one) == 0
    assert "already done 240" in capsys.readouterr().out


def test_a_killed_child_is_reported_its_images_stay_pending_and_a_resume_with_another_count_completes(
    s3_env, dataset, tmp_path
):
    coco, images, blobs = dataset
    out = tmp_path / "out"
    manifest = out / ".sci-fetch" / "manifest.sqlite"
    proc = start(s3_env, coco, out, "--processes", "2", "--concurrency", "4", "--max-requests-per-second", "20")
    kids = wait_until(lambda: len(children_of(proc.pid)) == 2 and children_of(proc.pid), "two children", proc=proc)
    wait_until(lambda: final_files(out) >= 20, "20 images on disk", proc=proc)
    os.kill(kids[0], signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, output
    assert "process 1 of 2 died (signal 9)" in output and "stay pending" in output
    done = check_manifest_never_leads(out, manifest, expected_tree(images, blobs))
    by_state = {s: sum(r.state is s for r in rows(manifest).values()) for s in State}
    assert by_state[State.failed] == 0 and len(done) < N  # the dead child's share is not blamed, not done
    # the other child finished its whole share
    assert all(r.state is State.done for i, r in rows(manifest).items() if process_of(i, 2) == 1)

    proc = start(s3_env, coco, out, "--processes", "3", "--concurrency", "8")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert tree(out) == expected_tree(images, blobs) and leftovers(out) == []
    check_manifest_equals_disk(out, manifest)


def test_sigkill_of_the_parent_then_resume(s3_env, dataset, tmp_path):
    coco, images, blobs = dataset
    out = tmp_path / "out"
    proc = start(s3_env, coco, out, "--processes", "2", "--concurrency", "4", "--max-requests-per-second", "20")
    kids = wait_until(lambda: len(children_of(proc.pid)) == 2 and children_of(proc.pid), "two children", proc=proc)
    wait_until(lambda: final_files(out) >= 20, "20 images on disk", proc=proc)
    proc.kill()
    proc.wait(timeout=60)
    for kid in kids:  # orphans: each notices its pipe is gone at its next report, or is ended here
        try:
            os.kill(kid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    check_manifest_never_leads(out, out / ".sci-fetch" / "manifest.sqlite", expected_tree(images, blobs))
    proc = start(s3_env, coco, out, "--processes", "2", "--concurrency", "8")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert tree(out) == expected_tree(images, blobs) and leftovers(out) == []


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_every_process_and_status_reads_one_job(s3_env, dataset, tmp_path, sig, code):
    coco, images, blobs = dataset
    out = tmp_path / "out"
    proc = start(
        s3_env,
        coco,
        out,
        "--processes",
        "2",
        "--concurrency",
        "4",
        # The cap is run-wide (split between the processes): 240 images take 48 s or more, so the run is still
        # going when the signal comes, however slow the `status` call below is on a loaded machine.
        "--max-requests-per-second",
        "5",
        "--grace-seconds",
        "2",
        "--status-interval",
        "0.2",
    )
    wait_until(lambda: final_files(out) >= 20, "20 images on disk", proc=proc)
    status = subprocess.run(
        [sys.executable, "-m", "sci_fetch", "status", "--output", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(status.stdout)
    assert sum(report["counts"].values()) == N  # one job: every image of the COCO file, from one manifest
    kids = children_of(proc.pid)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, output
    assert all(not os.path.exists(f"/proc/{k}") or open(f"/proc/{k}/stat").read().split()[2] == "Z" for k in kids)
    done = check_manifest_never_leads(out, out / ".sci-fetch" / "manifest.sqlite", expected_tree(images, blobs))
    assert 0 < len(done) < N and leftovers(out) == []
    assert not any(r.state is State.failed for r in rows(out / ".sci-fetch" / "manifest.sqlite").values())
