"""The one run owner (engine.run), for one process and for --processes, on the FakeStorage: a failing helper
stops the run loudly in both, a manifest that cannot end the run does not change its exit code in both."""

from __future__ import annotations

import logging

import pytest
from helpers import last_summary
from test_engine_pipeline import dataset, fake_settings

from sci_fetch.commands.download import download
from sci_fetch.engine.job import download_with
from sci_fetch.errors import DiskError
from sci_fetch.exits import ExitCode, StopReason
from sci_fetch.manifest.store import Manifest


@pytest.mark.parametrize("processes", [1, 2])
def test_a_failing_helper_stops_the_run_with_exit_70(tmp_path, monkeypatch, caplog, processes):
    coco, images, _blobs, bucket = dataset(tmp_path, n=6)
    bucket.faults = {r["serving_bucket_key"]: ["slow"] for r in images}
    bucket.slow_seconds = 5.0  # no run ends before the helper fails

    async def broken(*_args, **_kwargs):
        raise RuntimeError("status file writer bug")

    monkeypatch.setattr("sci_fetch.engine.run.keep_writing", broken)
    settings = fake_settings(coco, tmp_path / "out", processes=processes, grace_seconds=0.01)
    with caplog.at_level(logging.ERROR, logger="sci_fetch"):
        result = download_with(settings, bucket)
    assert result.exit_code == ExitCode.INTERNAL and result.stop_reason == StopReason.internal
    assert "internal error in the status file writer: RuntimeError: status file writer bug" in (result.message or "")
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)
    assert result.counts["pending"] == len(images)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_manifest_that_cannot_end_the_run_keeps_the_runs_exit_code(tmp_path, monkeypatch, caplog, processes):
    coco, images, _blobs, bucket = dataset(tmp_path, n=6)

    def full(self, *_args, **_kwargs):
        raise DiskError("manifest: No space left on device")

    monkeypatch.setattr(Manifest, "end_run", full)
    settings = fake_settings(coco, tmp_path / "out", processes=processes)
    with caplog.at_level(logging.ERROR, logger="sci_fetch"):
        assert download(settings, bucket) == ExitCode.OK
    assert "No space left on device" in caplog.text
    monkeypatch.undo()
    assert download(settings, bucket) == ExitCode.OK  # the next run finds every image done
    assert last_summary(settings)["already_done"] == len(images)
