"""Part 4c: crops/s for full-size images, sci_fetch against the seed's method, and how each scales.

1. ``--crop-images`` (default 2,000) camera-trap-sized JPEGs (2-5 MP, 0.5-1.5 MB) with about 1.5
   boxes each: sci_fetch's crop stage (every box, process pool of every usable CPU, JPEG quality 95,
   its defaults) at full size and with ``--max-size 224``, each with the default decoder (libvips when
   installed) and with ``--decoder pillow``, against ``bench/seed_crops.py`` (first box only, thread
   pool, quality 75), run before and after them. Then a cProfile of the crop worker and per-image
   decode timings (``bench/crop_profile.py``), and the same side-by-side runs on 40 20-megapixel
   originals for peak RSS.
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


def sci_crops_command(
    coco: Path, images: Path, crops: Path, api: bool = False, extra: list[str] | None = None
) -> list[str]:
    """``sci-fetch crops`` when the CLI has it (and not ``api``), else the same ``run_crops`` call through the API."""
    probe = subprocess.run([sys.executable, "-m", "sci_fetch", "crops", "--help"], capture_output=True)
    if probe.returncode == 0 and not api:
        return [
            sys.executable,
            "-m",
            "sci_fetch",
            "crops",
            str(coco),
            "--output",
            str(images),
            "--crops-dir",
            str(crops),
            *(extra or []),
        ]
    return [sys.executable, "-c", _API_RUNNER, str(coco), str(images), str(crops)]


# The sci_fetch runs measured side by side with the seed method, on the same images and boxes.
SCI_RUNS = [
    ("sci_fetch", "full size, default decoder", []),
    ("sci_fetch_pillow", "full size, --decoder pillow (the fallback)", ["--decoder", "pillow"]),
    ("sci_fetch_max224", "--max-size 224, default decoder", ["--max-size", "224"]),
    ("sci_fetch_max224_pillow", "--max-size 224, --decoder pillow", ["--max-size", "224", "--decoder", "pillow"]),
]


def _decoder_in_use(env: dict[str, str]) -> str:
    probe = subprocess.run(
        [sys.executable, "-c", "from sci_fetch.crops.decode import resolve; print(resolve('auto'))"],
        capture_output=True,
        text=True,
        env=env,
    )
    return probe.stdout.strip() or f"unknown ({probe.stderr.strip()[-200:]})"


def _measure(cmd: list[str], out_dir: Path, n_images: int, *, env, workdir: Path, log: Path, cpu: bool = True) -> dict:
    """``cpu=False`` for sci_fetch: its crop workers are children of a fork server, which nobody waits
    for, so their CPU is in no rusage the parent sees; the column would show the main process alone."""
    os.sync()
    m = run_measured(cmd, env=env, cwd=workdir, log_prefix=log, timeout=7200)
    n = _count_jpegs(out_dir)
    return {
        "wall_s": round(m.wall, 2),
        "cpu_s": round(m.cpu, 2) if cpu else None,
        "crops": n,
        "crops_per_s": round(n / m.wall, 1),
        "images_per_s": round(n_images / m.wall, 1),
        "peak_rss_mb": round(m.maxrss_mb, 1),
        "exit": m.returncode,
        "summary": m.stdout[-600:],
    }


def big_images(root: Path, coco_path: Path, n: int, seed: int = 17) -> dict:
    """``n`` 20-megapixel JPEGs (5184x3888, 4 distinct scenes) with about 1.5 boxes each: the memory check."""
    import hashlib
    import io
    import random

    import numpy as np
    from PIL import Image

    from bench.data import CATEGORIES, PROJECT, SPECIES

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    w, h = 5184, 3888
    bases = []
    for i in range(4):
        y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
        x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
        base = np.stack(
            np.broadcast_arrays(80 + 90 * y + 30 * x, 90 + 60 * y * x + 40 * (1 - x), 60 + 50 * (1 - y)), axis=-1
        )
        pixels = np.clip(base + nrng.normal(0, 6 + 3 * i, size=(h, w, 3)).astype(np.float32), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=88)
        bases.append(buf.getvalue())
    images, annotations, total = [], [], 0
    for i in range(n):
        comment = f"sci_fetch bench 20 MP image {i}".encode()
        data = bases[i % 4][:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + bases[i % 4][2:]
        image_id = f"{PROJECT}:{hashlib.md5(data).hexdigest()}"
        file_name = f"{PROJECT}/BIG/dep/{image_id.replace(':', '-')}.jpg"
        (root / file_name).parent.mkdir(parents=True, exist_ok=True)
        (root / file_name).write_bytes(data)
        total += len(data)
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for _ in range(1 + (rng.random() < 0.5)):
            bw, bh = rng.randint(w // 10, w // 3), rng.randint(h // 10, h // 3)
            annotations.append(
                {
                    "id": f"big{len(annotations)}",
                    "image_id": image_id,
                    "category_id": rng.choice(SPECIES),
                    "bbox": [rng.randint(0, w - bw), rng.randint(0, h - bh), bw, bh],
                }
            )
    coco_path.write_text(
        json.dumps({"info": {"version": "1.0"}, "images": images, "annotations": annotations, "categories": CATEGORIES})
    )
    return {"images": n, "annotations": len(annotations), "bytes": total}


def _side_by_side(
    coco: Path, images: Path, root: Path, n_images: int, *, env, workdir: Path, logs: Path, say, tag: str = ""
) -> dict:
    """The seed method, every SCI_RUNS entry, the seed method again: drift on a shared machine shows and
    the seed's figure is the mean of its two runs."""
    out: dict = {}
    seed_runs = []
    for turn in ("first", "last"):
        if turn == "last":
            for key, what, extra in SCI_RUNS:
                shutil.rmtree(root / f"sci-{key}", ignore_errors=True)
                cmd = sci_crops_command(coco, images, root / f"sci-{key}", extra=extra)
                r = _measure(
                    cmd,
                    root / f"sci-{key}",
                    n_images,
                    env=env,
                    workdir=workdir,
                    log=logs / f"crops{tag}-{key}",
                    cpu=False,
                )
                r["what"], r["how"] = what, "CLI" if "-c" not in cmd else "API run_crops"
                out[key] = r
                say(
                    f"[crops{tag}] {key} ({what}): {r['crops']} crops in {r['wall_s']:.1f} s = {r['crops_per_s']:.1f} crops/s, "
                    f"peak RSS {r['peak_rss_mb']:.0f} MB, exit {r['exit']}"
                )
                shutil.rmtree(root / f"sci-{key}", ignore_errors=True)
        shutil.rmtree(root / "seed-crops", ignore_errors=True)
        s = _measure(
            [
                sys.executable,
                str(HERE / "seed_crops.py"),
                "--coco",
                str(coco),
                "--images-dir",
                str(images),
                "--crops-dir",
                str(root / "seed-crops"),
            ],
            root / "seed-crops",
            n_images,
            env=env,
            workdir=workdir,
            log=logs / f"crops{tag}-seed-{turn}",
        )
        seed_runs.append(s)
        say(
            f"[crops{tag}] seed method ({turn}): {s['crops']} crops in {s['wall_s']:.1f} s = {s['crops_per_s']:.1f} crops/s, exit {s['exit']}"
        )
    seed = dict(seed_runs[0])
    seed["crops_per_s"] = round(sum(r["crops_per_s"] for r in seed_runs) / 2, 1)
    seed["wall_s"] = round(sum(r["wall_s"] for r in seed_runs) / 2, 2)
    seed["images_per_s"] = round(sum(r["images_per_s"] for r in seed_runs) / 2, 1)
    seed["peak_rss_mb"] = max(r["peak_rss_mb"] for r in seed_runs)
    seed["runs_crops_per_s"] = [r["crops_per_s"] for r in seed_runs]
    out["seed_method"] = seed
    for key, _what, _extra in SCI_RUNS:
        if seed["crops_per_s"]:
            out[key]["x_seed"] = round(out[key]["crops_per_s"] / seed["crops_per_s"], 2)
    return out


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


