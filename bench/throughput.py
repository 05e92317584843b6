"""Part 1: every tool downloads the same objects into empty folders, in rounds, in two regimes.

Rounds rotate the order of the tools (round r starts with tool r), so drift on a shared machine hits
every tool alike; each figure is the median over rounds, and each ratio to s5cmd is the median of the
per-round ratios (both measured in the same round, minutes apart).
"""

from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path

from bench.data import Dataset
from bench.latency import LatencyProxy
from bench.proc import CpuWatch, run_measured
from bench.tools import Job, Target, Tool, verify


def one_run(tool: Tool, job: Job, target: Target, out: Path, logs: Path, watch: CpuWatch, tag: str,
            timeout: float, proxy: LatencyProxy | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = tool.command(job, target, out)
    os.sync()  # the previous tool's dirty pages are not this tool's to write back
    before = proxy.requests() if proxy else None
    watch.start()
    m = run_measured(cmd, env=tool.env(target), cwd=job.workdir, log_prefix=logs / tag, timeout=timeout)
    others = watch.stop()
    after = proxy.requests() if proxy else None
    os.sync()
    ok, problems = verify(tool, out, job.objects)
    n = len(job.objects)
    nbytes = sum(o.size for o in job.objects)
    shutil.rmtree(out, ignore_errors=True)
    return {
        "tool": tool.name, "wall_s": round(m.wall, 3), "user_s": round(m.user, 3), "sys_s": round(m.sys, 3),
        "cpu_s": round(m.cpu, 3), "peak_rss_mb": round(m.maxrss_mb, 1), "returncode": m.returncode,
        "timed_out": m.timed_out, "objects": n, "bytes": nbytes,
        "objects_per_s": round(n / m.wall, 2), "mb_per_s": round(nbytes / 1e6 / m.wall, 2),
        "cpu_s_per_1000": round(m.cpu / n * 1000, 3),
        "server_cpu_s_per_1000": round(others.get("server", 0.0) / n * 1000, 3),
        "proxy_cpu_s_per_1000": round(others.get("proxy", 0.0) / n * 1000, 3) if "proxy" in others else None,
        "requests_per_object": round((after - before) / n, 2) if before is not None and after is not None else None,
        "verified": ok, "verify_problems": problems,
        "stderr_tail": m.stderr[-600:] if (m.returncode or problems) else "",
    }


def run_throughput(*, s3, bucket: str, dataset: Dataset, coco: Path, tools: list[Tool], regimes: list[str],
                   rounds: int, concurrency: int, latency: float, proxy_kind: str, workdir: Path,
                   say, timeout: float = 1800.0) -> dict:
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    job = Job(objects=dataset.objects, coco=coco, variant=dataset.variant, concurrency=concurrency, workdir=workdir)
    runs: list[dict] = []
    proxy_info: dict = {}
    for regime in regimes:
        proxy = None
        if regime == "latency":
            proxy = LatencyProxy(s3.endpoint_url, latency, proxy_kind, log=logs / "proxy.log").__enter__()
            proxy_info = {"kind": proxy.kind, "latency_s": latency}
            say(f"[{regime}] {proxy.kind} proxy at {proxy.url}, +{latency * 1000:.0f} ms per request")
        try:
            endpoint = proxy.url if proxy else s3.endpoint_url
            target = Target(endpoint, bucket, s3.access_key, s3.secret_key)
            watch = CpuWatch({"server": s3.pid, **({"proxy": proxy.pid} if proxy else {})})
            for r in range(rounds):
                order = tools[r % len(tools):] + tools[:r % len(tools)]
                for tool in order:
                    tag = f"{regime}-r{r}-{tool.name}"
                    rec = one_run(tool, job, target, workdir / "out", logs, watch, tag, timeout, proxy)
                    rec.update(regime=regime, round=r)
                    runs.append(rec)
                    flag = "" if rec["returncode"] == 0 and rec["verified"] == rec["objects"] else \
                        f"  !! exit {rec['returncode']}, {rec['verified']}/{rec['objects']} verified"
                    say(f"[{regime} r{r}] {tool.name:<18} {rec['wall_s']:7.2f} s {rec['objects_per_s']:8.1f} obj/s "
                        f"{rec['mb_per_s']:7.1f} MB/s cpu {rec['cpu_s_per_1000']:5.2f} s/1k rss {rec['peak_rss_mb']:6.0f} MB"
                        f" server {rec['server_cpu_s_per_1000']:.2f} s/1k{flag}")
        finally:
            if proxy is not None:
                proxy.__exit__()
    return {"runs": runs, "summary": summarize(runs), "proxy": proxy_info,
            "dataset": {"objects": len(dataset.objects), "bytes": dataset.total_bytes,
                        "median_bytes": dataset.median_size, "variant": dataset.variant,
                        "min_bytes": min(o.size for o in dataset.objects),
                        "max_bytes": max(o.size for o in dataset.objects)},
            "concurrency": concurrency, "rounds": rounds}


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarize(runs: list[dict]) -> dict:
    """regime -> tool -> medians, plus the median of the per-round ratios to s5cmd."""
    out: dict = {}
    for regime in dict.fromkeys(r["regime"] for r in runs):
        rows = [r for r in runs if r["regime"] == regime]
        ref = {r["round"]: r for r in rows if r["tool"] == "s5cmd"}
        out[regime] = {}
        for tool in dict.fromkeys(r["tool"] for r in rows):
            mine = [r for r in rows if r["tool"] == tool]
            speed_ratios = [r["objects_per_s"] / ref[r["round"]]["objects_per_s"] for r in mine if r["round"] in ref]
            cpu_ratios = [r["cpu_s_per_1000"] / ref[r["round"]]["cpu_s_per_1000"] for r in mine
                          if r["round"] in ref and ref[r["round"]]["cpu_s_per_1000"]]
            out[regime][tool] = {
                "runs": len(mine),
                "wall_s": _median([r["wall_s"] for r in mine]),
                "objects_per_s": _median([r["objects_per_s"] for r in mine]),
                "mb_per_s": _median([r["mb_per_s"] for r in mine]),
                "cpu_s_per_1000": _median([r["cpu_s_per_1000"] for r in mine]),
                "peak_rss_mb": _median([r["peak_rss_mb"] for r in mine]),
                "server_cpu_s_per_1000": _median([r["server_cpu_s_per_1000"] for r in mine]),
                "proxy_cpu_s_per_1000": _median([r["proxy_cpu_s_per_1000"] for r in mine]),
                "requests_per_object": _median([r["requests_per_object"] for r in mine]),
                "speed_vs_s5cmd": _median(speed_ratios),
                "cpu_vs_s5cmd": _median(cpu_ratios),
                "all_verified": all(r["verified"] == r["objects"] and r["returncode"] == 0 for r in mine),
            }
    # Ratios between tools other than s5cmd, per round, for the targets (sci_fetch vs rclone / animl).
    for regime, tools in out.items():
        rows = [r for r in runs if r["regime"] == regime]
        for other in ("rclone", "animl"):
            if "sci_fetch" in tools and other in tools:
                by_round = {r["round"]: r for r in rows if r["tool"] == other}
                ratios = [r["objects_per_s"] / by_round[r["round"]]["objects_per_s"]
                          for r in rows if r["tool"] == "sci_fetch" and r["round"] in by_round]
                tools["sci_fetch"][f"speed_vs_{other}"] = _median(ratios)
    return out
