"""How the per-image passes scale: finished and crashed jobs of 110,320 to millions of LILA-shaped images.

``python -m bench.scale --sizes 110320,330000,1000000 [--workdir DIR] [--repeats 1]`` builds (or reuses,
under ``--workdir``) a finished job and a crashed one per size (bench/scale_data.py: no server, no
planning), then measures with the real ``sci-fetch`` CLI, each in its own process (wall, CPU of its
tree, peak RSS): the full-path resume (COCO file touched, so the fingerprint differs), the quick check
(the same command again), ``status``, ``verify``; in this process: failures.csv with 100,000 failed
rows (on a copy of the manifest), and the time until the manifest hands out the first pending task of
the crashed job. The crashed job's download points at a local listener that only notes when the first
connection arrives: the time from start to that connection is the time to the first new GET.
Downloads point at dead endpoints, so any request fails: a resume must print "0 S3 requests".

Prints a table per size, the log-log slope from the smallest to the largest size for every pass, the
targets met / not met and a 7M extrapolation with the manifest's size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.proc import run_measured
from bench.scale_data import MANIFEST, build
from sci_fetch.engine import feed, quick
from sci_fetch.manifest.models import State
from sci_fetch.manifest.report import write_failures
from sci_fetch.manifest.store import Manifest
from sci_fetch.settings import load_settings

FAILED_ROWS = 100_000
LILA_LARGEST = 7_100_000
# (pass, per-million-images wall target in seconds or None)
TARGETS = {"quick": 10.0, "full": 30.0}
RSS_TARGET_MB = 250.0
FIRST_GET_TARGET = 5.0


@dataclass
class Figures:
    """One size's figures: pass -> (wall s, CPU s), peak RSS per pass in MB, and the rest."""

    images: int
    times: dict[str, tuple[float, float]] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)
    manifest_bytes: int = 0
    first_get: float | None = None
    first_get_planned: float | None = None  # the same crash without the feed (what main did before)
    first_get_checked: float | None = None  # with the feed and the default space check on (its HEADs first)
    first_request_checked: float | None = None  # the same run's first request of any kind (a space-check HEAD)
    requests: dict[str, str] = field(default_factory=dict)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCI_FETCH_", "AWS_PROFILE"))}
    env.update(AWS_ACCESS_KEY_ID="unused", AWS_SECRET_ACCESS_KEY="unused", AWS_EC2_METADATA_DISABLED="true")
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sci_fetch", *args]


def _download(coco: Path, out: Path, endpoint: str, space_check: bool = False) -> list[str]:
    return _cli(
        "download", str(coco), "--output", str(out), "--bucket", "bench-bucket", "--endpoint-url", endpoint,
        "--profile", "", "--progress", "off", *([] if space_check else ["--no-space-check"]),
    )  # fmt: skip


def _dead_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _job(workdir: Path, n: int, crashed: bool) -> tuple[Path, Path]:
    folder = workdir / f"{'crashed' if crashed else 'finished'}-{n}"
    coco, out = folder / "job.json", folder / "images"
    if not (out / MANIFEST).is_file():
        shutil.rmtree(folder, ignore_errors=True)
        started = time.monotonic()
        build(folder, n, pending_every=10 if crashed else None, tail=crashed)
        print(f"  built {folder.name} in {time.monotonic() - started:.0f}s", flush=True)
    return coco, out


def _measure(fig: Figures, name: str, cmd: list[str], cwd: Path, ok: tuple[int, ...] = (0,)) -> None:
    m = run_measured(cmd, env=_env(), cwd=cwd, log_prefix=cwd / f"bench-{name}")
    if m.returncode not in ok:
        raise SystemExit(f"{name}: exit {m.returncode}\n{m.stdout[-1500:]}\n{m.stderr[-1500:]}")
    fig.times[name] = (m.wall, m.cpu)
    fig.rss[name] = m.maxrss_mb
    found = [line for line in m.stdout.splitlines() if "S3 requests" in line]
    if found:
        fig.requests[name] = found[-1].strip()
    print(f"  {name}: {m.wall:.2f}s wall, {m.cpu:.2f}s CPU, peak RSS {m.maxrss_mb:.0f} MB", flush=True)


