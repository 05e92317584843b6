"""Part 4c: crops/s for full-size images, sci_fetch against the seed's method, and how each scales.

1. ``--crop-images`` (default 2,000) camera-trap-sized JPEGs (2-5 MP, 0.5-1.5 MB) with about 1.5
   boxes each: sci_fetch's crop stage (every box, process pool of every usable CPU, JPEG quality 95,
   its defaults) against ``bench/seed_crops.py`` (first box only, thread pool, quality 75).
2. Scaling, no pixels: COCO files of 10,000 .. 100,000 synthetic annotations (about 1.5 per image)
   and no image files, so only reading, joining, planning and writing the CSVs is timed. Both are
   timed inside their process (no interpreter start-up): sci_fetch's ``run_crops`` from its call to
   its return, the seed method from ``json.load`` to its last row. The log-log slope of time against
   annotations is ~1 for linear work and ~2 for quadratic. The seed method is timed on a random
   sample of images when the full scan would take long (``--scan-sample``), scaled to all images.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.data import crop_images, synthetic_annotations
from bench.proc import run_measured

HERE = Path(__file__).resolve().parent

# run_crops through the API: prints its summary, then one JSON line with the time spent inside
# run_crops (no interpreter start-up), which the scaling test compares with the seed method's loop time.
_API_RUNNER = (
    "import json, sys\nfrom pathlib import Path\nfrom sci_fetch.crops.options import CropOptions\n"
    "from sci_fetch.crops.run import run_crops\n"
    "s = run_crops(Path(sys.argv[1]), Path(sys.argv[2]), CropOptions(crops_dir=Path(sys.argv[3])))\n"
    "print('\\n'.join(s.lines()))\n"
    "print(json.dumps({'seconds': s.seconds, 'crops': s.crops, 'boxes': s.boxes}))\n"
)


def sci_crops_command(coco: Path, images: Path, crops: Path, api: bool = False) -> list[str]:
    """``sci-fetch crops`` when the CLI has it (and not ``api``), else the same ``run_crops`` call through the API."""
    probe = subprocess.run([sys.executable, "-m", "sci_fetch", "crops", "--help"], capture_output=True)
    if probe.returncode == 0 and not api:
        return [sys.executable, "-m", "sci_fetch", "crops", str(coco), "--output", str(images), "--crops-dir", str(crops)]
    return [sys.executable, "-c", _API_RUNNER, str(coco), str(images), str(crops)]


def _count_jpegs(root: Path) -> int:
    return sum(1 for _d, _s, files in os.walk(root) for f in files if f.endswith(".jpg"))


def _slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(time) against log(size)."""
    pts = [(math.log(n), math.log(t)) for n, t in points if t and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return round(sum((x - mx) * (y - my) for x, y in pts) / den, 3) if den else None


def run_crops_bench(*, n_images: int, scaling: list[int], scan_sample: int, workdir: Path, say,
                    env: dict[str, str]) -> dict:
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    root = workdir / "crops-bench"
    shutil.rmtree(root, ignore_errors=True)
    images = root / "images"
    coco = root / "coco.json"
    t0 = time.perf_counter()
    made = crop_images(images, coco, n_images)
    say(f"[crops] {made['images']} JPEGs ({made['bytes'] / made['images'] / 1e6:.2f} MB mean), "
        f"{made['annotations']} boxes, generated in {time.perf_counter() - t0:.0f} s")
    result: dict = {"images": made["images"], "boxes": made["annotations"], "mean_image_mb": round(made["bytes"] / made["images"] / 1e6, 2)}

    os.sync()
    cmd = sci_crops_command(coco, images, root / "sci-crops")
    m = run_measured(cmd, env=env, cwd=workdir, log_prefix=logs / "crops-sci", timeout=7200)
    n_sci = _count_jpegs(root / "sci-crops")
    result["sci_fetch"] = {"wall_s": round(m.wall, 2), "cpu_s": round(m.cpu, 2), "crops": n_sci,
                           "crops_per_s": round(n_sci / m.wall, 1), "images_per_s": round(made["images"] / m.wall, 1),
                           "peak_rss_mb": round(m.maxrss_mb, 1), "exit": m.returncode,
                           "how": "CLI" if "-c" not in cmd else "API run_crops", "summary": m.stdout[-600:]}
    say(f"[crops] sci_fetch: {n_sci} crops in {m.wall:.1f} s = {n_sci / m.wall:.1f} crops/s, exit {m.returncode}")

    os.sync()
    s = run_measured([sys.executable, str(HERE / "seed_crops.py"), "--coco", str(coco), "--images-dir", str(images),
                      "--crops-dir", str(root / "seed-crops")], env=env, cwd=workdir, log_prefix=logs / "crops-seed",
                     timeout=7200)
    n_seed = _count_jpegs(root / "seed-crops")
    result["seed_method"] = {"wall_s": round(s.wall, 2), "cpu_s": round(s.cpu, 2), "crops": n_seed,
                             "crops_per_s": round(n_seed / s.wall, 1), "images_per_s": round(made["images"] / s.wall, 1),
                             "peak_rss_mb": round(s.maxrss_mb, 1), "exit": s.returncode}
    say(f"[crops] seed method: {n_seed} crops in {s.wall:.1f} s = {n_seed / s.wall:.1f} crops/s, exit {s.returncode}")
    if n_seed and s.wall:
        result["crops_per_s_ratio"] = round((n_sci / m.wall) / (n_seed / s.wall), 2)
    shutil.rmtree(root, ignore_errors=True)

    # Scaling: annotations only, no pixels.
    rows = []
    for n_ann in scaling:
        sroot = workdir / f"scaling-{n_ann}"
        shutil.rmtree(sroot, ignore_errors=True)
        (sroot / "images").mkdir(parents=True)
        scoco = sroot / "coco.json"
        info = synthetic_annotations(scoco, n_ann)
        sm = run_measured(sci_crops_command(scoco, sroot / "images", sroot / "sci", api=True), env=env, cwd=workdir,
                          log_prefix=logs / f"scaling-sci-{n_ann}", timeout=7200)
        try:
            sci_s = json.loads(sm.stdout.strip().splitlines()[-1])["seconds"]
        except (ValueError, IndexError, KeyError):
            sci_s = None
        sample = scan_sample if info["images"] > scan_sample else 0
        sd = run_measured([sys.executable, str(HERE / "seed_crops.py"), "--coco", str(scoco), "--images-dir",
                           str(sroot / "images"), "--crops-dir", str(sroot / "seed"), "--sample", str(sample)],
                          env=env, cwd=workdir, log_prefix=logs / f"scaling-seed-{n_ann}", timeout=7200)
        try:
            seed_info = json.loads(sd.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            seed_info = {}
        seed_s = seed_info.get("estimated_total_s")
        row = {"annotations": n_ann, "images": info["images"],
               "sci_fetch_s": round(sci_s, 3) if sci_s is not None else None, "sci_fetch_wall_s": round(sm.wall, 3),
               "sci_fetch_exit": sm.returncode, "seed_s": seed_s, "seed_wall_s": round(sd.wall, 3),
               "sci_fetch_us_per_annotation": round(sci_s / n_ann * 1e6, 1) if sci_s else None,
               "seed_us_per_annotation": round(seed_s / n_ann * 1e6, 1) if seed_s else None,
               "seed_sampled_images": seed_info.get("processed"), "seed_estimated": bool(sample)}
        rows.append(row)
        say(f"[crops] scaling {n_ann:>7,} annotations: sci_fetch {sci_s if sci_s is not None else float('nan'):7.2f} s, seed method "
            f"{seed_s if seed_s is not None else float('nan'):8.2f} s" + (f" (estimated from {sample} images)" if sample else ""))
        shutil.rmtree(sroot, ignore_errors=True)
    result["scaling"] = rows
    result["scaling_slope_sci_fetch"] = _slope([(r["annotations"], r["sci_fetch_s"]) for r in rows])
    result["scaling_slope_seed"] = _slope([(r["annotations"], r["seed_s"]) for r in rows])
    return result
