"""The per-image worker: decode an image once, cut all its boxes, write each crop atomically.

Runs in a process pool (JPEG decoding is CPU-bound and holds the GIL), so everything crossing the
process boundary is a small picklable tuple, and this module imports only Pillow and the box math.

EXIF orientation is deliberately NOT applied: Animl computes boxes and the COCO width/height on the
stored pixels, so rotating by the EXIF tag would move every box of a tagged image. A file whose size
only matches the COCO size after a 90° turn is caught by the aspect check in ``boxes.scale_factors``
and rejected as ``size_mismatch`` rather than cropped in the wrong place.

``Image.draft`` is not used: it decodes JPEGs at 1/2..1/8 scale, and crops are wanted at full size.

Each crop carries a fingerprint in its JPEG comment (the rectangle, JPEG quality and the source's
byte size), so a later run keeps a crop only if it would make the very same one: changed options, a
changed box or a re-downloaded image make it again, without any side file to keep in step.
"""

from __future__ import annotations

import errno
import hashlib
import os
from typing import NamedTuple

from PIL import Image

from sci_fetch.crops.boxes import Geometry, Planned, Rect, plan_crop
from sci_fetch.crops.reasons import Reason
from sci_fetch.errors import DiskError
from sci_fetch.keys.mapping import PARTIAL_SUFFIX

# Writing more crops cannot succeed after these: stop the run (as the download does) instead of
# listing every remaining box as write_failed.
_FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EMFILE})
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
FINGERPRINT_PREFIX = b"sci-fetch crop v1 "


class BoxJob(NamedTuple):
    index: int
    bbox: tuple[float | None, ...] | None
    crop_path: str


class ImageJob(NamedTuple):
    source: str
    coco_size: tuple[int | None, int | None]
    boxes: tuple[BoxJob, ...]
    absent: Reason  # what an absent source means here: not_downloaded, or missing_file (the manifest says done)


class WorkerParams(NamedTuple):
    geometry: Geometry
    jpeg_quality: int
    is_original: bool
    recheck: bool


class BoxResult(NamedTuple):
    index: int
    outcome: str  # "new" | "kept" | "remade" | "rejected"
    width: int = 0
    height: int = 0
    reason: Reason | None = None
    detail: str = ""
    clipped: bool = False


def fingerprint(rect: Rect, quality: int, source_bytes: int) -> bytes:
    text = f"{rect.as_tuple()} q{quality} src{source_bytes}".encode()
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
    """Temp name + rename: a killed run never leaves a half crop under the real name."""
    tmp = path + PARTIAL_SUFFIX
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        crop.save(tmp, format="JPEG", quality=quality, comment=mark)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _rejected(job: ImageJob, reason: Reason, detail: str, only: set[int] | None = None) -> dict[int, BoxResult]:
    return {b.index: BoxResult(b.index, "rejected", reason=reason, detail=detail) for b in job.boxes if only is None or b.index in only}


def crop_image(job: ImageJob, params: WorkerParams) -> list[BoxResult]:
    """Results for every box of one image, in the order of ``job.boxes``."""
    try:
        st = os.stat(job.source)
    except (FileNotFoundError, NotADirectoryError):
        what = "was downloaded but is gone" if job.absent is Reason.missing_file else "is not there"
        return list(_rejected(job, job.absent, f"{job.source} {what}").values())
    except OSError as exc:
        return list(_rejected(job, Reason.missing_file, f"cannot read {job.source}: {exc.strerror or exc}").values())

    results: dict[int, BoxResult] = {}
    try:
        with Image.open(job.source) as im:
            size = im.size
            todo: list[tuple[BoxJob, Planned, bytes, bool]] = []
            for box in job.boxes:
                plan = plan_crop(box.bbox, job.coco_size, size, params.is_original, params.geometry)
                if not isinstance(plan, Planned):
                    results[box.index] = BoxResult(box.index, "rejected", reason=plan.reason, detail=plan.detail)
                    continue
                mark = fingerprint(plan.rect, params.jpeg_quality, st.st_size)
                have = existing_crop(box.crop_path, mark, params.recheck)
                if isinstance(have, tuple):
                    results[box.index] = BoxResult(box.index, "kept", have[0], have[1], clipped=plan.clipped)
                else:
                    todo.append((box, plan, mark, have))
            if todo:
                im.load()  # decode once for all boxes of the image
                for box, plan, mark, was_there in todo:
                    crop = im.crop(plan.rect.as_tuple())
                    if crop.mode != "RGB":
                        crop = crop.convert("RGB")
                    try:
                        _write(crop, box.crop_path, params.jpeg_quality, mark)
                    except OSError as exc:
                        if exc.errno in _FATAL_ERRNOS:
                            raise DiskError(f"cannot write crop {box.crop_path}: {exc.strerror or exc}") from None
                        results[box.index] = BoxResult(box.index, "rejected", reason=Reason.write_failed, detail=f"{box.crop_path}: {exc.strerror or exc}")
                        continue
                    outcome = "remade" if was_there else "new"
                    results[box.index] = BoxResult(box.index, outcome, crop.width, crop.height, clipped=plan.clipped)
    except _DECODE_ERRORS as exc:
        # Boxes already kept from earlier crops stay kept; the rest cannot be cut from this file.
        left = {b.index for b in job.boxes} - results.keys()
        results.update(_rejected(job, Reason.corrupt_image, f"{job.source}: {exc}", left))
    return [results[b.index] for b in job.boxes]


def crop_chunk(jobs: list[ImageJob], params: WorkerParams) -> list[list[BoxResult]]:
    """A few images per task: a pool round-trip costs more than decoding a 120x90 ``small`` image."""
    return [crop_image(job, params) for job in jobs]
