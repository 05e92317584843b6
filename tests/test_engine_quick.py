"""The quick check: a finished, unchanged job is resumed without reading the COCO file or sending a request;
any change takes the full path."""

from __future__ import annotations

import json
import os

import pytest
from helpers import last_summary, settings_for
from test_reliability_support import KB, seeded_dataset

from sci_fetch.commands.download import download
from sci_fetch.manifest.store import Manifest


@pytest.fixture(scope="module")
def dataset(s3, tmp_path_factory):
    return seeded_dataset(s3, tmp_path_factory.mktemp("coco"), "quick", 40, 31, [2 * KB, 9 * KB])


def no_parse(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the COCO file was read")

    monkeypatch.setattr("sci_fetch.engine.reader.iter_images", refuse)


def test_a_finished_unchanged_job_is_resumed_without_reading_or_requests(
    s3_env, dataset, tmp_path, monkeypatch, capsys
):
    coco, images, blobs = dataset
    settings = settings_for(s3_env, coco, tmp_path / "out")
    assert download(settings) == 0
    with monkeypatch.context() as patch:
        no_parse(patch)
        patch.setattr(
            "sci_fetch.storage.s3.S3Storage.__aenter__", lambda self: (_ for _ in ()).throw(AssertionError("S3"))
        )
        capsys.readouterr()
        assert download(settings) == 0
    printed = capsys.readouterr().out
    assert "done 40, failed 0, missing 0, forbidden 0, pending 0" in printed and "already done 40" in printed
    summary = last_summary(settings)
    assert summary["requests"] == 0 and summary["already_done"] == 40 and summary["quick_check"] is True
    status = json.loads(settings.state_file("status", "json").read_text())
    assert status["state"] == "finished" and status["exit_code"] == 0 and status["images"]["done"] == 40


def test_a_missing_file_a_touched_coco_or_other_settings_take_the_full_path(s3_env, dataset, tmp_path, monkeypatch):
    coco, images, blobs = dataset
    out = tmp_path / "out"
    local = tmp_path / "coco.json"
    local.write_bytes(coco.read_bytes())
    settings = settings_for(s3_env, local, out)
    assert download(settings) == 0
    (out / images[3]["file_name"]).unlink()
    assert download(settings) == 0  # the full path: it notices the file is gone and fetches it again
    assert last_summary(settings)["fetched"] == 1
    assert (out / images[3]["file_name"]).read_bytes() == blobs[3]
    os.utime(local, ns=(local.stat().st_atime_ns, local.stat().st_mtime_ns + 10**9))  # the COCO file changed
    assert download(settings) == 0
    assert "quick_check" not in last_summary(settings) and last_summary(settings)["already_done"] == 40
    assert download(settings) == 0 and last_summary(settings)["quick_check"] is True  # quick again once finished
    other = settings_for(s3_env, local, out, limit=10)
    assert download(other) == 0 and "quick_check" not in last_summary(other)


def test_verify_marking_an_image_pending_ends_the_quick_check(s3_env, dataset, tmp_path):
    coco, images, _ = dataset
    settings = settings_for(s3_env, coco, tmp_path / "out")
    assert download(settings) == 0
    manifest = Manifest(settings.manifest_path)
    assert manifest.mark_pending([images[0]["id"]], "md5 does not match") == 1
    manifest.close()
    assert download(settings) == 0
    summary = last_summary(settings)
    assert "quick_check" not in summary and summary["adopted"] + summary["fetched"] == 1


def test_the_quick_check_keeps_the_trusted_runs_duplicates_listed_and_counted(
    s3_env, dataset, tmp_path, monkeypatch, capsys
):
    """Duplicates leave a run's exit code 0, so its fingerprint is kept: the quick run that trusts it lists them
    in failures.csv and counts them as it did (invalid records end a run with 1, so never reach the quick check)."""
    coco, images, _ = dataset
    doc = json.loads(coco.read_text())
    doc["images"] += [dict(doc["images"][0]), dict(doc["images"][1], id="other-id")]  # a duplicate id, a dest
    local = tmp_path / "coco.json"
    local.write_text(json.dumps(doc))
    settings = settings_for(s3_env, local, tmp_path / "out")
    failures = settings.state_file("failures", "csv")
    assert download(settings) == 0
    first = failures.read_bytes()
    assert b"duplicate id" in first and b"duplicate destination" in first and first.count(b"\r\n") == 3
    capsys.readouterr()
    with monkeypatch.context() as patch:
        no_parse(patch)
        assert download(settings) == 0
    printed = capsys.readouterr().out
    assert last_summary(settings)["quick_check"] is True
    assert failures.read_bytes() == first  # not emptied by a run that read no COCO file
    assert "invalid 0, duplicates 2" in printed and "failures: 2 listed" in printed
