"""Where sci_fetch's CPU goes: one loopback download under py-spy, folded into tables.

py-spy samples every thread (``--threads``) with native frames (``--native``: MD5 in libcrypto,
the ``send``/``recv``/``write``/``fsync`` calls, ``memcpy`` and the garbage collector show as what
they are). In native mode py-spy cannot tell an idle thread from a busy one, so samples whose
innermost frames wait (a lock, a queue, the GIL, ``epoll_wait``) are dropped here: what is left is
CPU. Each CPU sample is put in one area by walking its stack from the innermost frame out; sci_fetch
frames are matched with the text of their source line (``partial.py:84  self._md5.update(data)``).

Multiplying an area's share by sci_fetch's measured CPU per 1,000 objects (from the throughput
runs) gives its CPU milliseconds per object.
"""

from __future__ import annotations

import collections
import linecache
import re
import shutil
import subprocess
from pathlib import Path

from bench.data import Dataset
from bench.tools import Job, SciFetch, Target, binary, verify

REPO = Path(__file__).resolve().parent.parent

_WAIT = re.compile(
    r"PyThread_acquire_lock_timed|pthread_cond_(timed)?wait|sem_(timed)?wait|epoll_wait|epoll_pwait|"
    r"\bselect\b|\bpoll \(|take_gil|futex|nanosleep|__GI___poll|do_futex_wait"
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")

# (area, pattern on a frame's text, which includes the source line of sci_fetch frames); innermost match wins.
_RULES = [
    (
        "MD5 (hashlib)",
        re.compile(r"MD5_Update|EVP_update|EVP_hash|_hashopenssl|«[^»]*md5\.update\(|«[^»]*\.hexdigest\("),
    ),
    ("fsync", re.compile(r"\bfsync\b")),
    ("file write syscalls", re.compile(r"^write \(libc|_io_FileIO_write|_bufferedwriter|os_write")),
    ("socket send/recv syscalls", re.compile(r"^(send|recv|sendto|recvfrom|__send|__recv)\b|sock_send|sock_recv")),
    (
        "open/unlink/rename/stat/mkdir syscalls",
        re.compile(
            r"^(unlink|open64|openat|rename|renameat|fstatat64|__xstat|mkdir|close)\b|os_unlink|os_open|os_replace|os_stat|os_mkdir|os_close"
        ),
    ),
    ("garbage collector", re.compile(r"gc_collect|collect_generation")),
    (
        "buffer copies (bytearray +=, bytes(...))",
        re.compile(r"«[^»]*(pending|bytes\(|_buf \+=|\+= data|\+= chunk)[^»]*»"),
    ),
    ("SQLite manifest", re.compile(r"sqlite3|_sqlite|manifest/store\.py")),
    ("COCO reading and planning (ijson, pydantic)", re.compile(r"ijson|pydantic|coco/source|coco/models|keys/mapping")),
    (
        "SigV4 signing",
        re.compile(r"botocore/auth\.py|botocore/signers\.py|aiobotocore/signers\.py|\bhmac\b|_hashlib_HMAC|sha256"),
    ),
    (
        "endpoint resolution (botocore rule engine)",
        re.compile(r"botocore/endpoint_provider\.py|botocore/regions\.py|aiobotocore/regions\.py"),
    ),
    ("response parsing (botocore parsers)", re.compile(r"botocore/parsers\.py|aiobotocore/parsers\.py")),
    (
        "other botocore / aiobotocore (events, request building)",
        re.compile(r"botocore/|aiobotocore/|aioboto3/|s3transfer/"),
    ),
    ("aiohttp (HTTP client)", re.compile(r"aiohttp/|multidict|yarl|_http_parser")),
    ("tenacity retry wrapper", re.compile(r"tenacity/")),
    ("aiofiles / to_thread hand-offs", re.compile(r"aiofiles/|concurrent/futures/|asyncio/threads\.py")),
    ("progress, stats, logging", re.compile(r"engine/progress|engine/stats|observe/|logging/")),
    ("asyncio event loop", re.compile(r"asyncio/")),
]
_IMPORT = re.compile(r"_find_and_load|_call_with_frames_removed|_compile_bytecode|<frozen importlib")


def _source_line(file: str, line: str | None) -> str:
    if not line:
        return ""
    for base in (REPO, REPO / "sci_fetch"):
        path = base / file
        if path.is_file():
            return linecache.getline(str(path), int(line)).strip()
    return ""


def _annotate(frame: str) -> str:
    """A sci_fetch frame gets its source line appended, «like this», so rules can see what it does."""
    m = _FRAME.match(frame)
    if m and m.group("file").startswith("sci_fetch/") and m.group("line"):
        text = _source_line(m.group("file"), m.group("line"))
        if text:
            return f"{frame} «{text}»"
    return frame


def _short(frame: str) -> str:
    """A native frame without its address: '0x7f.. (libc.so.6)' -> 'libc.so.6 (unnamed)'."""
    m = re.match(r"^0x[0-9a-f]+ \((.+)\)$", frame)
    return f"{m.group(1)} (unnamed)" if m else frame


def summarize(raw: Path, top: int = 25) -> dict:
    area_counts: collections.Counter[str] = collections.Counter()
    area_loop: collections.Counter[str] = collections.Counter()  # the part of each area on the event loop's thread
    self_counts: collections.Counter[str] = collections.Counter()
    sci_incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    annotated: dict[str, str] = {}
    total = idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        if any(_WAIT.search(f) for f in frames[-5:]):
            idle += n
            continue
        total += n
        thread = frames[0].split(":", 1)[-1].strip() if frames[0].startswith("thread") else "?"
        threads[re.sub(r"_\d+$", "_N", thread)] += n
        frames = [annotated.setdefault(f, _annotate(f)) for f in frames]
        # self: the innermost Python frame, and the native function under it if any
        py_index = next(
            (i for i in range(len(frames) - 1, -1, -1) if ".py" in frames[i] or "<frozen" in frames[i]), None
        )
        if py_index is not None:
            native = frames[py_index + 1 :]
            leaf = (
                re.sub(r":\d+\)", ")", frames[py_index]) if "sci_fetch/" not in frames[py_index] else frames[py_index]
            )
            self_counts[leaf + (f"  →  {_short(native[-1])}" if native else "")] += n
        seen = set()
        for f in frames:
            m = _FRAME.match(f.split(" «")[0])
            if m and m.group("file").startswith("sci_fetch/") and m.group("func") not in seen:
                seen.add(m.group("func"))
                sci_incl[f"{m.group('func')} ({m.group('file')})"] += n
        if any(_IMPORT.search(f) for f in frames):
            area = "imports and start-up"
        else:
            area = next(
                (
                    hit
                    for f in reversed(frames)
                    if (hit := next((name for name, pattern in _RULES if pattern.search(f)), None))
                ),
                "other (interpreter, unattributed)",
            )
        area_counts[area] += n
        if thread == "MainThread":
            area_loop[area] += n

    def pct(c: int) -> float:
        return round(100 * c / total, 1) if total else 0.0

    return {
        "cpu_samples": total,
        "idle_samples_dropped": idle,
        "areas_pct": {k: pct(v) for k, v in area_counts.most_common()},
        "areas_on_loop_pct": {k: pct(area_loop[k]) for k, _ in area_counts.most_common()},
        "self_top": [{"frame": f, "pct": pct(c)} for f, c in self_counts.most_common(top)],
        "sci_fetch_inclusive": [{"frame": f, "pct": pct(c)} for f, c in sci_incl.most_common(top)],
        "threads_pct": {k: pct(v) for k, v in threads.most_common(8)},
    }


def run_profile(
    *,
    s3,
    bucket: str,
    dataset: Dataset,
    coco: Path,
    concurrency: int,
    workdir: Path,
    say,
    rate: int = 100,
    extra: list[str] | None = None,
) -> dict:
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out = workdir / "profile-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tool = SciFetch(extra=extra or [])
    job = Job(objects=dataset.objects, coco=coco, variant=dataset.variant, concurrency=concurrency, workdir=workdir)
    target = Target(s3.endpoint_url, bucket, s3.access_key, s3.secret_key)
    raw = workdir / "profile.raw.txt"
    cmd = [
        binary("py-spy"),
        "record",
        "--native",
        "--threads",
        "--format",
        "raw",
        "--rate",
        str(rate),
        "--output",
        str(raw),
        "--",
        *tool.command(job, target, out),
    ]
    proc = subprocess.run(cmd, env=tool.env(target), cwd=workdir, capture_output=True, text=True)
    (logs / "profile.err").write_text(proc.stderr)
    if not raw.exists():
        say(f"[profile] py-spy failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
        return {"error": proc.stderr.strip()[-1000:]}
    ok, _ = verify(tool, out, dataset.objects)
    shutil.rmtree(out, ignore_errors=True)
    result = summarize(raw)
    result.update(
        objects=len(dataset.objects),
        verified=ok,
        exit=proc.returncode,
        rate_hz=rate,
        command=" ".join(cmd[:9]) + " -- sci-fetch download ...",
    )
    keep = workdir.parent / "bench-profile.raw.txt"
    try:
        shutil.copy(raw, keep)
        result["raw_stacks"] = str(keep)
    except OSError:
        pass
    say(
        f"[profile] {result['cpu_samples']} CPU samples; by area: "
        + ", ".join(f"{k} {v}%" for k, v in list(result["areas_pct"].items())[:8])
    )
    return result
