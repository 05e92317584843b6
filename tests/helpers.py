"""Builders for test data: Animl-style objects whose ids carry the real md5 of their bytes."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

from sci_fetch.manifest.store import Manifest
from sci_fetch.settings import Settings, load_settings


def animl_image(project: str, data: bytes, camera: str = "CAM1", deployment: str = "dep1", **extra: Any) -> dict:
    image_id = f"{project}:{hashlib.md5(data).hexdigest()}"
    record = {
        "id": image_id,
        "file_name": f"{project}/{camera}/{deployment}/{image_id.replace(':', '-')}.jpg",
        "serving_bucket_key": f"original/{image_id}-original.jpg",
        "original_file_name": "IMG_0001.JPG",
        "datetime": "2023-01-10T06:30:00.000Z",
        "location": "Willows Camp",
    }
    record.update(extra)
    return record


def random_blobs(n: int, seed: int, sizes: list[int]) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.choice(sizes) + i) for i in range(n)]


def write_coco(path: Path, images: list[dict], annotations: list[dict] | None = None) -> Path:
    path.write_text(
        json.dumps(
            {
                "info": {"version": "1.0"},
                "images": images,
                "annotations": annotations or [],
                "categories": [{"id": 0, "name": "empty"}, {"id": 1, "name": "fox"}],
            }
        )
    )
    return path


def seed(s3, bucket: str, images: list[dict], blobs: list[bytes]) -> None:
    client = s3.client()
    for record, data in zip(images, blobs, strict=False):
        client.put_object(Bucket=bucket, Key=record["serving_bucket_key"], Body=data)


def settings_for(s3, coco: Path, output: Path, **overrides: Any) -> Settings:
    values = {
        "coco": coco,
        "output": output,
        "bucket": "test-bucket",
        "endpoint_url": s3.endpoint_url,
        "region": "us-west-2",
        "profile": "",
        "progress": "off",
        "concurrency": 16,
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.05,
        "flush_interval": 0.2,
        "space_check": False,  # its HEADs would change the request counts tests assert on; tested on its own
    }
    values.update(overrides)
    return load_settings(use_files=False, overrides=values)


def last_summary(settings: Settings) -> dict:
    """The summary the last run stored in its manifest (counts, requests, retries by reason)."""
    m = Manifest(settings.manifest_path, readonly=True)
    try:
        return m.last_run()["summary"]
    finally:
        m.close()


def failures(settings: Settings) -> list[dict]:
    with open(settings.state_file("failures", "csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def wait_until(check, what: str, timeout: float = 120.0, proc=None, poll: float = 0.02):
    """Poll ``check()`` until it returns something true, and return that. Tests wait on progress (files,
    manifest rows, a log line), never on the clock: the bound is generous so a slow, loaded machine passes,
    and a process that ends first fails the test at once with its output."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}: {output[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout:.0f}s: {what}")
        time.sleep(poll)


def final_files(out: Path) -> int:
    """Images under their final names below ``out`` (no ``.partial``, nothing in the state folder)."""
    if not out.exists():
        return 0
    return sum(
        1
        for p in out.rglob("*")
        if p.is_file() and not p.name.endswith(".partial") and ".sci-fetch" not in p.relative_to(out).parts
    )


def download_command(s3, coco: Path, out: Path, *extra: str, bucket: str = "test-bucket") -> tuple[list[str], dict]:
    """``python -m sci_fetch download`` against the test server: its keys, none of the caller's profile or
    SCI_FETCH_* settings, no progress bar; returns the command and its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCI_FETCH_", "AWS_PROFILE"))}
    env.update(AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key)
    cmd = [sys.executable, "-m", "sci_fetch", "download", str(coco), "--output", str(out), "--bucket", bucket]
    cmd += ["--endpoint-url", s3.endpoint_url, "--profile", "", "--progress", "off", *extra]
    return cmd, env
