"""``sci-fetch filter``: the SCI subset of a full export, exactly, as a valid COCO file."""

from __future__ import annotations

import argparse
import json

import pytest

from sci_fetch.coco.source import iter_annotations, iter_images, read_categories
from sci_fetch.commands import filter as filter_command
from sci_fetch.crops.subset import filter_coco
from sci_fetch.errors import RecordError, UsageError

CATS = [
    {"id": 0, "name": "empty"},
    {"id": 1, "name": "fox"},
    {"id": 2, "name": "skunk"},
    {"id": 3, "name": "person"},
    {"id": 4, "name": "vehicle"},
    {"id": 5, "name": "animal"},
    {"id": 6, "name": "liz", "supercategory": "reptile"},
]


def img(n: int) -> dict:
    return {
        "id": f"sci:{n:032x}",
        "file_name": f"sci/C{n}/d/sci-{n:032x}.jpg",
        "width": 2048,
        "height": 1536,
        "serving_bucket_key": f"original/sci:{n:032x}-original.jpg",
        "location": "Willows Camp",
    }


def ann(aid: str, n: int, cat: int, bbox=(1, 2, 30, 40)) -> dict:
    return {
        "id": aid,
        "image_id": f"sci:{n:032x}",
        "category_id": cat,
        "sequence_level_annotation": False,
        "bbox": list(bbox) if bbox is not None else None,
    }


@pytest.fixture
def full_export(tmp_path):
    images = [img(n) for n in range(1, 8)]
    annotations = [
        ann("a1", 1, 1),  # fox: image 1 kept
        ann("a2", 2, 0),  # empty only: image 2 dropped
        ann("a3", 3, 3),  # person ...
        ann("a4", 3, 2, (10.5, 20, 30, 40)),  # ... and skunk on image 3: kept with the skunk only
        ann("a5", 5, 5),  # animal only: image 5 dropped
        ann("a6", 6, 6, (None, None, None, None)),  # liz with a null box (no image size): kept as is
        ann("a7", 7, 4),  # vehicle only: image 7 dropped
        ann("a8", 1, 2),  # a second box on image 1
    ]  # image 4 has no annotation: not reviewed, dropped
    path = tmp_path / "full.json"
    path.write_text(
        json.dumps(
            {
                "info": {"version": "1.0", "description": "full"},
                "images": images,
                "annotations": annotations,
                "categories": CATS,
            },
            indent=2,
        )
    )
    return path, images, annotations


def test_filter_gives_exactly_the_expected_subset(tmp_path, full_export):
    path, images, annotations = full_export
    out = tmp_path / "sci.json"
    summary = filter_coco(path, out)
    data = json.loads(out.read_text())
    assert data["info"] == {"version": "1.0", "description": "full"}
    assert data["images"] == [images[0], images[2], images[5]]  # records unchanged, in file order
    assert data["annotations"] == [annotations[i] for i in (0, 3, 5, 7)]
    assert data["categories"] == [CATS[1], CATS[2], CATS[6]]
    assert data["annotations"][0]["bbox"] == [1, 2, 30, 40]  # integers stay integers
    # The output reads back through sci_fetch's own COCO reader without a single bad record.
    assert not any(isinstance(r, RecordError) for r in [*iter_images(out), *iter_annotations(out)])
    assert [c.name for c in read_categories(out)] == ["fox", "skunk", "liz"]
    assert (summary.images_before, summary.images_after) == (7, 3)
    assert (summary.annotations_before, summary.annotations_after) == (8, 4)
    assert dict(summary.before) == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1, 5: 1, 6: 1}
    assert dict(summary.after) == {1: 1, 2: 2, 6: 1}
    assert summary.exit_code == 0


def test_filter_command_prints_counts_per_category(tmp_path, full_export, capsys):
    path, _images, _annotations = full_export
    parser = argparse.ArgumentParser()
    filter_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["filter", str(path), str(tmp_path / "sci.json")])
    assert filter_command.run(args) == 0
    lines = capsys.readouterr().out.splitlines()
    table = {line.split()[1]: line.split()[2:] for line in lines[1:8]}
    assert table == {
        "empty": ["1", "0", "(excluded)"],
        "fox": ["1", "1"],
        "skunk": ["2", "2"],
        "person": ["1", "0", "(excluded)"],
        "vehicle": ["1", "0", "(excluded)"],
        "animal": ["1", "0", "(excluded)"],
        "liz": ["1", "1"],
    }
    assert "images: 7 -> 3; annotations: 8 -> 4; categories: 7 -> 3" in lines


def test_custom_and_empty_exclude(tmp_path, full_export):
    path, images, _annotations = full_export
    summary = filter_coco(path, tmp_path / "all.json", exclude=[])
    data = json.loads((tmp_path / "all.json").read_text())
    assert [i["id"] for i in data["images"]] == [i["id"] for i in images if i is not images[3]]
    assert len(data["annotations"]) == 8 and len(data["categories"]) == 7
    summary = filter_coco(path, tmp_path / "nofox.json", exclude=["FOX", "bird"])
    assert summary.after[1] == 0 and summary.unmatched_exclude == ["bird"]
    assert filter_command.exclude_from(["empty, person", "vehicle"]) == ["empty", "person", "vehicle"]
    assert filter_command.exclude_from([""]) == []


def test_broken_records_are_dropped_and_reported(tmp_path):
    path = tmp_path / "full.json"
    path.write_text(
        json.dumps(
            {
                "images": [img(1), {"file_name": "no-id.jpg"}],
                "annotations": [ann("a1", 1, 1), ann("a2", 1, 1, (1, 2, 3)), ann("a3", 9, 1), ann("a4", 1, 42)],
                "categories": CATS,
            }
        )
    )
    summary = filter_coco(path, tmp_path / "sci.json")
    data = json.loads((tmp_path / "sci.json").read_text())
    assert [a["id"] for a in data["annotations"]] == ["a1"]
    assert (len(summary.invalid), summary.orphans, summary.unknown_category) == (2, 1, 1)
    assert summary.exit_code == 1
    text = "\n".join(summary.lines())
    assert "annotations[1] (id 'a2'): bbox" in text and "images[1]" in text


def test_refuses_to_overwrite_its_input(full_export):
    path, _images, _annotations = full_export
    with pytest.raises(UsageError, match="is the input file"):
        filter_coco(path, path)


def test_filter_and_crops_share_the_exclude_setting(tmp_path, full_export, capsys):
    """No --exclude: the [crops] exclude of the settings file (--config or ./settings.toml), as `crops` reads it."""
    from sci_fetch.cli import main

    path, _images, _annotations = full_export
    (tmp_path / "mine.toml").write_text('[crops]\nexclude = ["empty", "fox"]\n')
    assert main(["filter", str(path), str(tmp_path / "a.json"), "--config", str(tmp_path / "mine.toml")]) == 0
    assert [c["name"] for c in json.loads((tmp_path / "a.json").read_text())["categories"]] == [
        "skunk",
        "person",
        "vehicle",
        "animal",
        "liz",
    ]
    assert main(["filter", str(path), str(tmp_path / "b.json")]) == 0  # no settings file: the SCI list
    assert [c["name"] for c in json.loads((tmp_path / "b.json").read_text())["categories"]] == ["fox", "skunk", "liz"]
