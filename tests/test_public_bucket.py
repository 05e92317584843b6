"""A public data set as a new user meets it: a LILA-style COCO file (no serving_bucket_key, file_name like
`ENA24/0001.jpg`) in a bucket anyone may read, fetched with the README's command: --anonymous, --bucket,
--region and --key-template, no AWS account. The server grants unsigned GET/HEAD on that bucket only (no listing),
as public buckets on S3 do."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest

from sci_fetch.cli import main
from sci_fetch.demo.seaweed import SeaweedS3

PUBLIC = "lila-public-test"
PREFIX = "ena24/images"  # the bucket keeps the set under a prefix, as LILA's buckets do


@pytest.fixture(scope="module")
def public_s3(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed-public"), buckets=[PUBLIC], anonymous_read=[PUBLIC])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def lila(public_s3, tmp_path_factory):
    """Twelve images in two folders, ids as LILA writes them (plain strings and ints), uploaded under PREFIX."""
    rng = random.Random(13)
    images, blobs = [], {}
    for i in range(12):
        folder = "ENA24" if i < 8 else "ENA24/night"
        file_name = f"{folder}/{i + 1:04d}.jpg"
        data = b"\xff\xd8\xff\xe0" + rng.randbytes(rng.randrange(3_000, 40_000))
        record = {"id": i + 1 if i % 2 else f"ENA24/{i + 1:04d}", "file_name": file_name, "width": 2048, "height": 1536}
        images.append(record)
        blobs[file_name] = data
        public_s3.put(PUBLIC, f"{PREFIX}/{file_name}", data)
    coco = tmp_path_factory.mktemp("lila") / "ena24.json"
    coco.write_text(
        json.dumps(
            {
                "info": {"version": "1.0"},
                "images": images,
                "annotations": [],
                "categories": [{"id": 0, "name": "empty"}],
            }
        )
    )
    return coco, blobs


def public_flags(server: SeaweedS3) -> list[str]:
    return [
        "--anonymous",
        "--bucket",
        PUBLIC,
        "--region",
        "us-east-1",
        "--endpoint-url",
        server.endpoint_url,
        "--key-template",
        PREFIX + "/{file_name}",
    ]


def test_lila_style_coco_downloads_anonymously_with_a_key_template(public_s3, lila, tmp_path, capsys):
    coco, blobs = lila
    out = tmp_path / "ena24"
    code = main(["download", str(coco), "--output", str(out), *public_flags(public_s3), "--progress", "off"])
    assert code == 0, capsys.readouterr()
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.jpg")}
    assert {k: hashlib.md5(v).hexdigest() for k, v in got.items()} == {
        k: hashlib.md5(v).hexdigest() for k, v in blobs.items()
    }
    assert not list(out.rglob("*.partial"))


def test_the_same_bucket_without_anonymous_stops_at_once_and_names_the_way_out(public_s3, lila, tmp_path, capsys):
    """No credentials anywhere (the test env has none): exit 3 and a message that mentions --anonymous."""
    coco, _blobs = lila
    flags = [f for f in public_flags(public_s3) if f != "--anonymous"]
    code = main(["download", str(coco), "--output", str(tmp_path / "out"), *flags])
    assert code == 3
    assert "--anonymous" in capsys.readouterr().out
    assert not list((tmp_path / "out").rglob("*.jpg"))


def test_unsigned_requests_cannot_list_or_write_the_public_bucket(public_s3):
    """The server grants what a public S3 bucket does and no more, so the download above used GET/HEAD only."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError

    client = boto3.client(
        "s3",
        endpoint_url=public_s3.endpoint_url,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}),
    )
    with pytest.raises(ClientError, match="AccessDenied"):
        client.list_objects_v2(Bucket=PUBLIC)
    with pytest.raises(ClientError, match="AccessDenied"):
        client.put_object(Bucket=PUBLIC, Key="x", Body=b"1")


def test_the_readme_command_works_beside_the_shipped_settings_toml(public_s3, lila, tmp_path, capsys, monkeypatch):
    """The shipped settings.toml names the `animl` profile, which a LILA user does not have: `--profile ''` in
    the README's command is what keeps it out, for `plan` and `download` alike."""
    coco, blobs = lila
    repo = Path(__file__).resolve().parents[1]
    shutil.copy(repo / "settings.toml", tmp_path / "settings.toml")
    monkeypatch.chdir(tmp_path)
    flags = [*public_flags(public_s3), "--profile", ""]
    assert main(["plan", str(coco), "--output", "ena24", *flags]) == 0
    assert "12 exist, 0 missing" in capsys.readouterr().out
    assert main(["download", str(coco), "--output", "ena24", *flags]) == 0
    assert sorted(p.relative_to(tmp_path / "ena24").as_posix() for p in (tmp_path / "ena24").rglob("*.jpg")) == sorted(
        blobs
    )
