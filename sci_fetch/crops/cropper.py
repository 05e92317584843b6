"""The per-image worker: decode an image once, cut all its boxes, write each crop atomically.

Runs in a process pool (JPEG decoding is CPU-bound and holds the GIL), so everything crossing the
process boundary is a small picklable tuple, and this module imports only Pillow, the box math and
files.atomic (no pydantic: ~18 MB of RSS per worker).

EXIF orientation is deliberately NOT applied: Animl computes boxes and the COCO width/height on the
stored pixels, so rotating by the EXIF tag would move every box of a tagged image. A file whose size
only matches the COCO size after a 90° turn is caught by the aspect check in ``boxes.scale_factors``
and rejected as ``size_mismatch`` rather than cropped in the wrong place.

Only the band of rows and columns around an image's boxes is decoded (``decode.py``), shrunk in the
DCT domain when every box is that much larger than its ``--max-size``/``--size`` target.

Each crop carries a fingerprint in its JPEG comment (the rectangle, the final size, JPEG quality and
the source's md5 from the manifest, or its byte size without one), so a later run keeps a crop only if
it would make the very same one: changed options, a changed box or a changed source image make it
again, without any side file to keep in step.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from sci_fetch.crops.boxes import Geometry, Planned, Rect, plan_crop
from sci_fetch.crops.decode import Band, DecodeError, decode_band
from sci_fetch.crops.reasons import Reason
from sci_fetch.crops.resize import Resize, common_scale, dct_scale, target_size
from sci_fetch.errors import DiskError
from sci_fetch.fs.atomic import AtomicFile

# Writing more crops cannot succeed after these: stop the run (as the download does) instead of
# listing every remaining box as write_failed.
_FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EMFILE})
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
FINGERPRINT_PREFIX = b"sci-fetch crop v1 "


@dataclass(frozen=True, slots=True)
class BoxJob:
    index: int
    bbox: tuple[float | None, ...] | None
    crop_path: str


class ImageJob(NamedTuple):
    source: str
    coco_size: tuple[int | None, int | None]
    boxes: tuple[BoxJob, ...]
    absent: Reason  # what an absent source means here: not_downloaded, or missing_file (the manifest says done)
    md5: str | None = None  # the downloaded file's md5 from the manifest: a changed source remakes its crops


class WorkerParams(NamedTuple):
    geometry: Geometry
    jpeg_quality: int
    is_original: bool
    recheck: bool
    resize: Resize | None = None
    decoder: str = "pillow"  # "vips" or "pillow", resolved in the main process


@dataclass(frozen=True, slots=True)
class BoxResult:
    index: int
    outcome: str  # "new" | "kept" | "remade" | "rejected"
    width: int = 0
    height: int = 0
    reason: Reason | None = None
    detail: str = ""
    clipped: bool = False
    rect: tuple[int, int, int, int] | None = None  # the pixels cut from the downloaded file (left, top, right, bottom)


class _Todo(NamedTuple):
    box: BoxJob
    plan: Planned
    mark: bytes
    was_there: bool
    target: tuple[int, int]


def fingerprint(rect: Rect, quality: int, source: str, target: tuple[int, int]) -> bytes:
    """What decides a crop's pixels: the rectangle, its final size, the quality and the source file."""
    text = f"{rect.as_tuple()} -> {target[0]}x{target[1]} q{quality} {source}".encode()
    return FINGERPRINT_PREFIX + hashlib.sha1(text).hexdigest()[:16].encode()


def existing_crop(path: str, expected: bytes, recheck: bool) -> tuple[int, int] | bool:
    """The size of a crop that is already right, else whether a file was there (to count remakes).

    Reading the header is cheap and catches empty or foreign files; a crop truncated mid-data only
    shows when decoded, which ``recheck`` does.
    """
    try:
        with Image.open(path) as im:
            if im.format != "JPEG" or im.info.get("comment") != expected:
                return True
            if recheck:
                im.load()
            return im.size
    except (FileNotFoundError, NotADirectoryError):
        return False
    except _DECODE_ERRORS:
        return True


def _write(crop: Image.Image, path: str, quality: int, mark: bytes) -> None:
    """Temp name + rename (files.atomic): a killed run never leaves a half crop under the real name."""
    with AtomicFile(Path(path), binary=True) as out:
        crop.save(out.fh, format="JPEG", quality=quality, comment=mark)
        out.commit()


def _rejected(job: ImageJob, reason: Reason, detail: str, only: set[int] | None = None) -> dict[int, BoxResult]:
    return {
        b.index: BoxResult(b.index, "rejected", reason=reason, detail=detail)
        for b in job.boxes
        if only is None or b.index in only
    }


