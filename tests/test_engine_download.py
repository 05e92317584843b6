"""The download engine end to end against a real S3 server (SeaweedFS on loopback)."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from helpers import animl_image, failures, last_summary, random_blobs, seed, settings_for, write_coco

from sci_fetch.cli import main
from sci_fetch.commands.download import download
from sci_fetch.manifest.models import State
from sci_fetch.manifest.store import Manifest

KB = 1024


@pytest.fixture(scope="module")
def mixed(s3, tmp_path_factory):
    """300 objects from 1 byte to 2.5 MB (several chunks), Animl-style, uploaded once for the module."""
    project = "mix" + uuid.uuid4().hex[:6]
    blobs = random_blobs(300, seed=1, sizes=[1, 3 * KB, 40 * KB, 200 * KB, 700 * KB])
    blobs[7] = random_blobs(1, seed=2, sizes=[2_500_000])[0]
    images = [animl_image(project, b, camera=f"CAM{i % 4}") for i, b in enumerate(blobs)]
    seed(s3, "test-bucket", images, blobs)
    coco = write_coco(tmp_path_factory.mktemp("coco") / "coco.json", images)
    return coco, images, blobs


def test_every_file_equals_its_source_and_rerun_makes_no_request(s3_env, mixed, tmp_path):
    coco, images, blobs = mixed
    settings = settings_for(s3_env, coco, tmp_path / "out", chunk_size=256 * KB)
    assert download(settings) == 0
    for record, data in zip(images, blobs, strict=False):
        assert (tmp_path / "out" / record["file_name"]).read_bytes() == data
    assert not list((tmp_path / "out").rglob("*.partial"))
    summary = last_summary(settings)
    assert summary["fetched"] == 300 and summary["requests"] == 300
    m = Manifest(settings.manifest_path, readonly=True)
    rows = {r.image_id: r for r in m.rows()}
    m.close()
    assert all(r.state is State.done and r.attempts == 1 for r in rows.values())
    assert rows[images[7]["id"]].bytes == 2_500_000
    assert rows[images[7]["id"]].md5 == hashlib.md5(blobs[7]).hexdigest()

    assert download(settings) == 0
    again = last_summary(settings)
    assert again["requests"] == 0 and again["already_done"] == 300 and again["fetched"] == 0


def test_deleted_file_is_fetched_again_and_old_files_are_adopted_without_requests(s3_env, mixed, tmp_path):
    coco, images, blobs = mixed
    out = tmp_path / "out"
    # Files an older script left: 20 good ones, one truncated, one with the right size but wrong bytes.
    for record, data in list(zip(images, blobs, strict=False))[:22]:
        path = out / record["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (out / images[20]["file_name"]).write_bytes(blobs[20][:-1])
    (out / images[21]["file_name"]).write_bytes(b"\0" * len(blobs[21]))
    settings = settings_for(s3_env, coco, out, limit=40)
    assert download(settings) == 0
    summary = last_summary(settings)
    assert summary["adopted"] == 20 and summary["fetched"] == 20 and summary["requests"] == 20
    for record, data in list(zip(images, blobs, strict=False))[:40]:
        assert (out / record["file_name"]).read_bytes() == data

    (out / images[3]["file_name"]).unlink()
    assert download(settings) == 0
    assert last_summary(settings)["fetched"] == 1 and last_summary(settings)["requests"] == 1
    assert (out / images[3]["file_name"]).read_bytes() == blobs[3]


def test_missing_keys_are_recorded_and_not_retried(s3_env, tmp_path):
    project = "miss" + uuid.uuid4().hex[:6]
    blobs = random_blobs(6, seed=3, sizes=[10 * KB])
    images = [animl_image(project, b) for b in blobs]
    seed(s3_env, "test-bucket", images[:4], blobs[:4])
    settings = settings_for(s3_env, write_coco(tmp_path / "c.json", images), tmp_path / "out")
    assert download(settings) == 1
    rows = {r["image_id"]: r for r in failures(settings)}
    assert set(rows) == {images[4]["id"], images[5]["id"]}
    assert all(r["state"] == "missing" and r["attempts"] == "1" and "not found" in r["reason"] for r in rows.values())
    assert rows[images[4]["id"]]["key"] == images[4]["serving_bucket_key"]
    # A second run does not ask again for 404s, and still exits 1 because images are missing.
    assert download(settings) == 1
    assert last_summary(settings)["requests"] == 0
    # --retry-missing asks again, and finds a key that has appeared meanwhile.
    seed(s3_env, "test-bucket", images[4:5], blobs[4:5])
    assert download(settings.model_copy(update={"retry_missing": True})) == 1
    assert (tmp_path / "out" / images[4]["file_name"]).read_bytes() == blobs[4]
    assert [r["image_id"] for r in failures(settings)] == [images[5]["id"]]


def test_md5_in_the_image_id_is_checked(s3_env, tmp_path):
    project = "bad" + uuid.uuid4().hex[:6]
    good, wrong = random_blobs(2, seed=4, sizes=[5 * KB])
    images = [animl_image(project, good), animl_image(project, wrong)]
    client = s3_env.client()
    client.put_object(Bucket="test-bucket", Key=images[0]["serving_bucket_key"], Body=good)
    client.put_object(Bucket="test-bucket", Key=images[1]["serving_bucket_key"], Body=b"<html>403 Forbidden</html>")
    settings = settings_for(s3_env, write_coco(tmp_path / "c.json", images), tmp_path / "out", max_attempts=2)
    assert download(settings) == 1
    (row,) = failures(settings)
    assert row["image_id"] == images[1]["id"] and row["state"] == "failed" and row["attempts"] == "2"
    assert "does not match the md5 in the image id" in row["reason"]
    assert not (tmp_path / "out" / images[1]["file_name"]).exists()
    assert not list((tmp_path / "out").rglob("*.partial"))
    assert last_summary(settings)["retries"] == {"id-md5-mismatch": 1}


def test_wrong_credentials_stop_the_run_fast_with_a_clear_message(s3_env, mixed, tmp_path, monkeypatch, capsys):
    coco, images, _ = mixed
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    settings = settings_for(s3_env, coco, tmp_path / "out")
    assert download(settings) == 3
    out = capsys.readouterr().out
    assert "SignatureDoesNotMatch" in out and "bucket 'test-bucket'" in out and "credentials" in out
    m = Manifest(settings.manifest_path, readonly=True)
    counts = m.counts()
    m.close()
    assert counts["failed"] == 0 and counts["done"] == 0  # nothing is blamed on the images


def test_unknown_bucket_stops_the_run(s3_env, mixed, tmp_path, capsys):
    coco, _, _ = mixed
    settings = settings_for(s3_env, coco, tmp_path / "out", bucket="no-such-bucket-here")
    assert download(settings) == 3
    assert "NoSuchBucket" in capsys.readouterr().out


def test_unsafe_file_names_write_nothing_outside_and_are_listed(s3_env, tmp_path):
    project = "evil" + uuid.uuid4().hex[:6]
    blobs = random_blobs(6, seed=5, sizes=[2 * KB])
    images = [animl_image(project, b) for b in blobs]
    bad_names = ["../escaped.jpg", "/tmp/absolute.jpg", "a//b.jpg", "a\\b.jpg", ".sci-fetch/manifest.sqlite"]
    for record, name in zip(images[1:], bad_names, strict=False):
        record["file_name"] = name
    images.append({"id": 17, "file_name": None})
    seed(s3_env, "test-bucket", images[:6], blobs)
    out = tmp_path / "box" / "out"
    settings = settings_for(s3_env, write_coco(tmp_path / "c.json", images), out)
    assert download(settings) == 1
    assert (out / images[0]["file_name"]).read_bytes() == blobs[0]
    assert not (tmp_path / "box" / "escaped.jpg").exists() and not Path("/tmp/absolute.jpg").exists()
    rows = failures(settings)
    assert [r["record"] for r in rows] == [f"images[{i}]" for i in range(1, 7)]
    assert all(r["state"] == "invalid" for r in rows)
    assert "'..'" in rows[0]["reason"] and "absolute" in rows[1]["reason"] and "file_name" in rows[5]["reason"]
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".sci-fetch" not in p.parts}
    assert files == {images[0]["file_name"]}


def test_duplicates_are_fetched_once_and_reported(s3_env, tmp_path):
    project = "dup" + uuid.uuid4().hex[:6]
    blobs = random_blobs(2, seed=6, sizes=[3 * KB])
    images = [animl_image(project, b) for b in blobs]
    copy_of_first = dict(images[0])
    same_dest = dict(images[1], id=images[1]["id"] + "x", serving_bucket_key=images[1]["serving_bucket_key"])
    seed(s3_env, "test-bucket", images, blobs)
    settings = settings_for(
        s3_env, write_coco(tmp_path / "c.json", images + [copy_of_first, same_dest]), tmp_path / "out"
    )
    assert download(settings) == 0
    summary = last_summary(settings)
    assert summary["fetched"] == 2 and summary["duplicates"] == 2 and summary["requests"] == 2
    reasons = [r["reason"] for r in failures(settings)]
    assert reasons[0] == "duplicate id; fetched once"
    assert reasons[1].startswith("duplicate destination (already used by " + images[1]["id"])


@pytest.mark.parametrize("text,needle", [("{not json", "not valid JSON"), ('{"annotations": []}', "no 'images' array")])
def test_malformed_coco_is_one_clear_line_and_exit_2(s3_env, tmp_path, capsys, text, needle):
    coco = tmp_path / "bad.json"
    coco.write_text(text)
    code = main(
        [
            "download",
            str(coco),
            "--output",
            str(tmp_path / "out"),
            "--endpoint-url",
            s3_env.endpoint_url,
            "--bucket",
            "test-bucket",
            "--profile",
            "",
            "--progress",
            "off",
        ]
    )
    assert code == 2
    err = capsys.readouterr()
    assert needle in err.out + err.err and "Traceback" not in err.out + err.err


def test_cli_usage_errors_are_one_line(tmp_path, capsys):
    assert main(["download", str(tmp_path / "nope.json")]) == 2
    assert "COCO file" in capsys.readouterr().err
    assert main(["download", "x.json", "--concurrency", "0"]) == 2
    assert "setting 'concurrency'" in capsys.readouterr().err


def test_medium_variant_and_key_template(s3_env, tmp_path):
    project = "var" + uuid.uuid4().hex[:6]
    (data,) = random_blobs(1, seed=7, sizes=[4 * KB])
    image = animl_image(project, data)
    client = s3_env.client()
    client.put_object(Bucket="test-bucket", Key=f"medium/{image['id']}-medium.jpg", Body=b"medium bytes")
    client.put_object(Bucket="test-bucket", Key=f"lila/{image['file_name']}", Body=b"lila bytes")
    coco = write_coco(tmp_path / "c.json", [image])
    assert download(settings_for(s3_env, coco, tmp_path / "m", variant="medium")) == 0
    assert (tmp_path / "m" / image["file_name"]).read_bytes() == b"medium bytes"
    assert (
        download(settings_for(s3_env, coco, tmp_path / "l", key_template="lila/{file_name}", verify_id_md5=False)) == 0
    )
    assert (tmp_path / "l" / image["file_name"]).read_bytes() == b"lila bytes"


def test_status_reads_the_manifest(s3_env, mixed, tmp_path, capsys):
    coco, _, _ = mixed
    settings = settings_for(s3_env, coco, tmp_path / "out", limit=10)
    assert download(settings) == 0
    capsys.readouterr()
    assert main(["status", str(tmp_path / "out"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"pending": 0, "done": 10, "failed": 0, "missing": 0, "forbidden": 0}
    assert report["last_run"]["exit_code"] == 0 and report["running"] is False
    assert main(["status", str(tmp_path / "nowhere")]) == 2
    assert "no manifest" in capsys.readouterr().err


def test_download_then_crops_writes_the_crop_csv(s3_env, tmp_path):
    import io

    import pandas as pd
    from PIL import Image

    project = "crop" + uuid.uuid4().hex[:6]
    img = Image.new("RGB", (200, 100), (0, 0, 255))
    img.paste((255, 0, 0), (10, 20, 60, 70))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    image = animl_image(project, data, width=200, height=100)
    seed(s3_env, "test-bucket", [image], [data])
    coco = write_coco(
        tmp_path / "c.json",
        [image],
        [
            {"id": "a1", "image_id": image["id"], "category_id": 1, "bbox": [10, 20, 50, 50]},
            {"id": "a0", "image_id": image["id"], "category_id": 0, "bbox": [0, 0, 0, 0]},
        ],
    )
    out = tmp_path / "out"
    code = main(
        [
            "download",
            str(coco),
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
            "--crops",
        ]
    )
    assert code == 0
    table = pd.read_csv(Path("crops") / "crops.csv")
    assert list(table.columns[:2]) == ["image_path", "species_label"]
    assert table["species_label"].tolist() == ["fox"] and table["annotation_id"].tolist() == ["a1"]
    crop = Image.open(table["image_path"][0])
    assert crop.size == (50, 50)
    r, g, b = crop.convert("RGB").getpixel((25, 25))
    assert r > 200 and g < 60 and b < 60


def test_dry_run_plans_without_a_request(s3_env, mixed, tmp_path, capsys):
    coco, images, blobs = mixed
    out = tmp_path / "out"
    first = images[0]
    (out / first["file_name"]).parent.mkdir(parents=True)
    (out / first["file_name"]).write_bytes(blobs[0])
    settings = settings_for(s3_env, coco, out, dry_run=True, limit=50)
    assert download(settings) == 0
    summary = last_summary(settings)
    assert summary["requests"] == 0 and summary["to_fetch"] == 50 and summary["fetched"] == 0
    assert "dry run: 50 images would be fetched or verified" in capsys.readouterr().out
    assert [p.name for p in out.rglob("*.jpg")] == [Path(first["file_name"]).name]