def finished_passes(fig: Figures, coco: Path, out: Path, repeats: int) -> None:
    """Full path, quick check, status, verify over a finished job; the fastest of ``repeats`` counts."""
    cmd = _download(coco, out, _dead_endpoint())
    best: dict[str, tuple[float, float]] = {}
    for _ in range(repeats):
        os.utime(coco)  # a new mtime: the fingerprint differs, so the full path
        _measure(fig, "full", cmd, out.parent)
        _measure(fig, "quick", cmd, out.parent)
        _measure(fig, "status", _cli("status", str(out)), out.parent)
        _measure(fig, "verify", _cli("verify", str(out)), out.parent)
        for name in ("full", "quick", "status", "verify"):
            best[name] = min(best.get(name, fig.times[name]), fig.times[name])
    fig.times.update(best)
    fig.manifest_bytes = (out / MANIFEST).stat().st_size


def failures_pass(fig: Figures, out: Path) -> None:
    """failures.csv of a run with 100,000 failed images, spread through the manifest (on a copy)."""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        copy = Path(tmp) / "manifest.sqlite"
        shutil.copyfile(out / MANIFEST, copy)
        manifest = Manifest(copy)
        try:
            run_id = manifest._db.execute("SELECT MAX(run_id) FROM images").fetchone()[0]  # the full path's run
            step = max(1, fig.images // FAILED_ROWS)
            ids = [r[0] for r in manifest._db.execute("SELECT image_id FROM images").fetchall()][::step]
            manifest._db.executemany(
                "UPDATE images SET state = 'failed', last_error = 'HTTP 500 InternalError after 5 attempts' "
                "WHERE image_id = ?",
                [(i,) for i in ids[:FAILED_ROWS]],
            )
            wall, cpu = time.perf_counter(), time.process_time()
            written = write_failures(manifest, run_id, Path(tmp) / "failures.csv")
            fig.times["failures.csv"] = (time.perf_counter() - wall, time.process_time() - cpu)
        finally:
            manifest.close()
    print(f"  failures.csv: {written:,} rows in {fig.times['failures.csv'][0]:.2f}s", flush=True)


def first_pending(fig: Figures, out: Path) -> None:
    """Time until the manifest hands out the crashed job's first pending row (the feed a crash resume uses)."""
    wall, cpu = time.perf_counter(), time.process_time()
    manifest = Manifest(out / MANIFEST, readonly=True)
    try:
        first = next(iter(manifest.rows([State.pending])), None)
    finally:
        manifest.close()
    fig.times["first pending row"] = (time.perf_counter() - wall, time.process_time() - cpu)
    print(f"  first pending row {first.image_id if first else None}: {fig.times['first pending row'][0]:.3f}s")


def crashed_on(coco: Path, out: Path, endpoint: str | None) -> None:
    """Make the crashed job's manifest say its runs ran on these settings (a crash by this sci-fetch writes
    that at its start, so its next run has the feed), or, with no endpoint, that they did not (an older
    sci-fetch's crash: no feed, the whole COCO file is planned first).

    Written with sqlite3 itself, not Manifest: a writable Manifest would bring the file to this tree's schema,
    and an older tree of an interleaved pair (``--trees``) refuses a newer schema."""
    db = sqlite3.connect(out / MANIFEST, isolation_level=None)
    try:
        if endpoint is None:
            db.execute("DELETE FROM meta WHERE name = ?", (feed.META,))
            return
        settings = load_settings(
            use_files=False,
            overrides={"coco": coco, "output": out, "bucket": "bench-bucket", "endpoint_url": endpoint, "profile": ""},
        )
        runs = [r[0] for r in db.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()]
        note = json.dumps({"fingerprint": quick.fingerprint(settings), "runs": runs[-20:]})
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (feed.META, note))
    finally:
        db.close()


