"""Part 4a: the second run over a finished job: how long each tool takes to find nothing to do, and
how many S3 requests it sends doing so (sci_fetch's target: none).

Each tool first downloads the job into its own folder (those runs are reported too: a many-small-
objects workload). Then the same command runs again, timed (median of ``repeats``), and once more
through a counting relay (untimed) to count the HTTP requests it sends. The objects are tiny (about
2 KB): a resume never reads object bytes, so their size does not change what is measured.

When the job is smaller than the SCI export (110,320 images), sci_fetch's time for it is estimated
with a straight line through two measured points, the whole job and its first tenth (same
manifest), so start-up time is not multiplied.
"""

from __future__ import annotations

import re
import shutil
import statistics
from pathlib import Path

from bench.data import Dataset, write_coco
from bench.proc import CpuWatch, run_measured
from bench.relay import Relay
from bench.tools import Job, Rclone, S5cmd, SciFetch, Target, Tool, verify

_SCI_REQUESTS = re.compile(r"(\d+) S3 requests")


def _run(tool: Tool, job: Job, target: Target, out: Path, logs: Path, tag: str, watch: CpuWatch | None = None):
    if watch:
        watch.start()
    m = run_measured(
        tool.command(job, target, out), env=tool.env(target), cwd=job.workdir, log_prefix=logs / tag, timeout=7200
    )
    server = watch.stop().get("server") if watch else None
    return m, server


def run_resume(
    *, s3, bucket: str, dataset: Dataset, coco: Path, concurrency: int, repeats: int, workdir: Path, say
) -> dict:
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    job = Job(objects=dataset.objects, coco=coco, variant=dataset.variant, concurrency=concurrency, workdir=workdir)
    direct = Target(s3.endpoint_url, bucket, s3.access_key, s3.secret_key)
    n = len(dataset.objects)
    watch = CpuWatch({"server": s3.pid})
    # s5cmd's "nothing to do" is `cp -n` (no clobber); its first run uses the same lines.
    tools: list[Tool] = [SciFetch(), S5cmd(no_clobber=True), Rclone()]
    result: dict = {"objects": n, "object_bytes": dataset.median_size, "tools": {}}
    for tool in tools:
        out = workdir / f"resume-{tool.name}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        first, first_server = _run(tool, job, direct, out, logs, f"resume-first-{tool.name}", watch)
        ok, problems = verify(tool, out, dataset.objects)
        say(
            f"[resume] {tool.name:<10} first run {first.wall:7.2f} s ({n / first.wall:7.0f} obj/s, "
            f"cpu {first.cpu / n * 1000:.2f} s/1k), {ok}/{n} verified, exit {first.returncode}"
            + ("" if ok == n else "  !! the job is not finished: the second run's figures mean little")
        )
        walls, cpus = [], []
        again = None
        for i in range(repeats):
            again, _ = _run(tool, job, direct, out, logs, f"resume-again{i}-{tool.name}")
            walls.append(again.wall)
            cpus.append(again.cpu)
        with Relay(s3.endpoint_url) as relay:
            counted, _ = _run(
                tool,
                job,
                Target(relay.url, bucket, s3.access_key, s3.secret_key),
                out,
                logs,
                f"resume-counted-{tool.name}",
            )
            seen = relay.requests
        if isinstance(tool, SciFetch):
            # The same finished job named by a COCO of its first tenth: the difference in time is the
            # per-image cost, the rest is start-up (imports, opening the manifest), for the 110,320 estimate.
            part = max(1, n // 10)
            sub = write_coco(job.workdir / "resume-coco-tenth.json", dataset.objects[:part])
            sub_job = Job(
                objects=dataset.objects[:part],
                coco=sub,
                variant=dataset.variant,
                concurrency=concurrency,
                workdir=workdir,
            )
            sub_walls = [
                _run(tool, sub_job, direct, out, logs, f"resume-tenth{i}-{tool.name}")[0].wall for i in range(repeats)
            ]
            per_image = max(0.0, (statistics.median(walls) - statistics.median(sub_walls)) / (n - part))
            fixed = statistics.median(walls) - per_image * n
            result["sci_fetch_model"] = {
                "tenth_objects": part,
                "tenth_wall_s": round(statistics.median(sub_walls), 3),
                "per_image_ms": round(per_image * 1000, 4),
                "fixed_s": round(fixed, 3),
            }
        own = None
        if isinstance(tool, SciFetch):
            found = _SCI_REQUESTS.findall(again.stdout if again else "")
            own = int(found[-1]) if found else None
        rec = {
            "first_run": {
                "wall_s": round(first.wall, 3),
                "objects_per_s": round(n / first.wall, 1),
                "cpu_s_per_1000": round(first.cpu / n * 1000, 3),
                "peak_rss_mb": round(first.maxrss_mb, 1),
                "server_cpu_s_per_1000": round((first_server or 0) / n * 1000, 3),
                "verified": ok,
                "exit": first.returncode,
                "problems": problems,
            },
            "again_wall_s": round(statistics.median(walls), 3),
            "again_wall_runs": [round(w, 3) for w in walls],
            "again_cpu_s": round(statistics.median(cpus), 3),
            "again_peak_rss_mb": round(again.maxrss_mb, 1) if again else None,
            "again_exit": again.returncode if again else None,
            "requests_seen_by_relay": seen,
            "requests_reported_by_tool": own,
            "counted_exit": counted.returncode,
        }
        result["tools"][tool.name] = rec
        say(
            f"[resume] {tool.name:<10} again: {rec['again_wall_s']:.2f} s, {seen} S3 requests"
            + (f" (it reports {own})" if own is not None else "")
        )
        shutil.rmtree(out, ignore_errors=True)
    sci = result["tools"]["sci_fetch"]
    model = result.get("sci_fetch_model")
    if n >= 110_320 or model is None:
        result["sci_fetch_estimate_110320_s"] = sci["again_wall_s"]
    else:
        result["sci_fetch_estimate_110320_s"] = round(model["fixed_s"] + model["per_image_ms"] / 1000 * 110_320, 2)
    return result
