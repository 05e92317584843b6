"""Shared helpers of the reliability tests (no tests here): seeding, reading the run's results, disk checks."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from helpers import animl_image, failures, last_summary, random_blobs, write_coco  # noqa: F401  (re-exported)

from sci_fetch.fs.layout import STATE_DIR
from sci_fetch.manifest.models import ManifestRow, State
from sci_fetch.manifest.store import Manifest

KB = 1024
BUCKET = "test-bucket"


def seed_parallel(s3, images: list[dict], blobs: list[bytes], key_field: str = "serving_bucket_key") -> None:
    client = s3.client()
    with ThreadPoolExecutor(8) as pool:  # boto3 keeps 10 connections
        list(
            pool.map(
                lambda rb: client.put_object(Bucket=BUCKET, Key=rb[0][key_field], Body=rb[1]),
                zip(images, blobs, strict=False),
            )
        )


def seeded_dataset(s3, folder: Path, prefix: str, n: int, seed: int, sizes: list[int], cameras: int = 3):
    """``n`` random objects under Animl keys in the test bucket, and their COCO file: (coco, images, blobs)."""
    project = prefix + uuid.uuid4().hex[:6]
    blobs = random_blobs(n, seed=seed, sizes=sizes)
    images = [animl_image(project, b, camera=f"CAM{i % cameras}") for i, b in enumerate(blobs)]
    seed_parallel(s3, images, blobs)
    return write_coco(folder / "coco.json", images), images, blobs


def rows(manifest_path: Path) -> dict[str, ManifestRow]:
    m = Manifest(manifest_path, readonly=True)
    try:
        return {r.image_id: r for r in m.rows()}
    finally:
        m.close()


def tree(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` except sci_fetch's state folder, by relative path."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and STATE_DIR not in p.relative_to(out).parts
    }


def leftovers(out: Path) -> list[str]:
    """Temporary files anywhere under ``out``, the state folder included."""
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.name.endswith((".partial", ".tmp")))


def check_manifest_never_leads(out: Path, manifest_path: Path, expected: dict[str, bytes]) -> dict[str, ManifestRow]:
    """Crash-safety invariants: no file under a final name is incomplete, and every done row's file is on
    disk with the recorded size and MD5. Returns the done rows."""
    for rel, data in tree(out).items():
        if rel.endswith(".partial"):
            continue  # a SIGKILL mid-write leaves one; it is not a final name, and the next attempt replaces it
        assert rel in expected, f"unexpected file {rel}"
        assert data == expected[rel], f"{rel} is on disk under its final name but incomplete or wrong"
    done = {}
    if manifest_path.exists():
        for row in rows(manifest_path).values():
            if row.state is State.done:
                data = (out / row.dest).read_bytes()
                assert len(data) == row.bytes and hashlib.md5(data).hexdigest() == row.md5, (
                    f"done row {row.dest} leads the disk"
                )
                done[row.image_id] = row
    return done


def check_manifest_equals_disk(out: Path, manifest_path: Path) -> None:
    """After a complete run: the done rows and the files on disk are the same set, with the same sizes and MD5s."""
    on_disk = {rel: (len(data), hashlib.md5(data).hexdigest()) for rel, data in tree(out).items()}
    recorded = {r.dest: (r.bytes, r.md5) for r in rows(manifest_path).values() if r.state is State.done}
    assert recorded == on_disk
    assert all(r.state is State.done for r in rows(manifest_path).values())


def start(
    s3, coco: Path, out: Path, *extra: str, endpoint: str | None = None, env: dict | None = None, verbose: bool = False
) -> subprocess.Popen:
    """``python -m sci_fetch download`` as a real process (for signals and SIGKILL)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SCI_FETCH_", "AWS_"))}
    environ.update(
        AWS_ACCESS_KEY_ID=s3.access_key,
        AWS_SECRET_ACCESS_KEY=s3.secret_key,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(out.parent / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(out.parent / "no-aws-credentials"),
    )
    environ.update(env or {})
    cmd = [
        sys.executable,
        "-m",
        "sci_fetch",
        *(["-v"] if verbose else []),
        "download",
        str(coco),
        "--output",
        str(out),
        "--bucket",
        BUCKET,
        "--endpoint-url",
        endpoint or s3.endpoint_url,
        "--profile",
        "",
        "--progress",
        "off",
        "--flush-interval",
        "0.3",
        "--no-space-check",
        *extra,
    ]
    return subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
