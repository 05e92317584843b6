"""The resume of a finished SCI-sized job (110,320 images), measured at that size, without downloading it.

``python -m bench.resume_full [--images 110320] [--repeats 3]`` writes an Animl-format COCO file of that
many images, puts each image's (tiny) file on disk and marks it ``done`` in the manifest through the
manifest's own API (as a finished download leaves them), then times ``sci-fetch download`` over it with
the endpoint pointed at a closed port: the run must end with exit 0 and "0 S3 requests" (any request
would fail against that endpoint). The first resume takes the full path (read, validate and plan every
record: a job finished by an older sci-fetch, or after its COCO file changed) and is reported apart; it
leaves the quick-check fingerprint, so the timed resumes are what a user's second run of the same command
costs. Prints their median wall and CPU time.
A finished job read from disk costs the same whatever wrote it, so no S3 server is needed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sci_fetch.coco.models import CocoImage
from sci_fetch.keys.mapping import Variant, make_task
from sci_fetch.manifest.models import Outcome, State
from sci_fetch.manifest.store import Manifest


def make_job(folder: Path, n: int) -> tuple[Path, Path]:
    """The COCO file, and the output folder with every image done (file on disk, row in the manifest)."""
    project = "sci"
    images = []
    for i in range(n):
        data = f"image {i}".encode()
        md5 = hashlib.md5(data).hexdigest()
        image_id = f"{project}:{md5}"
        images.append(
            {
                "id": image_id,
                "file_name": f"{project}/CAM{i % 40:02d}/dep{i % 7}/{project}-{md5}.jpg",
                "serving_bucket_key": f"original/{image_id}-original.jpg",
                "datetime": "2024-01-01 00:00:00",
                "location": f"CAM{i % 40:02d}",
                "original_file_name": f"IMG_{i:06d}.JPG",
            }
        )
    coco = folder / "sci.json"
    coco.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 0, "name": "empty"}]}))
    out = folder / "images"
    manifest = Manifest(out / ".sci-fetch" / "manifest.sqlite")
    run_id = manifest.begin_run({})
    for start in range(0, n, 2000):
        chunk = images[start : start + 2000]
        tasks = [make_task(CocoImage.model_validate(r), Variant.original, None, True) for r in chunk]
        for offset, task in enumerate(tasks):
            path = out / task.dest
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"image {start + offset}".encode())
        manifest.plan(tasks, run_id, out)
        manifest.record(
            [
                Outcome(
                    image_id=t.image_id,
                    state=State.done,
                    bytes=(out / t.dest).stat().st_size,
                    md5=t.expected_md5,
                    attempts=1,
                    checks="size,id-md5",
                )
                for t in tasks
            ]
        )
    manifest.end_run(run_id, 0, {})
    manifest.close()
    return coco, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=110_320)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="also record the last resume with py-spy into this SVG")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sci-fetch-resume-") as tmp:
        started = time.monotonic()
        coco, out = make_job(Path(tmp), args.images)
        print(f"finished job of {args.images:,} images made in {time.monotonic() - started:.0f}s", flush=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SCI_FETCH_", "AWS_PROFILE"))}
        env.update(AWS_ACCESS_KEY_ID="unused", AWS_SECRET_ACCESS_KEY="unused", AWS_EC2_METADATA_DISABLED="true")
        cmd = [
            sys.executable,
            "-m",
            "sci_fetch",
            "download",
            str(coco),
            "--output",
            str(out),
            "--bucket",
            "bench-bucket",
            "--endpoint-url",
            dead,
            "--profile",
            "",
            "--progress",
            "off",
        ]
        times, cpus = [], []
        for attempt in range(args.repeats + 1):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.monotonic()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
            times.append(time.monotonic() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            requests = re.search(r"(\d+) S3 requests", done.stdout)
            print(
                f"resume ({'full path, untimed' if attempt == 0 else 'quick check'}): exit {done.returncode}, "
                f"{times[-1]:.2f}s wall, {cpus[-1]:.2f}s CPU, {requests.group(1) if requests else '?'} S3 requests",
                flush=True,
            )
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-2000:])
                return 1
            if attempt == 0:
                times.pop()
                cpus.pop()
        if args.profile:
            subprocess.run(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "-o",
                    str(args.profile),
                    "--rate",
                    "200",
                    "--",
                    *cmd,
                ],
                env=env,
                capture_output=True,
                cwd=tmp,
            )
            subprocess.run(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "-o",
                    str(args.profile.with_suffix(".txt")),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--",
                    *cmd,
                ],
                env=env,
                capture_output=True,
                cwd=tmp,
            )
        print(
            f"median resume of {args.images:,} finished images: {statistics.median(times):.2f}s wall, "
            f"{statistics.median(cpus):.2f}s CPU (target < 3 s, 0 requests)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
