"""The demo sample must look like a real Animl export, with the awkward cases where we put them."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from sci_fetch.demo.sample import CAMERAS, MEDIUM_FIT, SMALL_FIT, Sample, make_sample

PROJECT = "sci_demo"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return make_sample(tmp_path_factory.mktemp("sample"))


def _decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _by_image(sample: Sample) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {im["id"]: [] for im in sample.coco["images"]}
    for ann in sample.coco["annotations"]:
        out[ann["image_id"]].append(ann)
    return out


def _inside(bbox: list[int], w: int, h: int) -> bool:
    x, y, bw, bh = bbox
    return x >= 0 and y >= 0 and x + bw <= w and y + bh <= h


def test_shape_and_file(sample: Sample) -> None:
    coco = sample.coco
    assert set(coco) == {"info", "images", "annotations", "categories"}
    assert len(coco["images"]) == 36
    assert json.loads(sample.coco_path.read_text()) == coco
    assert sample.coco_path.name == "sample-coco.json"
    assert len(sample.objects) == 3 * 36
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert names[0] == "empty"
    assert {"fox", "skunk", "liz", "rodnet", "bird", "person", "vehicle", "animal"} <= set(names.values())
    assert len(names) == len(coco["categories"])
    used = {a["category_id"] for a in coco["annotations"]}
    assert used <= set(names)
    assert {names[i] for i in used} >= {"empty", "fox", "liz", "person", "vehicle"}


def test_ids_are_md5_of_the_stored_original(sample: Sample) -> None:
    ids = set()
    for im in sample.coco["images"]:
        data = sample.objects[im["serving_bucket_key"]]
        assert im["id"] == f"{PROJECT}:{hashlib.md5(data).hexdigest()}"
        ids.add(im["id"])
    assert len(ids) == 36


def test_names_and_keys(sample: Sample) -> None:
    cams = {(c, d): loc for c, d, loc in CAMERAS}
    seen_cams = set()
    for n, im in enumerate(sample.coco["images"], start=1):
        image_id = im["id"]
        assert im["serving_bucket_key"] == f"original/{image_id}-original.jpg"  # ':' kept
        assert f"medium/{image_id}-medium.jpg" in sample.objects
        assert f"small/{image_id}-small.jpg" in sample.objects
        m = re.fullmatch(rf"{PROJECT}/([A-Z0-9]+)/([a-z_]+)/{PROJECT}-([0-9a-f]{{32}})\.jpg", im["file_name"])
        assert m, im["file_name"]
        assert m.group(3) == image_id.split(":", 1)[1]
        assert cams[(m.group(1), m.group(2))] == im["location"]
        seen_cams.add(m.group(1))
        assert im["original_file_name"] == f"IMG_{n:04d}.JPG"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z", im["datetime"])
    assert len(seen_cams) == len(CAMERAS)


def test_sizes_and_null_boxes(sample: Sample) -> None:
    by_image = _by_image(sample)
    no_size = []
    for im in sample.coco["images"]:
        img = _decode(sample.objects[im["serving_bucket_key"]])
        assert img.format == "JPEG"
        assert 40_000 < len(sample.objects[im["serving_bucket_key"]]) < 400_000
        if "width" in im:
            assert (im["width"], im["height"]) == img.size
        else:
            assert "height" not in im
            no_size.append(im["id"])
            assert by_image[im["id"]], "a size-less image should still carry its (null) boxes"
            for ann in by_image[im["id"]]:
                assert ann["bbox"] == [None, None, None, None]
    assert len(no_size) == 2
    sizes = {(im["width"], im["height"]) for im in sample.coco["images"] if "width" in im}
    assert len(sizes) >= 2


def test_boxes_where_designed(sample: Sample) -> None:
    by_image = _by_image(sample)
    names = {c["id"]: c["name"] for c in sample.coco["categories"]}
    outside, multi, empty, unreviewed = 0, 0, 0, 0
    for im in sample.coco["images"]:
        anns = by_image[im["id"]]
        if not anns:
            unreviewed += 1
            continue
        if len(anns) > 1:
            multi += 1
        if "width" not in im:
            continue
        w, h = im["width"], im["height"]
        img = _decode(sample.objects[im["serving_bucket_key"]]).convert("RGB")
        for ann in anns:
            assert ann["sequence_level_annotation"] is False
            assert all(isinstance(v, int) for v in ann["bbox"])
            if names[ann["category_id"]] == "empty":
                assert ann["bbox"] == [0, 0, 0, 0]
                empty += 1
                continue
            x, y, bw, bh = ann["bbox"]
            assert bw > 0 and bh > 0
            if _inside(ann["bbox"], w, h):
                # The box holds the drawn animal: a flat colour unlike the textured ground.
                px = [img.getpixel((x + bw // 2 + d, y + 3 * bh // 4)) for d in (-3, 0, 3)]
                assert max(max(p) - min(p) for p in zip(*px, strict=False)) < 30, (im["id"], ann["bbox"], px)
            else:
                outside += 1
                assert x < w and y < h, "the box sticks out but still overlaps the image"
    assert outside == 2
    assert multi >= 2
    assert empty >= 1
    assert unreviewed >= 1
    ann_ids = [a["id"] for a in sample.coco["annotations"]]
    assert len(ann_ids) == len(set(ann_ids))


def test_variants_fit(sample: Sample) -> None:
    for im in sample.coco["images"]:
        original = _decode(sample.objects[im["serving_bucket_key"]])
        medium = _decode(sample.objects[f"medium/{im['id']}-medium.jpg"])
        small = _decode(sample.objects[f"small/{im['id']}-small.jpg"])
        for variant, (fw, fh) in ((medium, MEDIUM_FIT), (small, SMALL_FIT)):
            w, h = variant.size
            assert w <= fw and h <= fh
            assert max(w / fw, h / fh) == pytest.approx(1.0, abs=0.01)  # fitted, not just shrunk
            assert w / h == pytest.approx(original.size[0] / original.size[1], rel=0.02)


def test_deterministic(sample: Sample, tmp_path: Path) -> None:
    again = make_sample(tmp_path)
    assert again.objects == sample.objects
    assert again.coco == sample.coco
    assert again.coco_path.read_bytes() == sample.coco_path.read_bytes()


def test_seed_and_project_change_output(tmp_path: Path) -> None:
    a = make_sample(tmp_path / "a", n_images=3, seed=1, project_id="proj_x")
    b = make_sample(tmp_path / "b", n_images=3, seed=2, project_id="proj_x")
    assert {i["id"] for i in a.coco["images"]}.isdisjoint(i["id"] for i in b.coco["images"])
    assert all(i["id"].startswith("proj_x:") for i in a.coco["images"])
    assert all(i["file_name"].startswith("proj_x/") for i in a.coco["images"])
