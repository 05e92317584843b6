"""Builders for the crop tests: a scene whose regions have known colours, and small COCO files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image, ImageDraw

BG, RED, GREEN, BLUE = (128, 128, 128), (255, 0, 0), (0, 200, 0), (0, 0, 255)
SIZE = (256, 128)
# (colour, [x0, y0, x1, y1]) in the 256x128 original; multiples of 16 so JPEG blocks stay clean.
REGIONS = [(RED, (32, 32, 96, 64)), (GREEN, (160, 16, 192, 112)), (BLUE, (224, 96, 256, 128))]
CATEGORIES = [
    {"id": 0, "name": "empty"},
    {"id": 1, "name": "fox"},
    {"id": 2, "name": "liz"},
    {"id": 3, "name": "striped skunk"},
    {"id": 4, "name": "person"},
]


def scene(scale: float = 1.0) -> Image.Image:
    """The test picture; ``scale`` 0.5 is what a `medium`-like variant of it looks like."""
    image = Image.new("RGB", (round(SIZE[0] * scale), round(SIZE[1] * scale)), BG)
    draw = ImageDraw.Draw(image)
    for colour, (x0, y0, x1, y1) in REGIONS:
        draw.rectangle([x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1], fill=colour)
    return image


def put_image(images_dir: Path, file_name: str, image: Image.Image | None = None, **save) -> Path:
    path = images_dir / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    (image or scene()).save(path, **save)
    return path


def image_record(n: int, file_name: str | None = None, size: tuple[int, int] | None = SIZE, **extra) -> dict:
    record = {
        "id": f"proj:{n:032x}",
        "file_name": file_name or f"proj/CAM{n}/dep/proj-{n:032x}.png",
        "datetime": f"2023-01-0{n % 9 + 1}T06:30:00.000Z",
        "location": f"Site {n}",
    }
    if size is not None:
        record["width"], record["height"] = size
    record.update(extra)
    return record


def annotation(ann_id: str, image: dict, category_id: int, bbox, **extra) -> dict:
    return {
        "id": ann_id,
        "image_id": image["id"],
        "category_id": category_id,
        "sequence_level_annotation": False,
        "bbox": bbox,
        **extra,
    }


def write_coco(path: Path, images: list, annotations: list, categories: list | None = None) -> Path:
    path.write_text(
        json.dumps(
            {
                "info": {"version": "1.0"},
                "images": images,
                "annotations": annotations,
                "categories": CATEGORIES if categories is None else categories,
            },
            indent=1,
        )
    )
    return path


def close(pixel, colour, tol: int = 16) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, colour, strict=False))


def pixel(path: Path, x: int, y: int) -> tuple:
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.format == "JPEG"
        return im.getpixel((x, y))


def assert_filled(path: Path, colour, size: tuple[int, int], inset: int = 3) -> None:
    """The crop has ``size`` and ``colour`` everywhere but a thin border (JPEG blurs edges a little)."""
    with Image.open(path) as im:
        assert im.size == size and im.mode == "RGB" and im.format == "JPEG"
        w, h = size
        for x in (inset, w // 2, w - 1 - inset):
            for y in (inset, h // 2, h - 1 - inset):
                assert close(im.getpixel((x, y)), colour), (path.name, (x, y), im.getpixel((x, y)), colour)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
