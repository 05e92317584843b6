"""CPU per file of the write path, isolated from the network: the event loop's share is what limits.

``python -m bench.micro_write [--files 600] [--size 700000]`` writes the same bodies (arriving as
64 KiB pieces, as aiohttp hands them over) with 64 concurrent tasks in one asyncio process, several
ways, and prints per file: the process's CPU, the event-loop thread's CPU (``thread_time`` on the loop:
with one loop per process this is the ceiling on files/s) and the wall time:

- ``sci_fetch PartialFile``: sci_fetch's own path: pieces gathered in a bytearray, ``bytes()`` copies
  of up to ``chunk_size``, ``PartialFile.write`` (MD5 on the loop, then an aiofiles thread hop per
  write), ``commit`` (flush, fsync, close, rename: four more hops);
- ``one thread hop per file``: pieces kept in a list; one ``asyncio.to_thread`` call opens, hashes
  (hashlib releases the GIL, so MD5 runs beside the loop), writes, fsyncs, closes and renames;
- the same without fsync, and with ``os.sync()``-style batching left to the caller.

Not part of ``python -m bench``; a tool for whoever changes the engine's write path.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

PIECE = 1 << 16


async def _run(files: list[bytes], out: Path, concurrency: int, one) -> tuple[float, float, float]:
    todo = iter(enumerate(files))

    async def worker() -> None:
        for i, data in todo:
            await one(out / f"d{i % 50}" / f"f{i}.jpg", data)

    for d in range(50):
        (out / f"d{d}").mkdir(parents=True, exist_ok=True)
    os.sync()
    p0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    p1, t1, w1 = time.process_time(), time.thread_time(), time.perf_counter()
    n = len(files)
    return (p1 - p0) / n * 1e3, (t1 - t0) / n * 1e3, (w1 - w0) / n * 1e3


async def main_async(args) -> None:
    from sci_fetch.files.partial import PartialFile

    rng = random.Random(1)
    files = [rng.randbytes(args.size + rng.randrange(1000)) for _ in range(args.files)]
    work = Path(tempfile.mkdtemp(prefix="sci-fetch-microw-", dir=args.dir))
    chunk_size = 1 << 20

    async def sci(dest: Path, data: bytes) -> None:
        async with PartialFile(dest, fsync=True) as out:
            pending = bytearray()
            for i in range(0, len(data), PIECE):
                pending += data[i : i + PIECE]
                if len(pending) >= chunk_size:
                    await out.write(bytes(pending))
                    pending.clear()
            if pending:
                await out.write(bytes(pending))
            out.md5()
            await out.commit()

    def write_all(dest: Path, pieces: list[bytes], fsync: bool) -> str:
        digest = hashlib.md5()
        tmp = dest.with_name(dest.name + ".partial")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            for p in pieces:
                digest.update(p)
                os.write(fd, p)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
        return digest.hexdigest()

    def one_hop(fsync: bool):
        async def run(dest: Path, data: bytes) -> None:
            pieces = [data[i : i + PIECE] for i in range(0, len(data), PIECE)]  # as they arrive
            await asyncio.to_thread(write_all, dest, pieces, fsync)

        return run

    variants = [
        ("sci_fetch PartialFile (fsync)", sci),
        ("one thread hop per file (fsync)", one_hop(True)),
        ("one thread hop per file (no fsync)", one_hop(False)),
    ]
    try:
        print(f"{args.files} files of ~{args.size / 1e3:.0f} KB, concurrency {args.concurrency}, under {work}:")
        print(f"  {'process CPU ms':>15} {'loop CPU ms':>12} {'wall ms':>8}  per file")
        for name, fn in variants:
            out = work / name.split()[0]
            shutil.rmtree(out, ignore_errors=True)
            cpu, loop, wall = await _run(files, out, args.concurrency, fn)
            print(f"  {cpu:15.2f} {loop:12.2f} {wall:8.2f}  {name}")
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=600)
    p.add_argument("--size", type=int, default=700_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--dir", default=None, help="where to write (default: $TMPDIR)")
    asyncio.run(main_async(p.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
