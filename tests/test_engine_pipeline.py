"""The engine on the in-memory FakeStorage: pipeline, planner, resume, adoption, shards and process shares,
in milliseconds and without a server. SeaweedFS stays the integration layer (test_engine_download.py, ...)."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import logging
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest
from helpers import animl_image, last_summary, random_blobs, wait_until, write_coco

from sci_fetch.coco.source import iter_images
from sci_fetch.commands.download import download
from sci_fetch.engine.job import download_with
from sci_fetch.engine.outcomes import FIRST_MISSES
from sci_fetch.engine.pipeline import Pipeline
from sci_fetch.engine.processes import process_count
from sci_fetch.engine.stop import Stop
from sci_fetch.errors import FatalError
from sci_fetch.exits import ExitCode, StopReason
from sci_fetch.keys.mapping import STATE_DIR, Task
from sci_fetch.keys.shard import process_of
from sci_fetch.manifest.models import State
from sci_fetch.manifest.store import Manifest
from sci_fetch.plan.probe import probe_sample
from sci_fetch.settings import Settings, load_settings
from sci_fetch.storage.fake import FakeBucket, FakeStorage


def fake_settings(coco: Path, output: Path, **overrides: object) -> Settings:
    values = {
        "coco": coco,
        "output": output,
        "bucket": "fake-bucket",
        "region": "us-west-2",
        "profile": "",
        "progress": "off",
        "concurrency": 4,
        "retry_base_delay": 0.001,
        "retry_max_delay": 0.002,
        "flush_interval": 0.05,
        "space_check": False,
        "fsync": False,
    }
    values.update(overrides)
    return load_settings(use_files=False, overrides=values)


def dataset(tmp_path: Path, n: int = 12, seed: int = 5) -> tuple[Path, list[dict], list[bytes], FakeBucket]:
    blobs = random_blobs(n, seed=seed, sizes=[200, 3000, 70_000])
    images = [animl_image("fake", b) for b in blobs]
    coco = write_coco(tmp_path / "coco.json", images)
    bucket = FakeBucket({r["serving_bucket_key"]: b for r, b in zip(images, blobs, strict=True)})
    return coco, images, blobs, bucket


def states(settings: Settings) -> dict[str, State]:
    with closing(Manifest(settings.manifest_path, readonly=True)) as m:
        return {r.image_id: r.state for r in m.rows()}


def on_disk(output: Path, images: list[dict]) -> dict[str, bytes]:
    return {r["id"]: (output / r["file_name"]).read_bytes() for r in images if (output / r["file_name"]).exists()}


def test_every_image_is_fetched_verified_and_recorded(tmp_path):
    coco, images, blobs, bucket = dataset(tmp_path)
    settings = fake_settings(coco, tmp_path / "out")
    result = download_with(settings, bucket)
    assert result.exit_code == ExitCode.OK and result.counts["done"] == len(images)
    assert on_disk(settings.output, images) == {r["id"]: b for r, b in zip(images, blobs, strict=True)}
    assert set(states(settings).values()) == {State.done}
    summary = last_summary(settings)
    assert summary["fetched"] == len(images) and summary["requests"] == len(images) and summary["retries"] == {}
    assert not list(settings.output.rglob("*.partial"))


def test_faults_are_retried_and_each_image_ends_in_its_state(tmp_path):
    coco, images, blobs, bucket = dataset(tmp_path, n=8)
    key = [r["serving_bucket_key"] for r in images]
    bucket.faults = {key[1]: ["503", "503"], key[2]: ["cut"], key[3]: ["flip"], key[4]: ["slow"], key[5]: ["404"]}
    settings = fake_settings(coco, tmp_path / "out", concurrency=1)  # in record order: key[0] succeeds first
    assert download(settings, bucket) == ExitCode.INCOMPLETE
    got = states(settings)
    assert got[images[5]["id"]] is State.missing
    assert [got[r["id"]] for i, r in enumerate(images) if i != 5] == [State.done] * 7
    assert on_disk(settings.output, images) == {
        r["id"]: b for i, (r, b) in enumerate(zip(images, blobs, strict=True)) if i != 5
    }
    retries = last_summary(settings)["retries"]
    assert retries == {"slowdown": 2, "short-body": 1, "etag-mismatch": 1}
    with closing(Manifest(settings.manifest_path, readonly=True)) as m:
        attempts = {r.image_id: r.attempts for r in m.rows()}
    assert attempts[images[1]["id"]] == 3 and attempts[images[0]["id"]] == 1
    with open(settings.state_file("failures", "csv"), newline="") as fh:
        failures = list(csv.DictReader(fh))
    assert [(f["image_id"], f["state"]) for f in failures] == [(images[5]["id"], "missing")]
    assert (
        "not found" in failures[0]["reason"] and str(settings.output / images[5]["file_name"]) in failures[0]["reason"]
    )


def test_a_403_before_any_success_stops_the_run_with_the_storage_layers_hint(tmp_path):
    coco, images, _blobs, bucket = dataset(tmp_path, n=6)
    bucket.faults = {r["serving_bucket_key"]: ["403"] for r in images}
    settings = fake_settings(coco, tmp_path / "out", anonymous=True)
    result = download_with(settings, bucket)
    assert result.exit_code == ExitCode.FATAL and result.stop_reason == StopReason.fatal
    assert "no object of this run has been readable yet" in (result.message or "")
    assert "may not allow anonymous reads" in (result.message or "")  # forbidden_hint(anonymous=True), on the error
    assert result.counts["pending"] == len(images) and on_disk(settings.output, images) == {}


def test_a_403_after_a_success_marks_only_that_image_forbidden(tmp_path):
    coco, images, _blobs, bucket = dataset(tmp_path, n=4)
    bucket.faults = {images[2]["serving_bucket_key"]: ["403"]}
    settings = fake_settings(coco, tmp_path / "out", concurrency=1)
    assert download(settings, bucket) == ExitCode.INCOMPLETE
    assert states(settings)[images[2]["id"]] is State.forbidden
    assert sorted(states(settings).values()).count(State.done) == 3


def test_a_credentials_error_stops_at_once_and_leaves_images_pending(tmp_path):
    coco, images, _blobs, bucket = dataset(tmp_path, n=5)
    bucket.faults = {r["serving_bucket_key"]: ["401"] for r in images}
    result = download_with(fake_settings(coco, tmp_path / "out", concurrency=1), bucket)
    assert result.exit_code == ExitCode.FATAL and "InvalidAccessKeyId" in (result.message or "")
    assert result.counts["done"] == 0 and result.counts["pending"] == len(images)


def test_the_first_keys_all_missing_stop_with_exit_2_and_stay_pending(tmp_path):
    coco, images, _blobs, _bucket = dataset(tmp_path, n=FIRST_MISSES + 10)
    settings = fake_settings(coco, tmp_path / "out")
    result = download_with(settings, FakeBucket())  # an empty bucket: every key is missing
    assert result.exit_code == ExitCode.USAGE and result.stop_reason == StopReason.keys
    assert f"the first {FIRST_MISSES} keys fetched were all missing" in (result.message or "")
    assert State.missing not in set(states(settings).values())  # they stay pending: once keys are right, fetched


def test_a_dead_endpoint_stops_the_run_as_unreachable(tmp_path):
    coco, images, _blobs, bucket = dataset(tmp_path, n=10)
    bucket.faults = {r["serving_bucket_key"]: ["outage"] * 10 for r in images}
    result = download_with(fake_settings(coco, tmp_path / "out"), bucket)
    assert result.exit_code == ExitCode.FATAL and "cannot be reached" in (result.message or "")
    assert result.counts["pending"] == len(images)


def test_an_outage_mid_run_pauses_and_gives_the_attempts_back(tmp_path, caplog):
    coco, images, blobs, bucket = dataset(tmp_path, n=10)
    # key 0 answers first; then four keys lose three attempts each to the outage (max_attempts 2: without the
    # attempts given back they would fail)
    bucket.faults = {r["serving_bucket_key"]: ["outage"] * 3 for r in images[1:5]}
    settings = fake_settings(coco, tmp_path / "out", concurrency=4, max_attempts=2)
    storage_seen: list[FakeStorage] = []

    def factory(options):
        storage = bucket(options)
        storage_seen.append(storage)
        return storage

    with caplog.at_level(logging.WARNING, logger="sci_fetch"):
        result = download_with(settings, factory)
    assert result.exit_code == ExitCode.OK, result.message
    assert "the endpoint is unreachable since" in caplog.text and "answers again" in caplog.text
    assert on_disk(settings.output, images) == {r["id"]: b for r, b in zip(images, blobs, strict=True)}
    assert storage_seen[0].reachability.down_since is None  # it went down and came back


def test_a_resume_of_a_finished_job_sends_no_request(tmp_path):
    coco, images, _blobs, bucket = dataset(tmp_path)
    settings = fake_settings(coco, tmp_path / "out")
    assert download(settings, bucket) == ExitCode.OK
    assert download(settings, bucket) == ExitCode.OK
    assert last_summary(settings)["requests"] == 0
    (settings.output / images[3]["file_name"]).unlink()  # the full path notices and fetches it again
    assert download(settings, bucket) == ExitCode.OK
    summary = last_summary(settings)
    assert summary["fetched"] == 1 and summary["requests"] == 1 and summary["already_done"] == len(images) - 1


def test_files_already_on_disk_are_adopted_without_a_request(tmp_path):
    coco, images, blobs, bucket = dataset(tmp_path, n=6)
    out = tmp_path / "out"
    for r, b in zip(images[:4], blobs[:4], strict=True):
        (out / r["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        (out / r["file_name"]).write_bytes(b)
    (out / images[3]["file_name"]).write_bytes(b"\xff\xd8" + blobs[3][2:-1])  # wrong bytes: fetched again
    settings = fake_settings(coco, out)
    assert download(settings, bucket) == ExitCode.OK
    summary = last_summary(settings)
    assert summary["adopted"] == 3 and summary["fetched"] == 3 and summary["requests"] == 3
    assert on_disk(out, images) == {r["id"]: b for r, b in zip(images, blobs, strict=True)}


def test_adoption_without_an_id_md5_checks_against_head(tmp_path):
    coco, images, blobs, bucket = dataset(tmp_path, n=3)
    out = tmp_path / "out"
    (out / images[0]["file_name"]).parent.mkdir(parents=True, exist_ok=True)
    (out / images[0]["file_name"]).write_bytes(blobs[0])
    settings = fake_settings(coco, out, verify_id_md5=False)
    assert download(settings, bucket) == ExitCode.OK
    summary = last_summary(settings)
    assert summary["adopted"] == 1 and summary["fetched"] == 2 and summary["requests"] == 3  # one HEAD, two GETs


def test_invalid_records_and_duplicates_are_listed_and_fetched_once(tmp_path):
    coco, images, blobs, bucket = dataset(tmp_path, n=4)
    broken = {"id": "x", "file_name": "../escape.jpg", "serving_bucket_key": "original/x.jpg"}
    write_coco(coco, [*images, images[1], broken])
    settings = fake_settings(coco, tmp_path / "out")
    result = download_with(settings, bucket)
    assert result.exit_code == ExitCode.INCOMPLETE and result.counts["done"] == 4
    with open(result.failures_path, newline="") as fh:
        kinds = sorted(row["state"] for row in csv.DictReader(fh))
    assert kinds == ["duplicate", "invalid"]
    assert last_summary(settings)["requests"] == 4


def test_a_dry_run_sends_no_request_and_shows_the_keys(tmp_path, caplog):
    coco, images, _blobs, bucket = dataset(tmp_path, n=3)
    settings = fake_settings(coco, tmp_path / "out", dry_run=True)
    with caplog.at_level(logging.INFO, logger="sci_fetch"):
        assert download(settings, bucket) == ExitCode.OK
    assert last_summary(settings)["requests"] == 0
    assert f"would fetch s3://fake-bucket/{images[0]['serving_bucket_key']}" in caplog.text


def test_shards_split_the_images_between_them(tmp_path):
    coco, images, blobs, bucket = dataset(tmp_path, n=20)
    out = tmp_path / "out"
    fetched = []
    for index in range(2):
        settings = fake_settings(coco, out, shard_count=2, shard_index=index)
        assert download(settings, bucket) == ExitCode.OK
        fetched.append(last_summary(settings)["fetched"])
        assert settings.manifest_path.name == f"manifest-shard-{index}-of-2.sqlite"
    assert sum(fetched) == len(images) and all(fetched)
    assert on_disk(out, images) == {r["id"]: b for r, b in zip(images, blobs, strict=True)}


async def test_process_shares_are_disjoint_and_cover_the_run(tmp_path):
    coco, images, _blobs, bucket = dataset(tmp_path, n=20)
    settings = fake_settings(coco, tmp_path / "out")
    with closing(Manifest(settings.manifest_path)) as manifest:
        run_id = manifest.begin_run({})
        for index in range(3):
            async with bucket(settings.storage_options()) as storage:
                await Pipeline(settings, storage, manifest, Stop(), share=(index, 3)).run(run_id)
                mine = {r["id"] for r in images if process_of(r["id"], 3) == index}
                assert set(storage.gets) == {r["serving_bucket_key"] for r in images if r["id"] in mine}
        assert manifest.counts(run_id)["done"] == len(images)


def test_process_count():
    assert process_count(3) == 3 and process_count("2") == 2 and process_count(0) == 1
    assert process_count("auto") >= 1


async def test_a_stop_gives_busy_downloads_the_grace_time_and_leaves_no_partial(tmp_path):
    coco, images, _blobs, bucket = dataset(tmp_path, n=8)
    bucket.faults = {r["serving_bucket_key"]: ["slow"] for r in images}
    bucket.slow_seconds = 30.0
    settings = fake_settings(coco, tmp_path / "out", grace_seconds=0.05)
    with closing(Manifest(settings.manifest_path)) as manifest:
        run_id = manifest.begin_run({})
        stop = Stop()
        async with bucket(settings.storage_options()) as storage:
            pipeline = Pipeline(settings, storage, manifest, stop)
            running = asyncio.create_task(pipeline.run(run_id))
            while pipeline.stats.in_flight < settings.concurrency:
                await asyncio.sleep(0.001)
            stop.request(StopReason.SIGTERM)
            await asyncio.wait_for(running, timeout=20)
        assert manifest.counts(run_id)["pending"] == len(images)
    assert not list(settings.output.rglob("*.partial"))


def test_the_fake_refuses_an_unknown_fault():
    with pytest.raises(ValueError, match="unknown fault"):
        FakeBucket({"k": b"x"}, faults={"k": ["teapot"]})


def test_the_fake_reports_what_it_was_asked(tmp_path):
    data = b"\xff\xd8" + b"x" * 100
    bucket = FakeBucket({"k": data}, etags={"k": "abc-2"})

    async def main() -> tuple[int, str | None, int]:
        async with bucket(fake_settings(tmp_path / "c.json", tmp_path).storage_options()) as storage:
            info = await storage.head("k")
            return info.size, info.md5, storage.requests

    size, md5, requests = asyncio.run(main())
    assert (size, md5, requests) == (len(data), None, 1)  # a multipart ETag is not an MD5
    assert hashlib.md5(data).hexdigest() != "abc-2"


def test_state_folder_holds_the_lock_file(tmp_path):
    coco, _images, _blobs, bucket = dataset(tmp_path, n=2)
    settings = fake_settings(coco, tmp_path / "out")
    assert download(settings, bucket) == ExitCode.OK
    assert (settings.output / STATE_DIR / "download.lock").is_file()


def test_processes_take_the_runs_one_storage_factory(tmp_path):
    """The factory pickles into the spawned children: --processes 2 downloads from the FakeBucket too."""
    coco, images, blobs, bucket = dataset(tmp_path, n=16)
    bucket.faults = {images[0]["serving_bucket_key"]: ["503"]}
    settings = fake_settings(coco, tmp_path / "out", processes=2)
    assert download(settings, bucket) == ExitCode.OK
    summary = last_summary(settings)
    assert summary["processes"] == 2 and summary["fetched"] == len(images) and summary["retries"] == {"slowdown": 1}
    assert on_disk(settings.output, images) == {r["id"]: b for r, b in zip(images, blobs, strict=True)}


async def test_the_plans_probe_on_the_fake_heads_and_times_gets(tmp_path):
    _coco, images, blobs, bucket = dataset(tmp_path, n=6)
    bucket.faults = {images[1]["serving_bucket_key"]: ["404"], images[2]["serving_bucket_key"]: ["503"] * 9}
    tasks = [Task(r["id"], r["serving_bucket_key"], r["file_name"]) for r in images]
    options = fake_settings(tmp_path / "c.json", tmp_path, max_attempts=2).storage_options()
    async with bucket(options) as storage:
        probe = await probe_sample(storage, tasks, concurrency=3, gets=2)
    assert probe.missing == [images[1]["serving_bucket_key"]] and len(probe.errors) == 1
    assert sorted(probe.sizes) == sorted(len(b) for i, b in enumerate(blobs) if i not in (1, 2))
    assert probe.get_count == 2


async def test_the_plans_probe_stops_when_no_key_is_readable_naming_what_to_check(tmp_path):
    _coco, images, _blobs, bucket = dataset(tmp_path, n=3)
    bucket.faults = {r["serving_bucket_key"]: ["403"] for r in images}
    tasks = [Task(r["id"], r["serving_bucket_key"], r["file_name"]) for r in images]
    async with bucket(fake_settings(tmp_path / "c.json", tmp_path).storage_options()) as storage:
        with pytest.raises(FatalError, match="no sampled key was readable, so these credentials may not read"):
            await probe_sample(storage, tasks, concurrency=3)


class Recording(FakeBucket):
    """A FakeBucket that keeps the storages it made, so a test can count every child's GETs."""

    def __init__(self, bucket: FakeBucket) -> None:
        super().__init__(bucket.objects)
        self.made: list[FakeStorage] = []

    def __call__(self, options):  # type: ignore[no-untyped-def]
        storage = super().__call__(options)
        self.made.append(storage)
        return storage