def first_get(fig: Figures, coco: Path, out: Path, use_feed: bool = True, limit: float = 300.0) -> None:
    """Seconds from the start of a crashed job's resume to its first connection to the S3 endpoint."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(limit)
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        crashed_on(coco, out, endpoint if use_feed else None)
        log = open(out.parent / "bench-first-get.out", "wb")  # noqa: SIM115 - closed below
        started = time.perf_counter()
        proc = subprocess.Popen(
            _download(coco, out, endpoint), env=_env(), cwd=out.parent, stdout=log, stderr=log,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            conn, _ = listener.accept()
            seconds: float | None = time.perf_counter() - started
            conn.close()
        except TimeoutError:
            seconds = None
        finally:
            os.killpg(proc.pid, 9)
            proc.wait()
            log.close()
    if use_feed:
        fig.first_get = seconds
    else:
        fig.first_get_planned = seconds
    shown = f"{seconds:.2f}s" if seconds is not None else f"none within {limit:.0f}s"
    print(f"  crash resume ({'feed' if use_feed else 'no feed: an older crash'}), first GET after {shown}", flush=True)


class _Answers(BaseHTTPRequestHandler):
    """Answers a space check's HEADs as S3 would for a 100 KB object, and notes the first request of each kind."""

    protocol_version = "HTTP/1.1"
    seen: dict[str, float]  # "any" / "GET" -> perf_counter of the first such request (set on the subclass)

    def _note(self) -> None:
        now = time.perf_counter()
        self.seen.setdefault("any", now)
        if self.command == "GET" and self.path.strip("/").count("/") >= 1:  # /bucket/key: an object's GET
            self.seen.setdefault("GET", now)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._note()
        self.send_response(200)
        for name, value in (
            ("Content-Length", "100000"),
            ("ETag", '"0123456789abcdef0123456789abcdef"'),
            ("Last-Modified", "Tue, 01 Dec 2026 00:00:00 GMT"),
            ("Content-Type", "image/jpeg"),
        ):
            self.send_header(name, value)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._note()
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the client opens --concurrency connections at once: no SYN may wait for a retry

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the download is killed at its first GET: its connections are reset, which is no news


