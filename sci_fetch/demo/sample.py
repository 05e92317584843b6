"""The bundled demo sample: synthetic camera-trap JPEGs plus an Animl-format COCO file.

Why synthetic and generated: the demo and the tests need real JPEG bytes whose MD5 *is* the image
id (as in real Animl exports), boxes at known places, and the awkward cases of real exports (a box
that sticks out of the image, images without a size whose boxes are ``null``, ``empty`` labels,
unreviewed images, typo'd category names), without shipping megabytes of photos. Everything is
drawn from one seeded RNG and saved with fixed JPEG settings, so a seed always gives the same
bytes (with the same Pillow build).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont

if TYPE_CHECKING:
    from sci_fetch.demo.seaweed import SeaweedS3

__all__ = [
    "CATEGORIES",
    "CAMERAS",
    "MEDIUM_FIT",
    "SMALL_FIT",
    "Sample",
    "make_sample",
    "upload_sample",
]

# Same ids and names as the SCI project, typos included: the tool must not "fix" names.
CATEGORIES: list[dict[str, Any]] = [
    {"id": 0, "name": "empty"},
    {"id": 1, "name": "fox"},
    {"id": 2, "name": "skunk"},
    {"id": 3, "name": "liz"},
    {"id": 4, "name": "rodnet"},
    {"id": 5, "name": "bird"},
    {"id": 6, "name": "person"},
    {"id": 7, "name": "vehicle"},
    {"id": 8, "name": "animal"},
]
_CAT = {c["name"]: c["id"] for c in CATEGORIES}

# (cameraId, deployment slug used in file_name, location shown in the export)
CAMERAS: list[tuple[str, str, str]] = [
    ("X8114654", "willows_camp", "Willows Camp"),
    ("P1234567", "pelican_bay", "Pelican Bay"),
    ("X8114655", "scorpion_ranch", "Scorpion Ranch"),
    ("P1234570", "prisoners_harbor", "Prisoners Harbor"),
]

MEDIUM_FIT = (940, 940)
SMALL_FIT = (120, 120)
_SIZES = [(1024, 768), (1024, 768), (1280, 960)]
_JPEG: dict[str, Any] = {"format": "JPEG", "quality": 88, "subsampling": 2, "optimize": False, "progressive": False}
_INFO_BAR = 28
_START = datetime(2023, 1, 10, 6, 30, 0)

# Fill colours per category: solid, so a crop is easy to check by eye.
_COLOURS = {
    "fox": (168, 96, 52),
    "skunk": (20, 20, 22),
    "liz": (120, 104, 60),
    "rodnet": (140, 128, 118),
    "bird": (60, 70, 140),
    "person": (200, 60, 40),
    "vehicle": (230, 230, 235),
    "animal": (110, 80, 60),
}
# Box size (w, h) ranges as fractions of the image width, per category.
_BOX_FRAC = {
    "fox": ((0.14, 0.26), (0.09, 0.16)),
    "skunk": ((0.10, 0.18), (0.06, 0.10)),
    "liz": ((0.05, 0.09), (0.03, 0.05)),
    "rodnet": ((0.05, 0.08), (0.04, 0.06)),
    "bird": ((0.06, 0.11), (0.05, 0.09)),
    "person": ((0.08, 0.12), (0.25, 0.34)),
    "vehicle": ((0.30, 0.42), (0.15, 0.22)),
    "animal": ((0.10, 0.18), (0.07, 0.12)),
}
_SPECIES = ["fox", "fox", "fox", "skunk", "skunk", "liz", "rodnet", "bird"]


@dataclass
class Sample:
    """A generated sample: the COCO dict, every S3 object by key, and where the COCO was written."""

    coco: dict[str, Any]
    objects: dict[str, bytes]
    coco_path: Path
    project_id: str = "sci_demo"
    # image id -> the drawn boxes [x, y, w, h], including those the COCO reports as null.
    drawn_boxes: dict[str, list[list[int]]] = field(default_factory=dict)


@dataclass
class _Plan:
    kind: str  # "species", "multi", "mixed", "outside", "outside_bottom", "nosize", "empty", "unreviewed"
    labels: list[str]
    size: tuple[int, int]
    camera: tuple[str, str, str]
    when: datetime


def _plans(n: int, rng: random.Random) -> list[_Plan]:
    """Special cases first (so even a tiny sample has them), then ordinary random images."""
    special: dict[int, tuple[str, list[str]]] = {
        0: ("multi", ["fox", "fox", "fox"]),
        1: ("outside", ["fox"]),
        2: ("nosize", ["liz"]),
        3: ("empty", []),
        4: ("unreviewed", []),
        5: ("species", ["person"]),
        6: ("species", ["vehicle"]),
        7: ("mixed", ["fox", "bird"]),
        8: ("species", ["animal"]),
    }
    if n >= 12:
        special[n // 2 + 1] = ("nosize", ["skunk", "skunk"])
        special[n - 1] = ("outside_bottom", ["skunk"])
    plans: list[_Plan] = []
    when = _START
    for i in range(n):
        if i in special:
            kind, labels = special[i]
        elif rng.random() < 0.1:
            kind, labels = "empty", []
        else:
            species = rng.choice(_SPECIES)
            kind, labels = "species", [species] * rng.choice([1, 1, 1, 2])
        plans.append(_Plan(kind, labels, _SIZES[i % len(_SIZES)], CAMERAS[i % len(CAMERAS)], when))
        # Next shot one to three days later, mostly by day (about a quarter are night shots).
        day = when.replace(hour=0, minute=0) + timedelta(days=rng.randint(1, 3))
        when = day + timedelta(hours=rng.randint(5, 21), minutes=rng.randint(0, 59))
    return plans


def _boxes(plan: _Plan, rng: random.Random) -> list[list[int]]:
    """Boxes on the ground, not overlapping the info bar, except the ones meant to stick out."""
    w, h = plan.size
    horizon = int(h * 0.42)
    boxes: list[list[int]] = []
    for j, label in enumerate(plan.labels):
        (fw0, fw1), (fh0, fh1) = _BOX_FRAC[label]
        bw = int(w * rng.uniform(fw0, fw1))
        bh = int(w * rng.uniform(fh0, fh1))
        bh = min(bh, h - _INFO_BAR - horizon - 2)
        if plan.kind == "outside" and j == 0:
            x, y = w - bw // 2, rng.randint(horizon, h - _INFO_BAR - bh)  # half past the right edge
        elif plan.kind == "outside_bottom" and j == 0:
            x, y = rng.randint(0, w - bw), h - (2 * bh) // 3  # a third below the bottom edge
        else:
            # Spread several animals over separate vertical strips so boxes do not overlap.
            strip = w // max(1, len(plan.labels))
            x0 = j * strip
            x = rng.randint(x0, max(x0, x0 + strip - bw))
            y = rng.randint(horizon, max(horizon, h - _INFO_BAR - bh))
        boxes.append([x, y, bw, bh])
    return boxes


def _background(w: int, h: int, rng: random.Random) -> Image.Image:
    """Sky and ground gradients plus texture, so the JPEGs are not trivially small (~90-160 KB)."""
    horizon = int(h * rng.uniform(0.30, 0.42))
    column = Image.new("RGB", (1, h))
    sky_top, sky_low = (96, 140, 200), (186, 204, 222)
    ground_top, ground_low = (122, 128, 78), (86, 72, 46)
    for y in range(h):
        if y < horizon:
            t = y / max(1, horizon - 1)
            a, b = sky_top, sky_low
        else:
            t = (y - horizon) / max(1, h - horizon - 1)
            a, b = ground_top, ground_low
        column.putpixel((0, y), tuple(int(a[k] + (b[k] - a[k]) * t) for k in range(3)))
    img = column.resize((w, h), Image.Resampling.NEAREST)

    coarse = Image.frombytes("L", (w // 16, h // 16), rng.randbytes((w // 16) * (h // 16)))
    coarse = coarse.resize((w, h), Image.Resampling.BILINEAR)
    fine = Image.frombytes("L", (w, h), rng.randbytes(w * h)).filter(ImageFilter.BoxBlur(1))
    texture = Image.blend(coarse, fine, 0.55)
    tex_rgb = Image.merge("RGB", (texture, texture, texture))
    ground = Image.blend(img, tex_rgb, 0.32)
    sky = Image.blend(img, tex_rgb, 0.05)
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).rectangle([0, horizon, w, h], fill=255)
    img = Image.composite(ground, sky, mask)

    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(4, 9)):  # bushes along the horizon
        bx = rng.randint(-60, w)
        bw, bh = rng.randint(60, 220), rng.randint(30, 90)
        shade = rng.randint(40, 80)
        draw.ellipse(
            [bx, horizon - bh // 2, bx + bw, horizon + bh // 2],
            fill=(shade - 10, shade + 20, shade - 25),
        )
    return img


def _draw_animal(draw: ImageDraw.ImageDraw, label: str, box: list[int]) -> None:
    x, y, bw, bh = box
    colour = _COLOURS[label]
    if label in ("person", "vehicle"):
        draw.rectangle([x, y, x + bw - 1, y + bh - 1], fill=colour)
    else:
        draw.ellipse([x, y, x + bw - 1, y + bh - 1], fill=colour)
        if label == "skunk":  # the stripe
            draw.rectangle([x + bw // 5, y + bh // 3, x + 4 * bw // 5, y + bh // 2], fill=(235, 235, 235))


def _info_bar(img: Image.Image, text: str) -> None:
    """The black strip with camera name and time that real trail cameras burn into the photo."""
    w, h = img.size
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, h - _INFO_BAR, w, h], fill=(0, 0, 0))
    draw.text((10, h - _INFO_BAR + 8), text, fill=(255, 255, 255), font=ImageFont.load_default())


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, **_JPEG)
    return buf.getvalue()


def _fit(img: Image.Image, box: tuple[int, int]) -> Image.Image:
    """Scale down to fit ``box`` keeping the aspect ratio (never up), as Animl's variants do."""
    w, h = img.size
    scale = min(box[0] / w, box[1] / h, 1.0)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img if size == (w, h) else img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def make_sample(
    out_dir: Path | str,
    n_images: int = 36,
    seed: int = 7,
    project_id: str = "sci_demo",
) -> Sample:
    """Generate the sample and write ``out_dir/sample-coco.json``; objects stay in memory."""
    if n_images < 1:
        raise ValueError("n_images must be at least 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    objects: dict[str, bytes] = {}
    drawn: dict[str, list[list[int]]] = {}
    for i, plan in enumerate(_plans(n_images, rng)):
        img, boxes = _photo(plan, i, rng)
        original = _jpeg(img)
        record = _record(plan, i, project_id, original)
        image_id = record["id"]
        images.append(record)
        objects[record["serving_bucket_key"]] = original
        objects[f"medium/{image_id}-medium.jpg"] = _jpeg(_fit(img, MEDIUM_FIT))
        objects[f"small/{image_id}-small.jpg"] = _jpeg(_fit(img, SMALL_FIT))
        drawn[image_id] = boxes
        annotations.extend(_annotations(plan, image_id, boxes, first=len(annotations) + 1))
    coco = {
        "info": {
            "version": "1.0",
            "description": f"sci_fetch demo sample (synthetic camera-trap images, seed {seed})",
            "year": 2023,
            "date_created": "2023-11-17T00:00:00.000Z",
        },
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in CATEGORIES],
    }
    coco_path = out_dir / "sample-coco.json"
    coco_path.write_text(json.dumps(coco, indent=2) + "\n")
    return Sample(coco=coco, objects=objects, coco_path=coco_path, project_id=project_id, drawn_boxes=drawn)


