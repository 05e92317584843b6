"""A bucket in another region: found once for the run, the lean GET moved there, redirects never fail images."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid

import botocore.exceptions as bce
import pytest
from fault_proxy import FaultProxy
from helpers import animl_image, random_blobs, settings_for, wait_until, write_coco
from test_reliability_support import KB, rows, seed_parallel, tree

from sci_fetch.commands.download import download
from sci_fetch.errors import FatalError, PermanentError
from sci_fetch.manifest.models import State
from sci_fetch.storage.region import WrongRegion, is_region_answer, region_in_answer, wrong_region
from sci_fetch.storage.retry import classify
from sci_fetch.storage.s3 import S3Storage

N = 60


def _error(status: int, code: str, headers: dict[str, str], **extra: str) -> bce.ClientError:
    response: dict = {
        "Error": {"Code": code, "Message": "m", **extra},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
    }
    return bce.ClientError(response, "GetObject")


# ---- the pure parts --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "status,code,headers,extra,region",
    [
        (400, "AuthorizationHeaderMalformed", {}, {"Region": "eu-west-1"}, "eu-west-1"),  # the body's <Region>
        (400, "AuthorizationHeaderMalformed", {"x-amz-bucket-region": "ap-south-1"}, {"Region": "x"}, "ap-south-1"),
        (301, "PermanentRedirect", {"x-amz-bucket-region": "eu-west-1"}, {}, "eu-west-1"),
        (301, "301", {"x-amz-bucket-region": "eu-west-1"}, {}, "eu-west-1"),  # a bare 301: only the header
        (307, "TemporaryRedirect", {"x-amz-bucket-region": "us-east-2"}, {}, "us-east-2"),
        (400, "400", {"x-amz-bucket-region": "eu-west-1"}, {}, "eu-west-1"),  # a HEAD signed for another region
        (301, "301", {}, {}, None),  # says "elsewhere" but not where
    ],
)
def test_an_answer_naming_another_region_becomes_wrong_region_with_that_region(status, code, headers, extra, region):
    exc = _error(status, code, headers, **extra)
    mapped = classify(exc, "get_object", "s3://b/k", None, "bucket 'b'")
    assert isinstance(mapped, WrongRegion) and isinstance(mapped, FatalError)  # not a per-image failure
    assert mapped.region == region
    if region is not None:
        assert f'set region = "{region}"' in str(mapped) and f"--region {region}" in str(mapped)


@pytest.mark.parametrize(
    "status,code,headers",
    [
        (400, "InvalidArgument", {}),
        (400, "InvalidRequest", {"x-amz-bucket-region": "us-west-2"}),  # a 400 of its own, the header beside it
        (403, "AccessDenied", {"x-amz-bucket-region": "us-west-2"}),
        (404, "NoSuchKey", {}),
        (503, "SlowDown", {}),
    ],
)
def test_answers_about_something_else_are_not_region_answers(status, code, headers):
    assert not is_region_answer(status, code, headers)
    assert wrong_region(_error(status, code, headers), "get_object", "s3://b/k", None, "w") is None
    assert not isinstance(classify(_error(status, code, headers), "get_object", "s3://b/k", None, "w"), WrongRegion)


def test_region_in_answer_prefers_the_header_as_botocore_does():
    assert region_in_answer({"x-amz-bucket-region": "eu-west-1"}, {"Region": "us-east-1"}) == "eu-west-1"
    assert region_in_answer({}, {"Region": " eu-central-1 "}) == "eu-central-1"
    assert region_in_answer({"X-Amz-Bucket-Region": "sa-east-1"}, {}) == "sa-east-1"
    assert region_in_answer({}, {}) is None and region_in_answer({"x-amz-bucket-region": ""}, {}) is None


def test_an_unknown_400_stays_a_permanent_error():
    assert isinstance(classify(_error(400, "InvalidRequest", {}), "get", "s3://b/k", None, "w"), PermanentError)


# ---- against SeaweedFS behind a proxy that answers as S3's regional endpoints --------------------------------
@pytest.fixture(scope="module")
def objects(s3, tmp_path_factory):
    project = "rgn" + uuid.uuid4().hex[:6]
    blobs = random_blobs(N, seed=33, sizes=[2 * KB, 9 * KB])
    images = [animl_image(project, b, camera=f"CAM{i % 3}") for i, b in enumerate(blobs)]
    seed_parallel(s3, images, blobs)
    return write_coco(tmp_path_factory.mktemp("coco") / "coco.json", images), images, blobs


def _all_done(settings, images, blobs, out) -> None:
    by_id = rows(settings.manifest_path)
    assert len(by_id) == N and all(r.state is State.done for r in by_id.values())
    assert tree(out) == {r["file_name"]: b for r, b in zip(images, blobs, strict=True)}


def _region_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "is in region eu-west-1" in r.getMessage()]


@pytest.mark.parametrize("mode", ["400", "301", "301-bare", "307"])
def test_a_bucket_in_another_region_with_no_region_given_ends_with_every_image_done(
    s3_env, objects, tmp_path, caplog, mode
):
    """The default region (us-west-2) is wrong for this bucket: the first answer names eu-west-1, the run moves
    there once, every image is done, and one line names the region used."""
    coco, images, blobs = objects
    out = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="sci_fetch")
    with FaultProxy(s3_env.endpoint_url) as proxy:
        proxy.bucket_region("eu-west-1", mode)
        settings = settings_for(s3_env, coco, out, endpoint_url=proxy.url)
        assert download(settings) == 0
        refused = proxy.injected["wrong-region"]
    _all_done(settings, images, blobs, out)
    lines = _region_lines(caplog)
    assert len(lines) == 1, lines
    assert "not us-west-2" in lines[0] and 'set region = "eu-west-1"' in lines[0]
    assert 1 <= refused <= settings.concurrency  # only the requests in flight before the move were refused


@pytest.mark.parametrize("mode", ["307", "301-bare"])
def test_a_redirect_mid_run_is_followed_not_failed_image_by_image(s3_env, objects, tmp_path, caplog, mode):
    """The bucket starts answering 307 TemporaryRedirect (or a bare 301) with x-amz-bucket-region after 20
    images: before, every later image became a permanent ``failed`` (exit 1) with no line naming the region."""
    coco, images, blobs = objects
    out = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="sci_fetch")
    with FaultProxy(s3_env.endpoint_url) as proxy:

        def move() -> None:
            wait_until(lambda: proxy.forwarded >= 20, "20 requests through")
            proxy.bucket_region("eu-west-1", mode)

        mover = threading.Thread(target=move, daemon=True)
        mover.start()
        settings = settings_for(s3_env, coco, out, endpoint_url=proxy.url, concurrency=4)
        assert download(settings) == 0
        mover.join(5)
        assert proxy.injected["wrong-region"] >= 1  # the move happened while images were still to fetch
    _all_done(settings, images, blobs, out)
    lines = _region_lines(caplog)
    assert len(lines) == 1 and f"from its {'TemporaryRedirect' if mode == '307' else '301'} answer" in lines[0]


def test_a_wrong_explicit_region_still_works_with_a_note(s3_env, objects, tmp_path, capfd):
    """The same with 2 processes (each finds the region on its own) and a wrong --region: the note names both."""
    coco, images, blobs = objects
    out = tmp_path / "out"
    with FaultProxy(s3_env.endpoint_url) as proxy:
        proxy.bucket_region("eu-west-1", "400")
        settings = settings_for(s3_env, coco, out, endpoint_url=proxy.url, region="ap-south-1", processes="2")
        assert download(settings) == 0
    _all_done(settings, images, blobs, out)
    lines = [line for line in capfd.readouterr().err.splitlines() if "is in region eu-west-1" in line]
    assert 1 <= len(lines) <= 2, lines  # one per process
    assert all("not ap-south-1 (the region setting), from its AuthorizationHeaderMalformed answer" in x for x in lines)


def test_a_redirect_that_cannot_be_followed_stops_the_run_naming_the_region(s3_env, objects, tmp_path, capsys):
    """A 307 even to requests signed for eu-west-1: not a permanent failure per image, but a stop (exit 3) whose
    message names the region from the header."""
    coco, _images, _blobs = objects
    out = tmp_path / "out"
    with FaultProxy(s3_env.endpoint_url) as proxy:
        proxy.bucket_region("eu-west-1", "307-always")
        settings = settings_for(s3_env, coco, out, endpoint_url=proxy.url)
        assert download(settings) == 3
        assert proxy.injected["wrong-region"] <= 2 * settings.concurrency  # stopped at once, not after 60 refusals
    printed = capsys.readouterr().out
    assert "TemporaryRedirect" in printed and 'set region = "eu-west-1"' in printed
    states = {r.state for r in rows(settings.manifest_path).values()}
    assert State.failed not in states  # nothing is blamed on the images


def test_with_no_region_set_the_region_is_asked_once_before_the_first_get(s3_env, objects, tmp_path, caplog):
    """region unset: one HeadBucket (its answer names the region, as S3's does even on 403) before any GET, so
    no GET is ever signed for the wrong region."""
    coco, _images, _blobs = objects
    caplog.set_level(logging.INFO, logger="sci_fetch")
    with FaultProxy(s3_env.endpoint_url) as proxy:
        proxy.bucket_region("eu-west-1", "400")
        settings = settings_for(s3_env, coco, tmp_path / "out", endpoint_url=proxy.url, region="")

        async def first_get() -> tuple[str | None, int, list[str]]:
            async with S3Storage(settings.storage_options()) as storage:
                info = await storage.head(images_key(objects))
                assert info.size > 0
                return storage.region, storage.requests, [m for _, m, _, _ in proxy.history]

        region, requests, methods = asyncio.run(first_get())
        assert region == "eu-west-1"
        # HeadBucket signed for the default region (refused, botocore follows it), then HeadBucket and HeadObject
        # in eu-west-1: the one refusal is the HeadBucket's, never an object request's.
        assert proxy.injected["wrong-region"] == 1 and methods == ["HEAD", "HEAD", "HEAD"] and requests == 3


def images_key(objects) -> str:
    return objects[1][0]["serving_bucket_key"]
