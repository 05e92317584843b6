"""The first new GET of a crashed job, against a real S3 server: SeaweedFS, with the pending objects in it.

A crashed job (bench/scale_data.py via bench.scale: the last run never ended, the last 10 % of the COCO file's
images pending, their files absent) is resumed by the real CLI with its defaults (the space check on) and with
``--no-space-check``; each run is killed once its first image is done, and the job is put back as it was (the
manifest from a copy made right after it was built, the pending images' files removed, the feed's note set for
this server as the crashed run would have left it: bench.scale.crashed_on).

Times from the process start (``time.time()`` just before it is spawned) to:

- the first HEAD and the first GET SeaweedFS received: its own log lines (``weed -v=3``: ``HeadObjectHandler`` /
  ``GetObjectHandler``, stamped to the microsecond by glog, the same wall clock);
- the first file done: the earliest mtime among the pending images' files after the run (a file is written and
  renamed into place whole, so its mtime is when it was done), and the first of them recorded done in the
  manifest (its ``updated_at``; the manifest is written once a second).

SeaweedFS keeps its data under ``<workdir>/seaweed-<n>``: the pending objects are uploaded once (boto3, 16
threads; tiny bodies whose md5 is the id's) with SeaweedFS at its normal log level, which is then restarted
with ``-v=3`` for the runs.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.download_scale import credentials, download_cmd, upload
from bench.proc import _hwm_mb
from bench.scale import _job, crashed_on
from bench.scale_data import MANIFEST, image
from sci_fetch.demo.seaweed import SeaweedS3
from sci_fetch.fs.layout import partial_path

MODES = {"space check on (default)": [], "--no-space-check": ["--no-space-check"]}
LIMIT = 1800.0  # seconds a resume may take to finish its first image before it is called stuck


class LoggingWeed(SeaweedS3):
    """``weed mini`` that logs every S3 request it handles (glog level 3) when ``verbose``."""

    def __init__(self, data_dir: Path, verbose: bool) -> None:
        super().__init__(data_dir, buckets=["bench-bucket"])
        self.verbose = verbose

    def _build_command(self, weed: str) -> list[str]:
        cmd = super()._build_command(weed)
        return [cmd[0], "-v=3", *cmd[1:]] if self.verbose else cmd


@dataclass
class FirstGet:
    mode: str
    images: int
    first_head: float | None
    first_get: float | None
    first_file: float | None
    first_row: float | None
    exit_code: int | None  # None: killed after its first image, as meant
    rss_mb: float = 0.0  # the tree's peak RSS up to its first image done (VmHWM, read just before the kill)
    cpu: float = 0.0  # CPU seconds of the tree up to then (killed about 0.2 s after its first image is recorded)

    def line(self) -> str:
        def fmt(value: float | None) -> str:
            return f"{value:.2f}s" if value is not None else "-"

        return (
            f"  {self.mode}: first HEAD {fmt(self.first_head)}, first GET {fmt(self.first_get)}, first file done "
            f"{fmt(self.first_file)} (in the manifest {fmt(self.first_row)}), peak RSS {self.rss_mb:.0f} MB, {self.cpu:.1f}s CPU in all"
            + (f", exit {self.exit_code} before any image was done" if self.exit_code is not None else "")
        )


def pending_images(n: int) -> range:
    """The crashed job's pending images (bench.scale builds it with the last tenth pending)."""
    return range(n - n // 10, n)


def seed(weed_dir: Path, n: int) -> None:
    """Upload the pending images' objects once (SeaweedFS at its normal log level)."""
    stamp = weed_dir / "seeded"
    if stamp.is_file():
        return
    started = time.monotonic()
    with LoggingWeed(weed_dir, verbose=False) as weed:
        upload(weed, [image(i) for i in pending_images(n)])
    stamp.write_text(f"{len(pending_images(n))}\n")
    print(f"  uploaded {len(pending_images(n)):,} objects in {time.monotonic() - started:.0f}s", flush=True)


def restore(out: Path, pristine: Path, n: int) -> None:
    """The job as its crash left it: the manifest from the copy, no file for a pending image."""
    manifest = out / MANIFEST
    for suffix in ("-wal", "-shm"):
        Path(str(manifest) + suffix).unlink(missing_ok=True)
    shutil.copyfile(pristine, manifest)
    for i in pending_images(n):
        dest = out / image(i).file_name
        dest.unlink(missing_ok=True)
        partial_path(dest).unlink(missing_ok=True)


def first_pending_rowid(manifest: Path) -> int:
    db = sqlite3.connect(f"file:{manifest}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT MIN(rowid) FROM images WHERE state = 'pending'").fetchone()[0])
    finally:
        db.close()


