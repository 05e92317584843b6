"""A small, fast S3-compatible server for the million-object download: read-only, one bucket, bodies made on demand.

SeaweedFS cannot take a million objects in the time a benchmark has, so ``bench.download_scale`` serves its
LILA-shaped jobs (bench/scale_data.py, ``sized`` bodies of 1-4 KB) from here instead. The object table is the
job's own generator run again: md5 -> image index, so every key of the job's COCO file has its bytes, its
Content-Length and an ETag that is their MD5 (the id's md5 too, as in Animl), and nothing else exists.

It answers what a download sends, path-style, with S3's shapes: HeadBucket (200 with ``x-amz-bucket-region``),
HEAD and GET of a key (200 with Content-Length, ETag, Last-Modified; 404 ``NoSuchKey`` with S3's XML), anything
else 501 ``NotImplemented``. Signatures are not checked. HTTP/1.1 keep-alive on one event loop (uvloop when it
is installed), in its own process so its CPU is not the client's:

    python -m bench.fast_s3 --images 1000000 [--port 0] [--bucket bench-bucket]

prints ``listening on http://127.0.0.1:PORT`` once the table is built, and a JSON line of request counts when
it is stopped (SIGTERM or SIGINT). ``FastS3`` starts and stops it from a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from bench.scale_data import body, images

REGION = "us-west-2"
_KEY = re.compile(r"original/[^/]+:([0-9a-f]{32})-original\.jpg")
_LAST_MODIFIED = "Wed, 02 Dec 2026 00:00:00 GMT"
_MAX_HEAD = 64 * 1024


def object_table(n: int) -> dict[str, int]:
    """md5 -> image index for the ``sized`` job of ``n`` images (about 150 MB at a million)."""
    return {im.md5: im.index for im in images(n, sized=True)}


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


def _error(status: str, code: str, message: str, with_body: bool) -> bytes:
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
        "<RequestId>fast-s3</RequestId></Error>"
    ).encode()
    head = _head(status, {"Content-Type": "application/xml", "Content-Length": str(len(xml))})
    return head + xml if with_body else head


class Store:
    """The answers: a request line in, the bytes of the whole response out; counts what it answered."""

    def __init__(self, table: dict[str, int], bucket: str) -> None:
        self.table = table
        self.bucket = bucket
        self.counts: Counter[str] = Counter()

    def answer(self, method: str, target: str) -> bytes:
        path = unquote(target.split("?", 1)[0]).lstrip("/")
        bucket, _, key = path.partition("/")
        if bucket != self.bucket:
            self.counts["no-bucket"] += 1
            return _error("404 Not Found", "NoSuchBucket", "The specified bucket does not exist", method != "HEAD")
        if not key and method == "HEAD":
            self.counts["head-bucket"] += 1
            return _head("200 OK", {"x-amz-bucket-region": REGION, "Content-Length": "0"})
        if method not in ("GET", "HEAD") or not key:
            self.counts["not-implemented"] += 1
            return _error("501 Not Implemented", "NotImplemented", "read-only server", method != "HEAD")
        return self._object(method, key)

    def _object(self, method: str, key: str) -> bytes:
        found = _KEY.fullmatch(key)
        index = self.table.get(found.group(1)) if found else None
        if index is None:
            self.counts[f"{method} 404"] += 1
            return _error("404 Not Found", "NoSuchKey", "The specified key does not exist.", method != "HEAD")
        self.counts[method] += 1
        data = body(index, sized=True)
        head = _head(
            "200 OK",
            {
                "Content-Type": "image/jpeg",
                "Content-Length": str(len(data)),
                "ETag": f'"{found.group(1) if found else ""}"',
                "Last-Modified": _LAST_MODIFIED,
                "Accept-Ranges": "bytes",
            },
        )
        return head + data if method == "GET" else head


def _body_length(head: bytes) -> int:
    """The request's Content-Length (0 without one): a download sends no request bodies."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip() or 0)
    return 0


class _Connection(asyncio.Protocol):
    """One keep-alive connection: requests without bodies, answered in order."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.buffer = b""
        self.transport: Any = None  # an asyncio or a uvloop transport

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if _body_length(head):
                self.transport.write(_error("501 Not Implemented", "NotImplemented", "no request bodies", True))
                self.transport.close()  # the body that follows cannot be framed here
                return
            self.transport.write(self.store.answer(method, target))
        if len(self.buffer) > _MAX_HEAD:
            self.transport.close()


async def serve(n: int, bucket: str, port: int) -> None:
    """Build the table, listen, say where, serve until SIGTERM/SIGINT, then print the counts."""
    started = time.monotonic()
    store = Store(object_table(n), bucket)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(store), "127.0.0.1", port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{bound} ({n:,} objects, table in {time.monotonic() - started:.1f}s)")
    sys.stdout.flush()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(json.dumps({"requests": dict(store.counts)}), flush=True)


class FastS3:
    """``python -m bench.fast_s3`` in its own process: ``with FastS3(n, log) as s3: s3.endpoint_url``."""

    def __init__(self, n: int, log: Path, bucket: str = "bench-bucket") -> None:
        self.n, self.log, self.bucket = n, log, bucket
        self.endpoint_url = ""
        self.proc: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> FastS3:
        cmd = [sys.executable, "-m", "bench.fast_s3", "--images", str(self.n), "--bucket", self.bucket]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=open(self.log, "wb"), text=True, cwd=Path(__file__).parent.parent
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.__exit__()
            raise RuntimeError(f"bench.fast_s3 did not start: {line!r}; see {self.log}")
        self.endpoint_url = line.split()[2]
        print(f"  fast S3 server: {line.strip()}", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop it (by its own pid) and print its request counts."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        if out.strip():
            print(f"  fast S3 server: {out.strip().splitlines()[-1]}", flush=True)
        self.proc = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, required=True, help="the job's size (bench/scale_data.py, sized)")
    parser.add_argument("--bucket", default="bench-bucket")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.images, args.bucket, args.port))
    else:
        uvloop.run(serve(args.images, args.bucket, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
