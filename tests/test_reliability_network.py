"""What real networks and buckets do to a long run: a dead endpoint, an outage mid-run, a forbidden object,
an encrypted bucket, keys that are all missing, a bug in the download path, a failing manifest writer.

Each test drives a real SeaweedFS through the fault proxy (tests/fault_proxy.py) and asserts on the files,
the manifest rows and the lines the user reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import sqlite3
import uuid

import pytest
from fault_proxy import FaultProxy
from helpers import animl_image, final_files, random_blobs, settings_for, wait_until, write_coco
from test_reliability_support import BUCKET, KB, failures, last_summary, rows, seed_parallel, seeded_dataset, start

from sci_fetch.commands.download import download
from sci_fetch.engine.outcomes import FIRST_MISSES
from sci_fetch.exits import ExitCode
from sci_fetch.manifest.models import State
from sci_fetch.manifest.store import Manifest

N = 240


@pytest.fixture(scope="module")
def dataset(s3, tmp_path_factory):
    return seeded_dataset(s3, tmp_path_factory.mktemp("coco"), "net", N, 77, [3 * KB, 20 * KB, 90 * KB], cameras=4)


def states(settings) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows(settings.manifest_path).values():
        counts[row.state.value] = counts.get(row.state.value, 0) + 1
    return counts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status_json(out) -> dict:
    try:
        return json.loads((out / ".sci-fetch" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def test_a_dead_endpoint_stops_at_once_with_one_line_and_fails_no_image(s3_env, dataset, tmp_path, capsys):
    coco, _, _ = dataset
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    settings = settings_for(
        s3_env,
        coco,
        tmp_path / "out",
        endpoint_url=dead,
        concurrency=16,
        max_attempts=5,
        retry_base_delay=0.5,
        retry_max_delay=20.0,
    )
    assert download(settings) == 3
    printed = capsys.readouterr().out
    (line,) = [x for x in printed.splitlines() if x.startswith("sci-fetch: ")]
    assert "cannot be reached" in line and dead in line and "check the endpoint URL" in line
    assert "Cannot connect to host" in line or "Could not connect" in line  # aiohttp's or botocore's words
    summary = last_summary(settings)
    assert summary["failed"] == 0 and summary["requests"] <= 16  # stopped on the first wave, not after retries
    assert states(settings) == {"pending": N}  # nothing is blamed on the images
    assert "pending 240" in printed and "failed 0" in printed


def test_a_dead_endpoint_with_one_worker_stops_once_its_key_is_out_of_attempts(s3_env, dataset, tmp_path, capsys):
    coco, _, _ = dataset
    settings = settings_for(
        s3_env, coco, tmp_path / "out", endpoint_url=f"http://127.0.0.1:{free_port()}", concurrency=1, max_attempts=3
    )
    assert download(settings) == 3
    assert "cannot be reached" in capsys.readouterr().out
    assert last_summary(settings)["requests"] == 3 and states(settings) == {"pending": N}


def test_an_outage_mid_run_pauses_the_workers_and_the_run_completes(s3_env, dataset, tmp_path):
    coco, images, blobs = dataset
    out = tmp_path / "out"
    with FaultProxy(s3_env.endpoint_url) as proxy:
        proc = start(
            s3_env,
            coco,
            out,
            "--concurrency",
            "8",
            "--max-requests-per-second",
            "40",
            "--status-interval",
            "0.1",
            "--max-attempts",
            "2",
            endpoint=proxy.url,
        )
        wait_until(lambda: final_files(out) >= 30, "30 images on disk", proc=proc)
        proxy.go_down()
        wait_until(lambda: status_json(out).get("unreachable_since"), "status.json reports the outage", proc=proc)
        wait_until(lambda: proxy.outage_refused >= 12, "probes and attempts refused during the outage", proc=proc)
        proxy.come_up()
        output, _ = proc.communicate(timeout=300)
    failures_csv = out / ".sci-fetch" / "failures.csv"
    assert proc.returncode == 0, output + (failures_csv.read_text() if failures_csv.exists() else "")
    assert "the endpoint is unreachable since" in output and "answers again after" in output
    for record, data in zip(images, blobs, strict=False):
        assert (out / record["file_name"]).read_bytes() == data
    by_id = rows(out / ".sci-fetch" / "manifest.sqlite")
    assert all(r.state is State.done for r in by_id.values()) and len(by_id) == N
    # two attempts per key and more refusals than that: the outage did not use up the keys' attempts
    assert all(r.attempts <= 2 for r in by_id.values())


def test_an_outage_longer_than_the_limit_stops_with_exit_3_and_every_image_pending_or_done(s3_env, dataset, tmp_path):
    coco, images, blobs = dataset
    out = tmp_path / "out"
    with FaultProxy(s3_env.endpoint_url) as proxy:
        proc = start(
            s3_env,
            coco,
            out,
            "--concurrency",
            "8",
            "--max-requests-per-second",
            "40",
            "--outage-limit",
            "2",
            endpoint=proxy.url,
        )
        wait_until(lambda: final_files(out) >= 20, "20 images on disk", proc=proc)
        proxy.go_down()
        output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 3, output
    assert "has been unreachable since" in output and "outage_limit" in output and "pending" in output
    by_state: dict[State, int] = {}
    for r in rows(out / ".sci-fetch" / "manifest.sqlite").values():
        by_state[r.state] = by_state.get(r.state, 0) + 1
    assert set(by_state) <= {State.done, State.pending} and by_state[State.done] >= 20


def test_a_forbidden_object_after_successes_is_recorded_and_the_run_goes_on(s3_env, dataset, tmp_path, capsys):
    coco, images, blobs = dataset
    forbidden = [images[i] for i in (150, 190, 230)]  # far behind the first successes in the queue
    with FaultProxy(s3_env.endpoint_url) as proxy:
        proxy.forbid(*[r["serving_bucket_key"] for r in forbidden])
        settings = settings_for(s3_env, coco, tmp_path / "out", endpoint_url=proxy.url, concurrency=4)
        assert download(settings) == 1
    printed = capsys.readouterr().out
    by_id = rows(settings.manifest_path)
    assert {i for i, r in by_id.items() if r.state is State.forbidden} == {r["id"] for r in forbidden}
    assert sum(r.state is State.done for r in by_id.values()) == N - 3
    assert by_id[forbidden[0]["id"]].attempts == 1  # never retried
    listed = {row["image_id"]: row for row in failures(settings)}
    assert set(listed) == {r["id"] for r in forbidden}
    assert all(row["state"] == "forbidden" and "missing, or no permission" in row["reason"] for row in listed.values())
    assert "forbidden 3" in printed
    assert last_summary(settings)["forbidden"] == 3


def test_access_denied_before_any_success_stops_the_run(s3_env, dataset, tmp_path, capsys):
    coco, _, _ = dataset
    with FaultProxy(s3_env.endpoint_url) as proxy:
        proxy.forbid("")  # every key
        settings = settings_for(s3_env, coco, tmp_path / "out", endpoint_url=proxy.url, concurrency=8)
        assert download(settings) == 3
        assert proxy.injected["forbid"] <= 8  # the first wave, not 240 refusals
    printed = capsys.readouterr().out
    assert "AccessDenied" in printed and "no object of this run has been readable yet" in printed
    assert "bucket policy" in printed and "key template" in printed
    assert states(settings) == {"pending": N}


@pytest.mark.parametrize("kind", ["aws:kms", "sse-c"])
def test_an_encrypted_bucket_verifies_against_the_id_md5_not_the_etag(s3_env, dataset, tmp_path, kind):
    coco, images, blobs = dataset
    with FaultProxy(s3_env.endpoint_url) as proxy:
        proxy.set_encryption(kind)
        settings = settings_for(s3_env, coco, tmp_path / "out", endpoint_url=proxy.url, limit=40)
        assert download(settings) == 0
    by_id = rows(settings.manifest_path)
    assert len(by_id) == 40
    for record, data in zip(images[:40], blobs[:40], strict=False):
        row = by_id[record["id"]]
        assert row.state is State.done and row.checks == "size,id-md5" and row.md5 == hashlib.md5(data).hexdigest()
        assert (tmp_path / "out" / record["file_name"]).read_bytes() == data
    assert last_summary(settings)["retries"] == {}


def test_an_etag_that_is_not_the_md5_without_encryption_still_fails(s3_env, dataset, tmp_path):
    """The control for the test above: the same rewritten ETag without the SSE header is a mismatch."""
    coco, _, _ = dataset
    with FaultProxy(s3_env.endpoint_url) as proxy:
        proxy.set_encryption("none")
        settings = settings_for(s3_env, coco, tmp_path / "out", endpoint_url=proxy.url, limit=5, max_attempts=2)
        assert download(settings) == 1
    assert states(settings) == {"failed": 5}
    assert all("does not match ETag" in row["reason"] for row in failures(settings))


def test_first_keys_all_missing_stop_with_exit_2_and_every_image_stays_pending(s3_env, tmp_path, capsys):
    blobs = random_blobs(700, seed=5, sizes=[2 * KB])  # more than one planning batch
    images = [animl_image("gone" + uuid.uuid4().hex[:6], b) for b in blobs]  # never uploaded
    coco = write_coco(tmp_path / "coco.json", images)
    settings = settings_for(s3_env, coco, tmp_path / "out", concurrency=4)
    assert download(settings) == 2
    printed = capsys.readouterr().out
    (line,) = [x for x in printed.splitlines() if x.startswith("sci-fetch: ")]
    assert f"the first {FIRST_MISSES} keys fetched were all missing" in line
    assert f"s3://{BUCKET}/original/" in line and "variant (original)" in line and "key template" in line
    assert "--dry-run" in line
    # every image of the COCO file is accounted for: the ones never read count as pending
    assert "done 0, failed 0, missing 0, forbidden 0, pending 700" in printed
    assert states(settings) == {"pending": len(rows(settings.manifest_path))}  # the misses were not recorded
    status = json.loads(settings.state_file("status", "json").read_text())
    assert status["images"]["pending"] == 700 and status["exit_code"] == 2


def test_misses_after_a_success_do_not_stop_the_run(s3_env, tmp_path):
    blobs = random_blobs(60, seed=6, sizes=[2 * KB])
    images = [animl_image("some" + uuid.uuid4().hex[:6], b) for b in blobs]
    seed_parallel(s3_env, images[:5], blobs[:5])  # the first five exist, the rest do not
    coco = write_coco(tmp_path / "coco.json", images)
    settings = settings_for(s3_env, coco, tmp_path / "out", concurrency=1)
    assert download(settings) == 1
    assert states(settings) == {"done": 5, "missing": 55}


def test_a_dry_run_shows_the_first_resolved_keys(s3_env, dataset, tmp_path, caplog):
    coco, images, _ = dataset
    caplog.set_level(logging.INFO, logger="sci_fetch")
    settings = settings_for(s3_env, coco, tmp_path / "out", dry_run=True)
    assert download(settings) == 0
    shown = [r for r in caplog.records if r.getMessage().startswith("would fetch ")]
    assert len(shown) == 5
    first = images[0]
    assert shown[0].getMessage() == (
        f"would fetch s3://{BUCKET}/{first['serving_bucket_key']} -> {tmp_path / 'out' / first['file_name']}"
    )
    assert shown[0].plan == {
        "key": first["serving_bucket_key"],
        "source": f"s3://{BUCKET}/{first['serving_bucket_key']}",
        "destination": str(tmp_path / "out" / first["file_name"]),
    }


def test_a_bug_in_the_download_path_stops_the_run_with_one_traceback(
    s3_env, dataset, tmp_path, monkeypatch, caplog, capsys
):
    coco, _, _ = dataset

    def broken(*_args, **_kwargs):
        raise TypeError("content_problem() got an unexpected keyword argument")

    monkeypatch.setattr("sci_fetch.files.sink.content_problem", broken)
    settings = settings_for(s3_env, coco, tmp_path / "out", concurrency=4)
    assert download(settings) == ExitCode.INTERNAL
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].exc_info[0] is TypeError
    assert "internal error while fetching" in tracebacks[0].getMessage()
    assert "content_problem() got an unexpected keyword argument" in capsys.readouterr().out
    assert states(settings).get("failed", 0) == 0  # a bug is not a bad image


def test_a_failing_manifest_writer_stops_the_run_and_the_next_run_adopts_its_files(
    s3_env, dataset, tmp_path, monkeypatch, caplog
):
    coco, images, blobs = dataset
    settings = settings_for(s3_env, coco, tmp_path / "out", concurrency=4)
    calls = 0
    real_record = Manifest.record

    def locked(self, outcomes):
        nonlocal calls
        calls += 1
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(Manifest, "record", locked)
    assert download(settings) == ExitCode.INTERNAL
    # the flusher's own write fails, or (when the run ends first, e.g. a slow syncfs) the final flush's
    assert any(
        "internal error in the manifest flusher" in r.getMessage()
        or "the manifest could not record the last" in r.getMessage()
        for r in caplog.records
    )
    assert calls >= 1
    on_disk = final_files(tmp_path / "out")
    assert on_disk >= 1 and states(settings).get("done", 0) == 0  # the files are there, the rows never said so
    monkeypatch.setattr(Manifest, "record", real_record)
    assert download(settings) == 0
    summary = last_summary(settings)
    assert summary["adopted"] >= on_disk - 4 and summary["adopted"] + summary["fetched"] == N
    for record, data in zip(images, blobs, strict=False):
        assert (tmp_path / "out" / record["file_name"]).read_bytes() == data
