"""`sci-fetch plan` and the space check on a real S3 server: known object sizes give exact figures when the
sample is every key, the manifest's done images are left out, and a tmpfs too small makes it refuse (exit 4)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import jsonschema
import pytest
from helpers import animl_image, last_summary, seed, settings_for, write_coco

from sci_fetch.cli import main
from sci_fetch.commands.download import download
from sci_fetch.plan.check import space_check
from sci_fetch.plan.estimate import Fit
from sci_fetch.storage.s3 import S3Storage

REPO = Path(__file__).resolve().parents[1]

SIZES = [10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 70_000, 80_000, 90_000, 100_000]  # sum 550,000


@pytest.fixture(scope="module")
def known(s3, tmp_path_factory):
    """Ten objects of known sizes, plus two records whose keys are not in the bucket."""
    project = "plan" + uuid.uuid4().hex[:6]
    blobs = [bytes([i]) * size for i, size in enumerate(SIZES)]
    images = [animl_image(project, b, camera=f"CAM{i}") for i, b in enumerate(blobs)]
    seed(s3, "test-bucket", images, blobs)
    absent = [animl_image(project, f"never uploaded {i}".encode(), camera="GONE") for i in range(2)]
    folder = tmp_path_factory.mktemp("plan-coco")
    return (
        write_coco(folder / "all.json", images),
        write_coco(folder / "with-missing.json", images + absent),
        write_coco(folder / "all-missing.json", absent),
        {r["serving_bucket_key"] for r in absent},
    )


def server_flags(s3) -> list[str]:
    return [
        "--bucket",
        "test-bucket",
        "--endpoint-url",
        s3.endpoint_url,
        "--region",
        "us-west-2",
        "--profile",
        "",
        "--retry-base-delay",
        "0.01",
        "--retry-max-delay",
        "0.05",
    ]


def run_plan(s3, coco: Path, out: Path, capsys, *extra: str) -> tuple[int, dict]:
    code = main(["plan", str(coco), "--output", str(out), *server_flags(s3), "--json", *extra])
    text = capsys.readouterr().out
    report = json.loads(text.strip().splitlines()[-1])
    jsonschema.validate(report, json.loads((REPO / "docs/schema/plan-command.json").read_text()))
    return code, report


def test_a_sample_of_every_key_gives_the_exact_mean_and_total(s3_env, known, tmp_path, capsys):
    coco, _, _, _ = known
    code, plan = run_plan(s3_env, coco, tmp_path / "images", capsys, "--sample", "100", "--gets", "3")
    assert code == 0
    assert plan["remaining"] == plan["sampled"] == plan["found"] == 10 and plan["exact"]
    assert plan["mean_size"] == 55_000
    assert plan["total_bytes"] == plan["low_bytes"] == plan["high_bytes"] == 550_000
    assert plan["fit"] == "fits" and plan["folder"] == str(tmp_path) and plan["free_bytes"] > 0
    assert plan["bytes_per_second"] > 0 and plan["eta_seconds"] > 0
    assert not (tmp_path / "images").exists(), "a plan writes nothing under the output folder"


def test_the_text_plan_names_every_figure_and_a_missing_key(s3_env, known, tmp_path, capsys):
    _, coco, _, absent = known
    code = main(["plan", str(coco), "--output", str(tmp_path / "images"), *server_flags(s3_env), "--sample", "50"])
    text = capsys.readouterr().out
    assert code == 0
    assert "12 to fetch" in text
    assert "10 exist, 2 missing" in text
    assert any(f"a missing key: {key}" in text for key in absent)  # seen before a run, not after 110,000 404s
    assert "mean object size: 55.0 KB" in text
    assert "total to fetch: 550.0 KB (exact: every key was asked)" in text
    assert f"free space at {tmp_path}" in text and "fits" in text
    assert re.search(r"time: (about|under) .* at the rates measured \(.* parallel GETs, .* HEAD/s\)", text)


def test_a_random_sample_estimates_within_its_range(s3_env, known, tmp_path, capsys):
    _, coco, _, absent = known
    code, plan = run_plan(s3_env, coco, tmp_path / "images", capsys, "--sample", "8", "--seed", "3", "--gets", "0")
    assert code == 0
    assert plan["sampled"] == 8 and not plan["exact"] and plan["remaining"] == 12
    assert plan["low_bytes"] <= plan["total_bytes"] <= plan["high_bytes"]
    assert plan["bytes_per_second"] is None and plan["head_rate"] > 0
    again = run_plan(s3_env, coco, tmp_path / "images", capsys, "--sample", "8", "--seed", "3", "--gets", "0")[1]
    assert again["total_bytes"] == plan["total_bytes"], "the same seed draws the same sample"


def test_images_done_in_the_manifest_are_left_out(s3_env, known, tmp_path, capsys):
    coco, _, _, _ = known
    out = tmp_path / "images"
    assert download(settings_for(s3_env, coco, out, limit=4)) == 0
    capsys.readouterr()
    code, plan = run_plan(s3_env, coco, out, capsys, "--sample", "100")
    assert code == 0
    assert plan["done"] == 4 and plan["remaining"] == 6
    assert plan["total_bytes"] == sum(SIZES[4:])


def test_no_key_of_the_sample_exists_exit_1(s3_env, known, tmp_path, capsys):
    _, _, coco, absent = known
    code = main(["plan", str(coco), "--output", str(tmp_path / "images"), *server_flags(s3_env)])
    text = capsys.readouterr().out
    assert code == 1
    assert "none of the sampled keys exists" in text and any(key in text for key in absent)


def test_wrong_credentials_stop_the_plan_with_exit_3(s3_env, known, tmp_path, capsys, monkeypatch):
    coco, _, _, _ = known
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong" + s3_env.secret_key)
    code = main(["plan", str(coco), "--output", str(tmp_path / "images"), *server_flags(s3_env), "--max-attempts", "1"])
    out = capsys.readouterr().out
    assert code == 3
    assert "test-bucket" in out and len(out.strip().splitlines()) == 1


@pytest.fixture
def tmpfs(tmp_path):
    """A size-limited tmpfs; skipped where this process may not mount one (not root, no CAP_SYS_ADMIN)."""
    point = tmp_path / "small"
    point.mkdir()
    if not shutil.which("mount"):
        pytest.skip("no mount command")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(point)],
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")
    yield point
    subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_tmpfs_too_small_makes_the_plan_say_it_does_not_fit(s3_env, known, tmpfs, capsys):
    coco, _, _, _ = known
    code = main(["plan", str(coco), "--output", str(tmpfs / "images"), *server_flags(s3_env), "--sample", "100"])
    text = capsys.readouterr().out
    assert code == 4
    assert f"free space at {tmpfs}" in text and "DOES NOT FIT" in text
    assert list(tmpfs.iterdir()) == []


def test_space_check_refuses_a_tmpfs_too_small_and_the_flag_overrides(s3_env, known, tmpfs, tmp_path):
    coco, _, _, _ = known

    async def check(**overrides):
        settings = settings_for(s3_env, coco, tmpfs / "images", **{"space_check": True, **overrides})
        async with S3Storage(settings.storage_options()) as storage:
            return await space_check(settings, storage, seed=1)

    verdict = asyncio.run(check())
    assert verdict.refuse and verdict.exit_code == 4 and verdict.fit is Fit.exceeds
    assert str(tmpfs) in verdict.message and "--no-space-check" in verdict.message and "550.0 KB" in verdict.message
    off = asyncio.run(check(space_check=False))
    assert not off.refuse and off.exit_code == 0 and off.fit is None
    roomy = settings_for(s3_env, coco, tmp_path / "images", space_check=True)

    async def check_roomy():
        async with S3Storage(roomy.storage_options()) as storage:
            return await space_check(roomy, storage)

    fine = asyncio.run(check_roomy())
    assert fine.fit is Fit.fits and fine.exit_code == 0 and fine.message == ""


def test_no_answer_at_all_is_exit_1_and_says_what_to_check(s3_env, known, tmp_path, capsys):
    """A wrong endpoint: every HEAD fails to connect; the plan says so instead of claiming the keys are missing."""
    import socket

    coco, _, _, _ = known
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    flags = [f if f != s3_env.endpoint_url else f"http://127.0.0.1:{port}" for f in server_flags(s3_env)]
    code = main(["plan", str(coco), "--output", str(tmp_path / "images"), *flags, "--max-attempts", "1"])
    text = capsys.readouterr().out
    assert code == 3  # as a download does: an endpoint that never answers stops with exit 3, one line
    assert "the endpoint cannot be reached" in text and f"127.0.0.1:{port}" in text and "check the endpoint URL" in text
    assert len(text.strip().splitlines()) == 1


def test_space_check_sends_nothing_when_turned_off_or_on_a_dry_run(s3_env, known, tmp_path):
    coco, _, _, _ = known

    async def check(**overrides):
        settings = settings_for(s3_env, coco, tmp_path / "images", **{"space_check": True, **overrides})
        async with S3Storage(settings.storage_options()) as storage:
            verdict = await space_check(settings, storage)
            return verdict, storage.requests

    for overrides in ({"space_check": False}, {"dry_run": True}):
        verdict, requests = asyncio.run(check(**overrides))
        assert (verdict.fit, verdict.exit_code, requests) == (None, 0, 0), overrides
    verdict, requests = asyncio.run(check())
    assert verdict.fit is Fit.fits and requests == 10  # one HEAD per key left (fewer than the sample size)


def test_a_download_that_clearly_cannot_fit_refuses_to_start_with_exit_4(s3_env, known, tmpfs, capsys):
    """The download makes the plan's check first: 550 KB into a 256 KB filesystem is refused before any GET."""
    coco, _, _, _ = known
    out = tmpfs / "images"
    code = main(["download", str(coco), "--output", str(out), *server_flags(s3_env), "--progress", "off"])
    printed = capsys.readouterr()
    assert code == 4
    text = printed.out + printed.err
    assert "the 10 images left need about" in text and "free some space or choose another --output" in text
    assert "--no-space-check" in text
    assert not [p for p in out.rglob("*.jpg")] if out.exists() else True  # nothing downloaded


def test_the_space_check_on_a_finished_job_sends_no_request(s3_env, known, tmp_path):
    coco, _, _, _ = known
    settings = settings_for(s3_env, coco, tmp_path / "images", space_check=True)
    assert download(settings) == 0
    first = last_summary(settings)
    assert first["requests"] == 10 + 10  # ten HEADs of the check (every key is in the sample), ten GETs
    assert download(settings) == 0
    assert last_summary(settings)["requests"] == 0
