"""``sci-fetch verify``: re-checks done images on disk, sends the bad ones back to pending, reports."""

from __future__ import annotations

import argparse
import io
import json
import random
import uuid

import pytest
from helpers import animl_image, settings_for, write_coco
from PIL import Image
from test_reliability_support import last_summary, leftovers, rows, seed_parallel, tree

from sci_fetch.commands import verify
from sci_fetch.commands.download import download
from sci_fetch.files.verify import check_row, content_problem, decode_problem
from sci_fetch.manifest.models import ManifestRow, State

N = 24


def jpeg(seed: int) -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", (48, 32))
    image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(48 * 32)])
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos(s3, tmp_path_factory):
    """24 real JPEGs; the last one is cut short in S3 itself (its id carries the md5 of the cut bytes)."""
    project = "ver" + uuid.uuid4().hex[:6]
    blobs = [jpeg(i) for i in range(N)]
    blobs[-1] = blobs[-1][: len(blobs[-1]) * 2 // 3]
    images = [animl_image(project, b, camera=f"CAM{i % 2}") for i, b in enumerate(blobs)]
    seed_parallel(s3, images, blobs)
    return write_coco(tmp_path_factory.mktemp("coco") / "coco.json", images), images, blobs


def args(out, **given) -> argparse.Namespace:
    """The namespace the real parser builds (so a flag added to add_parser is caught here too)."""
    parser = argparse.ArgumentParser()
    verify.add_parser(parser.add_subparsers())
    argv = ["verify", str(out)] + [f"--{k}" if v is True else f"--{k}={v}" for k, v in given.items()]
    return parser.parse_args(argv)


def test_verify_finds_damaged_files_marks_them_pending_and_download_repairs_them(s3_env, photos, tmp_path, capsys):
    coco, images, blobs = photos
    out = tmp_path / "out"
    settings = settings_for(s3_env, coco, out)
    assert download(settings) == 0
    capsys.readouterr()
    assert verify.run(args(out)) == 0
    assert capsys.readouterr().out.startswith(f"verified {N} done images (size and MD5) in ")

    gone, cut, flipped = (out / images[i]["file_name"] for i in range(3))
    gone.unlink()
    cut.write_bytes(blobs[1][:-10])
    flipped.write_bytes(bytes([blobs[2][0] ^ 1]) + blobs[2][1:])
    page = b"<html><body>502 Bad Gateway</body></html>"
    (out / images[3]["file_name"]).write_bytes(page.ljust(len(blobs[3])))

    assert verify.run(args(out, json=True)) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["checked"] == N and report["marked_pending"] == 4 and report["good"] == N - 4
    assert report["by_kind"] == {"missing": 1, "size": 1, "md5": 2}  # a same-size HTML page is caught by its MD5
    kinds = {p["image_id"]: (p["kind"], p["detail"]) for p in report["problems"]}
    assert kinds[images[0]["id"]] == ("missing", "the file is not on disk")
    assert kinds[images[1]["id"]] == ("size", f"{len(blobs[1]) - 10} bytes on disk, {len(blobs[1])} recorded")
    assert kinds[images[2]["id"]][0] == "md5" and kinds[images[2]["id"]][1].endswith(
        f"{images[2]['id'].split(':')[1]} recorded"
    )
    by_id = rows(settings.manifest_path)
    for i in range(4):
        row = by_id[images[i]["id"]]
        assert row.state is State.pending and row.last_error.startswith("verify: ")
    assert sum(r.state is State.done for r in by_id.values()) == N - 4

    # Verifying again checks only what is still done.
    assert verify.run(args(out)) == 0  # the four are pending now
    assert "verified 20 done images" in capsys.readouterr().out

    assert download(settings) == 0
    assert last_summary(settings)["fetched"] == 4 and last_summary(settings)["requests"] == 4
    assert tree(out) == {r["file_name"]: b for r, b in zip(images, blobs, strict=False)} and leftovers(out) == []
    assert verify.run(args(out)) == 0


def test_decode_finds_an_image_damaged_in_s3_itself(s3_env, photos, tmp_path, capsys):
    """Its bytes equal S3's (the md5 matches), so only decoding shows it, and downloading again cannot fix it."""
    coco, images, _blobs = photos
    out = tmp_path / "out"
    settings = settings_for(s3_env, coco, out)
    assert download(settings) == 0
    capsys.readouterr()
    assert verify.run(args(out)) == 0
    capsys.readouterr()
    assert verify.run(args(out, decode=True)) == 1
    text = capsys.readouterr().out
    assert f"verified {N} done images (size, MD5 and decoding)" in text and f"{N - 1} good, 1 bad" in text
    assert f"decode: {images[-1]['file_name']}: Pillow cannot decode it: image file is truncated" in text
    assert "marked 1 images pending" in text and "damaged in S3 itself" in text
    assert rows(settings.manifest_path)[images[-1]["id"]].state is State.pending
    # The next download adopts the file again without a request (its md5 is the id's): S3 holds these bytes.
    assert download(settings) == 0
    assert last_summary(settings)["adopted"] == 1 and last_summary(settings)["requests"] == 0


def test_verify_needs_a_manifest(tmp_path, capsys):
    from sci_fetch.errors import UsageError

    with pytest.raises(UsageError, match="no manifest in"):
        verify.run(args(tmp_path / "nowhere"))


def test_the_checks_one_by_one(tmp_path):
    good = jpeg(99)
    path = tmp_path / "a.jpg"
    path.write_bytes(good)
    row = ManifestRow(
        image_id="p:x",
        key="k",
        dest="a.jpg",
        state=State.done,
        bytes=len(good),
        md5=__import__("hashlib").md5(good).hexdigest(),
    )
    assert check_row(tmp_path, row, decode=True) is None
    assert decode_problem(path) is None
    path.write_bytes(b"GIF89a not really")
    assert "Pillow" in decode_problem(path)
    path.write_bytes(b"")
    assert check_row(tmp_path, row.model_copy(update={"bytes": 0, "md5": None})).kind == "content"
    assert content_problem(b"", 0) == "the object is empty (0 bytes), not an image"
    for page in (
        b"<!DOCTYPE html><html>",
        b"\n  <HTML>\n<head>",
        b'<?xml version="1.0"?><Error>',
        b"\xef\xbb\xbf<html>",
        b"<Error><Code>",
    ):
        assert "HTML/XML page" in content_problem(page, len(page)), page
    for image in (good[:512], b"\x89PNG\r\n\x1a\n", b"<" + bytes(range(200)), b"<htmlx"):
        assert content_problem(image, 1000) is None, image
