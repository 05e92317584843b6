"""LILA-sized jobs for the scaling benchmark, built without a server and without planning them.

A job is what a download leaves: an Animl-format COCO file, each done image's (tiny) file on disk and one
manifest row per image. Planning 1,000,000 records through the engine only to build the job would cost
what the benchmark measures, so the rows go in with one ``executemany`` into the manifest's own schema
(the ``Manifest`` class creates it). Names have LILA's shape: several projects, hundreds of cameras, a
dozen deployments each, so destinations spread over thousands of folders as real jobs do.

Layouts: ``finished`` (every image done, the last run ended with exit 0), and ``crashed`` (the last run
never ended; ``pending_every``-th image pending with no file, spread through the COCO file, or the last
10 % when ``tail`` is set — the order a single crashed run leaves).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sci_fetch.manifest.store import Manifest

PROJECTS = ("serengeti_s1", "nacti_part2", "caltech_ct")
CAMERAS = 240
DEPLOYMENTS = 12
MANIFEST = Path(".sci-fetch") / "manifest.sqlite"
_PAD = random.Random(20).randbytes(8192)  # the filler of sized bodies (fixed: jobs and servers agree)


@dataclass(frozen=True)
class Image:
    index: int
    image_id: str
    key: str
    file_name: str
    md5: str
    data: bytes


def body(i: int, sized: bool = False) -> bytes:
    """Image ``i``'s bytes: ``image {i}``, or (``sized``) that line padded to 1-4 KB, so a download of the job
    moves real small objects (the line keeps every body, so every md5, distinct)."""
    head = f"image {i}\n".encode()
    if not sized:
        return head[:-1]
    size = 1024 + (i * 2654435761) % 3072
    start = (i * 40503) % 4096
    return head + _PAD[start : start + size - len(head)]


def image(i: int, sized: bool = False) -> Image:
    """Image ``i`` of a job: deterministic names and bytes (its md5 is the id's, as in Animl)."""
    data = body(i, sized)
    md5 = hashlib.md5(data).hexdigest()
    project = PROJECTS[i % len(PROJECTS)]
    camera = f"{'X' if i % 2 else 'P'}{8100000 + (i // 7) % CAMERAS}"
    deployment = f"{camera}_season{(i // 13) % DEPLOYMENTS + 1:02d}_deployment"
    image_id = f"{project}:{md5}"
    return Image(
        i,
        image_id,
        f"original/{image_id}-original.jpg",
        f"{project}/{camera}/{deployment}/{project}-{md5}.jpg",
        md5,
        data,
    )


def images(n: int, sized: bool = False) -> Iterator[Image]:
    return (image(i, sized) for i in range(n))


def write_coco(path: Path, n: int, sized: bool = False) -> None:
    """The COCO file, streamed record by record (a 1M-image file is ~400 MB; never held whole)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{"images": [\n')
        for im in images(n, sized):
            record = {
                "id": im.image_id,
                "file_name": im.file_name,
                "serving_bucket_key": im.key,
                "datetime": "2024-01-01 00:00:00",
                "location": im.file_name.split("/")[1],
                "original_file_name": f"IMG_{im.index:07d}.JPG",
                "width": 2048,
                "height": 1536,
            }
            fh.write(("" if im.index == 0 else ",\n") + json.dumps(record))
        fh.write('\n], "annotations": [], "categories": [{"id": 0, "name": "empty"}]}\n')


def is_pending(i: int, n: int, pending_every: int | None, tail: bool) -> bool:
    if pending_every is None:
        return False
    if tail:
        return i >= n - n // pending_every
    return i % pending_every == pending_every - 1


def build(folder: Path, n: int, pending_every: int | None = None, tail: bool = False) -> tuple[Path, Path]:
    """(COCO file, output folder) of a job of ``n`` images; see the module docstring for the layouts."""
    folder.mkdir(parents=True, exist_ok=True)
    coco, out = folder / "job.json", folder / "images"
    write_coco(coco, n)
    Manifest(out / MANIFEST).close()  # the schema, at the current version
    db = sqlite3.connect(out / MANIFEST, isolation_level=None)
    now = time.time()
    db.execute("BEGIN")
    run_id = db.execute("INSERT INTO runs (started_at, settings) VALUES (?, '{}')", (now,)).lastrowid
    made: set[str] = set()
    rows = []
    for im in images(n):
        pending = is_pending(im.index, n, pending_every, tail)
        if not pending:
            _write_file(out / im.file_name, im.data, made)
        rows.append(_row(im, run_id, now, pending))
        if len(rows) == 10_000:
            _insert(db, rows)
    _insert(db, rows)
    if pending_every is None:
        db.execute("UPDATE runs SET ended_at = ?, exit_code = 0, summary = '{}' WHERE run_id = ?", (now, run_id))
    db.execute("INSERT OR REPLACE INTO meta VALUES ('heartbeat', ?)", (repr(now),))
    db.execute("INSERT OR REPLACE INTO meta VALUES ('images_in_coco', ?)", (str(n),))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return coco, out


def _write_file(path: Path, data: bytes, made: set[str]) -> None:
    parent = str(path.parent)
    if parent not in made:
        os.makedirs(parent, exist_ok=True)
        made.add(parent)
    with open(path, "wb") as fh:
        fh.write(data)


def _row(im: Image, run_id: int | None, now: float, pending: bool) -> tuple:
    if pending:
        return (im.image_id, im.key, im.file_name, "pending", None, None, None, 0, None, run_id, now, now, None)
    size = len(im.data)
    return (
        im.image_id,
        im.key,
        im.file_name,
        "done",
        size,
        im.md5,
        f'"{im.md5}"',
        1,
        None,
        run_id,
        now,
        now,
        "size,id-md5",
    )


def _insert(db: sqlite3.Connection, rows: list[tuple]) -> None:
    db.executemany(
        "INSERT INTO images (image_id, key, dest, state, bytes, md5, etag, attempts, last_error, run_id, "
        "created_at, updated_at, checks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    rows.clear()
