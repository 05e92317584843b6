"""The ETA's total (engine.run.RunOwner._count_total): the COCO file is parsed a second time only for a real
download, whose pass the workers hold back; a pass that reads every record gives the exact total itself,
and until then the total an earlier run counted stands in for it."""

from __future__ import annotations

import asyncio
from contextlib import closing
from typing import Any

import pytest
from helpers import animl_image, random_blobs, write_coco
from test_engine_pipeline import fake_settings

from sci_fetch.engine import run as run_module
from sci_fetch.engine.run import RunOwner
from sci_fetch.engine.stop import Stop
from sci_fetch.exits import StopReason
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe.stats import Stats

IMAGES = 7


class ScriptedWork:
    """A Work whose figures a test scripts: ``steps`` runs with its Stats, then the run ends."""

    def __init__(self, steps: Any) -> None:
        self.stats = Stats()
        self.extra: dict[str, Any] = {}
        self.feed_from: list[int] = []
        self.steps = steps

    def live_stats(self) -> Stats:
        return self.stats

    def last_errors(self) -> list[str]:
        return []

    def on_signal(self, name: str) -> None:
        pass

    async def run(self, run_id: int) -> None:
        await self.steps(self.stats)


@pytest.fixture
def counted(monkeypatch):
    """Every count of the COCO file, recorded; no waiting before a real download's count."""
    calls: list[int | None] = []
    real = run_module.count_images

    def spy(*args: Any) -> int | None:
        calls.append(real(*args))
        return calls[-1]

    monkeypatch.setattr(run_module, "count_images", spy)
    monkeypatch.setattr(run_module, "COUNT_AFTER", 0.0)
    return calls


def owner_run(tmp_path, work: ScriptedWork, earlier_total: str | None = None):
    images = [animl_image("total", b) for b in random_blobs(IMAGES, seed=3, sizes=[100])]
    coco = write_coco(tmp_path / "coco.json", images)
    settings = fake_settings(coco, tmp_path / "out")
    with closing(Manifest(settings.manifest_path)) as manifest:
        if earlier_total is not None:
            manifest.set_meta("images_in_coco", earlier_total)
        result = asyncio.run(RunOwner(settings, manifest, work, Stop()).run())
        return result, manifest.meta("images_in_coco")


async def until(check: Any) -> None:
    """Wait on the owner's progress, not on the clock (the bound only keeps a broken test from hanging)."""
    for _ in range(12_000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the run owner never got there")


def test_a_pass_over_skips_gives_the_total_and_the_file_is_not_parsed_again(tmp_path, counted):
    async def resume(stats: Stats) -> None:
        await until(lambda: stats.total == 40)  # until the pass ends, the earlier run's count
        stats.planned, stats.skipped_done = IMAGES, IMAGES
        await asyncio.sleep(0.3)  # longer than COUNT_AFTER (0 here): the old rule counted the file by now
        stats.read_all = True
        await until(lambda: stats.total == IMAGES)  # exact as soon as the pass read its last record

    work = ScriptedWork(resume)
    result, stored = owner_run(tmp_path, work, earlier_total="40")
    assert counted == []
    assert result.stats.total == IMAGES and stored == str(IMAGES)


def test_a_real_download_counts_the_file_for_its_eta(tmp_path, counted):
    async def download(stats: Stats) -> None:
        stats.planned = stats.to_fetch = run_module.REAL_DOWNLOAD  # the workers hold the pass back
        await until(lambda: counted)
        assert stats.total == IMAGES  # the ETA has the file's count while the pass is still held back
        stats.read_all = True

    result, stored = owner_run(tmp_path, ScriptedWork(download))
    assert counted == [IMAGES]
    assert result.stats.total == IMAGES and stored == str(IMAGES)


def test_a_few_images_to_fetch_do_not_make_a_second_parse(tmp_path, counted):
    async def resume(stats: Stats) -> None:
        stats.planned, stats.to_fetch = IMAGES, run_module.REAL_DOWNLOAD - 1
        await asyncio.sleep(0.3)
        stats.read_all = True

    result, _stored = owner_run(tmp_path, ScriptedWork(resume))
    assert counted == [] and result.stats.total == IMAGES


def test_a_stop_before_the_last_record_counts_the_file(tmp_path, counted):
    stop = Stop()

    async def stopped(stats: Stats) -> None:
        await until(lambda: stats.total == 40)
        stats.planned = 2
        stop.request(StopReason.SIGINT, "SIGINT received")

    work = ScriptedWork(stopped)
    images = [animl_image("total", b) for b in random_blobs(IMAGES, seed=3, sizes=[100])]
    settings = fake_settings(write_coco(tmp_path / "coco.json", images), tmp_path / "out")
    with closing(Manifest(settings.manifest_path)) as manifest:
        manifest.set_meta("images_in_coco", "40")  # an earlier run's count: not the file's now
        result = asyncio.run(RunOwner(settings, manifest, work, stop).run())
    assert counted == [IMAGES]
    assert result.stats.total == IMAGES and result.counts["pending"] == IMAGES  # none written: every image is pending
