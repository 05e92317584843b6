"""Interleaved old/new pairs of the full-path resume (COCO file touched, 0 requests), for engine/reader.py:

    python -m bench.reader_pairs --job /tmp/scale/w/finished-1000000 --old /tmp/reader/old/tree_launcher.py \
        --pairs 2

Per run: wall, user and sys of the whole tree (``os.wait4``: the reader child is joined, so its CPU is in),
the CPU of its children sampled from /proc (the rest is the parent's), and the peak RSS of the parent and, separately, of its largest child (``VmHWM`` from /proc, sampled every
0.2 s until each ends; /usr/bin/time's ``%M`` is only the max of the two). The load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ARGS = [
    "download",
    "job.json",
    "--output",
    "images",
    "--bucket",
    "bench-bucket",
    "--endpoint-url",
    "http://127.0.0.1:9",
    "--profile",
    "",
    "--progress",
    "off",
    "--no-space-check",
]


def _hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_s(pid: int) -> float | None:
    """utime + stime of one process so far (its own, not its children's)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        pass
    return found


def run_once(job: Path, launcher: list[str]) -> dict[str, object]:
    """One resume; its figures."""
    os.utime(job / "job.json")  # a changed COCO file: the full path, not the quick check
    load = os.getloadavg()[0]
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, *launcher, *ARGS], cwd=job, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    parent_kb, child_kb = 0, 0
    child_cpu: dict[int, float] = {}  # the last CPU seen of each child, sampled until it ends
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        parent_kb = max(parent_kb, _hwm_kb(proc.pid) or 0)
        for child in _children(proc.pid):
            child_kb = max(child_kb, _hwm_kb(child) or 0)
            child_cpu[child] = max(child_cpu.get(child, 0.0), _cpu_s(child) or 0.0)
        time.sleep(0.2)
    wall = time.monotonic() - start
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    requests = [line.strip() for line in output.splitlines() if "S3 requests" in line]
    return {
        "exit": proc.returncode,
        "wall": round(wall, 2),
        "user": round(usage.ru_utime, 2),
        "sys": round(usage.ru_stime, 2),
        "cpu": round(usage.ru_utime + usage.ru_stime, 2),
        "children_cpu": round(sum(child_cpu.values()), 2),  # sampled: up to 0.2 s short
        "parent_cpu": round(usage.ru_utime + usage.ru_stime - sum(child_cpu.values()), 2),
        "parent_peak_mb": round(parent_kb / 1024, 1),
        "child_peak_mb": round(child_kb / 1024, 1),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "summary": requests[-1] if requests else output[-400:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--old", required=True, help="the old tree's tree_launcher.py")
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    for pair in range(args.pairs):
        for name, launcher in (("old", [args.old]), ("new", ["-m", "sci_fetch"])):
            figures = run_once(args.job, launcher)
            print(json.dumps({"pair": pair + 1, "tree": name, **figures}), flush=True)


if __name__ == "__main__":
    main()
