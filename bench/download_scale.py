"""Issue 20's two figures that the scale part could not make: a million-image download, and a crashed job's first GET.

    python -m bench.download_scale --parts faithful,download,crash --sizes 110320,1000000 --workdir DIR

- ``faithful``: the same 1,000-image job downloaded from bench/fast_s3.py and from SeaweedFS (tests/conftest.py's
  ``weed mini``), the manifests compared (done count, bytes, every image's md5): the fast server stands in
  for a real one only if they agree.
- ``download``: per size, a LILA-shaped job (bench/scale_data.py, 1-4 KB bodies whose md5 is the id's)
  downloaded from bench/fast_s3.py by the real CLI with its defaults (space check, md5 checks, fsync, 64 in
  flight, one process), then the same command again (the quick check), again after touching the COCO file (the
  full path), and ``sci-fetch verify``. Each pass: wall, CPU of its process tree, peak RSS (the kernel's
  high-water mark, summed over the tree: bench/proc.py), objects/s, the server's CPU; the download's RSS
  curve (sampled every second) says whether memory grows with the job.
- ``crash``: bench/crash_first_get.py (a crashed job's first GET against SeaweedFS).

Jobs, the server's object table and the outputs live under ``--workdir`` (COCO files and crashed jobs are
reused when present; a download's output is deleted after its passes unless ``--keep``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.fast_s3 import FastS3
from bench.memory import _curve
from bench.proc import CpuWatch, run_measured
from bench.scale import _env
from bench.scale_data import MANIFEST, Image, images, write_coco
from sci_fetch.demo.seaweed import SeaweedS3

BUCKET = "bench-bucket"
RSS_TARGET_MB = 250.0


@dataclass
class Pass:
    name: str
    images: int
    wall: float
    cpu: float
    rss_mb: float
    exit_code: int
    server_cpu: float = 0.0
    requests: str = ""
    curve: list[tuple[float, float]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"  {self.name}: exit {self.exit_code}, {self.wall:.1f}s wall, {self.cpu:.1f}s CPU, "
            f"peak RSS {self.rss_mb:.0f} MB, {self.images / self.wall:,.0f} images/s, server {self.server_cpu:.1f}s"
            f" CPU{'; ' + self.requests if self.requests else ''}"
        )


def download_cmd(coco: Path, out: Path, endpoint: str, *extra: str) -> list[str]:
    """The real CLI with its defaults; only where to read, where to write and which server."""
    return [
        sys.executable, "-m", "sci_fetch", "download", str(coco), "--output", str(out), "--bucket", BUCKET,
        "--endpoint-url", endpoint, "--profile", "", *extra,
    ]  # fmt: skip


def credentials(access: str = "unused", secret: str = "unused") -> dict[str, str]:
    env = _env()
    env.update(AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret)
    return env


def sized_coco(folder: Path, n: int) -> Path:
    """The job's COCO file (1-4 KB bodies), written once and reused (its mtime is the quick check's)."""
    coco = folder / "job.json"
    if not coco.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        write_coco(folder / "job.json.tmp", n, sized=True)
        os.replace(folder / "job.json.tmp", coco)
        print(f"  wrote {coco} ({coco.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - started:.0f}s", flush=True)
    return coco


def measure(name: str, cmd: list[str], n: int, cwd: Path, env: dict[str, str], server: int | None) -> Pass:
    """One CLI pass in its own process tree; the RSS curve is sampled every second."""
    watch = CpuWatch({"server": server})
    watch.start()
    m = run_measured(cmd, env=env, cwd=cwd, log_prefix=cwd / f"bench-{name.replace(' ', '-')}", timeout=6 * 3600,
                     sample_rss=1.0)  # fmt: skip
    said = [line.strip() for line in (m.stdout + m.stderr).splitlines() if "S3 requests" in line]
    result = Pass(name, n, m.wall, m.cpu, m.maxrss_mb, m.returncode, watch.stop().get("server", 0.0),
                  said[-1] if said else "", m.rss_samples)  # fmt: skip
    print(result.line(), flush=True)
    return result


def states(out: Path) -> dict[str, tuple[int, int]]:
    """state -> (images, bytes) in the job's manifest."""
    db = sqlite3.connect(f"file:{out / MANIFEST}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT state, COUNT(*), COALESCE(SUM(bytes), 0) FROM images GROUP BY state").fetchall()
    finally:
        db.close()
    return {state: (count, size) for state, count, size in rows}


def done_md5s(out: Path) -> set[tuple[str, str, int]]:
    db = sqlite3.connect(f"file:{out / MANIFEST}?mode=ro", uri=True)
    try:
        return set(db.execute("SELECT image_id, md5, bytes FROM images WHERE state = 'done'").fetchall())
    finally:
        db.close()


def growth(curve: list[tuple[float, float]]) -> str:
    """RSS at a quarter, half and the end of the run: flat means memory does not grow with the job."""
    if len(curve) < 4:
        return "too short to say"
    at = [curve[min(len(curve) - 1, int(len(curve) * f))] for f in (0.25, 0.5, 0.95)]
    return ", ".join(f"{mb:.0f} MB at {t:.0f}s" for t, mb in at)


