"""Which image a crop comes from: names that differ only in the extension, the source's md5 from the
manifest deciding freshness, and crops after a sharded download (every shard's manifest is read)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

from helpers import animl_image, seed
from PIL import Image
from test_crops_helpers import (
    BLUE,
    RED,
    annotation,
    assert_filled,
    image_record,
    put_image,
    read_rows,
    scene,
    write_coco,
)

from sci_fetch.cli import main
from sci_fetch.crops.naming import extension_clashes
from sci_fetch.crops.options import CropOptions
from sci_fetch.crops.run import run_crops
from sci_fetch.keys.mapping import Task
from sci_fetch.keys.shard import shard_of
from sci_fetch.manifest.models import Outcome, State
from sci_fetch.manifest.store import Manifest


def options(tmp_path, **kw) -> CropOptions:
    return CropOptions(crops_dir=tmp_path / "crops", workers=1, **kw)


def test_extension_clashes_are_found_whatever_the_order():
    names = ["a/x.jpg", "a/y.jpg", "a/x.png", "b/x.jpg", "a/y.jpg"]
    assert extension_clashes(names) == {"a/x"} == extension_clashes(reversed(names))


def test_same_name_with_another_extension_keeps_both_crops_on_every_run(tmp_path):
    images = tmp_path / "images"
    jpg, png = image_record(1, file_name="a/x.jpg"), image_record(2, file_name="a/x.png")
    other = image_record(3, file_name="a/y.png")
    put_image(images, "a/x.jpg", quality=95)
    blue = Image.new("RGB", (256, 128), BLUE)
    put_image(images, "a/x.png", blue)
    put_image(images, "a/y.png")
    coco = write_coco(
        tmp_path / "coco.json",
        [jpg, png, other],
        [
            annotation("j", jpg, 1, [32, 32, 64, 32]),
            annotation("p", png, 1, [32, 32, 64, 32]),
            annotation("o", other, 1, [32, 32, 64, 32]),
        ],
    )
    first = run_crops(coco, images, options(tmp_path))
    assert first.written == 3 and first.exit_code == 0
    crops = tmp_path / "crops"
    assert_filled(crops / "a/x.jpg___crop00.jpg", RED, (64, 32))
    assert_filled(crops / "a/x.png___crop00.jpg", BLUE, (64, 32))
    assert_filled(crops / "a/y___crop00.jpg", RED, (64, 32))  # no clash: the usual name
    assert not (crops / "a/x___crop00.jpg").exists()
    paths = {r["annotation_id"]: r["image_path"] for r in read_rows(crops / "crops.csv")}
    assert paths == {
        "j": str(crops / "a/x.jpg___crop00.jpg"),
        "p": str(crops / "a/x.png___crop00.jpg"),
        "o": str(crops / "a/y___crop00.jpg"),
    }
    # The same names next time, whatever the order of the images: nothing is made again.
    coco2 = write_coco(
        tmp_path / "coco2.json",
        [other, png, jpg],
        [
            annotation("o", other, 1, [32, 32, 64, 32]),
            annotation("p", png, 1, [32, 32, 64, 32]),
            annotation("j", jpg, 1, [32, 32, 64, 32]),
        ],
    )
    again = run_crops(coco2, images, options(tmp_path))
    assert again.kept == 3 and again.written == again.remade == 0


def _manifest(images, recs, md5s) -> None:
    manifest = Manifest(images / ".sci-fetch" / "manifest.sqlite")
    run_id = manifest.begin_run({})
    manifest.plan(
        [Task(image_id=r["id"], key=f"k/{i}", dest=r["file_name"]) for i, r in enumerate(recs)], run_id, images
    )
    manifest.record([Outcome(image_id=r["id"], state=State.done, md5=m) for r, m in zip(recs, md5s, strict=False)])
    manifest.close()


def test_a_source_with_a_new_md5_is_cropped_again_even_at_the_same_size(tmp_path):
    images = tmp_path / "images"
    rec = image_record(1, file_name="p/a.png")
    put_image(images, rec["file_name"])
    coco = write_coco(tmp_path / "coco.json", [rec], [annotation("a", rec, 1, [32, 32, 64, 32])])
    _manifest(images, [rec], ["0" * 32])
    assert run_crops(coco, images, options(tmp_path)).written == 1
    assert run_crops(coco, images, options(tmp_path)).kept == 1
    # A re-downloaded image of exactly the same byte size (PNG of a flat colour): only its md5 tells.
    before = (images / "p/a.png").stat().st_size
    put_image(images, rec["file_name"], Image.new("RGB", (256, 128), BLUE))
    put_image(images, rec["file_name"], scene())  # same bytes back: size unchanged
    assert (images / "p/a.png").stat().st_size == before
    _manifest(images, [rec], ["1" * 32])
    remade = run_crops(coco, images, options(tmp_path))
    assert remade.remade == 1 and remade.kept == 0


def _jpeg(colour: tuple[int, int, int], n: int) -> bytes:
    buf = io.BytesIO()
    im = scene()
    im.paste(colour, (32, 32, 96, 64))
    im.save(buf, format="JPEG", quality=95, comment=f"image {n}".encode())  # its own bytes, md5 and id
    return buf.getvalue()


def test_crops_after_a_sharded_download_read_every_shard_manifest(s3_env, tmp_path, capsys):
    project = "shc" + uuid.uuid4().hex[:6]
    blobs = [_jpeg(RED, n) for n in range(12)]
    records = [animl_image(project, b, width=256, height=128) for b in blobs]
    seed(s3_env, "test-bucket", records, blobs)
    anns = [
        {"id": f"a{i}", "image_id": r["id"], "category_id": 1, "bbox": [32, 32, 64, 32]} for i, r in enumerate(records)
    ]
    coco = write_coco(
        tmp_path / "coco.json", records, anns, categories=[{"id": 0, "name": "empty"}, {"id": 1, "name": "fox"}]
    )
    out = tmp_path / "out"
    common = [
        "--output",
        str(out),
        "--endpoint-url",
        s3_env.endpoint_url,
        "--bucket",
        "test-bucket",
        "--profile",
        "",
        "--progress",
        "off",
    ]
    in_shard = {r["id"]: shard_of(r["id"], 2) for r in records}
    assert set(in_shard.values()) == {0, 1}

    assert main(["download", str(coco), *common, "--shard", "0/2"]) == 0
    assert (out / ".sci-fetch" / "manifest-shard-0-of-2.sqlite").exists()
    assert not (out / ".sci-fetch" / "manifest.sqlite").exists()
    crops_argv = ["crops", str(coco), "--output", str(out), "--crops-dir", str(tmp_path / "crops"), "--workers", "1"]
    assert main(crops_argv) == 1  # half the images are not there yet
    made = {r["image_id"] for r in read_rows(tmp_path / "crops" / "crops.csv")}
    rejects = {r["image_id"]: r["reason"] for r in read_rows(tmp_path / "crops" / "crops_rejected.csv")}
    assert made == {i for i, k in in_shard.items() if k == 0}
    assert rejects == {i: "not_downloaded" for i, k in in_shard.items() if k == 1}

    assert main(["download", str(coco), *common, "--shard", "1/2"]) == 0
    capsys.readouterr()
    assert main(crops_argv) == 0
    rows = read_rows(tmp_path / "crops" / "crops.csv")
    assert {r["image_id"] for r in rows} == set(in_shard) and not read_rows(tmp_path / "crops" / "crops_rejected.csv")
    n0 = sum(1 for k in in_shard.values() if k == 0)
    assert f"{len(records) - n0} made, {n0} already there" in capsys.readouterr().out
    for r in rows:
        assert_filled(Path(r["image_path"]), RED, (64, 32))