def _photo(plan: _Plan, i: int, rng: random.Random) -> tuple[Image.Image, list[list[int]]]:
    """The picture of one plan, and where its animals were drawn."""
    w, h = plan.size
    img = _background(w, h, rng)
    boxes = _boxes(plan, rng)
    camera_id = plan.camera[0]
    _info_bar(img, f"{camera_id}  {plan.when:%Y-%m-%d %H:%M:%S}  {_original_name(i)}")
    # Animals after the bar, so the one that sticks out at the bottom stays visible.
    draw = ImageDraw.Draw(img)
    for label, box in zip(plan.labels, boxes, strict=False):
        _draw_animal(draw, label, box)
    if plan.when.hour < 6 or plan.when.hour >= 19:  # infrared flash: grey night shots
        img = img.convert("L").convert("RGB")
    return img, boxes


def _original_name(i: int) -> str:
    return f"IMG_{i + 1:04d}.JPG"


def _record(plan: _Plan, i: int, project_id: str, original: bytes) -> dict[str, Any]:
    """The COCO image record as Animl exports it: the id carries the md5 of the original's bytes."""
    camera_id, deployment, location = plan.camera
    image_id = f"{project_id}:{hashlib.md5(original).hexdigest()}"
    record: dict[str, Any] = {
        "id": image_id,
        "file_name": f"{project_id}/{camera_id}/{deployment}/{image_id.replace(':', '-')}.jpg",
        "original_file_name": _original_name(i),
        "serving_bucket_key": f"original/{image_id}-original.jpg",
        "datetime": _iso(plan.when),
        "location": location,
    }
    if plan.kind != "nosize":
        record["width"], record["height"] = plan.size
    return record