async def test_every_childs_feed_fetches_what_a_crashed_run_left_once_before_any_planning(tmp_path, monkeypatch):
    """--processes 2 after a crash: both children's feeds hand out the rows the dead run left (one page each
    at most, claimed in one transaction), not one record of the COCO file is read until every such row is done
    (so only the feeds can get there), and no row is fetched twice: a row one child fed is ``queued`` when
    the other's COCO pass meets it in its share."""
    from sci_fetch.engine import feed
    from sci_fetch.engine.processes import ChildJob, _child_run

    coco, images, blobs, bucket = dataset(tmp_path, n=30)
    settings = fake_settings(coco, tmp_path / "out")
    assert download(settings, bucket) == ExitCode.OK
    left = [r for r in images[::3]]
    for record in left:
        (settings.output / record["file_name"]).unlink()
    with closing(Manifest(settings.manifest_path)) as manifest:
        manifest.mark_pending([r["id"] for r in left], "the run that fetched it died")
        earlier = feed.earlier_runs(manifest, settings)
        run_id = manifest.begin_run({})

    def all_left_done() -> bool:
        with closing(Manifest(settings.manifest_path, readonly=True)) as m:
            return all(m.get(r["id"]).state is State.done for r in left)

    def gated(path, *args, **kwargs):
        wait_until(all_left_done, "every image left done before the COCO file is read")
        yield from iter_images(path, *args, **kwargs)

    monkeypatch.setattr("sci_fetch.engine.reader.iter_images", gated)
    recording = Recording(bucket)
    jobs = [ChildJob(settings, recording, run_id, k, 2, False, tuple(earlier)) for k in range(2)]
    results = await asyncio.gather(*(_child_run(job, lambda stats: None) for job in jobs))
    assert earlier and results == [(None, None), (None, None)]
    gets = Counter(key for storage in recording.made for key in storage.gets)
    assert gets == Counter({r["serving_bucket_key"]: 1 for r in left})
    assert on_disk(settings.output, images) == {r["id"]: b for r, b in zip(images, blobs, strict=True)}
    with closing(Manifest(settings.manifest_path, readonly=True)) as manifest:
        assert manifest.counts(run_id)["done"] == len(images) and manifest.not_done(run_id) == 0
