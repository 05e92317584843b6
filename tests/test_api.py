"""The Python API as a notebook calls it: inside a running event loop, the same files as the CLI."""

from __future__ import annotations

import asyncio
import csv
import hashlib
from pathlib import Path

import pytest

import sci_fetch
from sci_fetch.api import DownloadResult, RunStopped, run_coroutine
from sci_fetch.cli import main
from sci_fetch.demo.sample import make_sample, upload_sample
from sci_fetch.errors import InputError, SciFetchError, UsageError

BUCKET = "test-bucket"


@pytest.fixture(scope="module")
def sample(s3, tmp_path_factory):
    """A few camera-trap JPEGs with boxes (the demo's generator), in the test bucket under their own project."""
    made = make_sample(tmp_path_factory.mktemp("api-sample"), n_images=8, seed=3, project_id="apitest")
    upload_sample(made, s3, BUCKET)
    return made


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (the state folder aside) by relative path, as an md5."""
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".sci-fetch" not in p.parts
    }


def server(s3) -> dict:
    return {"bucket": BUCKET, "endpoint_url": s3.endpoint_url, "profile": "", "region": "us-west-2"}


async def test_api_inside_a_running_loop_gets_the_same_files_and_crops_as_the_cli(s3_env, sample, tmp_path, capsys):
    asyncio.get_running_loop()  # as in Jupyter: asyncio.run would fail here
    result = sci_fetch.download(sample.coco_path, tmp_path / "api", progress="off", **server(s3_env))
    assert isinstance(result, DownloadResult) and result.ok
    assert result.exit_code == 0 and result.counts["done"] == 8 and result.failures_count == 0
    assert result.failures_path == tmp_path / "api/.sci-fetch/failures.csv" and result.failures_path.is_file()
    assert result.stats["fetched"] == 8

    table = sci_fetch.crops(
        sample.coco_path, tmp_path / "api", crops_dir=tmp_path / "api-crops", label_map="sci", workers=1
    )

    cli = ["--endpoint-url", s3_env.endpoint_url, "--bucket", BUCKET, "--profile", "", "--progress", "off"]
    assert main(["download", str(sample.coco_path), "--output", str(tmp_path / "cli"), *cli]) == 0
    main(
        [
            "crops",
            str(sample.coco_path),
            "--output",
            str(tmp_path / "cli"),
            "--crops-dir",
            str(tmp_path / "cli-crops"),
            "--label-map",
            "sci",
            "--workers",
            "1",
        ]
    )
    capsys.readouterr()

    images = tree(tmp_path / "api")
    assert images == tree(tmp_path / "cli") and len(images) == 8
    for key, data in sample.objects.items():
        if key.startswith("original/"):
            assert hashlib.md5(data).hexdigest() in images.values()
    crops_api, crops_cli = tree(tmp_path / "api-crops"), tree(tmp_path / "cli-crops")
    assert crops_api.keys() == crops_cli.keys()
    assert {k: v for k, v in crops_api.items() if k.endswith(".jpg")} == {
        k: v for k, v in crops_cli.items() if k.endswith(".jpg")
    }
    for name in ("crops.csv", "crops_rejected.csv"):  # the same rows; paths differ only by the folder names
        api_text = (tmp_path / "api-crops" / name).read_text().replace(str(tmp_path / "api"), str(tmp_path / "cli"))
        assert api_text == (tmp_path / "cli-crops" / name).read_text()
    with open(tmp_path / "cli-crops/crops.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(table) == len(rows) > 0
    assert list(table.columns[:2]) == ["image_path", "species_label"]
    assert list(table["species_label"]) == [r["species_label"] for r in rows]
    assert not set(table["species_label"]) & {"empty", "person", "vehicle", "animal"}  # the shared exclude default


async def test_api_raises_sci_fetch_errors_instead_of_exiting(tmp_path):
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(InputError, match="not a COCO file"):
        sci_fetch.download(tmp_path / "bad.json", tmp_path / "out", profile="")
    with pytest.raises(UsageError, match="setting 'concurrency'"):
        sci_fetch.download(tmp_path / "bad.json", tmp_path / "out", concurrency=0)
    with pytest.raises(UsageError):
        sci_fetch.crops(tmp_path / "bad.json", tmp_path / "nowhere")
    assert not (tmp_path / "out").exists()


def test_api_raises_run_stopped_with_the_result_when_access_is_refused(s3, sample, tmp_path):
    with pytest.raises(RunStopped) as info:
        sci_fetch.download(
            sample.coco_path,
            tmp_path / "out",
            progress="off",
            anonymous=True,
            bucket=BUCKET,
            endpoint_url=s3.endpoint_url,
        )
    assert isinstance(info.value, SciFetchError)
    assert info.value.result.exit_code == 3 and info.value.result.counts.get("done", 0) == 0
    assert "anonymous access" in str(info.value)


def test_run_coroutine_uses_asyncio_run_without_a_loop_and_a_thread_with_one():
    import threading

    async def where() -> str:
        return threading.current_thread().name

    assert run_coroutine(where) == threading.current_thread().name

    async def nested() -> str:
        return run_coroutine(where)

    assert asyncio.run(nested()) == "sci-fetch-run"


def test_ctrl_c_in_a_notebook_reaches_the_run_as_sigint():
    """Inside a running loop the run is in a worker thread; Ctrl-C hits the main thread and is handed over."""
    import _thread
    import signal
    import threading

    ready = threading.Event()

    async def run() -> str:
        stopped = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stopped.set)  # as the engine does
        ready.set()
        await asyncio.wait_for(stopped.wait(), timeout=120)
        return "stopped by SIGINT"

    def interrupt() -> None:
        assert ready.wait(120)
        _thread.interrupt_main()  # what "interrupt kernel" does to the main thread

    async def notebook_cell() -> str:
        threading.Thread(target=interrupt, daemon=True).start()
        return run_coroutine(run)

    loop = asyncio.new_event_loop()  # as a kernel runs its loop: SIGINT keeps Python's handler (KeyboardInterrupt)
    try:
        assert loop.run_until_complete(notebook_cell()) == "stopped by SIGINT"
    finally:
        loop.close()


def test_api_raises_busy_while_another_download_holds_the_folder(tmp_path):
    import os

    from helpers import animl_image, write_coco

    from sci_fetch.engine.lock import JobLock
    from sci_fetch.errors import BusyError

    coco = write_coco(tmp_path / "c.json", [animl_image("p", b"\xff\xd8 one")])
    out = tmp_path / "out"
    with JobLock(out / ".sci-fetch" / "download.lock", out):
        with pytest.raises(BusyError, match=f"PID {os.getpid()}"):
            sci_fetch.download(coco, out, profile="", bucket="fake-bucket")
