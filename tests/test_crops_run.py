"""End to end through run_crops: crop pixels and sizes, names, both CSVs, resume and recheck."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image
from test_crops_helpers import (
    BG,
    BLUE,
    GREEN,
    RED,
    annotation,
    assert_filled,
    close,
    image_record,
    pixel,
    put_image,
    read_rows,
    scene,
    write_coco,
)

from sci_fetch.crops.options import CropOptions
from sci_fetch.crops.run import run_crops
from sci_fetch.errors import InputError, UsageError
from sci_fetch.keys.mapping import Task
from sci_fetch.manifest.models import Outcome, State
from sci_fetch.manifest.store import Manifest


@pytest.fixture
def dirs(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    return tmp_path, images


def options(tmp_path: Path, **kw) -> CropOptions:
    kw.setdefault("workers", 1)
    return CropOptions(crops_dir=tmp_path / "crops", **kw)


def one_image_two_boxes(tmp_path: Path, images: Path) -> tuple[dict, Path]:
    """One image on disk with two boxes, x0 and x1: the smallest run that has something to resume."""
    a = image_record(1)
    put_image(images, a["file_name"])
    boxes = [annotation("x0", a, 1, [32, 32, 64, 32]), annotation("x1", a, 1, [160, 16, 32, 96])]
    return a, write_coco(tmp_path / "coco.json", [a], boxes)


def crop_of(tmp_path: Path, image: dict, index: int) -> Path:
    stem = image["file_name"].rsplit(".", 1)[0]
    return tmp_path / "crops" / f"{stem}___crop{index:02d}.jpg"


# ---- pixels and sizes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,bbox,geometry,size,checks",
    [
        ("plain", [32, 32, 64, 32], {}, (64, 32), [("fill", RED)]),
        (
            "padded",
            [32, 32, 64, 32],
            {"padding": 0.25},
            (96, 48),
            [((48, 24), RED), ((20, 12), RED), ((76, 36), RED), ((4, 4), BG), ((91, 43), BG), ((8, 24), BG)],
        ),
        (
            "square",
            [32, 32, 64, 32],
            {"square": True},
            (64, 64),
            [((32, 32), RED), ((4, 20), RED), ((32, 4), BG), ((32, 59), BG)],
        ),
        (
            "square-shifted",
            [240, 80, 16, 48],
            {"square": True},
            (48, 48),  # x 208..256: shifted left into the image
            [((8, 8), BG), ((40, 40), BLUE), ((8, 40), BG), ((40, 8), BG)],
        ),
        ("clipped", [224, 96, 64, 64], {}, (32, 32), [("fill", BLUE)]),
        ("tall", [160, 16, 32, 96], {}, (32, 96), [("fill", GREEN)]),
    ],
)
def test_crop_pixels_and_size(dirs, name, bbox, geometry, size, checks):
    tmp_path, images = dirs
    img = image_record(1)
    put_image(images, img["file_name"])
    coco = write_coco(tmp_path / "coco.json", [img], [annotation("a1", img, 1, bbox)])
    summary = run_crops(coco, images, options(tmp_path, **geometry))
    assert (summary.written, summary.exit_code) == (1, 0)
    assert summary.clipped == (1 if name == "clipped" else 0)
    crop = crop_of(tmp_path, img, 0)
    for where, colour in checks:
        if where == "fill":
            assert_filled(crop, colour, size)
        else:
            assert close(pixel(crop, *where), colour), (name, where, pixel(crop, *where))
    with Image.open(crop) as im:
        assert im.size == size
    row = read_rows(tmp_path / "crops" / "crops.csv")[0]
    assert (row["crop_width"], row["crop_height"]) == (str(size[0]), str(size[1]))


def test_medium_variant_boxes_are_scaled_by_the_real_size(dirs):
    tmp_path, images = dirs
    # COCO describes a 512x256 original; the file on disk is the 256x128 variant of it.
    img = image_record(1, size=(512, 256))
    put_image(images, img["file_name"], scene())
    small = image_record(2, size=(512, 256))
    put_image(images, small["file_name"], scene(0.5))  # 128x64: a quarter of the original
    nosize = image_record(3, size=None)
    put_image(images, nosize["file_name"], scene(0.5))
    coco = write_coco(
        tmp_path / "coco.json",
        [img, small, nosize],
        [
            annotation("a1", img, 1, [64, 64, 128, 64]),
            annotation("a2", small, 1, [320, 32, 64, 192]),
            annotation("a3", nosize, 1, [10, 10, 20, 20]),
        ],
    )
    summary = run_crops(coco, images, options(tmp_path, variant="medium"))
    assert_filled(crop_of(tmp_path, img, 0), RED, (64, 32))
    assert_filled(crop_of(tmp_path, small, 0), GREEN, (16, 48), inset=2)
    rejects = read_rows(tmp_path / "crops" / "crops_rejected.csv")
    assert [(r["annotation_id"], r["reason"]) for r in rejects] == [("a3", "cannot_scale")]
    assert "COCO has no width/height" in rejects[0]["detail"]
    assert summary.exit_code == 1
    # As originals, a box on an image without a COCO size is used as it is.
    run_crops(coco, images, options(tmp_path, variant="original"))
    assert crop_of(tmp_path, nosize, 0).exists()


def test_jpeg_source_and_non_rgb_modes_give_rgb_jpeg_crops(dirs):
    tmp_path, images = dirs
    jpg = image_record(1, file_name="p/a.jpg")
    put_image(images, "p/a.jpg", scene(), quality=95)
    grey = image_record(2, file_name="p/b.png")
    put_image(images, "p/b.png", scene().convert("L"))
    pal = image_record(3, file_name="p/c.png")
    put_image(images, "p/c.png", scene().convert("P"))
    coco = write_coco(
        tmp_path / "coco.json",
        [jpg, grey, pal],
        [annotation(f"a{i}", img, 1, [32, 32, 64, 32]) for i, img in enumerate([jpg, grey, pal])],
    )
    summary = run_crops(coco, images, options(tmp_path))
    assert summary.written == 3
    assert_filled(tmp_path / "crops/p/a___crop00.jpg", RED, (64, 32))
    assert_filled(tmp_path / "crops/p/c___crop00.jpg", RED, (64, 32))
    g = pixel(tmp_path / "crops/p/b___crop00.jpg", 32, 16)
    assert g[0] == g[1] == g[2] or max(g) - min(g) <= 2  # grey, stored as RGB


# ---- several boxes, names, rejects -------------------------------------------------------------


def test_every_box_is_cropped_and_numbered_by_its_annotation_index(dirs):
    tmp_path, images = dirs
    a, b = image_record(1), image_record(2)
    put_image(images, a["file_name"])
    put_image(images, b["file_name"])
    # Interleaved on purpose: the join must group by image id, not by position.
    anns = [
        annotation("a0", a, 1, [32, 32, 64, 32]),
        annotation("b0", b, 1, [160, 16, 32, 96]),
        annotation("a1", a, 0, [0, 0, 10, 10]),  # empty: excluded
        annotation("a2", a, 1, [160, 16, 32, 96]),
        annotation("a3", a, 2, [None, None, None, None]),
        annotation("b1", b, 1, [32, 32, 64, 32]),
        annotation("a4", a, 3, [224, 96, 32, 32]),
    ]
    coco = write_coco(tmp_path / "coco.json", [a, b], anns)
    summary = run_crops(coco, images, options(tmp_path))
    assert_filled(crop_of(tmp_path, a, 0), RED, (64, 32))
    assert_filled(crop_of(tmp_path, a, 2), GREEN, (32, 96))
    assert_filled(crop_of(tmp_path, a, 4), BLUE, (32, 32))
    assert_filled(crop_of(tmp_path, b, 0), GREEN, (32, 96))
    assert_filled(crop_of(tmp_path, b, 1), RED, (64, 32))
    assert not crop_of(tmp_path, a, 1).exists() and not crop_of(tmp_path, a, 3).exists()
    rows = read_rows(tmp_path / "crops" / "crops.csv")
    assert [r["annotation_id"] for r in rows] == ["a0", "a2", "a4", "b0", "b1"]
    rejects = read_rows(tmp_path / "crops" / "crops_rejected.csv")
    assert [(r["annotation_id"], r["reason"]) for r in rejects] == [("a1", "excluded_category"), ("a3", "null_bbox")]
    assert (summary.images, summary.boxes, summary.written) == (2, 7, 5)
    assert dict(summary.rejected) == {"excluded_category": 1, "null_bbox": 1}
    assert summary.exit_code == 1  # the null box is a problem; the excluded one alone would not be


def test_degenerate_and_unusable_boxes_land_in_the_rejects_csv(dirs):
    tmp_path, images = dirs
    a = image_record(1)
    put_image(images, a["file_name"])
    ghost = {"id": "proj:ghost"}
    bad = image_record(2, width="wide")
    anns = [
        annotation("neg", a, 1, [10, 10, -5, 20]),
        annotation("zero", a, 1, [10, 10, 0, 20]),
        annotation("out", a, 1, [1000, 10, 20, 20]),
        annotation("tiny", a, 1, [10, 10, 2, 30]),
        annotation("cat", a, 99, [10, 10, 20, 20]),
        annotation("ok", a, 1, [32, 32, 64, 32]),
        annotation("lost", ghost, 1, [10, 10, 20, 20]),
        {"id": "broken", "image_id": a["id"], "category_id": 1, "bbox": [1, 2, 3]},
        annotation("badimg", bad, 1, [10, 10, 20, 20]),
    ]
    coco = write_coco(tmp_path / "coco.json", [a, bad], anns)
    summary = run_crops(coco, images, options(tmp_path, min_size=4))
    rejects = {r["annotation_id"]: r for r in read_rows(tmp_path / "crops" / "crops_rejected.csv")}
    assert {k: v["reason"] for k, v in rejects.items()} == {
        "neg": "negative_size",
        "zero": "zero_area",
        "out": "out_of_bounds",
        "tiny": "too_small",
        "cat": "unknown_category",
        "lost": "unknown_image",
        "broken": "invalid_annotation",
        "badimg": "invalid_image",
    }
    assert "images[1]" in rejects["badimg"]["detail"] and "width" in rejects["badimg"]["detail"]
    assert "bbox [1000, 10, 20, 20] lies outside the 256x128 image" in rejects["out"]["detail"]
    assert "bbox must have 4 values" in rejects["broken"]["detail"]
    assert rejects["neg"]["source_path"].endswith(a["file_name"])
    assert (rejects["neg"]["bbox_w"], rejects["neg"]["bbox_h"]) == ("-5", "20")
    assert summary.written == 1 and summary.exit_code == 1


def test_csv_columns_and_rows_are_the_expected_table(dirs):
    tmp_path, images = dirs
    a = image_record(1)
    b = image_record(2, file_name="proj/CAM2/dep/b.png", location=None)
    put_image(images, a["file_name"])
    put_image(images, b["file_name"])
    coco = write_coco(
        tmp_path / "coco.json",
        [a, b],
        [
            annotation("obj1", a, 2, [32, 32, 64, 32]),
            annotation("obj2", b, 3, [224.0, 96.5, 64, 64]),
            annotation("obj3", b, 0, [0, 0, 5, 5]),
        ],
    )
    run_crops(coco, images, options(tmp_path, label_map="sci"))
    crops = tmp_path / "crops"
    assert (crops / "crops.csv").read_text().splitlines()[0] == (
        "image_path,species_label,image_id,annotation_id,category_id,source_path,bbox_x,bbox_y,bbox_w,bbox_h,"
        "crop_width,crop_height,location,datetime,source_x,source_y,source_w,source_h"
    )
    assert read_rows(crops / "crops.csv") == [
        {
            "image_path": str(crops / "proj/CAM1/dep/proj-00000000000000000000000000000001___crop00.jpg"),
            "species_label": "lizard",
            "image_id": a["id"],
            "annotation_id": "obj1",
            "category_id": "2",
            "source_path": str(images / a["file_name"]),
            "bbox_x": "32",
            "bbox_y": "32",
            "bbox_w": "64",
            "bbox_h": "32",
            "crop_width": "64",
            "crop_height": "32",
            "location": "Site 1",
            "datetime": "2023-01-02T06:30:00.000Z",
            "source_x": "32",
            "source_y": "32",
            "source_w": "64",
            "source_h": "32",
        },
        {
            "image_path": str(crops / "proj/CAM2/dep/b___crop00.jpg"),
            "species_label": "skunk",
            "image_id": b["id"],
            "annotation_id": "obj2",
            "category_id": "3",
            "source_path": str(images / "proj/CAM2/dep/b.png"),
            "bbox_x": "224",
            "bbox_y": "96.5",
            "bbox_w": "64",
            "bbox_h": "64",
            "crop_width": "32",
            "crop_height": "32",
            "location": "",
            "datetime": "2023-01-03T06:30:00.000Z",
            "source_x": "224",
            "source_y": "96",
            "source_w": "32",
            "source_h": "32",
        },
    ]
    assert read_rows(crops / "crops_rejected.csv") == [
        {
            "image_id": b["id"],
            "annotation_id": "obj3",
            "category_id": "0",
            "category": "empty",
            "species_label": "empty",
            "source_path": str(images / "proj/CAM2/dep/b.png"),
            "bbox_x": "0",
            "bbox_y": "0",
            "bbox_w": "5",
            "bbox_h": "5",
            "reason": "excluded_category",
            "detail": "category 'empty' is excluded",
        },
    ]


def test_label_map_and_keep_list_apply(dirs):
    tmp_path, images = dirs
    a = image_record(1)
    put_image(images, a["file_name"])
    (tmp_path / "map.csv").write_text("from,to\nliz,lizard\nstriped skunk,skunk\n")
    coco = write_coco(
        tmp_path / "coco.json",
        [a],
        [
            annotation("x0", a, 1, [32, 32, 64, 32]),
            annotation("x1", a, 2, [160, 16, 32, 96]),
            annotation("x2", a, 3, [224, 96, 32, 32]),
            annotation("x3", a, 4, [0, 0, 10, 10]),
        ],
    )
    summary = run_crops(
        coco,
        images,
        options(tmp_path, label_map=tmp_path / "map.csv", keep=["lizard", "skunk"], exclude=["empty", "person"]),
    )
    rows = read_rows(tmp_path / "crops" / "crops.csv")
    assert [(r["annotation_id"], r["species_label"]) for r in rows] == [("x1", "lizard"), ("x2", "skunk")]
    rejects = read_rows(tmp_path / "crops" / "crops_rejected.csv")
    assert [(r["annotation_id"], r["reason"], r["species_label"]) for r in rejects] == [
        ("x0", "not_kept", "fox"),
        ("x3", "excluded_category", "person"),
    ]
    assert summary.exit_code == 0  # only filtered boxes: nothing is wrong
    assert not crop_of(tmp_path, a, 0).exists()


def test_min_confidence_skips_low_annotations_but_keeps_those_without(dirs):
    tmp_path, images = dirs
    a = image_record(1)
    put_image(images, a["file_name"])
    coco = write_coco(
        tmp_path / "coco.json",
        [a],
        [
            annotation("hi", a, 1, [32, 32, 64, 32], confidence=0.9),
            annotation("lo", a, 1, [160, 16, 32, 96], confidence=0.2),
            annotation("none", a, 1, [224, 96, 32, 32]),
        ],
    )
    summary = run_crops(coco, images, options(tmp_path, min_confidence=0.5))
    assert [r["annotation_id"] for r in read_rows(tmp_path / "crops" / "crops.csv")] == ["hi", "none"]
    assert dict(summary.rejected) == {"low_confidence": 1} and summary.exit_code == 0


# ---- resume, recheck, partial downloads ---------------------------------------------------------


def test_rerun_makes_no_crop_twice_and_changed_options_remake(dirs):
    tmp_path, images = dirs
    a, coco = one_image_two_boxes(tmp_path, images)
    first = run_crops(coco, images, options(tmp_path))
    crop = crop_of(tmp_path, a, 0)
    before = crop.stat().st_mtime_ns, crop.stat().st_ino
    csv_before = (tmp_path / "crops" / "crops.csv").read_text()
    second = run_crops(coco, images, options(tmp_path))
    assert (first.written, first.kept) == (2, 0)
    assert (second.written, second.kept, second.remade) == (0, 2, 0)
    assert (crop.stat().st_mtime_ns, crop.stat().st_ino) == before
    assert (tmp_path / "crops" / "crops.csv").read_text() == csv_before
    third = run_crops(coco, images, options(tmp_path, padding=0.25))
    assert (third.written, third.kept, third.remade) == (0, 0, 2)
    assert Image.open(crop).size == (96, 48)
    assert not list((tmp_path / "crops").rglob("*.partial"))


def test_truncated_crop_is_remade_with_recheck(dirs):
    tmp_path, images = dirs
    a = image_record(1)
    put_image(images, a["file_name"])
    coco = write_coco(tmp_path / "coco.json", [a], [annotation("x0", a, 1, [32, 32, 64, 32])])
    run_crops(coco, images, options(tmp_path))
    crop = crop_of(tmp_path, a, 0)
    data = crop.read_bytes()
    crop.write_bytes(data[:-20])  # the entropy-coded data ends early; the header is intact
    # A plain re-run reads only the header and trusts it; --recheck decodes it and remakes it.
    assert run_crops(coco, images, options(tmp_path)).kept == 1
    summary = run_crops(coco, images, options(tmp_path, recheck=True))
    assert (summary.remade, summary.kept) == (1, 0)
    assert crop.read_bytes() == data
    assert_filled(crop, RED, (64, 32))
    crop.write_bytes(b"")  # an empty file is caught without --recheck
    assert run_crops(coco, images, options(tmp_path)).remade == 1


def test_partial_download_crops_what_is_there_and_lists_the_rest(dirs):
    tmp_path, images = dirs
    recs = [image_record(n) for n in range(1, 6)]
    for rec in recs[:2] + recs[3:4]:
        put_image(images, rec["file_name"])
    manifest = Manifest(images / ".sci-fetch" / "manifest.sqlite")
    run_id = manifest.begin_run({})
    manifest.plan(
        [Task(image_id=r["id"], key=f"k/{i}", dest=r["file_name"]) for i, r in enumerate(recs[:4])], run_id, images
    )
    manifest.record(
        [Outcome(image_id=recs[0]["id"], state=State.done), Outcome(image_id=recs[2]["id"], state=State.done)]
    )
    manifest.close()
    # x0: done + file; x1: pending with a file (being adopted); x2: done but the file is gone;
    # x3: pending with a file; x4: no row and no file (not reached by the download yet).
    coco = write_coco(
        tmp_path / "coco.json", recs, [annotation(f"x{i}", r, 1, [32, 32, 64, 32]) for i, r in enumerate(recs)]
    )
    summary = run_crops(coco, images, options(tmp_path))
    rows = read_rows(tmp_path / "crops" / "crops.csv")
    assert [r["annotation_id"] for r in rows] == ["x0"]
    rejects = {r["annotation_id"]: r["reason"] for r in read_rows(tmp_path / "crops" / "crops_rejected.csv")}
    assert rejects == {"x1": "not_downloaded", "x2": "missing_file", "x3": "not_downloaded", "x4": "not_downloaded"}
    assert summary.exit_code == 1
    # Without a manifest, an absent file is just missing and a present one is used.
    (images / ".sci-fetch" / "manifest.sqlite").rename(tmp_path / "m.sqlite")
    run_crops(coco, images, options(tmp_path))
    rejects = {r["annotation_id"]: r["reason"] for r in read_rows(tmp_path / "crops" / "crops_rejected.csv")}
    assert rejects == {"x2": "missing_file", "x4": "missing_file"}
    with pytest.raises(UsageError, match="no manifest"):
        run_crops(coco, images, options(tmp_path), manifest=tmp_path / "nope.sqlite")


def test_corrupt_images_are_rejected_and_the_run_goes_on(dirs):
    tmp_path, images = dirs
    good, junk, cut = image_record(1), image_record(2, file_name="p/junk.jpg"), image_record(3, file_name="p/cut.jpg")
    put_image(images, good["file_name"])
    (images / "p").mkdir()
    (images / "p/junk.jpg").write_bytes(b"this is not an image")
    put_image(images, "p/cut.jpg", scene(), quality=90)
    data = (images / "p/cut.jpg").read_bytes()
    (images / "p/cut.jpg").write_bytes(data[:-100])  # header intact, pixels cut short
    coco = write_coco(
        tmp_path / "coco.json",
        [good, junk, cut],
        [annotation(f"x{i}", r, 1, [32, 32, 64, 32]) for i, r in enumerate([good, junk, cut])],
    )
    summary = run_crops(coco, images, options(tmp_path))
    rejects = {r["annotation_id"]: r for r in read_rows(tmp_path / "crops" / "crops_rejected.csv")}
    assert {k: v["reason"] for k, v in rejects.items()} == {"x1": "corrupt_image", "x2": "corrupt_image"}
    assert "truncated" in rejects["x2"]["detail"]
    assert summary.written == 1 and not (tmp_path / "crops/p/cut___crop00.jpg").exists()


def test_flat_naming_puts_every_crop_in_one_folder_and_refuses_collisions(dirs):
    tmp_path, images = dirs
    a, b = image_record(1), image_record(2)
    c = image_record(3, file_name=a["file_name"].replace("CAM1", "CAM9"))  # same stem as a
    for r in (a, b, c):
        put_image(images, r["file_name"])
    coco = write_coco(
        tmp_path / "coco.json",
        [a, b, c],
        [annotation(f"x{i}", r, 1, [32, 32, 64, 32]) for i, r in enumerate([a, b, c])],
    )
    run_crops(coco, images, options(tmp_path, naming="flat"))
    assert sorted(p.name for p in (tmp_path / "crops").glob("*.jpg")) == [
        f"proj-{1:032x}___crop00.jpg",
        f"proj-{2:032x}___crop00.jpg",
    ]
    rejects = read_rows(tmp_path / "crops" / "crops_rejected.csv")
    assert [(r["annotation_id"], r["reason"]) for r in rejects] == [("x2", "name_collision")]


def test_unsafe_file_name_is_rejected_not_written_outside(dirs):
    tmp_path, images = dirs
    bad = image_record(1, file_name="../outside.png")
    coco = write_coco(tmp_path / "coco.json", [bad], [annotation("x0", bad, 1, [1, 1, 5, 5])])
    run_crops(coco, images, options(tmp_path))
    assert [r["reason"] for r in read_rows(tmp_path / "crops" / "crops_rejected.csv")] == ["unsafe_path"]
    assert not (tmp_path / "outside___crop00.jpg").exists()


def test_process_pool_gives_the_same_output_as_inline(dirs):
    tmp_path, images = dirs
    recs = [image_record(n) for n in range(1, 25)]
    for r in recs:
        put_image(images, r["file_name"])
    anns = [
        annotation(f"x{i}-{j}", r, 1, box)
        for i, r in enumerate(recs)
        for j, box in enumerate([[32, 32, 64, 32], [160, 16, 32, 96], [None] * 4])
    ]
    coco = write_coco(tmp_path / "coco.json", recs, anns)
    pooled = run_crops(coco, images, options(tmp_path, workers=2))
    pooled_csv = (tmp_path / "crops" / "crops.csv").read_text()
    pooled_rejects = (tmp_path / "crops" / "crops_rejected.csv").read_text()
    for p in (tmp_path / "crops").rglob("*.jpg"):
        p.unlink()
    inline = run_crops(coco, images, options(tmp_path, workers=1))
    assert pooled.written == inline.written == 48
    assert (tmp_path / "crops" / "crops.csv").read_text() == pooled_csv
    assert (tmp_path / "crops" / "crops_rejected.csv").read_text() == pooled_rejects
    assert_filled(crop_of(tmp_path, recs[-1], 1), GREEN, (32, 96))


def test_bad_inputs_are_one_line_errors(dirs):
    tmp_path, images = dirs
    with pytest.raises(InputError, match="does not exist"):
        run_crops(tmp_path / "nope.json", images, options(tmp_path))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        run_crops(tmp_path / "bad.json", images, options(tmp_path))
    coco = write_coco(tmp_path / "coco.json", [], [])
    with pytest.raises(UsageError, match="images dir"):
        run_crops(coco, tmp_path / "no-images", options(tmp_path))
    with pytest.raises(UsageError, match="label map"):
        run_crops(coco, images, options(tmp_path, label_map=tmp_path / "nope.toml"))
    summary = run_crops(coco, images, options(tmp_path))
    assert summary.crops == 0 and read_rows(tmp_path / "crops" / "crops.csv") == []
    assert os.path.getsize(tmp_path / "crops" / "crops.csv") > 0  # the header is there


def test_a_crop_that_cannot_be_written_is_listed_and_the_run_goes_on(dirs):
    tmp_path, images = dirs
    a, coco = one_image_two_boxes(tmp_path, images)
    crop_of(tmp_path, a, 0).mkdir(parents=True)  # a folder where the crop should go
    summary = run_crops(coco, images, options(tmp_path))
    assert [r["reason"] for r in read_rows(tmp_path / "crops" / "crops_rejected.csv")] == ["write_failed"]
    assert summary.written == 1 and summary.exit_code == 1
