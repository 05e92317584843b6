"""One download per output folder: the job lock (engine.lock), in-process and against SeaweedFS.

The SeaweedFS cases hold the first download back with the fault proxy's latency (it cannot end while every
request waits seconds), and wait on progress (the lock file naming its PID, manifest rows), never on the clock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from fault_proxy import FaultProxy
from helpers import wait_until
from test_engine_pipeline import dataset as fake_dataset
from test_engine_pipeline import fake_settings
from test_reliability_support import BUCKET, KB, rows, seeded_dataset, start, tree

from sci_fetch.cli import main
from sci_fetch.commands.download import download
from sci_fetch.engine.job import download_with, lock_path
from sci_fetch.engine.lock import JobLock
from sci_fetch.errors import BusyError
from sci_fetch.exits import ExitCode
from sci_fetch.manifest.models import State

N = 24


def held_by(path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def test_a_second_download_is_refused_naming_the_holder(tmp_path):
    coco, images, _blobs, bucket = fake_dataset(tmp_path, n=3)
    settings = fake_settings(coco, tmp_path / "out")
    with JobLock(lock_path(settings), settings.output):
        with pytest.raises(BusyError, match=f"PID {os.getpid()}") as info:
            download_with(settings, bucket)
        assert str(settings.output) in str(info.value)
        assert not settings.manifest_path.exists()  # refused before anything was planned
    assert download(settings, bucket) == ExitCode.OK  # released: the next run proceeds


def test_the_cli_refuses_with_one_line_and_exit_75(tmp_path, capsys):
    coco, _images, _blobs, _bucket = fake_dataset(tmp_path, n=2)
    settings = fake_settings(coco, tmp_path / "out")
    with JobLock(lock_path(settings), settings.output):
        code = main(
            ["download", str(coco), "--output", str(settings.output), "--bucket", "fake-bucket", "--profile", ""]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == ExitCode.BUSY == 75
    assert len(err) == 1 and f"(PID {os.getpid()}) is running on {settings.output}" in err[0]


def test_shards_of_one_folder_have_locks_of_their_own(tmp_path):
    coco, _images, _blobs, bucket = fake_dataset(tmp_path, n=4)
    first = fake_settings(coco, tmp_path / "out", shard_count=2, shard_index=0)
    second = fake_settings(coco, tmp_path / "out", shard_count=2, shard_index=1)
    with JobLock(lock_path(first), first.output):
        assert download(second, bucket) == ExitCode.OK


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    path = tmp_path / ".sci-fetch" / "download.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from sci_fetch.engine.lock import JobLock\n"
            f"with JobLock(Path({str(path)!r}), Path('.')):\n    print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(BusyError, match=f"PID {holder.pid}"), JobLock(path, tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()
    with JobLock(path, tmp_path):  # SIGKILL: the kernel released it
        assert held_by(path) == os.getpid()


@pytest.fixture(scope="module")
def lock_data(s3, tmp_path_factory):
    return seeded_dataset(s3, tmp_path_factory.mktemp("coco"), "lock", N, 31, [2 * KB, 20 * KB])


def cli_args(coco, out, endpoint: str) -> list[str]:
    return [
        "download",
        str(coco),
        "--output",
        str(out),
        "--bucket",
        BUCKET,
        "--endpoint-url",
        endpoint,
        "--profile",
        "",
        "--progress",
        "off",
        "--no-space-check",
    ]


def test_two_downloads_on_one_folder_the_second_refused_the_first_completes(s3_env, lock_data, tmp_path, capsys):
    coco, images, blobs = lock_data
    out = tmp_path / "out"
    lock = out / ".sci-fetch" / "download.lock"
    with FaultProxy(s3_env.endpoint_url, latency=2.0) as proxy:  # the first cannot end while requests wait 2 s
        first = start(s3_env, coco, out, "--concurrency", "2", endpoint=proxy.url)
        try:
            wait_until(lambda: held_by(lock) == first.pid, "the first download holds the lock", proc=first)
            code = main(cli_args(coco, out, s3_env.endpoint_url))
            err = capsys.readouterr().err.strip().splitlines()
            assert code == ExitCode.BUSY
            assert len(err) == 1 and f"PID {first.pid}" in err[0] and str(out) in err[0]
            assert first.poll() is None  # the refusal left the first alone
            assert main(["status", str(out)]) in (ExitCode.OK, ExitCode.INCOMPLETE)  # status still reads
            assert main(["verify", str(out), "--json"]) == ExitCode.OK  # so does verify --json
            report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            assert isinstance(report, dict)
            proxy.set_latency(0.0)
            output, _ = first.communicate(timeout=300)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
    assert first.returncode == 0, output
    assert {r.state for r in rows(out / ".sci-fetch" / "manifest.sqlite").values()} == {State.done}
    assert tree(out) == {r["file_name"]: b for r, b in zip(images, blobs, strict=True)}


def test_after_sigkill_of_the_holder_the_next_download_proceeds(s3_env, lock_data, tmp_path):
    coco, images, blobs = lock_data
    out = tmp_path / "out"
    lock = out / ".sci-fetch" / "download.lock"
    with FaultProxy(s3_env.endpoint_url, latency=2.0) as proxy:
        first = start(s3_env, coco, out, "--concurrency", "2", endpoint=proxy.url)
        try:
            wait_until(lambda: held_by(lock) == first.pid, "the first download holds the lock", proc=first)
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.communicate(timeout=60)
    assert held_by(lock) == first.pid  # the file still names the dead holder; the kernel dropped its lock
    assert main(cli_args(coco, out, s3_env.endpoint_url)) == ExitCode.OK
    assert tree(out) == {r["file_name"]: b for r, b in zip(images, blobs, strict=True)}
