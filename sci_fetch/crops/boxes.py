"""Pure box math: from a COCO ``[x, y, w, h]`` to the pixel rectangle to crop, or the reason not to.

Order matters and is fixed: scale to the downloaded file's pixels, clip to the image, check the size,
pad, clip again, round outwards to whole pixels, then square. Sizes are checked on the clipped box
so a box mostly outside the image is judged by the part that is in it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sci_fetch.crops.reasons import Reason

# Scaled coordinates come out as 49.99999999; without this they would round a whole pixel outwards.
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class Box:
    """Float pixels, top-left corner and size, as COCO writes them."""

    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True, slots=True)
class Rect:
    """Whole-pixel edges as ``Image.crop`` takes them (right and bottom exclusive)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.right, self.bottom)


@dataclass(frozen=True, slots=True)
class Reject:
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Geometry:
    """The options that decide a crop's pixels (and so are part of a crop's fingerprint)."""

    padding: float = 0.0
    square: bool = False
    min_size: float = 1.0


@dataclass(frozen=True, slots=True)
class Planned:
    rect: Rect
    clipped: bool  # the box stuck out of the image and was cut to it
    scaled: bool  # the box was mapped from the COCO size to the file's size


def _fmt(values: Sequence[float | None] | None) -> str:
    if values is None:
        return "null"
    return "[" + ", ".join("null" if v is None else f"{v:g}" for v in values) + "]"


def coco_box(bbox: Sequence[float | None] | None) -> Box | Reject:
    """Checks that need no image: Animl writes all-null boxes when the export had no image size."""
    if bbox is None or any(v is None for v in bbox):
        return Reject(
            Reason.null_bbox, "bbox is missing or null" if bbox is None else f"bbox {_fmt(bbox)} has null values"
        )
    x, y, w, h = (float(v) for v in bbox)  # type: ignore[arg-type]
    if w < 0 or h < 0:
        return Reject(Reason.negative_size, f"bbox {_fmt(bbox)} has a negative width or height")
    if w == 0 or h == 0:
        return Reject(Reason.zero_area, f"bbox {_fmt(bbox)} has zero width or height")
    return Box(x, y, w, h)


def scale_factors(
    coco_size: tuple[int | None, int | None], real_size: tuple[int, int], is_original: bool
) -> tuple[float, float] | Reject:
    """Per-axis factors from the COCO image size (the original's pixels) to the file's pixels.

    Animl's medium/small variants keep the aspect ratio, so factors that disagree mean the file is not
    the image the box was drawn on (rotated, or another image): that box is rejected, not cropped wrong.
    """
    cw, ch = coco_size
    rw, rh = real_size
    if cw is None or ch is None:
        if is_original:
            return (1.0, 1.0)
        return Reject(
            Reason.cannot_scale, f"cannot scale: COCO has no width/height and the file is a {rw}x{rh} variant"
        )
    if (cw, ch) == (rw, rh):
        return (1.0, 1.0)
    sx, sy = rw / cw, rh / ch
    tolerance = max(0.01, 2 / min(rw, rh))  # a variant's sides are each rounded to whole pixels
    if abs(sx - sy) > tolerance * max(sx, sy):
        return Reject(
            Reason.size_mismatch,
            f"the file is {rw}x{rh} but COCO says {cw}x{ch}: aspect ratios differ (rotated, or not the same image)",
        )
    return (sx, sy)


def scale(box: Box, sx: float, sy: float) -> Box:
    return Box(box.x * sx, box.y * sy, box.w * sx, box.h * sy)


def clip(box: Box, width: int, height: int) -> Box | None:
    """The part of ``box`` inside the image, or None when nothing is."""
    x0, y0 = max(box.x, 0.0), max(box.y, 0.0)
    x1, y1 = min(box.x + box.w, float(width)), min(box.y + box.h, float(height))
    if x1 - x0 <= _EPS or y1 - y0 <= _EPS:
        return None
    return Box(x0, y0, x1 - x0, y1 - y0)


def pad(box: Box, fraction: float) -> Box:
    """Grow each side by ``fraction`` of the box's own width/height (classifiers like some context)."""
    dx, dy = box.w * fraction, box.h * fraction
    return Box(box.x - dx, box.y - dy, box.w + 2 * dx, box.h + 2 * dy)


def _edges(lo: float, hi: float, limit: int) -> tuple[int, int]:
    """Round outwards (never cut the animal), inside ``[0, limit]``, at least one pixel."""
    start = min(max(math.floor(lo + _EPS), 0), limit - 1)
    end = max(min(math.ceil(hi - _EPS), limit), start + 1)
    return start, end


def to_rect(box: Box, width: int, height: int) -> Rect:
    left, right = _edges(box.x, box.x + box.w, width)
    top, bottom = _edges(box.y, box.y + box.h, height)
    return Rect(left, top, right, bottom)


def _square_axis(start: int, length: int, side: int, limit: int) -> tuple[int, int]:
    if length >= side:
        return start, start + length
    size = min(side, limit)
    begin = start - (side - length) // 2
    begin = max(0, min(begin, limit - size))
    return begin, begin + size


def make_square(rect: Rect, width: int, height: int) -> Rect:
    """MegaDetector's square crop: grow the short side to the long one around the centre, then shift
    the square into the image. Where the image is smaller than the square, the crop stops at the image
    (MegaDetector pads with black there; we add no pixels the camera did not take)."""
    side = max(rect.width, rect.height)
    left, right = _square_axis(rect.left, rect.width, side, width)
    top, bottom = _square_axis(rect.top, rect.height, side, height)
    return Rect(left, top, right, bottom)


def plan_crop(
    bbox: Sequence[float | None] | None,
    coco_size: tuple[int | None, int | None],
    real_size: tuple[int, int],
    is_original: bool,
    geometry: Geometry,
) -> Planned | Reject:
    """The rectangle to cut from a ``real_size`` image for a COCO box, or why there is none."""
    box = coco_box(bbox)
    if isinstance(box, Reject):
        return box
    factors = scale_factors(coco_size, real_size, is_original)
    if isinstance(factors, Reject):
        return factors
    scaled = factors != (1.0, 1.0)
    if scaled:
        box = scale(box, *factors)
    width, height = real_size
    inside = clip(box, width, height)
    if inside is None:
        return Reject(Reason.out_of_bounds, f"bbox {_fmt(bbox)} lies outside the {width}x{height} image")
    clipped = inside != box
    if inside.w < geometry.min_size or inside.h < geometry.min_size:
        return Reject(
            Reason.too_small,
            f"box is {inside.w:.3g}x{inside.h:.3g} px in the {width}x{height} image, below min_size {geometry.min_size:g}",
        )
    if geometry.padding > 0:
        inside = clip(pad(inside, geometry.padding), width, height) or inside
    rect = to_rect(inside, width, height)
    if geometry.square:
        rect = make_square(rect, width, height)
    return Planned(rect, clipped, scaled)
