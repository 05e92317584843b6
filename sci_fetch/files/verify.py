"""Is a downloaded file still what the manifest says it is? Small checks, used by ``sci-fetch verify``.

Three levels, cheapest first: the file exists with the recorded size; its MD5 equals the recorded
MD5 (the one checked against S3's ETag and the Animl id when it was downloaded); optionally Pillow
can decode it. ``content_problem`` is the one check that needs no manifest: bytes that cannot be a
camera-trap image whatever their checksum says (nothing at all, or an HTML/XML page), used by the
download before a file is renamed into place.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sci_fetch.files.partial import file_md5
from sci_fetch.manifest.models import ManifestRow

# How many leading bytes content_problem() looks at.
HEAD_BYTES = 512

# Markup an S3 key holds instead of an image when a web server or proxy stored its error page.
# No image format starts with one of these (SVG aside, which camera traps do not write).
_MARKUP = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>]|\?xml\s|error>|!--)", re.IGNORECASE
)


def content_problem(head: bytes, size: int) -> str | None:
    """Why bytes starting with ``head`` (``size`` in all) are certainly not an image, or None.

    Deliberately narrow: an empty object, or a page of markup. It never guesses from the
    Content-Type (S3 stores whatever the uploader sent) and never decodes (``verify --decode`` does).
    """
    if size == 0:
        return "the object is empty (0 bytes), not an image"
    if _MARKUP.match(head[:HEAD_BYTES]):
        text = head[:60].decode("utf-8", "replace").strip().replace("\n", " ")
        return f"the object is an HTML/XML page, not an image (starts with {text!r})"
    return None


@dataclass(frozen=True)
class Problem:
    """One done image that no longer checks out; ``kind`` is missing, size, md5, content or decode."""

    image_id: str
    dest: str
    kind: str
    detail: str


def read_head(path: Path, n: int = HEAD_BYTES) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def decode_problem(path: Path) -> str | None:
    """Why Pillow cannot decode the file, or None. Fully decodes it (``verify()`` alone misses truncation)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
    except Image.DecompressionBombError:
        return None  # a huge but well-formed image; decoding it would only cost memory
    except UnidentifiedImageError:
        return "Pillow does not recognise it as an image"
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return f"Pillow cannot decode it: {exc}"
    return None


def check_row(root: Path, row: ManifestRow, decode: bool = False) -> Problem | None:
    """The first thing wrong with a ``done`` row's file under ``root``, or None when it is good."""
    path = root / row.dest

    def problem(kind: str, detail: str) -> Problem:
        return Problem(row.image_id, row.dest, kind, detail)

    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return problem("missing", "the file is not on disk")
    except OSError as exc:
        return problem("missing", f"the file cannot be read: {exc.strerror or exc}")
    if row.bytes is not None and size != row.bytes:
        return problem("size", f"{size} bytes on disk, {row.bytes} recorded")
    try:
        if row.md5 is not None:
            local = file_md5(path)
            if local != row.md5:
                return problem("md5", f"MD5 {local} on disk, {row.md5} recorded")
        reason = content_problem(read_head(path), size)
        if reason:
            return problem("content", reason)
    except OSError as exc:
        return problem("missing", f"the file cannot be read: {exc.strerror or exc}")
    if decode:
        reason = decode_problem(path)
        if reason:
            return problem("decode", reason)
    return None


def iter_checks(
    root: Path, rows: Iterable[ManifestRow], decode: bool = False, workers: int | None = None, window: int | None = None
) -> Iterator[Problem | None]:
    """Check rows on a thread pool (hashing and decoding release the GIL), yielding each result in order.

    At most ``window`` rows are in flight: ``rows`` is read as results come back, so a manifest of a
    million images is checked in flat memory (``Executor.map`` would submit them all up front).
    """
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    window = window or 4 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
        in_flight: deque[Future[Problem | None]] = deque()
        for row in rows:
            in_flight.append(pool.submit(check_row, root, row, decode))
            if len(in_flight) >= window:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def check_rows(
    root: Path, rows: Iterable[ManifestRow], decode: bool = False, workers: int | None = None
) -> tuple[int, list[Problem]]:
    """Check every row, a bounded number at a time; returns (checked, problems)."""
    problems: list[Problem] = []
    checked = 0
    for found in iter_checks(root, rows, decode, workers):
        checked += 1
        if found is not None:
            problems.append(found)
    return checked, problems
