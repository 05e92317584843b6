"""Part 1: every tool downloads the same objects into empty folders, in rounds, in up to four regimes.

- ``loopback``: plain HTTP straight to SeaweedFS (CPU-bound: client and server share 2 cores);
- ``latency``: plain HTTP through a latency proxy, +``latency`` s per request;
- ``https``: SeaweedFS's S3 HTTPS port, every tool trusting the throw-away CA;
- ``https_latency``: HTTPS through ``bench/relay.py``, +``latency`` s per client turn (the headline:
  real S3 is HTTPS across a WAN).

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

REGIMES = ("loopback", "latency", "https", "https_latency")


def _per_object(before: dict, after: dict, name: str, n: int) -> float | None:
    if before.get(name) is None or after.get(name) is None:
        return None
    return round((after[name] - before[name]) / n, 2)


def one_run(
    tool: Tool,
    job: Job,
    target: Target,
    out: Path,
    logs: Path,
    watch: CpuWatch,
    tag: str,
    timeout: float,
    proxy: LatencyProxy | None = None,
) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = tool.command(job, target, out)
    os.sync()  # the previous tool's dirty pages are not this tool's to write back
    before = proxy.stats() if proxy else {}
    watch.start()
    m = run_measured(cmd, env=tool.env(target), cwd=job.workdir, log_prefix=logs / tag, timeout=timeout)
    others = watch.stop()
    after = proxy.stats() if proxy else {}
    os.sync()
    ok, problems = verify(tool, out, job.objects)
    n = len(job.objects)
    nbytes = sum(o.size for o in job.objects)
    shutil.rmtree(out, ignore_errors=True)
    return {
        "tool": tool.name,
        "wall_s": round(m.wall, 3),
        "user_s": round(m.user, 3),
        "sys_s": round(m.sys, 3),
        "cpu_s": round(m.cpu, 3),
        "peak_rss_mb": round(m.maxrss_mb, 1),
        "returncode": m.returncode,
        "timed_out": m.timed_out,
        "objects": n,
        "bytes": nbytes,
        "objects_per_s": round(n / m.wall, 2),
        "mb_per_s": round(nbytes / 1e6 / m.wall, 2),
        "cpu_s_per_1000": round(m.cpu / n * 1000, 3),
        "objects_per_cpu_s": round(n / m.cpu, 1) if m.cpu else None,
        "server_cpu_s_per_1000": round(others.get("server", 0.0) / n * 1000, 3),
        "proxy_cpu_s_per_1000": round(others.get("proxy", 0.0) / n * 1000, 3) if "proxy" in others else None,
        "requests_per_object": _per_object(before, after, "requests", n),
        "turns_per_object": _per_object(before, after, "turns", n),
        "connections_per_object": _per_object(before, after, "connections", n),
        "verified": ok,
        "verify_problems": problems,
        "stderr_tail": m.stderr[-600:] if (m.returncode or problems) else "",
    }


def run_throughput(
    *,
    s3,
    bucket: str,
    dataset: Dataset,
    coco: Path,
    tools: list[Tool],
    regimes: list[str],
    rounds: int,
    concurrency: int,
    latency: float,
    proxy_kind: str,
    workdir: Path,
    say,
    ca: Path | None = None,
    timeout: float = 1800.0,
) -> dict:
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    job = Job(objects=dataset.objects, coco=coco, variant=dataset.variant, concurrency=concurrency, workdir=workdir)
    runs: list[dict] = []
    proxy_info: dict = {}
    for regime in regimes:
        proxy = None
        upstream = s3.https_url if regime.startswith("https") else s3.endpoint_url
        if regime.endswith("latency"):
            proxy = LatencyProxy(upstream, latency, proxy_kind, log=logs / f"proxy-{regime}.log").__enter__()
            proxy_info = {"kind": proxy.kind, "latency_s": latency, **proxy_info, regime: proxy.kind}
            say(
                f"[{regime}] {proxy.kind} proxy at {proxy.url}, +{latency * 1000:.0f} ms per "
                f"{'client turn' if regime.startswith('https') else 'request'}"
            )
        try:
            endpoint = proxy.url if proxy else upstream
            target = Target(endpoint, bucket, s3.access_key, s3.secret_key, ca=ca)
            watch = CpuWatch({"server": s3.pid, **({"proxy": proxy.pid} if proxy else {})})
            for r in range(rounds):
                order = tools[r % len(tools) :] + tools[: r % len(tools)]
                for tool in order:
                    tag = f"{regime}-r{r}-{tool.name}"
                    rec = one_run(tool, job, target, workdir / "out", logs, watch, tag, timeout, proxy)
                    rec.update(regime=regime, round=r)
                    runs.append(rec)
                    flag = (
                        ""
                        if rec["returncode"] == 0 and rec["verified"] == rec["objects"]
                        else f"  !! exit {rec['returncode']}, {rec['verified']}/{rec['objects']} verified"
                    )
                    say(
                        f"[{regime} r{r}] {tool.name:<16} {rec['wall_s']:7.2f} s {rec['objects_per_s']:8.1f} obj/s "
                        f"{rec['mb_per_s']:7.1f} MB/s cpu {rec['cpu_s_per_1000']:5.2f} s/1k rss {rec['peak_rss_mb']:6.0f} MB"
                        f" server {rec['server_cpu_s_per_1000']:.2f} s/1k{flag}"
                    )
        finally:
            if proxy is not None:
                proxy.__exit__()
    return {
        "runs": runs,
        "summary": summarize(runs),
        "proxy": proxy_info,
        "dataset": {
            "objects": len(dataset.objects),
            "bytes": dataset.total_bytes,
            "median_bytes": dataset.median_size,
            "variant": dataset.variant,
            "min_bytes": min(o.size for o in dataset.objects),
            "max_bytes": max(o.size for o in dataset.objects),
        },
        "concurrency": concurrency,
        "rounds": rounds,
    }


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


REFERENCES = ("s5cmd", "crt", "rclone", "animl")


def _ratios(mine: list[dict], ref: dict[int, dict], field: str) -> list[float]:
    """Per-round ratio of a tool's figure to the reference's in the same round."""
    return [
        r[field] / ref[r["round"]][field]
        for r in mine
        if r["round"] in ref and r.get(field) is not None and ref[r["round"]].get(field)
    ]


def summarize(runs: list[dict]) -> dict:
    """regime -> tool -> medians, plus medians of per-round ratios: objects/s to every reference
    tool (``speed_vs_<ref>``), CPU per object to s5cmd's, peak RSS to rclone's."""
    out: dict = {}
    for regime in dict.fromkeys(r["regime"] for r in runs):
        rows = [r for r in runs if r["regime"] == regime]
        refs = {name: {r["round"]: r for r in rows if r["tool"] == name} for name in REFERENCES}
        out[regime] = {}
        for tool in dict.fromkeys(r["tool"] for r in rows):
            mine = [r for r in rows if r["tool"] == tool]
            s = out[regime][tool] = {"runs": len(mine)}
            for field in (
                "wall_s",
                "objects_per_s",
                "mb_per_s",
                "cpu_s_per_1000",
                "objects_per_cpu_s",
                "peak_rss_mb",
                "server_cpu_s_per_1000",
                "proxy_cpu_s_per_1000",
                "requests_per_object",
                "turns_per_object",
                "connections_per_object",
            ):
                s[field] = _median([r.get(field) for r in mine])
            for name in REFERENCES:
                if refs[name] and name != tool:
                    s[f"speed_vs_{name}"] = _median(_ratios(mine, refs[name], "objects_per_s"))
            s.setdefault("speed_vs_s5cmd", None)
            s["cpu_vs_s5cmd"] = _median(_ratios(mine, refs["s5cmd"], "cpu_s_per_1000")) if tool != "s5cmd" else None
            s["rss_vs_rclone"] = _median(_ratios(mine, refs["rclone"], "peak_rss_mb")) if tool != "rclone" else None
            s["all_verified"] = all(r["verified"] == r["objects"] and r["returncode"] == 0 for r in mine)
    return out
