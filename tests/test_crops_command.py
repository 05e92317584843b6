"""``sci-fetch crops`` as a user runs it: flags, printed summary, exit codes, one-line errors."""

from __future__ import annotations

import argparse

import pytest
from test_crops_helpers import RED, annotation, assert_filled, image_record, put_image, read_rows, write_coco

from sci_fetch.commands import crops as crops_command
from sci_fetch.errors import UsageError


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sci-fetch")
    crops_command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["crops", *argv])


@pytest.fixture
def export(tmp_path):
    images = tmp_path / "images"
    a = image_record(1)
    put_image(images, a["file_name"])
    coco = write_coco(
        tmp_path / "coco.json",
        [a],
        [
            annotation("x0", a, 2, [32, 32, 64, 32]),
            annotation("x1", a, 0, [160, 16, 32, 96]),
        ],
    )
    return tmp_path, coco, images, a


def test_unset_flags_are_none_so_settings_can_fill_them():
    args = parse([])
    assert crops_command.crop_overrides(args) == {}
    args = parse(["--padding", "0.1", "--square", "--exclude", "empty,person", "--exclude", "vehicle", "--keep", "fox"])
    assert crops_command.crop_overrides(args) == {
        "padding": 0.1,
        "square": True,
        "exclude": ["empty", "person", "vehicle"],
        "keep": ["fox"],
    }


def test_crops_command_prints_a_summary_and_exits_0(export, capsys):
    tmp_path, coco, images, a = export
    code = crops_command.run(
        parse(
            [
                str(coco),
                "--output",
                str(images),
                "--crops-dir",
                str(tmp_path / "c"),
                "--label-map",
                "sci",
                "--workers",
                "1",
            ]
        )
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "crops: 1 of 2 boxes on 1 images (1 made" in out
    assert "excluded_category" in out and "(filtered)" in out
    assert f"crop CSV:    {tmp_path / 'c' / 'crops.csv'}" in out
    rows = read_rows(tmp_path / "c" / "crops.csv")
    assert [(r["annotation_id"], r["species_label"]) for r in rows] == [("x0", "lizard")]
    assert_filled(tmp_path / "c" / (a["file_name"][:-4] + "___crop00.jpg"), RED, (64, 32))


def test_empty_exclude_crops_every_category_and_problems_exit_1(export, capsys):
    tmp_path, coco, images, a = export
    code = crops_command.run(
        parse(
            [
                str(coco),
                "--images-dir",
                str(images),
                "--crops-dir",
                str(tmp_path / "c"),
                "--exclude",
                "",
                "--workers",
                "1",
            ]
        )
    )
    assert code == 0 and len(read_rows(tmp_path / "c" / "crops.csv")) == 2
    (images / a["file_name"]).unlink()
    code = crops_command.run(
        parse([str(coco), "--images-dir", str(images), "--crops-dir", str(tmp_path / "c"), "--workers", "1"])
    )
    assert code == 1
    assert "missing_file" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--padding", "-1"], "--padding"),
        (["--jpeg-quality", "101"], "--jpeg-quality"),
        (["--min-confidence", "1.5"], "--min-confidence"),
        (["--label-map", "missing.toml"], "label map file missing.toml does not exist"),
    ],
)
def test_bad_options_are_one_line_usage_errors(export, argv, message):
    tmp_path, coco, images, _a = export
    with pytest.raises(UsageError, match=message):
        crops_command.run(parse([str(coco), "--output", str(images), *argv]))


def test_no_coco_file_is_a_usage_error():
    with pytest.raises(UsageError, match="no COCO file given"):
        crops_command.run(parse([]))


def test_disk_full_stops_with_exit_4_and_keeps_the_old_csv(export, monkeypatch, capsys):
    import errno

    from sci_fetch.crops import cropper

    tmp_path, coco, images, _a = export
    argv = [str(coco), "--output", str(images), "--crops-dir", str(tmp_path / "c"), "--workers", "1"]
    assert crops_command.run(parse(argv)) == 0
    before = (tmp_path / "c" / "crops.csv").read_text()

    def full(*_args, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cropper, "_write", full)
    assert crops_command.run(parse([*argv, "--padding", "0.1"])) == 4
    assert "No space left on device" in capsys.readouterr().err
    assert (tmp_path / "c" / "crops.csv").read_text() == before
    assert not list((tmp_path / "c").glob(".*.partial"))
