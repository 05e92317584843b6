"""Decode only what the boxes need: one band of an image (the rectangle around all its boxes), at full
size or shrunk 1/2, 1/4, 1/8 in the DCT domain.

Two decoders give the same pixels (both are libjpeg-turbo with its default accurate DCT and fancy
upsampling; the tests compare them):

- ``vips`` (pyvips, optional: ``pip install 'sci-fetch[fast]'``) reads a JPEG top to bottom and stops
  after the band's last row, and shrinks on load. Most boxes end well above an image's bottom edge,
  so a crop costs a part of a full decode.
- ``pillow`` decodes the whole image (JPEGs through ``Image.draft`` when shrunk). It is the fallback
  and the only path for PNG and other formats, and for JPEGs vips would convert differently (CMYK).

Memory stays flat: at most one band of one image per worker, never more than the decoded image.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any, Literal, NamedTuple

from PIL import Image

from sci_fetch.crops.boxes import Rect

Decoder = Literal["auto", "vips", "pillow"]
JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"


def _spec_found() -> bool:
    try:
        return importlib.util.find_spec("pyvips") is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules (blocked)
        return False


# Whether pyvips is installed, known without importing it: the main process never loads libvips (its
# memory would be copied into every worker's RSS); a worker loads it at its first JPEG.
HAVE_VIPS = _spec_found()
_vips: Any = None
_vips_tried = False


def _load_vips() -> Any:
    """pyvips, imported once per process; None when it cannot be (then Pillow decodes, with the same pixels)."""
    global _vips, _vips_tried
    if not _vips_tried:
        _vips_tried = True
        os.environ.setdefault("VIPS_WARNING", "0")  # libvips would print a line per damaged JPEG to stderr
        try:
            import pyvips
        except (ImportError, OSError):  # OSError: pyvips installed but libvips missing
            return None
        # pyvips forwards libvips' chatter (threadpool info, warnings on damaged files) to logging; a
        # damaged file is reported once, as corrupt_image, so only real errors are worth a log line.
        logging.getLogger("pyvips").setLevel(logging.ERROR)
        pyvips.cache_set_max(0)  # every band is read once; a cache only holds memory
        pyvips.concurrency_set(1)  # one worker process per CPU already
        _vips = pyvips
    return _vips


class DecodeError(Exception):
    """The image cannot be decoded (the caller rejects its boxes as corrupt_image)."""


def resolve(decoder: Decoder) -> str:
    """``auto`` becomes vips when it is installed; asking for vips without it falls back to pillow."""
    if decoder == "pillow" or not HAVE_VIPS:
        return "pillow"
    return "vips"


def scaled_band(band: Rect, scale: int, size: tuple[int, int]) -> Rect:
    """``band`` (full-size pixels) on the 1/``scale`` image libjpeg makes (its sides are rounded up)."""
    sw, sh = -(-size[0] // scale), -(-size[1] // scale)
    left, top = band.left // scale, band.top // scale
    right, bottom = min(-(-band.right // scale), sw), min(-(-band.bottom // scale), sh)
    return Rect(left, top, max(right, left + 1), max(bottom, top + 1))


def _whole_jpeg(path: str) -> bool:
    """A JPEG whose last bytes are its end marker. vips stops after the band's rows, so it would not see
    a file cut short further down; Pillow reads to the end and calls it truncated. Files that do not end
    in the marker (cut short, or a camera's trailer after it) go to Pillow, so both paths agree."""
    with open(path, "rb") as fh:
        if fh.read(3) != JPEG_MAGIC:
            return False
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 64))
        return fh.read().rstrip(b"\x00\r\n ").endswith(JPEG_EOI)


def _vips_band(path: str, band: Rect, scale: int, size: tuple[int, int]) -> Image.Image | None:
    """The band through libvips, or None when this image is not one vips should do (CMYK, 16-bit)
    or pyvips cannot be loaded here."""
    pyvips = _load_vips()
    if pyvips is None:
        return None
    try:
        # jpegload directly (no loader search); unbuffered: each row is read once, top to bottom.
        image = pyvips.Image.jpegload(path, access="sequential-unbuffered", shrink=scale, fail_on="truncated")
        if image.format != "uchar" or image.bands not in (1, 3) or image.interpretation not in ("srgb", "b-w"):
            return None
        if image.width not in (size[0] // scale, -(-size[0] // scale)) or image.height not in (
            size[1] // scale,
            -(-size[1] // scale),
        ):
            raise DecodeError(
                f"decoded size {image.width}x{image.height} does not match the header's {size[0]}x{size[1]}"
            )
        r = scaled_band(band, scale, size)
        if r.right > image.width or r.bottom > image.height:
            return None  # libvips drops libjpeg's last partial pixel when it shrinks; Pillow keeps it
        data = image.crop(r.left, r.top, r.width, r.height).write_to_memory()
    except pyvips.Error as exc:
        raise DecodeError(
            str(exc).strip().splitlines()[0] if str(exc).strip() else "libvips cannot decode it"
        ) from None
    mode = "RGB" if image.bands == 3 else "L"
    return Image.frombuffer(mode, (r.width, r.height), data, "raw", mode, 0, 1)  # no copy of the band


class Band(NamedTuple):
    """Decoded pixels that cover the band: ``origin`` is where ``image`` sits on the 1/``scale`` image."""

    image: Image.Image
    origin: Rect
    scale: int

    def region(self, rect: Rect) -> Image.Image:
        """``rect`` (full-size pixels) of a full-size band, as its own image."""
        o = self.origin
        return self.image.crop((rect.left - o.left, rect.top - o.top, rect.right - o.left, rect.bottom - o.top))


def _pillow_band(im: Image.Image, scale: int) -> Band:
    """The whole image through Pillow (it cannot stop early), shrunk in the DCT domain by ``Image.draft``
    for JPEGs; the boxes are cut from it directly, with no copy of the band."""
    size = im.size
    if scale > 1 and im.format == "JPEG":
        im.draft("RGB", (size[0] // scale, size[1] // scale))
        got = round(size[0] / im.size[0]) if im.size[0] else 1
        scale = got if im.size == (-(-size[0] // got), -(-size[1] // got)) else 1
    else:
        scale = 1
    im.load()
    return Band(im, Rect(0, 0, im.size[0], im.size[1]), scale)


def decode_band(path: str, im: Image.Image, band: Rect, scale: int, decoder: str) -> Band:
    """Pixels covering ``band`` of the image at ``path`` (already opened as ``im`` for its header), at
    1/``scale`` or, where the format or decoder cannot shrink, at full size (``Band.scale`` says which)."""
    if decoder == "vips" and im.format == "JPEG" and _whole_jpeg(path):
        got = _vips_band(path, band, scale, im.size)
        if got is not None:
            return Band(got, scaled_band(band, scale, im.size), scale)
    return _pillow_band(im, scale)
