"""Run one tool as a child process and measure it: wall time, CPU of its whole process tree, peak RSS.

CPU comes from ``wait4`` on the child: Linux adds every descendant the child waited for to its
rusage, so the figure covers the tool's whole process tree and nothing else (the S3 server and the
latency proxy are other processes, measured separately with :class:`CpuWatch`).

Peak RSS does NOT come from ``ru_maxrss``: Linux carries the high-water mark of the address space a
child had before ``exec`` into it, and that is this (large) Python process's, so every tool would
show at least the benchmark's own RSS. Instead each process of the tree has its ``VmHWM`` (the
kernel's own high-water mark of its resident set, reset at exec) read every 0.1 s; the peak is the
sum over the tree's processes of their last-seen high-water marks (exact for one-process tools, an
upper bound for a tree), or the highest RSS sampled if that is higher (the kernel's per-CPU RSS
counters make the two differ by a few MB).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class Measured:
    cmd: list[str]
    wall: float
    user: float
    sys: float
    maxrss_mb: float
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB), when sampled

    @property
    def cpu(self) -> float:
        return self.user + self.sys


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _tree_rss_mb(proc: psutil.Process) -> float:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 1e6


def _hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_measured(
    cmd: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log_prefix: Path,
    timeout: float = 3600.0,
    sample_rss: float | None = None,
) -> Measured:
    """Run ``cmd`` to its end; stdout/stderr go to ``<log_prefix>.out/.err`` (their tails are kept).

    ``sample_rss``: also poll the tree's RSS every so many seconds (for a memory curve)."""
    out_path, err_path = log_prefix.with_suffix(".out"), log_prefix.with_suffix(".err")
    samples: list[tuple[float, float]] = []
    peaks: dict[int, float] = {}
    tree: list[int] = []
    timed_out = False
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        popen = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
        )
        stop = threading.Event()

        def watchdog() -> None:
            nonlocal timed_out
            try:
                ps = psutil.Process(popen.pid)
            except psutil.Error:
                return
            next_sample = 0.0
            tick = 0
            while not stop.wait(0.1):
                tick += 1
                pids = [popen.pid]
                if tick % 10 == 1:  # look for new descendants once a second
                    try:
                        tree[:] = [c.pid for c in ps.children(recursive=True)]
                    except psutil.Error:
                        pass
                for pid in pids + tree:
                    hwm = _hwm_mb(pid)
                    if hwm is not None:
                        peaks[pid] = max(peaks.get(pid, 0.0), hwm)
                now = time.perf_counter() - started
                if sample_rss and now >= next_sample:
                    samples.append((round(now, 2), round(_tree_rss_mb(ps), 1)))
                    next_sample = now + sample_rss
                if now > timeout:
                    timed_out = True
                    try:
                        os.killpg(popen.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    return

        watcher = threading.Thread(target=watchdog, daemon=True)
        watcher.start()
        _pid, status, usage = os.wait4(popen.pid, 0)
        wall = time.perf_counter() - started
        stop.set()
        watcher.join()
        popen.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        cmd=cmd,
        wall=wall,
        user=usage.ru_utime,
        sys=usage.ru_stime,
        maxrss_mb=max([sum(peaks.values())] + [mb for _t, mb in samples]),
        returncode=popen.returncode,
        stdout=_tail(out_path),
        stderr=_tail(err_path),
        timed_out=timed_out,
        rss_samples=samples,
    )


class CpuWatch:
    """CPU seconds used by other processes (the S3 server, the proxy) between start() and stop()."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.procs = {}
        for name, pid in pids.items():
            if pid is None:
                continue
            try:
                self.procs[name] = psutil.Process(pid)
            except psutil.Error:
                pass
        self._start: dict[str, float] = {}

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        total = 0.0
        try:
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return total

    def start(self) -> None:
        self._start = {name: self._cpu(p) for name, p in self.procs.items()}

    def stop(self) -> dict[str, float]:
        return {name: round(self._cpu(p) - self._start.get(name, 0.0), 3) for name, p in self.procs.items()}
