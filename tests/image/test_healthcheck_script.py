"""deploy/docker/healthcheck.py (the image's HEALTHCHECK), run on the host against real manifests.

The script finds the container's ``sci-fetch download`` process in /proc and reads that process's
own manifest (shard included) from its command line, environment and working directory. Here a
stand-in process with the same command line plays the container's PID 1, and ``--pid`` points the
script at it, so other sci-fetch runs on the machine cannot interfere.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import animl_image, random_blobs, seed, write_coco

from sci_fetch.cli import main

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "healthcheck.py"


def load_script():
    spec = importlib.util.spec_from_file_location("sci_fetch_healthcheck", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifest_from_shard_flag(tmp_path: Path) -> None:
    script = load_script()
    got = script.manifest_of(["download", "coco.json", "--output", str(tmp_path / "out"), "--shard", "1/3"])
    assert got == (tmp_path / "out" / ".sci-fetch" / "manifest-shard-1-of-3.sqlite").resolve()


def test_manifest_from_scheduler_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = load_script()
    monkeypatch.setenv("SCI_FETCH_SHARD_COUNT", "4")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    got = script.manifest_of(["-v", "download"])  # the default output, relative to the working directory
    assert got == (tmp_path / "images" / ".sci-fetch" / "manifest-shard-2-of-4.sqlite").resolve()


def stand_in(cwd: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A process whose command line reads like the container's: ``... sci-fetch download ARGS``."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "sci-fetch", "download", *args], cwd=cwd, env=env
    )


def health(pid: int, max_age: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if max_age:
        env["HEALTHCHECK_MAX_AGE"] = max_age
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--pid", str(pid)], capture_output=True, text=True, env=env, timeout=60
    )


def test_health_of_a_finished_stalled_and_unstarted_run(s3_env, tmp_path: Path) -> None:
    blobs = random_blobs(3, seed=61, sizes=[1000])
    images = [animl_image("hc", b) for b in blobs]
    seed(s3_env, "test-bucket", images, blobs)
    write_coco(tmp_path / "coco.json", images)
    flags = ["--bucket", "test-bucket", "--endpoint-url", s3_env.endpoint_url, "--profile", "", "--progress", "off"]
    assert main(["download", "coco.json", *flags]) == 0

    env = {k: v for k, v in os.environ.items() if not k.startswith("SCI_FETCH_")}
    procs = []
    try:
        finished = stand_in(tmp_path, ["coco.json", *flags], env)
        procs.append(finished)
        out = health(finished.pid)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.startswith("healthy: manifest.sqlite: finished"), out.stdout

        # a run that is going but has not written its manifest for a while
        manifest = tmp_path / "images" / ".sci-fetch" / "manifest.sqlite"
        db = sqlite3.connect(manifest)
        with db:
            db.execute("UPDATE runs SET ended_at = NULL, exit_code = NULL")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('heartbeat', ?)", (repr(time.time() - 30),))
        db.close()
        out = health(finished.pid)
        assert out.returncode == 0 and "running" in out.stdout, out.stdout + out.stderr
        out = health(finished.pid, max_age="10")
        assert out.returncode == 1 and "stalled" in out.stdout, out.stdout + out.stderr

        # shard 1 of 2 (index from the Kubernetes variable): its own manifest, not the one above
        sharded = stand_in(
            tmp_path, ["coco.json", *flags], {**env, "SCI_FETCH_SHARD_COUNT": "2", "JOB_COMPLETION_INDEX": "1"}
        )
        procs.append(sharded)
        out = health(sharded.pid)
        assert out.returncode == 1, out.stdout + out.stderr
        assert "no manifest yet" in out.stdout and "manifest-shard-1-of-2.sqlite" in out.stdout, out.stdout
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_not_a_download(tmp_path: Path) -> None:
    assert health(os.getpid()).returncode == 1
