"""What grows during a download: the real CLI's memory by object type, by allocation site and by mapping (issue 20).

    python -m bench.trace_growth --images 110320 --workdir DIR [--every 15] [--frames 1] [--top 25]
    python -m bench.trace_growth --workdir DIR --watch PID --smaps-log LOG [--every 30]   # any running process
    python -m bench.trace_growth --workdir DIR --grown --smaps-log LOG

The first runs the same download as ``bench.download_scale --parts download`` (the job's COCO file under
``DIR/download-N/`` is reused or written, bench/fast_s3.py serves it), but the CLI runs under
``python -m bench.trace_growth --child``: tracemalloc is started (``--frames`` > 0) before sci_fetch is
imported, and a thread writes every ``--every`` seconds (and at exit) the counts of the objects the garbage
collector tracks, by type, and a tracemalloc snapshot, with the process's RSS in the file names. Then the
first snapshot past ``--after-mb`` is diffed against the last. ``--frames 0`` keeps only the type counts (the
run keeps its speed); with tracemalloc on it runs 3-4 times slower. The exit snapshot is taken after the
pipeline unfreezes the start-up objects (engine/pipeline.py ``quiet_gc``): compare the ones before it.

tracemalloc sees only Python's allocator. ``--watch`` logs a running process's RSS by mapping
(/proc/PID/smaps) instead: the heap, each anonymous mapping (named by its end, as mmap grows them down:
Python's arenas, malloc's thread arenas) and each file, so growth Python cannot see (SQLite, malloc) shows.
No time is measured here.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import runpy
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

_ENV_DIR = "BENCH_TRACEMALLOC_DIR"
_ENV_EVERY = "BENCH_TRACEMALLOC_EVERY"
_ENV_FRAMES = "BENCH_TRACEMALLOC_FRAMES"


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _dump(folder: Path, number: int) -> None:
    """One snapshot, its RSS and traced total in its name (read back without loading), and beside it the
    counts of the objects the garbage collector tracks, by type (cheap; also without tracemalloc)."""
    rss, traced = _rss_mb(), tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    stem = f"snap-{number:04d}-rss{rss:.1f}-traced{traced / 2**20:.1f}-t{time.monotonic():.0f}"
    types = Counter(type(o).__qualname__ for o in gc.get_objects())
    counts = {"gc_count": gc.get_count(), "frozen": gc.get_freeze_count(), "types": dict(types.most_common(60))}
    (folder / f"{stem}.json").write_text(json.dumps(counts))
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(str(folder / f"{stem}.pickle"))


def child(argv: list[str]) -> None:
    """The CLI itself, with tracemalloc on and a snapshot thread: run as ``python -m sci_fetch`` would be."""
    folder, every = Path(os.environ[_ENV_DIR]), float(os.environ.get(_ENV_EVERY, "15"))
    frames = int(os.environ.get(_ENV_FRAMES, "1"))
    if frames > 0:
        tracemalloc.start(frames)
    folder.mkdir(parents=True, exist_ok=True)
    count = iter(range(10**6))
    lock = threading.Lock()

    def snapshot() -> None:
        with lock:
            _dump(folder, next(count))

    def loop() -> None:
        while True:
            time.sleep(every)
            snapshot()

    threading.Thread(target=loop, daemon=True, name="tracemalloc-snapshots").start()
    atexit.register(snapshot)
    sys.argv = ["sci_fetch", *argv]
    runpy.run_module("sci_fetch", run_name="__main__", alter_sys=True)


def mappings(pid: int) -> dict[str, int]:
    """RSS in kB of a process by mapping (/proc/PID/smaps): the heap, each anonymous one by its start, files by
    name. Growth that tracemalloc cannot see (SQLite's caches, malloc's arenas, a mapped -shm) shows here."""
    found: dict[str, int] = {}
    name = ""
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            head = line.split()
            if "-" in head[0] and not line.startswith(("Rss", "Pss")) and not head[0].endswith(":"):
                name = head[5] if len(head) > 5 else f"[anon ..{head[0].split('-')[1]}]"
            elif head[0] == "Rss:":
                found[name] = found.get(name, 0) + int(head[1])
    return found


def watch(pid: int, every: float, log: Path) -> None:
    """Until the process ends: a JSON line of its RSS by mapping every ``every`` seconds."""
    with open(log, "a") as out:
        while Path(f"/proc/{pid}").exists():
            try:
                row = {"t": round(time.time(), 1), "rss": mappings(pid)}
            except OSError:
                return
            out.write(json.dumps(row) + "\n")
            out.flush()
            time.sleep(every)


def grown_mappings(log: Path, top: int) -> None:
    """The mappings whose RSS grew most from the first line of ``log`` to the last."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    first, last = rows[0]["rss"], rows[-1]["rss"]
    print(f"  RSS {sum(first.values()) / 1024:.1f} -> {sum(last.values()) / 1024:.1f} MB "
          f"over {rows[-1]['t'] - rows[0]['t']:.0f}s; grown most:", flush=True)  # fmt: skip
    grown = sorted(((last.get(k, 0) - first.get(k, 0), k) for k in set(first) | set(last)), reverse=True)
    for kb, name in grown[:top]:
        print(f"    {kb / 1024:+8.1f} MB {name} (now {last.get(name, 0) / 1024:.1f} MB)", flush=True)


