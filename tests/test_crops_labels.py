"""Label map, exclude and keep-list loading; crop naming; option parsing."""

from pathlib import Path

import pytest

from sci_fetch.crops.labels import SCI_LABEL_MAP, build_labels, load_label_map
from sci_fetch.crops.naming import crop_relpath
from sci_fetch.crops.options import CropOptions
from sci_fetch.crops.reasons import Reason
from sci_fetch.errors import UsageError
from sci_fetch.keys.mapping import UnsafePathError


def test_builtin_sci_map_fixes_the_known_typos():
    labels = build_labels("sci", ["empty"], None)
    assert SCI_LABEL_MAP == {"liz": "lizard", "rodnet": "rodent", "striped skunk": "skunk", "bug": "insect"}
    assert [labels.label(n) for n in ["liz", "rodnet", "Striped Skunk", "bug", "fox"]] == [
        "lizard",
        "rodent",
        "skunk",
        "insect",
        "fox",
    ]


def test_toml_map_top_level_or_table(tmp_path):
    (tmp_path / "a.toml").write_text('liz = "lizard"\n"striped skunk" = "skunk"\n')
    (tmp_path / "b.toml").write_text('[label_map]\nbug = "insect"\n')
    assert load_label_map(tmp_path / "a.toml") == {"liz": "lizard", "striped skunk": "skunk"}
    assert load_label_map(tmp_path / "b.toml") == {"bug": "insect"}


def test_csv_map_with_or_without_header(tmp_path):
    (tmp_path / "a.csv").write_text("from,to\nliz,lizard\n\n# a comment\nrodnet,rodent\n")
    (tmp_path / "b.csv").write_text("bug,insect\n")
    assert load_label_map(tmp_path / "a.csv") == {"liz": "lizard", "rodnet": "rodent"}
    assert load_label_map(tmp_path / "b.csv") == {"bug": "insect"}


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("bad.csv", "from,to\nliz,lizard\nbug,insect,extra\n", "bad.csv line 3: expected 2 columns"),
        ("dup.csv", "liz,lizard\nLiz,lizzard\n", "dup.csv line 2: 'Liz' is mapped twice"),
        ("empty.csv", "liz,\n", "empty.csv line 1: empty name"),
        ("bad.toml", "liz = \n", "bad.toml: not valid TOML"),
        ("num.toml", "liz = 3\n", "num.toml key 'liz': 'liz' must map to a name"),
        ("map.json", "{}", "unknown format '.json'"),
    ],
)
def test_bad_label_maps_name_the_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_label_map(tmp_path / name)


def test_missing_label_map_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_label_map(tmp_path / "nope.toml")


def test_exclude_matches_before_or_after_the_map_and_keep_after():
    labels = build_labels({"liz": "lizard", "bird": "Empty"}, ["empty", "Person"], ["Lizard", "fox"])
    assert labels.verdict("empty") == ("empty", Reason.excluded_category)
    assert labels.verdict("bird") == ("Empty", Reason.excluded_category)
    assert labels.verdict("person") == ("person", Reason.excluded_category)
    assert labels.verdict("liz") == ("lizard", None)
    assert labels.verdict("fox") == ("fox", None)
    assert labels.verdict("skunk") == ("skunk", Reason.not_kept)


def test_crop_names_follow_megadetector_ground_truth_naming():
    fn = "sci_demo/X8114654/willows_camp/sci_demo-93d7.jpg"
    assert crop_relpath(fn, 0) == "sci_demo/X8114654/willows_camp/sci_demo-93d7___crop00.jpg"
    assert crop_relpath(fn, 12, "flat") == "sci_demo-93d7___crop12.jpg"
    assert crop_relpath("a/b.c.JPG", 3) == "a/b.c___crop03.jpg"
    with pytest.raises(UnsafePathError):
        crop_relpath("../etc/passwd.jpg", 0)


def test_options_defaults_and_lists():
    o = CropOptions()
    assert (
        o.exclude == ["empty", "person", "vehicle", "animal"]
        and o.keep is None
        and o.naming == "nested"
        and o.workers >= 1
    )
    assert o.csv_path() == Path("crops/crops.csv") and o.rejects_path() == Path("crops/crops_rejected.csv")
    o = CropOptions(exclude="empty, person", keep=[], label_map="")
    assert o.exclude == ["empty", "person"] and o.keep is None and o.label_map is None
    assert CropOptions(exclude="").exclude == []
    for bad in (
        {"padding": -1},
        {"jpeg_quality": 0},
        {"naming": "tree"},
        {"min_confidence": 2},
        {"workers": 0},
        {"colour": 1},
    ):
        with pytest.raises(ValueError):
            CropOptions(**bad)
