"""Hostile COCO files through every command that reads one (issue 21.6, 21.7): one line and exit 2, or
one invalid record with a short row in failures.csv; never a traceback or memory that grows with them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from helpers import animl_image, failures, random_blobs, seed, settings_for, write_coco

from sci_fetch.cli import main
from sci_fetch.commands.download import download

DEEP = 100_000


@pytest.fixture(scope="module")
def two(s3, tmp_path_factory):
    project = "hostile" + uuid.uuid4().hex[:6]
    blobs = random_blobs(2, seed=31, sizes=[3000])
    images = [animl_image(project, b) for b in blobs]
    seed(s3, "test-bucket", images, blobs)
    return images


def deep_coco(tmp_path: Path, images: list[dict]) -> Path:
    """A good first record (so the run starts), then 100,000 nested arrays inside the second."""
    good = json.dumps(images[0])
    text = '{"images": [' + good + ', {"id": "x:1", "deep": ' + "[" * DEEP + "]" * DEEP + "}]"
    text += ', "annotations": [], "categories": [{"id": 1, "name": "fox"}]}'
    path = tmp_path / "deep.json"
    path.write_text(text)
    return path


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "nested more than 64 levels" in line]
    assert len(lines) == 1, err
    return lines[0]


def test_deep_nesting_stops_download_plan_filter_and_crops_with_one_line(s3_env, two, tmp_path, capsys):
    coco = deep_coco(tmp_path, two)
    out = tmp_path / "out"
    flags = ["--endpoint-url", s3_env.endpoint_url, "--bucket", "test-bucket", "--profile", ""]
    runs = {
        "download": ["download", str(coco), "--output", str(out), "--progress", "off", "--no-space-check", *flags],
        "plan": ["plan", str(coco), "--output", str(tmp_path / "plan"), *flags],
        "filter": ["filter", str(coco), str(tmp_path / "subset.json")],
        "crops": ["crops", str(coco), "--output", str(out), "--workers", "1"],
    }
    for name, argv in runs.items():
        out.mkdir(exist_ok=True)  # crops needs the images folder; download refuses before it makes one
        assert main(argv) == 2, name
        line = error_line(capsys)
        assert "images[1]" in line and str(coco) in line, (name, line)


def test_a_long_file_name_is_one_invalid_record_with_a_short_row(s3_env, two, tmp_path):
    """300 KB of file_name: the record is invalid, the rest is fetched, and neither the manifest nor
    failures.csv holds the name."""
    images = [dict(two[0]), dict(two[1])]
    images[1]["file_name"] = "d/" + "n" * 300_000 + ".jpg"
    coco = write_coco(tmp_path / "coco.json", images)
    settings = settings_for(s3_env, coco, tmp_path / "out")
    assert download(settings) == 1
    (row,) = failures(settings)
    assert row["record"] == "images[1]" and "file_name" in row["reason"] and "4096" in row["reason"]
    assert settings.state_file("failures", "csv").stat().st_size < 2000
    assert settings.manifest_path.stat().st_size < 300_000


def test_a_file_name_of_megabytes_is_one_short_failures_row(s3_env, two, tmp_path):
    images = [dict(two[0]), dict(two[1])]
    images[1]["file_name"] = "d/" + "n" * (30 << 20) + ".jpg"
    coco = write_coco(tmp_path / "coco.json", images)
    settings = settings_for(s3_env, coco, tmp_path / "out")
    assert download(settings) == 1
    (row,) = failures(settings)
    assert row["record"] == "images[1]" and "file_name' is a string of more than 1 MiB" in row["reason"]
    assert settings.state_file("failures", "csv").stat().st_size < 2000
    assert settings.manifest_path.stat().st_size < 300_000
    assert (tmp_path / "out" / images[0]["file_name"]).exists()


def test_deep_nesting_past_the_first_chunk_stops_a_running_download(s3_env, two, tmp_path, capsys):
    """The engine's own stream (not the opening check) meets it: exit 2, one line, the first image kept."""
    padding = ", ".join(json.dumps({"no_id": i, "file_name": f"pad/{i}.jpg" + " " * 60}) for i in range(2000))
    text = '{"images": [' + json.dumps(two[0]) + ", " + padding
    text += ', {"id": "x:1", "deep": ' + "[" * DEEP + "]" * DEEP + "}]}"
    coco = tmp_path / "coco.json"
    coco.write_text(text)
    argv = ["download", str(coco), "--output", str(tmp_path / "out"), "--progress", "off", "--no-space-check"]
    argv += ["--endpoint-url", s3_env.endpoint_url, "--bucket", "test-bucket", "--profile", ""]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = {line for line in err.splitlines() if "nested more than 64 levels" in line}
    assert lines and all("images[2001]" in line for line in lines), err