def run_crops_bench(
    *, n_images: int, scaling: list[int], scan_sample: int, workdir: Path, say, env: dict[str, str], big_count: int = 40
) -> dict:
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    root = workdir / "crops-bench"
    shutil.rmtree(root, ignore_errors=True)
    images = root / "images"
    coco = root / "coco.json"
    t0 = time.perf_counter()
    made = crop_images(images, coco, n_images)
    say(
        f"[crops] {made['images']} JPEGs ({made['bytes'] / made['images'] / 1e6:.2f} MB mean), "
        f"{made['annotations']} boxes, generated in {time.perf_counter() - t0:.0f} s"
    )
    result: dict = {
        "images": made["images"],
        "boxes": made["annotations"],
        "mean_image_mb": round(made["bytes"] / made["images"] / 1e6, 2),
    }

    result["decoder"] = _decoder_in_use(env)
    result.update(_side_by_side(coco, images, root, made["images"], env=env, workdir=workdir, logs=logs, say=say))
    result["crops_per_s_ratio"] = result["sci_fetch"].get("x_seed")
    result["max224_crops_per_s_ratio"] = result["sci_fetch_max224"].get("x_seed")
    say(
        f"[crops] decoder {result['decoder']}: full size {result['crops_per_s_ratio']}x the seed method's crops/s, "
        f"--max-size 224 {result['max224_crops_per_s_ratio']}x"
    )

    # Where the worker's time goes (cProfile, one worker inline) and what each decoder costs per image.
    prof_json = root / "crop-profile.json"
    pm = run_measured(
        [
            sys.executable,
            "-m",
            "bench.crop_profile",
            str(coco),
            str(images),
            str(prof_json),
            "--images",
            str(min(300, made["images"])),
        ],
        env=env,
        cwd=HERE.parent,
        log_prefix=logs / "crops-profile",
        timeout=3600,
    )
    if pm.returncode == 0 and prof_json.exists():
        result["worker_profile"] = json.loads(prof_json.read_text())
        say(f"[crops] decode ms/image: {result['worker_profile']['decode_ms_per_image']}")
    else:
        result["worker_profile"] = {"error": pm.stderr[-800:]}
    shutil.rmtree(root, ignore_errors=True)

    # 20-megapixel originals: peak RSS (and speed) with the largest images a camera writes.
    big = workdir / "crops-big"
    shutil.rmtree(big, ignore_errors=True)
    info = big_images(big / "images", big / "coco.json", big_count)
    say(
        f"[crops] {info['images']} 20 MP JPEGs ({info['bytes'] / info['images'] / 1e6:.1f} MB mean), {info['annotations']} boxes"
    )
    result["big_20mp"] = {
        "images": info["images"],
        "boxes": info["annotations"],
        "mean_image_mb": round(info["bytes"] / info["images"] / 1e6, 2),
        **_side_by_side(
            big / "coco.json",
            big / "images",
            big,
            info["images"],
            env=env,
            workdir=workdir,
            logs=logs,
            say=say,
            tag="-20mp",
        ),
    }
    result["peak_rss_mb"] = max(result[k]["peak_rss_mb"] for k, _w, _e in SCI_RUNS)
    result["peak_rss_mb_20mp"] = max(result["big_20mp"][k]["peak_rss_mb"] for k, _w, _e in SCI_RUNS)
    shutil.rmtree(big, ignore_errors=True)

    # Scaling: annotations only, no pixels.
    rows = []
    for n_ann in scaling:
        sroot = workdir / f"scaling-{n_ann}"
        shutil.rmtree(sroot, ignore_errors=True)
        (sroot / "images").mkdir(parents=True)
        scoco = sroot / "coco.json"
        info = synthetic_annotations(scoco, n_ann)
        sm = run_measured(
            sci_crops_command(scoco, sroot / "images", sroot / "sci", api=True),
            env=env,
            cwd=workdir,
            log_prefix=logs / f"scaling-sci-{n_ann}",
            timeout=7200,
        )
        try:
            sci_s = json.loads(sm.stdout.strip().splitlines()[-1])["seconds"]
        except (ValueError, IndexError, KeyError):
            sci_s = None
        sample = scan_sample if info["images"] > scan_sample else 0
        sd = run_measured(
            [
                sys.executable,
                str(HERE / "seed_crops.py"),
                "--coco",
                str(scoco),
                "--images-dir",
                str(sroot / "images"),
                "--crops-dir",
                str(sroot / "seed"),
                "--sample",
                str(sample),
            ],
            env=env,
            cwd=workdir,
            log_prefix=logs / f"scaling-seed-{n_ann}",
            timeout=7200,
        )
        try:
            seed_info = json.loads(sd.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            seed_info = {}
        seed_s = seed_info.get("estimated_total_s")
        row = {
            "annotations": n_ann,
            "images": info["images"],
            "sci_fetch_s": round(sci_s, 3) if sci_s is not None else None,
            "sci_fetch_wall_s": round(sm.wall, 3),
            "sci_fetch_exit": sm.returncode,
            "seed_s": seed_s,
            "seed_wall_s": round(sd.wall, 3),
            "sci_fetch_us_per_annotation": round(sci_s / n_ann * 1e6, 1) if sci_s else None,
            "seed_us_per_annotation": round(seed_s / n_ann * 1e6, 1) if seed_s else None,
            "seed_sampled_images": seed_info.get("processed"),
            "seed_estimated": bool(sample),
        }
        rows.append(row)
        say(
            f"[crops] scaling {n_ann:>7,} annotations: sci_fetch {sci_s if sci_s is not None else float('nan'):7.2f} s, seed method "
            f"{seed_s if seed_s is not None else float('nan'):8.2f} s"
            + (f" (estimated from {sample} images)" if sample else "")
        )
        shutil.rmtree(sroot, ignore_errors=True)
    result["scaling"] = rows
    result["scaling_slope_sci_fetch"] = _slope([(r["annotations"], r["sci_fetch_s"]) for r in rows])
    result["scaling_slope_seed"] = _slope([(r["annotations"], r["seed_s"]) for r in rows])
    return result