def _plan_boxes(
    job: ImageJob, params: WorkerParams, size: tuple[int, int], source_tag: str, results: dict[int, BoxResult]
) -> list[_Todo]:
    """Plan every box; crops already right go to ``results`` as kept, the rest come back to be made."""
    todo: list[_Todo] = []
    for box in job.boxes:
        plan = plan_crop(box.bbox, job.coco_size, size, params.is_original, params.geometry)
        if not isinstance(plan, Planned):
            results[box.index] = BoxResult(box.index, "rejected", reason=plan.reason, detail=plan.detail)
            continue
        target = target_size(plan.rect.width, plan.rect.height, params.resize)
        mark = fingerprint(plan.rect, params.jpeg_quality, source_tag, target)
        have = existing_crop(box.crop_path, mark, params.recheck)
        if isinstance(have, tuple):
            results[box.index] = BoxResult(
                box.index, "kept", have[0], have[1], clipped=plan.clipped, rect=plan.rect.as_tuple()
            )
        else:
            todo.append(_Todo(box, plan, mark, have, target))
    return todo


def _cut(band: Band, item: _Todo) -> Image.Image:
    """One box out of the decoded band: a plain crop at full size, else a Lanczos resize of the box's
    exact (fractional, when DCT-shrunk) area to the target."""
    rect, scale, origin = item.plan.rect, band.scale, band.origin
    if scale == 1 and item.target == (rect.width, rect.height):
        crop = band.region(rect)
    else:
        area = (
            rect.left / scale - origin.left,
            rect.top / scale - origin.top,
            rect.right / scale - origin.left,
            rect.bottom / scale - origin.top,
        )
        # reducing_gap: a box reduce to within 3x of the target first, then Lanczos; as sharp, far cheaper
        crop = band.image.resize(item.target, Image.Resampling.LANCZOS, box=area, reducing_gap=3.0)
    return crop if crop.mode == "RGB" else crop.convert("RGB")


def _make(
    im: Image.Image, job: ImageJob, params: WorkerParams, todo: list[_Todo], results: dict[int, BoxResult]
) -> None:
    """Decode once the band around every box still to make, cut and write each."""
    band_rect = Rect(
        min(t.plan.rect.left for t in todo),
        min(t.plan.rect.top for t in todo),
        max(t.plan.rect.right for t in todo),
        max(t.plan.rect.bottom for t in todo),
    )
    scale = common_scale(dct_scale(t.plan.rect.width, t.plan.rect.height, t.target) for t in todo)
    band = decode_band(job.source, im, band_rect, scale, params.decoder)
    for item in todo:
        crop = _cut(band, item)
        try:
            _write(crop, item.box.crop_path, params.jpeg_quality, item.mark)
        except OSError as exc:
            if exc.errno in _FATAL_ERRNOS:
                raise DiskError(f"cannot write crop {item.box.crop_path}: {exc.strerror or exc}") from None
            results[item.box.index] = BoxResult(
                item.box.index,
                "rejected",
                reason=Reason.write_failed,
                detail=f"{item.box.crop_path}: {exc.strerror or exc}",
            )
            continue
        outcome = "remade" if item.was_there else "new"
        results[item.box.index] = BoxResult(
            item.box.index, outcome, crop.width, crop.height, clipped=item.plan.clipped, rect=item.plan.rect.as_tuple()
        )


def crop_image(job: ImageJob, params: WorkerParams) -> list[BoxResult]:
    """Results for every box of one image, in the order of ``job.boxes``."""
    try:
        st = os.stat(job.source)
    except (FileNotFoundError, NotADirectoryError):
        what = "was downloaded but is gone" if job.absent is Reason.missing_file else "is not there"
        return list(_rejected(job, job.absent, f"{job.source} {what}").values())
    except OSError as exc:
        return list(_rejected(job, Reason.missing_file, f"cannot read {job.source}: {exc.strerror or exc}").values())

    # The manifest's md5 says whether the source changed; without a manifest its size is all there is.
    source_tag = f"md5 {job.md5}" if job.md5 else f"size {st.st_size}"
    results: dict[int, BoxResult] = {}
    try:
        with Image.open(job.source) as im:
            todo = _plan_boxes(job, params, im.size, source_tag, results)
            if todo:
                _make(im, job, params, todo, results)
    except (*_DECODE_ERRORS, DecodeError) as exc:
        # Boxes already kept from earlier crops stay kept; the rest cannot be cut from this file.
        left = {b.index for b in job.boxes} - results.keys()
        results.update(_rejected(job, Reason.corrupt_image, f"{job.source}: {exc}", left))
    return [results[b.index] for b in job.boxes]


def crop_chunk(jobs: list[ImageJob], params: WorkerParams) -> list[list[BoxResult]]:
    """A few images per task: a pool round-trip costs more than decoding a 120x90 ``small`` image."""
    return [crop_image(job, params) for job in jobs]
