"""Durability in batches: files are written without an fsync each, and one syncfs of the output's
filesystem comes before every manifest write that records done rows (a power-cut test is not possible
here, so the order of the calls is what is checked)."""

from __future__ import annotations

import uuid

import pytest
from helpers import animl_image, random_blobs, settings_for, write_coco
from test_reliability_support import KB, seed_parallel

from sci_fetch.commands.download import download
from sci_fetch.files import durable
from sci_fetch.manifest.models import State
from sci_fetch.manifest.store import Manifest

N = 150


@pytest.fixture(scope="module")
def dataset(s3, tmp_path_factory):
    project = "dur" + uuid.uuid4().hex[:6]
    blobs = random_blobs(N, seed=9, sizes=[2 * KB, 30 * KB])
    images = [animl_image(project, b) for b in blobs]
    seed_parallel(s3, images, blobs)
    return write_coco(tmp_path_factory.mktemp("coco") / "coco.json", images), images, blobs


def test_sync_filesystem_flushes_a_real_folder_and_names_a_missing_one(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x" * 100)
    durable.sync_filesystem(tmp_path)
    with pytest.raises(OSError) as info:
        durable.sync_filesystem(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)


def test_no_done_row_is_committed_before_the_sync_of_its_files(s3_env, dataset, tmp_path, monkeypatch):
    coco, images, blobs = dataset
    events: list[tuple[str, int]] = []
    real_sync, real_record = durable.sync_filesystem, Manifest.record

    def sync(path):
        real_sync(path)
        events.append(("sync", len(list(p for p in (tmp_path / "out").rglob("*.jpg")))))

    def record(self, outcomes):
        outcomes = list(outcomes)
        real_record(self, outcomes)
        events.append(("record", sum(o.state is State.done for o in outcomes)))

    monkeypatch.setattr("sci_fetch.engine.outcomes.sync_filesystem", sync)
    monkeypatch.setattr(Manifest, "record", record)
    settings = settings_for(s3_env, coco, tmp_path / "out", concurrency=8, flush_interval=0.05)
    assert download(settings) == 0
    recorded = [e for e in events if e[0] == "record" and e[1] > 0]
    assert sum(n for _, n in recorded) == N
    for i, event in enumerate(events):
        if event[0] == "record" and event[1] > 0:
            assert i > 0 and events[i - 1][0] == "sync", f"done rows recorded without a sync before them: {events}"
    syncs = [e for e in events if e[0] == "sync"]
    assert len(syncs) == len(recorded) < N  # one per flush, not one per file
    for record_, data in zip(images, blobs, strict=False):
        assert (tmp_path / "out" / record_["file_name"]).read_bytes() == data


def test_without_fsync_nothing_is_synced(s3_env, dataset, tmp_path, monkeypatch):
    coco, _, _ = dataset
    calls = []
    monkeypatch.setattr("sci_fetch.engine.outcomes.sync_filesystem", calls.append)
    settings = settings_for(s3_env, coco, tmp_path / "out", fsync=False, limit=20)
    assert download(settings) == 0
    assert calls == []
