"""Benchmark data: Animl-style objects, their COCO file, seeding a bucket, and the synthetic files.

Object bytes are random (incompressible, like JPEG) and derived from ``(seed, index)`` alone, so
nothing is held in memory: the expected md5 and size of every object are kept, not its bytes.
Sizes follow a log-normal spread like camera-trap originals: median about 600 KB, clipped to
150 KB .. 3 MB (``--small``: median about 100 KB, like Animl's ``medium`` variant).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

PROJECT = "sci_bench"
CAMERAS = [
    ("X8114654", "willows_camp"),
    ("P1234567", "pelican_bay"),
    ("X8114655", "scorpion_ranch"),
    ("P1234570", "prisoners_harbor"),
]
CATEGORIES = [
    {"id": 0, "name": "empty"},
    {"id": 1, "name": "fox"},
    {"id": 2, "name": "skunk"},
    {"id": 3, "name": "liz"},
    {"id": 4, "name": "rodnet"},
    {"id": 5, "name": "bird"},
]
SPECIES = [1, 1, 1, 2, 2, 3, 4, 5]

# (median bytes, sigma of log, min, max)
ORIGINAL_SIZES = (600_000, 0.6, 150_000, 3_000_000)
SMALL_SIZES = (100_000, 0.3, 40_000, 250_000)


@dataclass(frozen=True)
class Obj:
    index: int
    image_id: str
    key: str
    file_name: str
    size: int
    md5: str


@dataclass
class Dataset:
    objects: list[Obj]
    variant: str  # "original" or "medium"
    seed: int

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def median_size(self) -> int:
        sizes = sorted(o.size for o in self.objects)
        return sizes[len(sizes) // 2] if sizes else 0


def _size(rng: random.Random, spec: tuple[int, float, int, int]) -> int:
    median, sigma, low, high = spec
    return int(min(high, max(low, math.exp(rng.gauss(math.log(median), sigma)))))


def blob(seed: int, index: int, size: int) -> bytes:
    """The bytes of object ``index``: a JPEG start marker, then random bytes (deterministic)."""
    rng = random.Random(f"{seed}:{index}:bytes")
    return b"\xff\xd8\xff\xe0" + rng.randbytes(size - 4)


def names(index: int, image_id: str, variant: str) -> tuple[str, str]:
    """(S3 key, file_name) as Animl spells them."""
    camera, deployment = CAMERAS[index % len(CAMERAS)]
    file_name = f"{PROJECT}/{camera}/{deployment}/{image_id.replace(':', '-')}.jpg"
    return f"{variant}/{image_id}-{variant}.jpg", file_name


def make_dataset(n: int, seed: int, small: bool = False, fixed_size: int | None = None) -> Dataset:
    """``n`` objects; ``small`` uses the ``medium`` variant keys and ~100 KB sizes; ``fixed_size``
    (for the resume benchmark) gives every object about that many bytes."""
    rng = random.Random(seed)
    spec = SMALL_SIZES if small else ORIGINAL_SIZES
    variant = "medium" if small else "original"
    objects = []
    for i in range(n):
        size = fixed_size + (i % 97) if fixed_size else _size(rng, spec)
        md5 = hashlib.md5(blob(seed, i, size)).hexdigest()
        # The id carries the md5 of the *original*; for the medium variant that is another file.
        id_md5 = md5 if variant == "original" else hashlib.md5(f"{seed}:{i}:original".encode()).hexdigest()
        image_id = f"{PROJECT}:{id_md5}"
        key, file_name = names(i, image_id, variant)
        objects.append(Obj(i, image_id, key, file_name, size, md5))
    return Dataset(objects, variant, seed)


def image_record(obj: Obj, width: int = 2048, height: int = 1536) -> dict:
    camera, _deployment = CAMERAS[obj.index % len(CAMERAS)]
    record = {
        "id": obj.image_id,
        "file_name": obj.file_name,
        "original_file_name": f"IMG_{obj.index:05d}.JPG",
        "datetime": "2023-01-10T06:30:00.000Z",
        "location": camera,
        "width": width,
        "height": height,
    }
    if obj.key.startswith("original/"):
        record["serving_bucket_key"] = obj.key
    return record


def write_coco(path: Path, objects: list[Obj]) -> Path:
    """An Animl-format COCO file naming ``objects`` (one box each, as an export of reviewed images)."""
    images = [image_record(o) for o in objects]
    annotations = [
        {
            "id": f"ann{o.index}",
            "image_id": o.image_id,
            "category_id": SPECIES[o.index % len(SPECIES)],
            "bbox": [100, 200, 300, 200],
            "sequence_level_annotation": False,
        }
        for o in objects
    ]
    path.write_text(
        json.dumps(
            {
                "info": {"version": "1.0", "description": "sci_fetch benchmark"},
                "images": images,
                "annotations": annotations,
                "categories": CATEGORIES,
            }
        )
    )
    return path


def seed_bucket(s3, bucket: str, dataset: Dataset, workers: int = 16) -> None:
    """Upload every object (bytes regenerated from the seed) with a thread pool."""
    s3.ensure_bucket(bucket)
    client = s3._make_client(max_pool_connections=workers * 2)  # noqa: SLF001 - the launcher's own client factory

    def put(obj: Obj) -> None:
        data = blob(dataset.seed, obj.index, obj.size)
        etag = client.put_object(Bucket=bucket, Key=obj.key, Body=data)["ETag"].strip('"')
        if etag != obj.md5:
            raise RuntimeError(f"seeding {obj.key}: server ETag {etag} is not the md5 {obj.md5}")

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(put, dataset.objects):
            pass


def save_objects(path: Path, dataset: Dataset) -> None:
    path.write_text(
        json.dumps({"variant": dataset.variant, "seed": dataset.seed, "objects": [asdict(o) for o in dataset.objects]})
    )


# ---- the memory benchmark's synthetic COCO ----------------------------------------------------


def stream_big_coco(path: Path, n: int, seed: int = 7) -> Path:
    """A COCO file of ``n`` Animl-style image records, written streaming (never held in memory)."""
    rng = random.Random(seed)
    with open(path, "w", buffering=1 << 20) as fh:
        fh.write('{"info": {"version": "1.0", "description": "sci_fetch memory benchmark"}, "images": [\n')
        for i in range(n):
            md5 = f"{rng.getrandbits(128):032x}"
            image_id = f"{PROJECT}:{md5}"
            key, file_name = names(i, image_id, "original")
            if i:
                fh.write(",\n")
            fh.write(
                json.dumps(
                    {
                        "id": image_id,
                        "file_name": file_name,
                        "serving_bucket_key": key,
                        "original_file_name": f"IMG_{i:07d}.JPG",
                        "datetime": "2023-01-10T06:30:00.000Z",
                        "location": CAMERAS[i % len(CAMERAS)][0],
                        "width": 2048,
                        "height": 1536,
                    }
                )
            )
        fh.write('\n], "annotations": [], "categories": ' + json.dumps(CATEGORIES) + "}\n")
    return path


# ---- the crops benchmark's images and annotations ---------------------------------------------

_CROP_SHAPES = [(2048, 1536), (2048, 1536), (2048, 1536), (2560, 1920), (1920, 1080)]


def _base_jpegs(count: int, seed: int, quality: int = 88) -> list[tuple[bytes, tuple[int, int]]]:
    """A few distinct camera-trap-like JPEGs (smooth scene + sensor noise), 0.4-1.5 MB each."""
    import numpy as np
    from PIL import Image

    out = []
    rng = np.random.default_rng(seed)
    for i in range(count):
        w, h = _CROP_SHAPES[i % len(_CROP_SHAPES)]
        y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
        x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
        base = np.stack(
            np.broadcast_arrays(80 + 90 * y + 30 * x, 90 + 60 * y * x + 40 * (1 - x), 60 + 50 * (1 - y)), axis=-1
        )
        noise = rng.normal(0, 6 + 3 * (i % 4), size=(h, w, 3)).astype(np.float32)
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=quality)
        out.append((buf.getvalue(), (w, h)))
    return out


def _unique(jpeg: bytes, index: int) -> bytes:
    """The same picture with a distinct JPEG comment, so every image has its own md5 (= its id)."""
    comment = f"sci_fetch bench image {index}".encode()
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return jpeg[:2] + segment + jpeg[2:]


def crop_images(root: Path, coco_path: Path, n: int, seed: int = 11, boxes_mean: float = 1.5) -> dict:
    """``n`` full-size JPEGs under ``root`` as Animl lays them out, and a COCO file with about
    ``boxes_mean`` boxes per image. Returns counts."""
    rng = random.Random(seed)
    bases = _base_jpegs(min(24, max(1, n)), seed)
    images, annotations = [], []
    total_bytes = 0
    for i in range(n):
        jpeg, (w, h) = bases[i % len(bases)]
        data = _unique(jpeg, i)
        md5 = hashlib.md5(data).hexdigest()
        image_id = f"{PROJECT}:{md5}"
        key, file_name = names(i, image_id, "original")
        dest = root / file_name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        total_bytes += len(data)
        obj = Obj(i, image_id, key, file_name, len(data), md5)
        images.append(image_record(obj, w, h))
        extra = 1 if rng.random() < boxes_mean - 1 else 0
        for _ in range(1 + extra):
            bw, bh = rng.randint(w // 10, w // 3), rng.randint(h // 10, h // 3)
            bx, by = rng.randint(0, w - bw), rng.randint(0, h - bh)
            annotations.append(
                {
                    "id": f"ann{len(annotations)}",
                    "image_id": image_id,
                    "category_id": rng.choice(SPECIES),
                    "bbox": [bx, by, bw, bh],
                }
            )
    rng.shuffle(annotations)  # exports are not sorted by image; a scan finds a box anywhere
    coco_path.write_text(
        json.dumps({"info": {"version": "1.0"}, "images": images, "annotations": annotations, "categories": CATEGORIES})
    )
    return {"images": n, "annotations": len(annotations), "bytes": total_bytes}


def synthetic_annotations(coco_path: Path, n_annotations: int, seed: int = 13, boxes_mean: float = 1.5) -> dict:
    """A COCO file with ``n_annotations`` boxes over ``n_annotations / boxes_mean`` images, no pixels."""
    rng = random.Random(seed)
    n_images = max(1, round(n_annotations / boxes_mean))
    ids = []
    with open(coco_path, "w", buffering=1 << 20) as fh:
        fh.write('{"info": {"version": "1.0"}, "images": [\n')
        for i in range(n_images):
            image_id = f"{PROJECT}:{rng.getrandbits(128):032x}"
            ids.append(image_id)
            key, file_name = names(i, image_id, "original")
            fh.write(
                ("" if i == 0 else ",\n")
                + json.dumps(
                    {"id": image_id, "file_name": file_name, "serving_bucket_key": key, "width": 2048, "height": 1536}
                )
            )
        fh.write('\n], "annotations": [\n')
        order = [ids[i % n_images] for i in range(n_annotations)]
        rng.shuffle(order)
        for j, image_id in enumerate(order):
            fh.write(
                ("" if j == 0 else ",\n")
                + json.dumps(
                    {
                        "id": f"ann{j}",
                        "image_id": image_id,
                        "category_id": rng.choice(SPECIES),
                        "bbox": [100, 100, 300, 200],
                    }
                )
            )
        fh.write('\n], "categories": ' + json.dumps(CATEGORIES) + "}\n")
    return {"images": n_images, "annotations": n_annotations}


def iter_chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            total += os.path.getsize(os.path.join(dirpath, f))
    return total
