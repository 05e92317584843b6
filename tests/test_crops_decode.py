"""Decoding only the band the boxes need: the same pixels as a full decode, with libvips and with Pillow,
on camera-like JPEGs; --max-size/--size output sizes; the Pillow fallback gives the same CSV."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_crops_helpers import annotation, image_record, read_rows, write_coco

from sci_fetch.crops import decode
from sci_fetch.crops.boxes import Rect
from sci_fetch.crops.options import CropOptions
from sci_fetch.crops.resize import Resize, dct_scale, target_size
from sci_fetch.crops.run import run_crops

needs_vips = pytest.mark.skipif(not decode.HAVE_VIPS, reason="pyvips is not installed")


def camera_jpeg(path: Path, size: tuple[int, int], subsampling: int, progressive: bool, seed: int = 5) -> Path:
    """A smooth scene with sensor noise and a few hard edges, as camera traps take them."""
    w, h = size
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    base = np.stack(
        np.broadcast_arrays(80 + 90 * y + 30 * x, 90 + 60 * y * x + 40 * (1 - x), 60 + 50 * (1 - y)), axis=-1
    )
    base[h // 3 : h // 2, w // 4 : w // 2] = (200, 40, 30)  # an "animal" with sharp edges
    pixels = np.clip(base + rng.normal(0, 8, size=(h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(
        path, format="JPEG", quality=90, subsampling=subsampling, progressive=progressive
    )
    return path


def edge_boxes(w: int, h: int) -> list[Rect]:
    """Boxes touching each edge, a corner, the whole image and one in the middle, at odd offsets."""
    return [
        Rect(0, 37, 101, 190),
        Rect(55, 0, 300, 77),
        Rect(w - 123, 91, w, 260),
        Rect(13, h - 59, 222, h),
        Rect(w - 70, h - 45, w, h),
        Rect(0, 0, w, h),
        Rect(w // 3 + 1, h // 3 + 3, w // 2 + 7, h // 2 + 5),
    ]


def mad(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return float(
        np.abs(np.asarray(a.convert("RGB"), dtype=np.int16) - np.asarray(b.convert("RGB"), dtype=np.int16)).mean()
    )


@pytest.mark.parametrize("size", [(1203, 905), (517, 389)])  # sides not multiples of 8 or 16
@pytest.mark.parametrize("subsampling,progressive", [(2, False), (0, False), (2, True), (0, True)])  # 4:2:0 / 4:4:4
@pytest.mark.parametrize("decoder", [pytest.param("vips", marks=needs_vips), "pillow"])
def test_band_pixels_equal_a_full_decode(tmp_path, size, subsampling, progressive, decoder):
    path = camera_jpeg(tmp_path / "a.jpg", size, subsampling, progressive)
    with Image.open(path) as im:
        full = im.convert("RGB")
    for rect in edge_boxes(*size):
        with Image.open(path) as im:
            band = decode.decode_band(str(path), im, rect, 1, decoder)
            assert band.scale == 1
            got = band.region(rect)
        assert got.size == (rect.width, rect.height)
        assert mad(got, full.crop(rect.as_tuple())) < 1, rect
        assert np.array_equal(np.asarray(got), np.asarray(full.crop(rect.as_tuple()))), (
            "libjpeg-turbo both ways: identical"
        )


@needs_vips
@pytest.mark.parametrize("subsampling,progressive", [(2, False), (0, True)])
def test_dct_shrunk_bands_agree_between_decoders(tmp_path, subsampling, progressive):
    path = camera_jpeg(tmp_path / "a.jpg", (1203, 905), subsampling, progressive)
    for scale in (2, 4, 8):
        for rect in (Rect(101, 203, 1000, 890), Rect(0, 0, 1203, 905)):  # the second needs Pillow's last partial pixel
            with Image.open(path) as im:
                a = decode.decode_band(str(path), im, rect, scale, "vips")
                a_px = a.image.crop(_rel(decode.scaled_band(rect, scale, (1203, 905)), a.origin))
            with Image.open(path) as im:
                b = decode.decode_band(str(path), im, rect, scale, "pillow")
                b_px = b.image.crop(_rel(decode.scaled_band(rect, scale, (1203, 905)), b.origin))
            assert a.scale == b.scale == scale and a_px.size == b_px.size
            assert mad(a_px, b_px) < 1


def _rel(r: Rect, origin: Rect) -> tuple[int, int, int, int]:
    return (r.left - origin.left, r.top - origin.top, r.right - origin.left, r.bottom - origin.top)


def test_target_size_and_dct_scale():
    assert target_size(600, 300, Resize(max_size=224)) == (224, 112)
    assert target_size(100, 50, Resize(max_size=224)) == (100, 50)  # never enlarged
    assert target_size(100, 50, Resize(size=(224, 224))) == (224, 224)
    assert target_size(333, 1000, Resize(max_size=224)) == (75, 224)
    assert dct_scale(1800, 1800, (224, 224)) == 8 and dct_scale(1700, 1800, (224, 224)) == 4
    assert dct_scale(447, 900, (224, 224)) == 1 and dct_scale(448, 900, (224, 224)) == 2


# ---- end to end: sizes, the CSV, and the fallback -------------------------------------------------


@pytest.fixture
def export(tmp_path):
    images = tmp_path / "images"
    recs = [
        image_record(1, file_name="p/CAM1/a.jpg", size=(1203, 905)),
        image_record(2, file_name="p/CAM1/b.jpg", size=(2051, 1541)),
        image_record(3, file_name="p/CAM2/c.jpg", size=(517, 389)),
    ]
    camera_jpeg(images / recs[0]["file_name"], (1203, 905), 2, False)
    camera_jpeg(images / recs[1]["file_name"], (2051, 1541), 0, True)
    camera_jpeg(images / recs[2]["file_name"], (517, 389), 2, False)
    anns = [
        annotation("big", recs[1], 1, [100, 200, 1800, 1300]),  # 1/8 fits 224 -> DCT-shrunk
        annotation("wide", recs[0], 1, [0, 400, 1203, 505]),  # touches left, right and bottom
        annotation("small", recs[0], 1, [33, 41, 120, 60]),  # below 224: kept at its size
        annotation("corner", recs[2], 1, [400, 300, 117, 89]),
        annotation("top", recs[2], 1, [0, 0, 517, 150]),
    ]
    return write_coco(tmp_path / "coco.json", recs, anns), images


def run(tmp_path: Path, coco: Path, images: Path, name: str, **kw) -> list[dict]:
    run_crops(coco, images, CropOptions(crops_dir=tmp_path / name, workers=1, **kw))
    rows = read_rows(tmp_path / name / "crops.csv")
    for r in rows:
        r["image_path"] = str(Path(r["image_path"]).relative_to(tmp_path / name))
    return rows


def test_max_size_output_sizes_keep_the_aspect_and_the_csv_says_both(tmp_path, export):
    coco, images = export
    rows = {r["annotation_id"]: r for r in run(tmp_path, coco, images, "c", max_size=224)}
    sizes = {k: (int(r["crop_width"]), int(r["crop_height"])) for k, r in rows.items()}
    assert sizes == {"big": (224, 162), "wide": (224, 94), "small": (120, 60), "corner": (117, 89), "top": (224, 65)}
    for k, r in rows.items():
        sw, sh = int(r["source_w"]), int(r["source_h"])
        with Image.open(tmp_path / "c" / r["image_path"]) as im:
            assert im.size == sizes[k]
        assert abs(sizes[k][0] / sizes[k][1] - sw / sh) < 0.02 * sw / sh, k  # aspect kept
    assert (rows["wide"]["source_x"], rows["wide"]["source_y"], rows["wide"]["source_w"], rows["wide"]["source_h"]) == (
        "0",
        "400",
        "1203",
        "505",
    )
    # The resized crop looks like the full-size crop shrunk: same picture, not a shifted or wrong part.
    run(tmp_path, coco, images, "full")
    for k in ("big", "wide"):
        with (
            Image.open(tmp_path / "full" / rows[k]["image_path"]) as full,
            Image.open(tmp_path / "c" / rows[k]["image_path"]) as small,
        ):
            assert mad(full.resize(small.size, Image.Resampling.LANCZOS), small) < 3, k


def test_size_with_square_gives_exact_square_crops(tmp_path, export):
    coco, images = export
    rows = run(tmp_path, coco, images, "sq", size=(224, 224), square=True)
    assert {(r["crop_width"], r["crop_height"]) for r in rows} == {("224", "224")}
    # boxes whose square fits in the image are cut square; the others stop at the image's edge
    assert {r["annotation_id"] for r in rows if r["source_w"] == r["source_h"]} == {"small", "corner"}
    for r in rows:
        with Image.open(tmp_path / "sq" / r["image_path"]) as im:
            assert im.size == (224, 224)


def test_resize_options_are_checked():
    with pytest.raises(ValueError, match="WxH"):
        CropOptions(size="224")
    with pytest.raises(ValueError, match="not both"):
        CropOptions(size="224x224", max_size=224)
    assert CropOptions(size="224X160").size == (224, 160)


_NO_VIPS = """
import sys, json
sys.modules["pyvips"] = None  # as if pyvips were not installed
from pathlib import Path
from sci_fetch.crops import decode
from sci_fetch.crops.options import CropOptions
from sci_fetch.crops.run import run_crops
assert not decode.HAVE_VIPS
opts = CropOptions(crops_dir=Path(sys.argv[3]), workers=1, **json.loads(sys.argv[4]))
run_crops(Path(sys.argv[1]), Path(sys.argv[2]), opts)
"""


@needs_vips
@pytest.mark.parametrize("resize", [{}, {"max_size": 224}])
def test_fallback_without_pyvips_gives_the_same_csv_and_pixels(tmp_path, export, resize):
    coco, images = export
    fast = run(tmp_path, coco, images, "fast", decoder="vips", **resize)
    forced = run(tmp_path, coco, images, "forced", decoder="pillow", **resize)
    proc = subprocess.run(
        [sys.executable, "-c", _NO_VIPS, str(coco), str(images), str(tmp_path / "absent"), json.dumps(resize)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    absent = read_rows(tmp_path / "absent" / "crops.csv")
    for r in absent:
        r["image_path"] = str(Path(r["image_path"]).relative_to(tmp_path / "absent"))
    assert fast == forced == absent and len(fast) == 5
    for r in fast:
        with (
            Image.open(tmp_path / "fast" / r["image_path"]) as a,
            Image.open(tmp_path / "absent" / r["image_path"]) as b,
        ):
            assert mad(a, b) < 1, r["annotation_id"]


def test_workers_import_neither_pydantic_nor_pyvips_until_they_decode():
    """What a fork-server worker loads: every module counts in each worker's resident memory."""
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, sci_fetch.crops.cropper; "
            "print(sorted(m for m in ('pydantic', 'pyvips', 'pandas') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.stdout.strip() == "[]", check.stderr
