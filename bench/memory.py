"""Part 4b: peak RSS while sci_fetch streams a very large COCO file (the target: 1,000,000 images).

Two ways through the engine, each on its own synthetic COCO file (written streaming):

- ``dry-run`` (``sci-fetch download --dry-run``, when this sci_fetch has it): reads, validates, maps and
  plans every record, writes every manifest row, sends no request. Fast (thousands of images/s), so
  it is run at the target's size.
- ``missing``: the engine for real against an empty bucket with ``--max-attempts 1``: every key is a
  404, recorded as ``missing``; records are queued, requested and recorded end to end. One request
  per image (~500 images/s here), so it runs on fewer images by default; ``--memory-missing-images
  1000000`` measures the target this way (about 35 minutes).

Peak RSS is the kernel's high-water mark; the RSS is also sampled every half second (the curve keeps
the highest sample and where it happened, to show whether memory grows with the file or spikes).
For comparison the Animl-script method is run on the largest file: it ``json.load``s the whole file
and queues every record before its first request (its threads stop on their first 404).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.data import stream_big_coco
from bench.proc import CpuWatch, run_measured
from bench.tools import AnimlScript, Job, SciFetch, Target


def has_dry_run() -> bool:
    probe = subprocess.run([sys.executable, "-m", "sci_fetch", "download", "--help"], capture_output=True, text=True)
    return "--dry-run" in probe.stdout


def _curve(samples: list[tuple[float, float]], points: int = 12) -> list[tuple[float, float]]:
    """Evenly spaced samples plus the highest one."""
    if not samples:
        return []
    step = max(1.0, (len(samples) - 1) / (points - 1))
    picked = {round(i * step) for i in range(points) if round(i * step) < len(samples)}
    picked.add(max(range(len(samples)), key=lambda i: samples[i][1]))
    return [samples[i] for i in sorted(picked)]


def _one(mode: str, n: int, *, s3, bucket: str, concurrency: int, workdir: Path, say) -> dict:
    logs = workdir / "logs"
    coco = workdir / f"memory-{mode}-{n}.json"
    t0 = time.perf_counter()
    stream_big_coco(coco, n)
    gen_s = time.perf_counter() - t0
    job = Job(objects=[], coco=coco, variant="original", concurrency=concurrency, workdir=workdir)
    target = Target(s3.endpoint_url, bucket, s3.access_key, s3.secret_key)
    out = workdir / f"memory-out-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    tool = SciFetch(extra=["--dry-run"] if mode == "dry-run" else ["--max-attempts", "1"])
    watch = CpuWatch({"server": s3.pid})
    watch.start()
    m = run_measured(
        tool.command(job, target, out),
        env=tool.env(target),
        cwd=workdir,
        log_prefix=logs / f"memory-{mode}",
        timeout=6 * 3600,
        sample_rss=0.5,
    )
    server = watch.stop().get("server", 0.0)
    peak_at = max(m.rss_samples, key=lambda s: s[1]) if m.rss_samples else None
    rec = {
        "mode": mode,
        "images": n,
        "coco_mb": round(coco.stat().st_size / 1e6, 1),
        "coco_written_s": round(gen_s, 1),
        "peak_rss_mb": round(m.maxrss_mb, 1),
        "highest_sample": peak_at,
        "wall_s": round(m.wall, 1),
        "cpu_s": round(m.cpu, 1),
        "images_per_s": round(n / m.wall, 1),
        "exit": m.returncode,
        "server_cpu_s": round(server, 1),
        "rss_curve_mb": _curve(m.rss_samples),
        "summary": m.stdout[-800:],
    }
    manifest = out / ".sci-fetch" / "manifest.sqlite"
    if manifest.exists():
        rec["manifest_mb"] = round(manifest.stat().st_size / 1e6, 1)
    say(
        f"[memory] sci_fetch {mode}: peak RSS {m.maxrss_mb:.0f} MB over {n:,} images "
        f"(highest sample {peak_at[1] if peak_at else '?'} MB at {peak_at[0] if peak_at else '?'} s), "
        f"{m.wall:.0f} s ({n / m.wall:,.0f} images/s), exit {m.returncode}"
    )
    shutil.rmtree(out, ignore_errors=True)
    return rec


def run_memory(
    *, s3, bucket: str, n_images: int, n_missing: int, concurrency: int, workdir: Path, say, with_animl: bool = True
) -> dict:
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    s3.ensure_bucket(bucket)
    runs = []
    dry = has_dry_run()
    if dry and n_images:
        runs.append(_one("dry-run", n_images, s3=s3, bucket=bucket, concurrency=concurrency, workdir=workdir, say=say))
    elif n_images:
        say("[memory] this sci_fetch has no --dry-run: the target's size is run with every key missing instead")
        n_missing = max(n_missing, n_images)
    if n_missing:
        runs.append(_one("missing", n_missing, s3=s3, bucket=bucket, concurrency=concurrency, workdir=workdir, say=say))
    result: dict = {"runs": runs, "dry_run_available": dry}
    biggest = max(runs, key=lambda r: r["images"])
    result["images"] = biggest["images"]
    result["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    if with_animl:
        coco = workdir / f"memory-{biggest['mode']}-{biggest['images']}.json"
        target = Target(s3.endpoint_url, bucket, s3.access_key, s3.secret_key)
        job = Job(objects=[], coco=coco, variant="original", concurrency=concurrency, workdir=workdir)
        a = run_measured(
            AnimlScript().command(job, target, workdir / "memory-animl"),
            env=AnimlScript().env(target),
            cwd=workdir,
            log_prefix=workdir / "logs" / "memory-animl",
            timeout=3600,
        )
        result["animl"] = {
            "images": biggest["images"],
            "peak_rss_mb": round(a.maxrss_mb, 1),
            "wall_s": round(a.wall, 1),
            "exit": a.returncode,
            "note": "loads the whole file and queues every record, then its threads stop on the first 404",
        }
        say(f"[memory] animl method: peak RSS {a.maxrss_mb:.0f} MB on {biggest['images']:,} images (whole file loaded)")
        shutil.rmtree(workdir / "memory-animl", ignore_errors=True)
    for r in runs:
        (workdir / f"memory-{r['mode']}-{r['images']}.json").unlink(missing_ok=True)
    return result