def any_done(manifest: Path, from_rowid: int) -> bool:
    """A pending row recorded done (one range of the state index: cheap to ask twice a second)."""
    try:
        db = sqlite3.connect(f"file:{manifest}?mode=ro", uri=True, timeout=0.5)
        try:
            sql = "SELECT 1 FROM images WHERE state = 'done' AND rowid >= ? LIMIT 1"
            return db.execute(sql, (from_rowid,)).fetchone() is not None
        finally:
            db.close()
    except sqlite3.OperationalError:  # the run holds it for a moment, or has not made its WAL yet
        return False


def tree_usage(pid: int) -> tuple[float, float]:
    """(the kernel's RSS high-water mark in MB, CPU seconds) of ``pid`` and its children, summed."""
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
        cpu = sum(sum(p.cpu_times()[:2]) for p in procs)
    except psutil.Error:
        return 0.0, 0.0
    return sum(_hwm_mb(p.pid) or 0.0 for p in procs), cpu


def logged(log: Path, offset: int, what: str) -> float | None:
    """The wall-clock time of the first glog line after ``offset`` naming ``what`` (``I1202 23:00:06.473876``)."""
    with open(log, "rb") as fh:
        fh.seek(offset)
        for raw in fh:
            if f" {what} ".encode() in raw and raw[:1] == b"I":
                stamp = raw[1:21].decode()
                year = dt.datetime.now().year
                return dt.datetime.strptime(f"{year}{stamp}", "%Y%m%d %H:%M:%S.%f").timestamp()
    return None


def files_done(out: Path, n: int) -> float | None:
    times = []
    for i in pending_images(n):
        try:
            times.append(os.stat(out / image(i).file_name).st_mtime)
        except FileNotFoundError:
            continue
    return min(times, default=None)


def row_done(manifest: Path, from_rowid: int) -> float | None:
    db = sqlite3.connect(f"file:{manifest}?mode=ro", uri=True)
    try:
        sql = "SELECT MIN(updated_at) FROM images WHERE state = 'done' AND rowid >= ?"
        value = db.execute(sql, (from_rowid,)).fetchone()[0]
        return float(value) if value is not None else None
    finally:
        db.close()


def once(weed: LoggingWeed, job: tuple[Path, Path], pristine: Path, n: int, mode: str, tree: str = "") -> FirstGet:
    """One resume of the crashed job, killed when its first image is done. ``tree``: ``name=launcher``, a
    script that runs another tree's sci_fetch with this venv (``python LAUNCHER download ...``), for pairs
    of an older tree and this one in the same session; empty: this tree."""
    coco, out = job
    assert weed.endpoint_url is not None
    restore(out, pristine, n)
    crashed_on(coco, out, weed.endpoint_url)
    rowid, offset = first_pending_rowid(pristine), weed.log_path.stat().st_size
    cmd = download_cmd(coco, out, weed.endpoint_url, *MODES[mode])
    name, _, launcher = tree.partition("=")
    if launcher:
        cmd = [cmd[0], launcher, *cmd[3:]]  # instead of "-m sci_fetch"
    log = open(out.parent / f"bench-crash-{len(MODES[mode])}.out", "wb")  # noqa: SIM115 - closed below
    started = time.time()
    proc = subprocess.Popen(cmd, env=credentials(weed.access_key, weed.secret_key), cwd=out.parent, stdout=log,
                            stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        while proc.poll() is None and not any_done(out / MANIFEST, rowid) and time.time() - started < LIMIT:
            time.sleep(0.2)
    finally:
        (rss, cpu), exit_code = tree_usage(proc.pid), proc.poll()
        if exit_code is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    time.sleep(1.0)  # glog's last lines reach the file
    marks = [logged(weed.log_path, offset, "HeadObjectHandler"), logged(weed.log_path, offset, "GetObjectHandler"),
             files_done(out, n), row_done(out / MANIFEST, rowid)]  # fmt: skip
    label = f"{name}: {mode}" if name else mode
    result = FirstGet(label, n, *[m - started if m is not None else None for m in marks], exit_code, rss, cpu)
    print(result.line(), flush=True)
    return result


def run_crash(workdir: Path, n: int, repeats: int, trees: list[str] | None = None) -> list[FirstGet]:
    """Both modes, alternated, ``repeats`` times, on the crashed job of ``n`` images; with ``trees``
    (``name=launcher`` or ``name=`` for this one) each tree in turn inside each repeat: interleaved pairs."""
    print(f"crashed job of {n:,} images, the last {len(pending_images(n)):,} pending, served by SeaweedFS", flush=True)
    job = _job(workdir, n, crashed=True)
    pristine = job[1].parent / "manifest.pristine"
    if not pristine.is_file():
        shutil.copyfile(job[1] / MANIFEST, pristine)
    weed_dir = workdir / f"seaweed-{n}"
    seed(weed_dir, n)
    results = []
    with LoggingWeed(weed_dir, verbose=True) as weed:
        for _ in range(repeats):
            results += [once(weed, job, pristine, n, mode, tree) for tree in trees or [""] for mode in MODES]
    restore(job[1], pristine, n)
    return results
