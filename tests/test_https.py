"""Downloads over HTTPS from a real SeaweedFS whose certificate comes from a throw-away CA, as from a
private S3-compatible server: trusted through --ca-bundle (both GET paths), and one clear stop when the
certificate is not trusted."""

from __future__ import annotations

import uuid

import pytest
from helpers import animl_image, random_blobs, settings_for, write_coco
from test_reliability_support import BUCKET, KB, rows, seed_parallel

from sci_fetch.commands.download import download
from sci_fetch.demo.tls import SeaweedS3Https, make_certs
from sci_fetch.manifest.models import State


@pytest.fixture(scope="module")
def tls_s3(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    certs = make_certs(folder / "certs")
    server = SeaweedS3Https(folder / "seaweed", buckets=[BUCKET], certs=certs)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dataset(tls_s3, tmp_path_factory):
    blobs = random_blobs(30, seed=12, sizes=[4 * KB, 40 * KB])
    images = [animl_image("tls" + uuid.uuid4().hex[:6], b) for b in blobs]
    seed_parallel(tls_s3, images, blobs)  # over the plain port
    return write_coco(tmp_path_factory.mktemp("coco") / "coco.json", images), images, blobs


@pytest.fixture
def tls_env(tls_s3, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", tls_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", tls_s3.secret_key)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)  # this machine sets one; the test names its own CA
    return tls_s3


@pytest.mark.parametrize("direct_get", [True, False])
def test_https_with_the_servers_ca_downloads_every_byte(tls_env, dataset, tmp_path, direct_get):
    coco, images, blobs = dataset
    settings = settings_for(
        tls_env,
        coco,
        tmp_path / "out",
        endpoint_url=tls_env.https_url,
        ca_bundle=tls_env.certs.ca,
        direct_get=direct_get,
    )
    assert settings.endpoint_url.startswith("https://")
    assert download(settings) == 0
    for record, data in zip(images, blobs, strict=False):
        assert (tmp_path / "out" / record["file_name"]).read_bytes() == data
    assert {r.state for r in rows(settings.manifest_path).values()} == {State.done}


@pytest.mark.parametrize("direct_get", [True, False])
def test_a_certificate_that_is_not_trusted_is_one_clear_stop(tls_env, dataset, tmp_path, capsys, direct_get):
    coco, _, _ = dataset
    settings = settings_for(tls_env, coco, tmp_path / "out", endpoint_url=tls_env.https_url, direct_get=direct_get)
    assert download(settings) == 3
    printed = capsys.readouterr().out
    (line,) = [x for x in printed.splitlines() if x.startswith("sci-fetch: ")]
    assert "certificate is not trusted" in line and tls_env.https_url in line and "AWS_CA_BUNDLE" in line
    assert {r.state for r in rows(settings.manifest_path).values()} == {State.pending}  # nothing blamed on images


def test_a_ca_bundle_that_does_not_exist_is_a_setting_error(tls_env, dataset, tmp_path):
    from sci_fetch.errors import UsageError

    with pytest.raises(UsageError) as info:
        settings_for(tls_env, dataset[0], tmp_path / "out", ca_bundle=tmp_path / "nope.pem")
    assert "ca_bundle" in str(info.value) and "nope.pem" in str(info.value) and "is not a file" in str(info.value)
