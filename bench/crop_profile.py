"""Where a crop worker's time goes, and what each way of decoding costs on the bench's JPEGs.

``python -m bench.crop_profile COCO IMAGES OUT.json [--images N]`` from the repository root (run by
``bench/crops.py``; not as a script: ``bench/profile.py`` would shadow the standard ``profile`` module):

1. Decode micro-timings per image, CPU time in this one process, on the first N images: Pillow's full
   decode (what the seed method pays), Pillow ``draft`` at 1/8, libvips' full decode, the band
   libvips decodes for the image's own boxes (rows 0 to the lowest box's bottom), and libvips at 1/8
   (an image's entropy decoding, which no decoder skips for the rows above a box, is most of that).
2. ``run_crops`` with one worker inline under cProfile, full size and ``--max-size 224``, for each
   decoder: the share of each area (decode, resize, crop copies, encode, file I/O, planning/CSV) and
   the top functions by self time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

AREAS = [  # (area, substrings of "file:function" in pstats keys), first match wins
    ("decode", ("vips_image_write_to_memory", "'decode' of 'ImagingDecoder'", "jpegload", "vips_foreign")),
    ("resize", ("'resize' of 'ImagingCore'", "'reduce' of 'ImagingCore'")),
    ("crop copies", ("'crop' of 'ImagingCore'", "frombytes", "'fill'", "_imaging.new")),
    ("encode", ("'encode_to_file'", "'encode' of 'ImagingEncoder'")),
    ("file I/O", ("io.open", "posix.", "'read' of", "'write' of", "os.replace", "makedirs")),
]


def _subset(coco: Path, n: int, dest: Path) -> Path:
    data = json.loads(coco.read_text())
    images = data["images"][:n]
    ids = {i["id"] for i in images}
    data["images"], data["annotations"] = images, [a for a in data["annotations"] if a["image_id"] in ids]
    dest.write_text(json.dumps(data))
    return dest


def decode_timings(coco: Path, images_dir: Path, n: int) -> dict:
    import pyvips  # the bench runs where sci-fetch[fast] is installed

    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    data = json.loads(coco.read_text())
    bottoms: dict[str, int] = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        bottoms[a["image_id"]] = max(bottoms.get(a["image_id"], 0), int(y + h))
    files = [(images_dir / i["file_name"], bottoms.get(i["id"])) for i in data["images"][:n]]

    def pillow_full(p, _b):
        with Image.open(p) as im:
            im.load()

    def pillow_draft8(p, _b):
        with Image.open(p) as im:
            im.draft("RGB", (im.size[0] // 8, im.size[1] // 8))
            im.load()

    def vips_full(p, _b):
        pyvips.Image.jpegload(str(p), access="sequential-unbuffered").write_to_memory()

    def vips_band(p, b):
        im = pyvips.Image.jpegload(str(p), access="sequential-unbuffered")
        im.crop(0, 0, im.width, min(b or im.height, im.height)).write_to_memory()

    def vips_8(p, _b):
        pyvips.Image.jpegload(str(p), access="sequential-unbuffered", shrink=8).write_to_memory()

    out = {}
    for name, fn in (
        ("pillow_full", pillow_full),
        ("pillow_draft_1_8", pillow_draft8),
        ("vips_full", vips_full),
        ("vips_band_to_lowest_box", vips_band),
        ("vips_1_8", vips_8),
    ):
        started = time.process_time()
        for p, b in files:
            fn(p, b)
        out[name] = round((time.process_time() - started) / len(files) * 1000, 2)
    out["images"] = len(files)
    out["mean_lowest_box_bottom_fraction"] = round(
        sum((b or 0) for _p, b in files) / sum(Image.open(p).size[1] for p, _b in files), 3
    )
    return out


def profile_run(coco: Path, images_dir: Path, **options) -> dict:
    from sci_fetch.crops.options import CropOptions
    from sci_fetch.crops.run import run_crops

    crops = Path(tempfile.mkdtemp(prefix="crop-profile-"))
    try:
        prof = cProfile.Profile(time.process_time)  # CPU time: other load on the machine does not count
        started = time.process_time()
        prof.enable()
        summary = run_crops(coco, images_dir, CropOptions(crops_dir=crops, workers=1, **options))
        prof.disable()
        cpu = time.process_time() - started
    finally:
        shutil.rmtree(crops, ignore_errors=True)
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values()) or 1.0  # self times add up to the whole
    areas = {name: 0.0 for name, _ in AREAS}
    areas["planning, CSV, other"] = 0.0
    top = []
    for (file, line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():
        key = f"{Path(file).name}:{line}({func})" if file != "~" else func
        for name, needles in AREAS:
            if any(n in key for n in needles):
                areas[name] += tt
                break
        else:
            areas["planning, CSV, other"] += tt
        top.append((tt, key))
    top.sort(reverse=True)
    return {
        "options": options,
        "crops": summary.crops,
        "cpu_s": round(cpu, 2),
        "ms_per_crop": round(cpu / max(1, summary.crops) * 1000, 2),
        "areas_pct": {k: round(v / total * 100, 1) for k, v in areas.items()},
        "top": [{"function": k, "self_s": round(t, 3)} for t, k in top[:10]],
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("coco", type=Path)
    p.add_argument("images", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--images", type=int, default=300, dest="n")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crop-profile-coco-"))
    try:
        coco = _subset(args.coco, args.n, work / "coco.json")
        result = {"decode_ms_per_image": decode_timings(coco, args.images, min(args.n, 100)), "runs": []}
        for options in (
            {"decoder": "vips"},
            {"decoder": "pillow"},
            {"decoder": "vips", "max_size": 224},
            {"decoder": "pillow", "max_size": 224},
        ):
            result["runs"].append(profile_run(coco, args.images, **options))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