def _rss_of(path: Path) -> float:
    return float(path.name.split("-rss")[1].split("-")[0])


def type_growth(snaps: list[Path], top: int) -> None:
    """The object types whose count grew most from the first snapshot past the space check to the last."""
    first, last = (json.loads(s.read_text()) for s in (snaps[0], snaps[-1]))
    grown = Counter(last["types"])
    grown.subtract(first["types"])
    print(f"  gc-tracked objects by type, {snaps[0].stem[:9]} -> {snaps[-1].stem[:9]}:", flush=True)
    for name, more in grown.most_common(top):
        print(f"    {more:+9d} {name} (now {last['types'].get(name, 0)})", flush=True)
    print(f"  gc counts {first['gc_count']} -> {last['gc_count']}, frozen {last['frozen']}", flush=True)


def diff(folder: Path, top: int, after_mb: float) -> None:
    """The last snapshot against the first one whose RSS is past ``after_mb`` (the space check's peak)."""
    counted = sorted(folder.glob("snap-*.json"))
    print("  snapshots (number, RSS MB, traced MB):", flush=True)
    for s in counted:
        parts = s.stem.split("-")
        print(f"    {parts[1]} {parts[2][3:]} {parts[3][6:]}", flush=True)
    counted = [s for s in counted if _rss_of(s) >= after_mb] or counted
    type_growth(counted, top)
    snaps = sorted(folder.glob("snap-*.pickle"))
    if not snaps:
        return
    later = [s for s in snaps if _rss_of(s) >= after_mb] or snaps
    first, last = tracemalloc.Snapshot.load(str(later[0])), tracemalloc.Snapshot.load(str(snaps[-1]))
    print(f"  diff {later[0].name} -> {snaps[-1].name}", flush=True)
    for key in ("lineno", "traceback"):
        print(f"  top {top} by {key}:", flush=True)
        for stat in last.compare_to(first, key)[:top]:
            print(f"    {stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+9d} blocks", flush=True)
            lines = stat.traceback.format() if key == "traceback" else [str(stat.traceback)]
            for line in lines:
                print(f"        {line.strip()}", flush=True)


def run(n: int, workdir: Path, every: float, frames: int) -> Path:
    """The download under tracemalloc against the fast server; returns the snapshots' folder."""
    from bench.download_scale import BUCKET, credentials, sized_coco, states
    from bench.fast_s3 import FastS3

    folder = workdir / f"download-{n}"
    coco, out, snaps = sized_coco(folder, n), folder / "images-traced", folder / "tracemalloc"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(snaps, ignore_errors=True)
    env = credentials()
    env.update({_ENV_DIR: str(snaps), _ENV_EVERY: str(every), _ENV_FRAMES: str(frames)})
    with FastS3(n, folder / "server-traced.log", BUCKET) as s3:
        args = ["download", str(coco), "--output", str(out), "--bucket", BUCKET, "--endpoint-url", s3.endpoint_url,
                "--profile", ""]  # fmt: skip
        started = time.monotonic()
        with open(folder / "bench-traced.log", "wb") as log:
            code = subprocess.call([sys.executable, "-m", "bench.trace_growth", "--child", *args], env=env,
                                   stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent)  # fmt: skip
    print(f"  traced download: exit {code}, {time.monotonic() - started:.0f}s, manifest {states(out)}", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return snaps


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=110320)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--every", type=float, default=15.0, help="seconds between snapshots")
    parser.add_argument("--frames", type=int, default=1, help="frames kept per allocation; 0: no tracemalloc")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--after-mb", type=float, default=0.0, help="diff from the first snapshot past this RSS")
    parser.add_argument("--diff-only", action="store_true", help="diff the snapshots already there")
    parser.add_argument("--watch", type=int, help="instead: log this PID's RSS by mapping (to --smaps-log)")
    parser.add_argument("--smaps-log", type=Path, help="where --watch writes, and what --grown reads")
    parser.add_argument("--grown", action="store_true", help="instead: which mappings of --smaps-log grew")
    args = parser.parse_args(argv)
    if args.watch is not None or args.grown:
        if args.watch is not None:
            watch(args.watch, args.every, args.smaps_log)
        grown_mappings(args.smaps_log, args.top)
        return 0
    snaps = args.workdir / f"download-{args.images}" / "tracemalloc"
    if not args.diff_only:
        snaps = run(args.images, args.workdir, args.every, args.frames)
    diff(snaps, args.top, args.after_mb)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