def first_get_checked(fig: Figures, coco: Path, out: Path, limit: float = 300.0) -> None:
    """A crashed job's resume with the feed and the DEFAULT space check on: seconds from start to its first
    request of any kind (a HEAD of the check) and to its first GET of an object (what issue 20 times)."""
    seen: dict[str, float] = {}
    handler = type("Answers", (_Answers,), {"seen": seen})
    server = _Listener(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    crashed_on(coco, out, endpoint)
    log = open(out.parent / "bench-first-get-checked.out", "wb")  # noqa: SIM115 - closed below
    started = time.perf_counter()
    proc = subprocess.Popen(
        _download(coco, out, endpoint, space_check=True), env=_env(), cwd=out.parent, stdout=log, stderr=log,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        while "GET" not in seen and proc.poll() is None and time.perf_counter() - started < limit:
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
        log.close()
        server.shutdown()
        server.server_close()
    fig.first_request_checked = seen["any"] - started if "any" in seen else None
    fig.first_get_checked = seen["GET"] - started if "GET" in seen else None
    print(
        f"  crash resume (feed, space check on): first request after {_fmt(fig.first_request_checked)}s, "
        f"first GET of an object after {_fmt(fig.first_get_checked)}s",
        flush=True,
    )


def slope(small: Figures, large: Figures, name: str, cpu: bool) -> float | None:
    """The log-log slope of a pass's time from the smallest to the largest size (1.0 = linear)."""
    if name not in small.times or name not in large.times or large.images == small.images:
        return None
    a, b = small.times[name][cpu], large.times[name][cpu]
    if a <= 0 or b <= 0:
        return None
    return math.log(b / a) / math.log(large.images / small.images)


def _mark(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(figs: list[Figures]) -> None:
    """Per size, then the slopes, the targets and the 7M extrapolation."""
    names = sorted(
        {n for f in figs for n in f.times}, key=lambda n: list(figs[0].times).index(n) if n in figs[0].times else 99
    )
    print("\npass                | " + " | ".join(f"{f.images:>22,}" for f in figs) + " | slope wall | slope CPU")
    for name in names:
        cells = [
            f"{f.times[name][0]:8.2f}s ({f.times[name][1]:7.2f} CPU)" if name in f.times else " " * 22 for f in figs
        ]
        sw, sc = slope(figs[0], figs[-1], name, False), slope(figs[0], figs[-1], name, True)
        print(f"{name:<20}| " + " | ".join(cells) + f" | {_fmt(sw):>10} | {_fmt(sc):>9}")
    print("peak RSS MB          | " + " | ".join(f"{max(f.rss.values(), default=0):22.0f}" for f in figs))
    print("manifest bytes/image | " + " | ".join(f"{f.manifest_bytes / f.images:22.0f}" for f in figs))
    print("first GET, feed s    | " + " | ".join(f"{_fmt(f.first_get):>22}" for f in figs))
    print("first GET, no feed s | " + " | ".join(f"{_fmt(f.first_get_planned):>22}" for f in figs))
    print("first GET, checked s | " + " | ".join(f"{_fmt(f.first_get_checked):>22}" for f in figs))
    print("first req, checked s | " + " | ".join(f"{_fmt(f.first_request_checked):>22}" for f in figs))
    targets(figs)


def _fmt(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def targets(figs: list[Figures]) -> None:
    small, large = figs[0], figs[-1]
    for name in large.times:
        s = slope(small, large, name, True)
        if s is not None:
            print(f"target slope <= 1.1 (CPU) for {name}: {s:.2f} {_mark(s <= 1.1)}")
    for name, per_million in TARGETS.items():
        if name in large.times:
            wall, cpu = (t / large.images * 1e6 for t in large.times[name])
            print(
                f"target {name} <= {per_million:.0f} s per million images: {wall:.1f} s wall "
                f"{_mark(wall <= per_million)}, {cpu:.1f} s CPU {_mark(cpu <= per_million)}"
            )
    peak = max((max(f.rss.values(), default=0.0) for f in figs), default=0.0)
    if peak:
        print(f"target peak RSS < {RSS_TARGET_MB:.0f} MB: {peak:.0f} MB {_mark(peak < RSS_TARGET_MB)}")
    for what, gets in (("", [f.first_get for f in figs]), (" (space check on)", [f.first_get_checked for f in figs])):
        if any(g is not None for g in gets):
            ok = all(g is not None and g <= FIRST_GET_TARGET for g in gets)
            print(f"target first GET of a crashed job{what} <= {FIRST_GET_TARGET:.0f} s at every size: {_mark(ok)}")
    for name in ("quick", "full", "verify", "status", "failures.csv"):
        s = slope(small, large, name, True)
        if s is not None and name in large.times:
            guess = large.times[name][1] * (LILA_LARGEST / large.images) ** s
            print(f"7.1M images, {name}: about {guess:.0f} s CPU (CPU slope {s:.2f} from {large.images:,})")
    if large.manifest_bytes:
        print(f"7.1M images: manifest about {large.manifest_bytes / large.images * LILA_LARGEST / 1e9:.2f} GB")


def run_size(workdir: Path, n: int, repeats: int, parts: set[str]) -> Figures:
    fig = Figures(n)
    print(f"{n:,} images", flush=True)
    if parts & {"finished", "failures"}:  # the crash part alone needs no finished job
        coco, out = _job(workdir, n, crashed=False)
        if "finished" in parts:
            finished_passes(fig, coco, out, repeats)
        if "failures" in parts:
            failures_pass(fig, out)
        fig.manifest_bytes = (out / MANIFEST).stat().st_size
    if "crash" in parts:
        coco, out = _job(workdir, n, crashed=True)
        first_pending(fig, out)
        first_get(fig, coco, out, use_feed=False)
        first_get(fig, coco, out, use_feed=True)
        first_get_checked(fig, coco, out)
    return fig


def run_scale(sizes: str, workdir: Path, repeats: int = 1) -> dict[str, object]:
    """The scale part of ``python -m bench``: every pass at every size, printed, and returned for the JSON."""
    figs = [
        run_size(workdir, n, repeats, {"finished", "failures", "crash"})
        for n in sorted(int(s) for s in sizes.split(","))
    ]
    report(figs)
    return {"sizes": [asdict(f) for f in figs]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="110320,330000", help="comma-separated image counts (default: 110320,330000)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the built jobs here and reuse them (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each CLI pass; the fastest counts")
    parser.add_argument("--parts", default="finished,failures,crash", help="finished, failures, crash")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="sci-fetch-scale-") as tmp:
        workdir = args.workdir or Path(tmp)
        figs = [run_size(workdir, n, args.repeats, parts) for n in sizes]
    report(figs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
