"""A re-creation of the crop method sci_fetch replaces (the seed's): the baseline for crops/s.

The method: ``json.load`` the COCO file; for each image, scan the WHOLE annotation list from the
start for the first annotation with that ``image_id`` (so the work grows with images × annotations,
quadratically), crop that one box only with Pillow, save it with Pillow's defaults (JPEG quality 75),
in a ``ThreadPoolExecutor`` with its default number of threads; then write ``image_path,species_label``.
Images with no annotation, or whose file is not there, are skipped.

``--sample K`` processes only K images drawn at random (same scan, same work per image) and reports
the loop time scaled to all images: at 100,000 annotations the full quadratic scan takes minutes.

Prints one JSON line: images, processed, crops, load_s, loop_s, estimated_total_s.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from PIL import Image


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", required=True)
    parser.add_argument("--images-dir", required=True)
    parser.add_argument("--crops-dir", required=True)
    parser.add_argument(
        "--threads", type=int, default=None, help="default: ThreadPoolExecutor's own (min(32, CPUs + 4))"
    )
    parser.add_argument("--sample", type=int, default=0)
    args = parser.parse_args()

    started = time.perf_counter()
    with open(args.coco) as fh:
        coco = json.load(fh)
    images, annotations = coco["images"], coco["annotations"]
    names = {c["id"]: c["name"] for c in coco["categories"]}
    load_s = time.perf_counter() - started
    todo = images
    if args.sample and args.sample < len(images):
        todo = random.Random(0).sample(images, args.sample)

    def crop_one(image: dict) -> tuple[str, str] | None:
        ann = None
        for a in annotations:  # the linear scan, first box only
            if a["image_id"] == image["id"]:
                ann = a
                break
        if ann is None:
            return None
        src = os.path.join(args.images_dir, image["file_name"])
        try:
            img = Image.open(src)
        except OSError:
            return None
        x, y, w, h = ann["bbox"]
        crop = img.crop((x, y, x + w, y + h))
        dest = os.path.join(args.crops_dir, os.path.splitext(image["file_name"])[0] + "_crop.jpg")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        crop.save(dest)
        return dest, names.get(ann["category_id"], "")

    loop_started = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        rows = [r for r in pool.map(crop_one, todo) if r is not None]
    loop_s = time.perf_counter() - loop_started
    os.makedirs(args.crops_dir, exist_ok=True)
    with open(os.path.join(args.crops_dir, "crops.csv"), "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_path", "species_label"])
        writer.writerows(rows)
    scale = len(images) / len(todo) if todo else 1.0
    print(
        json.dumps(
            {
                "images": len(images),
                "annotations": len(annotations),
                "processed": len(todo),
                "crops": len(rows),
                "load_s": round(load_s, 3),
                "loop_s": round(loop_s, 3),
                "estimated_total_s": round(load_s + loop_s * scale, 3),
                "threads": pool._max_workers,
            }
        )
    )  # noqa: SLF001
    return 0


if __name__ == "__main__":
    sys.exit(main())
