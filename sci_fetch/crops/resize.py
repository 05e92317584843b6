"""Pure size math for classifier-ready crops: each crop's final size, and how far a JPEG may be
shrunk in the DCT domain (1/2, 1/4, 1/8) before the Lanczos resize without losing detail.

The DCT scale is chosen so the box still has at least the target's pixels on both sides after it:
the last step is always a downscale (or none), never an upscale of a DCT-shrunk image.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

DCT_SCALES = (8, 4, 2, 1)


class Resize(NamedTuple):
    """``max_size``: longer side at most this, never enlarged; ``size``: exactly WxH."""

    max_size: int | None = None
    size: tuple[int, int] | None = None


def target_size(width: int, height: int, resize: Resize | None) -> tuple[int, int]:
    """The crop's final pixels for a ``width`` x ``height`` box."""
    if resize is None:
        return width, height
    if resize.size is not None:
        return resize.size
    if resize.max_size is None or max(width, height) <= resize.max_size:
        return width, height
    factor = resize.max_size / max(width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def dct_scale(width: int, height: int, target: tuple[int, int]) -> int:
    """The largest of 8, 4, 2, 1 that keeps the box at least ``target`` on both sides."""
    tw, th = target
    for scale in DCT_SCALES:
        if width / scale >= tw and height / scale >= th:
            return scale
    return 1


def common_scale(scales: Iterable[int]) -> int:
    """One decode serves every box of an image: the finest scale any of them needs."""
    return min(scales, default=1)
