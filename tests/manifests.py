"""Builders of manifests and downloaded files for the status and verify command tests (no S3 server needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sci_fetch.keys.mapping import STATE_DIR, Task
from sci_fetch.manifest.models import Outcome, State
from sci_fetch.manifest.store import Manifest


def task(n: int) -> Task:
    return Task(image_id=f"p:{n}", key=f"original/p:{n}.jpg", dest=f"p/{n}.jpg")


def jpeg(n: int) -> bytes:
    """Bytes that start as a JPEG does; unique per ``n``."""
    return b"\xff\xd8\xff\xe0" + f"image {n}".encode() * 20


def downloaded(output: Path, name: str, done: list[int], failed: dict[int, str], ended: int | None = 0) -> Path:
    """A manifest under ``output`` whose run fetched ``done`` (files written) and failed ``failed`` (id → error)."""
    path = output / STATE_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    m = Manifest(path)
    try:
        run = m.begin_run({})
        m.plan([task(n) for n in [*done, *failed]], run, output)
        outcomes = []
        for n in done:
            file = output / task(n).dest
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(jpeg(n))
            md5 = hashlib.md5(jpeg(n)).hexdigest()
            outcomes.append(Outcome(image_id=f"p:{n}", state=State.done, bytes=len(jpeg(n)), md5=md5, attempts=1))
        outcomes += [Outcome(image_id=f"p:{n}", state=State.failed, attempts=5, error=e) for n, e in failed.items()]
        m.record(outcomes)
        if ended is not None:
            m.end_run(run, ended, {"fetched": len(done)})
    finally:
        m.close()
    return path