def _annotations(plan: _Plan, image_id: str, boxes: list[list[int]], first: int) -> list[dict[str, Any]]:
    """The reviewed boxes of one image (none when unreviewed; all-null boxes when Animl had no size)."""
    if plan.kind == "unreviewed":
        return []
    labelled: list[tuple[str, list[int | None]]]
    if plan.kind == "empty":
        labelled = [("empty", [0, 0, 0, 0])]
    elif plan.kind == "nosize":
        labelled = [(label, [None, None, None, None]) for label in plan.labels]
    else:
        labelled = [(label, list(box)) for label, box in zip(plan.labels, boxes, strict=False)]
    return [
        {
            "id": f"obj{first + n:04d}",
            "image_id": image_id,
            "category_id": _CAT[label],
            "sequence_level_annotation": False,
            "bbox": bbox,
        }
        for n, (label, bbox) in enumerate(labelled)
    ]


def upload_sample(
    sample: Sample,
    s3: SeaweedS3,
    bucket: str,
    *,
    workers: int = 8,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Put every object (originals and variants) into ``bucket``; returns how many were put."""
    s3.ensure_bucket(bucket)
    client = s3.client()  # boto3 clients are thread-safe; one connection pool for all workers

    def put(item: tuple[str, bytes]) -> str:
        key, data = item
        client.put_object(Bucket=bucket, Key=key, Body=data)
        return key

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for key in pool.map(put, sample.objects.items()):
            if progress is not None:
                progress(key)
    return len(sample.objects)