def run_download(workdir: Path, n: int, keep: bool) -> list[Pass]:
    """Download, quick check, full path, verify of one size against the fast server."""
    print(f"download of {n:,} images", flush=True)
    folder = workdir / f"download-{n}"
    coco, out = sized_coco(folder, n), folder / "images"
    shutil.rmtree(out, ignore_errors=True)
    env = credentials()
    with FastS3(n, folder / "server.log", BUCKET) as s3:
        cmd = download_cmd(coco, out, s3.endpoint_url)
        passes = [measure("download", cmd, n, folder, env, s3.pid)]
        print(f"  manifest: {states(out)}; RSS {growth(passes[0].curve)}", flush=True)
        print(f"  RSS curve (s, MB): {_curve(passes[0].curve, 16)}", flush=True)
        passes.append(measure("resume quick check", cmd, n, folder, env, s3.pid))
        os.utime(coco)  # a new mtime: the fingerprint differs, so the full path
        passes.append(measure("resume full path", cmd, n, folder, env, s3.pid))
        passes.append(measure("verify", [sys.executable, "-m", "sci_fetch", "verify", str(out)], n, folder, env, None))
    peak = max(p.rss_mb for p in passes)
    verdict = "met" if peak < RSS_TARGET_MB else "NOT met"
    print(f"  target peak RSS < {RSS_TARGET_MB:.0f} MB at {n:,} images: {peak:.0f} MB {verdict}", flush=True)
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return passes


def upload(s3: SeaweedS3, objects: list[Image], workers: int = 16) -> None:
    """PUT every object (its ETag must be its md5, as the id says)."""
    s3.ensure_bucket(BUCKET)
    client = s3._make_client(max_pool_connections=workers * 2)  # noqa: SLF001 - the launcher's own client factory

    def put(im: Image) -> None:
        etag = client.put_object(Bucket=BUCKET, Key=im.key, Body=im.data)["ETag"].strip('"')
        if etag != im.md5:
            raise RuntimeError(f"uploading {im.key}: the server's ETag {etag} is not the md5 {im.md5}")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, objects))


def run_faithful(workdir: Path, n: int = 1000) -> bool:
    """The same job from the fast server and from SeaweedFS: the manifests must agree image by image."""
    print(f"faithfulness: {n:,} images from bench/fast_s3.py and from SeaweedFS", flush=True)
    folder = workdir / f"faithful-{n}"
    coco = sized_coco(folder, n)
    outs = {"fast": folder / "out-fast", "seaweed": folder / "out-seaweed"}
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    with FastS3(n, folder / "server.log", BUCKET) as fast:
        measure("fast server", download_cmd(coco, outs["fast"], fast.endpoint_url), n, folder, credentials(), fast.pid)
    with SeaweedS3(folder / "seaweed", buckets=[BUCKET]) as weed:
        upload(weed, list(images(n, sized=True)))
        assert weed.endpoint_url is not None
        cmd = download_cmd(coco, outs["seaweed"], weed.endpoint_url)
        measure("seaweedfs", cmd, n, folder, credentials(weed.access_key, weed.secret_key), weed.pid)
    found = {name: states(out) for name, out in outs.items()}
    same = found["fast"] == found["seaweed"] and done_md5s(outs["fast"]) == done_md5s(outs["seaweed"])
    for name, counts in found.items():
        print(f"  {name}: {counts}", flush=True)
    print(f"  the manifests agree (states, bytes, every done image's md5): {same}", flush=True)
    shutil.rmtree(folder / "seaweed", ignore_errors=True)
    return same


def run_all(sizes: str, workdir: Path, parts: str = "faithful,download,crash", repeats: int = 2,
            keep: bool = False, trees: str = "") -> dict[str, object]:  # fmt: skip
    """Every part asked for, at every size; the figures as a dict (``python -m bench`` keeps it in its JSON)."""
    from bench.crash_first_get import run_crash

    asked, counts = set(parts.split(",")), sorted(int(s) for s in sizes.split(","))
    workdir.mkdir(parents=True, exist_ok=True)
    found: dict[str, object] = {}
    if "faithful" in asked:
        found["faithful"] = run_faithful(workdir)
    if "download" in asked:
        found["download"] = [asdict(p) for n in counts for p in run_download(workdir, n, keep)]
    if "crash" in asked:
        paired = trees.split(",") if trees else None
        found["crash"] = [asdict(r) for n in counts for r in run_crash(workdir, n, repeats, paired)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="faithful,download,crash", help="faithful, download, crash")
    parser.add_argument("--sizes", default="110320", help="comma-separated image counts (default: 110320)")
    parser.add_argument("--workdir", type=Path, required=True, help="jobs, servers' data and outputs go here")
    parser.add_argument("--repeats", type=int, default=2, help="crash part: runs of each mode, alternated")
    parser.add_argument("--keep", action="store_true", help="keep each download's output folder")
    parser.add_argument("--trees", default="", help="crash part: name=LAUNCHER,name= (this tree), interleaved")
    args = parser.parse_args(argv)
    found = run_all(args.sizes, args.workdir, args.parts, args.repeats, args.keep, args.trees)
    return 0 if found.get("faithful", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
