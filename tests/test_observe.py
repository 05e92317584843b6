"""Running unattended: shards as processes, the status file, Prometheus metrics, JSON logs, health."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import jsonschema
import pytest
from helpers import animl_image, download_command, random_blobs, seed, write_coco

from sci_fetch.cli import main
from sci_fetch.manifest.models import State
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe.logs import JsonFormatter

REPO = Path(__file__).resolve().parents[1]

KB = 1024


@pytest.fixture(scope="module")
def dataset(s3, tmp_path_factory):
    project = "obs" + uuid.uuid4().hex[:6]
    blobs = random_blobs(200, seed=21, sizes=[5 * KB, 60 * KB])
    images = [animl_image(project, b, camera=f"CAM{i % 5}") for i, b in enumerate(blobs)]
    seed(s3, "test-bucket", images, blobs)
    return write_coco(tmp_path_factory.mktemp("coco") / "coco.json", images), images, blobs


def command(s3, coco, out, *extra: str) -> tuple[list[str], dict]:
    return download_command(s3, coco, out, *extra)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_four_shards_as_four_processes_fetch_every_image_exactly_once(s3_env, dataset, tmp_path, capsys):
    coco, images, blobs = dataset
    out = tmp_path / "out"
    procs = []
    for k in range(4):
        cmd, env = command(s3_env, coco, out, "--shard", f"{k}/4", "--concurrency", "8")
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        output, _ = p.communicate(timeout=120)
        assert p.returncode == 0, output
    seen: dict[str, int] = {}
    for k in range(4):
        m = Manifest(out / ".sci-fetch" / f"manifest-shard-{k}-of-4.sqlite", readonly=True)
        rows = list(m.rows())
        m.close()
        assert rows and all(r.state is State.done and r.attempts == 1 for r in rows)
        assert 20 < len(rows) < 80  # a fair share each
        for r in rows:
            seen[r.image_id] = seen.get(r.image_id, 0) + 1
    assert seen == {r["id"]: 1 for r in images}
    for record, data in zip(images, blobs, strict=False):
        assert (out / record["file_name"]).read_bytes() == data
    # status merges the four manifests into one job
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    merged = json.loads(capsys.readouterr().out)
    jsonschema.validate(merged, json.loads((REPO / "docs/schema/status-command.json").read_text()))
    assert merged["counts"]["done"] == 200 and len(merged["manifests"]) == 4
    assert main(["status", str(out), "--health"]) == 0
    assert capsys.readouterr().out.startswith("healthy:")


def test_status_file_and_metrics_during_a_run(s3_env, dataset, tmp_path):
    coco, images, _ = dataset
    out = tmp_path / "out"
    port = free_port()
    cmd, env = command(
        s3_env,
        coco,
        out,
        "--concurrency",
        "4",
        "--max-requests-per-second",
        "25",
        "--status-interval",
        "0.5",
        "--metrics-port",
        str(port),
        "--metrics-host",
        "127.0.0.1",
        "--flush-interval",
        "0.3",
    )
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        status_path = out / ".sci-fetch" / "status.json"
        deadline = time.monotonic() + 120
        mid = None
        while time.monotonic() < deadline:
            if status_path.exists():
                data = json.loads(status_path.read_text())
                # the total appears once the COCO file is counted (a couple of seconds into a run that lasts)
                if data["state"] == "running" and 10 <= data["images"]["done"] < 200 and data["images"]["total"]:
                    mid = data
                    break
            time.sleep(0.2)
        assert mid is not None, "no status file with progress appeared during the run"
        assert mid["images"]["total"] == 200 and mid["eta_seconds"] is not None
        assert mid["rates"]["average_images_per_second"] > 0 and mid["requests"] >= mid["images"]["fetched"]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        fetched = [
            line
            for line in body.splitlines()
            if line.startswith("sci_fetch_images_total{") and 'outcome="fetched"' in line
        ]
        assert fetched and float(fetched[0].rsplit(" ", 1)[1]) > 0
        assert 'sci_fetch_images_total_in_coco{shard="0/1"} 200.0' in body
        # health while it runs: fresh heartbeat
        assert main(["status", str(out), "--health"]) == 0
    finally:
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    final = json.loads(status_path.read_text())
    jsonschema.validate(final, json.loads((REPO / "docs/schema/status-file.json").read_text()))
    assert final["state"] == "finished" and final["exit_code"] == 0 and final["images"]["done"] == 200


def test_health_fails_for_a_stalled_or_failed_run(tmp_path, capsys):
    m = Manifest(tmp_path / "out" / ".sci-fetch" / "manifest.sqlite")
    run = m.begin_run({})
    m.close()
    assert main(["status", str(tmp_path / "out"), "--health", "--max-age", "0"]) == 1
    assert "stalled" in capsys.readouterr().out
    m = Manifest(tmp_path / "out" / ".sci-fetch" / "manifest.sqlite")
    m.end_run(run, 3, {})
    m.close()
    assert main(["status", str(tmp_path / "out"), "--health"]) == 1
    assert "exit code 3" in capsys.readouterr().out


def test_json_log_lines_carry_the_figures(s3_env, dataset, tmp_path):
    coco, _, _ = dataset
    cmd, env = command(
        s3_env,
        coco,
        tmp_path / "out",
        "--log-format",
        "json",
        "--progress",
        "log",
        "--log-interval",
        "0.2",
        "--limit",
        "60",
        "--max-requests-per-second",
        "20",
    )
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    progress = [line for line in lines if "progress" in line]
    assert progress, done.stderr
    assert {"time", "level", "message"} <= set(progress[-1])
    assert progress[-1]["progress"]["total_records"] == 60


def test_json_formatter_keeps_extra_fields():
    import logging

    record = logging.makeLogRecord(
        {"msg": "x %s", "args": ("y",), "levelname": "INFO", "name": "sci_fetch", "progress": {"a": 1}}
    )
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "x y" and data["progress"] == {"a": 1} and data["level"] == "info"
