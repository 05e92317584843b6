"""Downloads through the fault proxy: S3 and network faults, bad objects, credentials dying mid-run."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest
from fault_proxy import FaultProxy
from helpers import animl_image, random_blobs, settings_for, write_coco
from test_reliability_support import (
    BUCKET,
    KB,
    check_manifest_equals_disk,
    check_manifest_never_leads,
    failures,
    last_summary,
    leftovers,
    rows,
    seed_parallel,
    tree,
)

from sci_fetch.commands.download import download
from sci_fetch.files.verify import check_rows
from sci_fetch.manifest.models import State

N = 2000
# About 10 % of requests faulted, across every kind the proxy has.
RATES = {"slowdown": 0.02, "internal": 0.02, "reset": 0.02, "short": 0.015, "stall": 0.01, "corrupt": 0.015}


@pytest.fixture(scope="module")
def many(s3, tmp_path_factory):
    """2,000 Animl-style objects of 2-30 KB, uploaded once for the module."""
    project = "flt" + uuid.uuid4().hex[:6]
    blobs = random_blobs(N, seed=21, sizes=[2 * KB, 8 * KB, 16 * KB, 28 * KB])
    images = [animl_image(project, b, camera=f"CAM{i % 8}") for i, b in enumerate(blobs)]
    seed_parallel(s3, images, blobs)
    return write_coco(tmp_path_factory.mktemp("coco") / "coco.json", images), images, blobs


def test_2000_objects_with_10_percent_of_requests_faulted_all_end_done_and_verified(s3_env, many, tmp_path):
    coco, images, blobs = many
    out = tmp_path / "out"
    with FaultProxy(s3_env.endpoint_url, seed=7, rates=RATES, stall_seconds=3) as proxy:
        settings = settings_for(
            s3_env,
            coco,
            out,
            endpoint_url=proxy.url,
            concurrency=32,
            read_timeout=0.5,
            max_attempts=8,
            retry_base_delay=0.005,
            retry_max_delay=0.05,
        )
        started = time.monotonic()
        assert download(settings) == 0
        took = time.monotonic() - started
        injected = dict(proxy.injected)
        requests = proxy.requests

        # Every image is done and byte-identical: its MD5 equals the one in its Animl id.
        by_id = rows(settings.manifest_path)
        assert len(by_id) == N and all(r.state is State.done for r in by_id.values())
        for record, data in zip(images, blobs, strict=False):
            on_disk = (out / record["file_name"]).read_bytes()
            assert on_disk == data
            assert hashlib.md5(on_disk).hexdigest() == record["id"].split(":")[1] == by_id[record["id"]].md5
        assert leftovers(out) == []
        check_manifest_equals_disk(out, settings.manifest_path)
        verify_started = time.monotonic()
        assert check_rows(out, by_id.values()) == (N, [])  # what `sci-fetch verify` does
        verify_took = time.monotonic() - verify_started

        # Every injected fault cost exactly one retry, counted under its reason; nothing else was retried.
        summary = last_summary(settings)
        assert all(injected.get(k, 0) >= 10 for k in RATES), injected
        assert 0.08 < sum(injected.values()) / requests < 0.12
        assert summary["retries"] == {
            "slowdown": injected["slowdown"],
            "server-error": injected["internal"],
            "timeout": injected["stall"],
            "connection": injected["reset"] + injected["short"],
            "etag-mismatch": injected["corrupt"],
        }
        assert summary["requests"] == requests == N + sum(injected.values())
        assert sum(r.attempts for r in by_id.values()) == requests
        print(
            f"\nfaults: {N} objects, {requests} requests, {sum(injected.values())} faults injected {injected}, "
            f"retries {summary['retries']}, {took:.1f}s; verify {verify_took:.2f}s"
        )

        # Run again through the same faulty proxy: nothing is fetched, so no fault can matter.
        before = proxy.requests
        assert download(settings) == 0
        assert proxy.requests == before and last_summary(settings)["already_done"] == N


def test_a_key_that_keeps_failing_ends_failed_not_done(s3_env, many, tmp_path):
    """Faults on every request: each image uses up its attempts and is recorded failed with the last reason."""
    coco, _images, _ = many
    out = tmp_path / "out"
    with FaultProxy(s3_env.endpoint_url, seed=1, rates={"internal": 0.5, "corrupt": 0.5}) as proxy:
        settings = settings_for(s3_env, coco, out, endpoint_url=proxy.url, limit=20, max_attempts=3)
        assert download(settings) == 1
    assert proxy.requests == 60
    rows_ = failures(settings)
    assert len(rows_) == 20 and all(r["state"] == "failed" and r["attempts"] == "3" for r in rows_)
    assert all("InternalError" in r["reason"] or "does not match ETag" in r["reason"] for r in rows_)
    assert tree(out) == {} and leftovers(out) == []


@pytest.mark.parametrize(
    "code,hint", [("ExpiredToken", "session token expired"), ("InvalidAccessKeyId", "access key is not known")]
)
def test_credentials_refused_mid_run_stop_it_and_keep_the_work_done(s3_env, many, tmp_path, capsys, code, hint):
    coco, images, blobs = many
    out = tmp_path / "out"
    expected = {r["file_name"]: b for r, b in zip(images, blobs, strict=False)}
    with FaultProxy(s3_env.endpoint_url) as proxy:
        proxy.refuse_credentials(after=150, code=code)
        settings = settings_for(s3_env, coco, out, endpoint_url=proxy.url, limit=600, concurrency=16)
        assert download(settings) == 3
        printed = capsys.readouterr().out
        assert f"stopping: get_object s3://{BUCKET}/" in printed and code in printed and hint in printed
        assert f"bucket '{BUCKET}' at {proxy.url}" in printed
        assert proxy.refused >= 1 and proxy.refused <= 16  # it stopped at once, not after 450 refusals

        done = check_manifest_never_leads(out, settings.manifest_path, expected)
        counts = {s: sum(r.state is s for r in rows(settings.manifest_path).values()) for s in State}
        assert 100 <= len(done) <= 150 and counts[State.failed] == 0 and counts[State.missing] == 0
        # A download cancelled between its rename and its outcome leaves a complete file the manifest does
        # not know yet (the manifest may lag the disk, never lead it): the next run adopts it without a request.
        on_disk = len(tree(out))
        assert len(done) <= on_disk <= len(done) + 16 and leftovers(out) == []

        # Fresh credentials: the same command finishes the job without fetching anything twice.
        proxy.accept_credentials()
        before = proxy.requests
        assert download(settings) == 0
        summary = last_summary(settings)
        assert summary["adopted"] == on_disk - len(done) and summary["already_done"] == len(done)
        assert summary["fetched"] == proxy.requests - before == 600 - on_disk
    assert {k: v.attempts for k, v in rows(settings.manifest_path).items() if k in done} == {
        k: v.attempts for k, v in done.items()
    }
    check_manifest_equals_disk(out, settings.manifest_path)


def test_objects_that_are_not_images_are_failed_with_the_reason(s3_env, tmp_path):
    """With an Animl id the md5 catches them; without one (LILA-style, a key template) the bytes are
    checked for the two things that are never an image: nothing, and an HTML/XML page."""
    tag = uuid.uuid4().hex[:6]
    good, other = random_blobs(2, seed=31, sizes=[6 * KB])
    html = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>nginx</body></html>\n"
    xml = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code></Error>'

    def put(key: str, body: bytes) -> None:
        # A fresh client each time: SeaweedFS answers an empty PUT in a way that spoils the kept-alive connection.
        s3_env.client().put_object(Bucket=BUCKET, Key=key, Body=body)

    # Animl ids: the md5 of the real image is in the id, the object holds something else.
    animl = [animl_image("bad" + tag, good), animl_image("bad" + tag, other)]
    put(animl[0]["serving_bucket_key"], b"")
    put(animl[1]["serving_bucket_key"], html)
    # Plain ids with a key template: no md5 is known.
    plain = [{"id": f"{tag}-{i}", "file_name": f"lila/{tag}/{i}.jpg"} for i in range(4)]
    for record, body in zip(plain, [b"", html, xml, good], strict=False):
        put(f"lila-{record['file_name']}", body)
    out = tmp_path / "out"
    coco = write_coco(tmp_path / "c.json", animl)
    settings = settings_for(s3_env, coco, out, max_attempts=2)
    assert download(settings) == 1
    reasons = {r["image_id"]: r for r in failures(settings)}
    assert all(r["state"] == "failed" for r in reasons.values()) and len(reasons) == 2
    assert "does not match the md5 in the image id" in reasons[animl[0]["id"]]["reason"]
    assert "does not match the md5 in the image id" in reasons[animl[1]["id"]]["reason"]

    lila = write_coco(tmp_path / "lila.json", plain)
    settings = settings_for(s3_env, lila, out, key_template="lila-{file_name}", max_attempts=2)
    assert download(settings) == 1
    reasons = {r["image_id"]: r for r in failures(settings)}
    assert set(reasons) == {f"{tag}-0", f"{tag}-1", f"{tag}-2"}
    assert all(
        r["state"] == "failed" and r["attempts"] == "1" for r in reasons.values()
    )  # not retried: S3 holds these bytes
    assert "the object is empty (0 bytes), not an image" in reasons[f"{tag}-0"]["reason"]
    assert "the object is an HTML/XML page, not an image (starts with '<!DOCTYPE html>" in reasons[f"{tag}-1"]["reason"]
    assert "HTML/XML page" in reasons[f"{tag}-2"]["reason"]
    assert last_summary(settings)["retries"] == {}
    assert tree(out) == {f"lila/{tag}/3.jpg": good} and leftovers(out) == []

    # The same junk already on disk from an older tool is not adopted as good either.
    for i, body in ((0, b""), (1, html)):
        (out / plain[i]["file_name"]).write_bytes(body)
    assert download(settings) == 1
    states = {r.image_id: r.state for r in rows(settings.manifest_path).values()}
    assert (
        states[f"{tag}-0"] is State.failed and states[f"{tag}-1"] is State.failed and states[f"{tag}-3"] is State.done
    )
