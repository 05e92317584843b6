"""The COCO reader (engine/reader.py): a big file's images read in a child process decide exactly what the
planning thread's own read decides (rows, failures.csv, counts, the stop line), and the child never outlives
its batches: the end, a stop, an input error, a bug, a pass closed early or the child's death."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest
from helpers import animl_image, failures, random_blobs, wait_until
from test_engine_pipeline import fake_settings

from sci_fetch.engine import feed, reader
from sci_fetch.engine.job import DownloadResult, download_with
from sci_fetch.engine.reader import ReaderBug, ReaderDied, ReadSpec
from sci_fetch.errors import InputError
from sci_fetch.exits import ExitCode
from sci_fetch.keys.mapping import Variant
from sci_fetch.manifest.store import Manifest
from sci_fetch.storage.fake import FakeBucket

N = 1300  # records: two whole batches of 512 and a part of a third


def hostile_records(n: int = N) -> tuple[list[object], dict[str, bytes]]:
    """Animl records with, spread over the batches, every kind of reject a pass decides on."""
    blobs = random_blobs(n, seed=11, sizes=[120])
    images: list[object] = [animl_image("rd", b, camera=f"CAM{i % 7}") for i, b in enumerate(blobs)]
    objects = {r["serving_bucket_key"]: b for r, b in zip(images, blobs, strict=True)}  # type: ignore[index]
    first, second = images[3], images[4]
    images[100] = {"id": "rd:nofile"}  # invalid: no file_name
    images[300] = 5  # invalid: not an object
    images[520] = dict(first, file_name="../escape.jpg")  # make_task refuses it (and its duplicate id)
    images[530] = dict(second)  # a duplicate id
    images[700] = dict(images[701], id="rd:same-dest")  # another id, the same destination
    images[710] = dict(images[711], id="rd:folds", file_name=images[711]["file_name"].upper())  # one file on macOS
    images[900] = dict(images[901], id="rd:long", file_name="x" * (2 << 20))  # a value of megabytes
    return images, objects


def write_records(path: Path, images: list[object]) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 1, "name": "fox"}]}))
    return path


class Spawned:
    """Counts the child readers made and keeps them, to look at their processes after."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, child_from: int) -> None:
        self.made: list[reader.ChildReader] = []
        monkeypatch.setattr(reader, "CHILD_FROM_BYTES", child_from)
        real = reader.ChildReader.__init__

        def init(obj: reader.ChildReader, *args: object) -> None:
            real(obj, *args)  # type: ignore[arg-type]
            self.made.append(obj)

        monkeypatch.setattr(reader.ChildReader, "__init__", init)

    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [child._process for child in self.made]


def outcome(result: DownloadResult, settings) -> dict[str, object]:
    """What a run decided, with the output folder's own path taken out of the text."""
    out = str(settings.output)
    with closing(Manifest(settings.manifest_path, readonly=True)) as m:
        rows = sorted((r.image_id, r.state.value, r.key, r.dest) for r in m.rows())
    stats = result.stats
    return {
        "exit": result.exit_code,
        "stop": result.stop_reason,
        "message": (result.message or "").replace(out, "OUT"),
        "counts": result.counts,
        "tally": {
            k: stats[k] for k in ("total_records", "valid_records", "to_fetch", "fetched", "duplicates", "invalid")
        },
        "rows": rows,
        "failures": [{k: v.replace(out, "OUT") for k, v in row.items()} for row in failures(settings)],
    }


def both_paths(monkeypatch, tmp_path: Path, coco: Path, bucket: FakeBucket, **overrides: object):
    """The same download read in the planning thread, then in a child; returns both outcomes."""
    results = []
    for name, child_from in (("thread", 1 << 62), ("child", 0)):
        with monkeypatch.context() as patch:
            spawned = Spawned(patch, child_from)
            settings = fake_settings(coco, tmp_path / name, **overrides)
            result = download_with(settings, bucket)
            assert len(spawned.made) == (name == "child")
            assert all(map(gone, spawned.processes()))
            results.append(outcome(result, settings))
    return results


@pytest.mark.parametrize(
    "overrides",
    [{"case_insensitive_names": True}, {"limit": 800}, {"shard_count": 2, "shard_index": 1}],
    ids=["all", "limit", "shard-1-of-2"],
)
def test_a_child_decides_what_the_planning_thread_decides(monkeypatch, tmp_path, overrides):
    images, objects = hostile_records()
    coco = write_records(tmp_path / "coco.json", images)
    thread, child = both_paths(monkeypatch, tmp_path, coco, FakeBucket(objects), **overrides)
    assert thread == child and thread["rows"]
    if "shard_count" not in overrides:  # invalid records are listed by shard 0 only
        assert thread["exit"] == ExitCode.INCOMPLETE
        reasons = " ".join(row["reason"] for row in thread["failures"])
        assert "images[100]" in str(thread["failures"]) and "not an object" in reasons and "'..'" in reasons
        assert "duplicate id" in reasons and "duplicate destination" in reasons
        assert len(reasons) < 2000  # images[900]'s megabytes are not copied
        assert ("more than 1 MiB (left out)" in reasons) is ("limit" not in overrides)  # --limit 800 stops before


@pytest.mark.parametrize("sizes_from", [0, reader.BEHIND_BYTES, 1 << 40], ids=["always", "when-behind", "never"])
def test_a_child_sizes_the_files_on_disk_as_the_planning_thread_does(monkeypatch, tmp_path, sizes_from):
    """A resume over a finished run's files (reader.Sizes: the child's stat instead of the planner's, for
    every batch, for those it reads while the planner is behind, for none): a file gone, a file of another
    size and a folder that is now a link out of the output dir are fetched again or refused alike, and every
    other file is trusted (no GET)."""
    monkeypatch.setattr(reader, "BEHIND_BYTES", sizes_from)
    images, objects = hostile_records()
    coco = write_records(tmp_path / "coco.json", images)
    first = fake_settings(coco, tmp_path / "first")
    assert download_with(first, FakeBucket(objects)).exit_code == ExitCode.INCOMPLETE  # the invalid records
    for name in ("thread", "child"):
        out = shutil.copytree(first.output, tmp_path / name, symlinks=True)
        files = sorted((out / "rd" / "CAM2" / "dep1").iterdir())
        files[0].unlink()
        with files[1].open("ab") as grown:
            grown.write(b"x")
        outside = tmp_path / "outside"  # one for both, so the refusals name the same place
        if outside.exists():
            shutil.rmtree(out / "rd" / "CAM3")
        else:
            shutil.move(out / "rd" / "CAM3", outside)
        (out / "rd" / "CAM3").symlink_to(outside, target_is_directory=True)
    thread, child = both_paths(monkeypatch, tmp_path, coco, FakeBucket(objects))
    assert thread == child
    cam3 = sum(1 for row in thread["rows"] if "/CAM3/" in row[3])  # type: ignore[attr-defined]
    assert cam3 > 100 and thread["tally"]["to_fetch"] == 2 + cam3 and thread["tally"]["fetched"] == 2  # type: ignore[index]
    unsafe = [row for row in thread["failures"] if "leads outside the output dir" in row["reason"]]  # type: ignore[attr-defined]
    assert len(unsafe) == cam3
    files = sorted((tmp_path / "child" / "rd" / "CAM2" / "dep1").iterdir())
    assert [f.read_bytes() for f in files[:2]] == [
        objects[f"original/{f.stem.replace('-', ':', 1)}-original.jpg"] for f in files[:2]
    ]


@pytest.mark.parametrize("where", ["truncated", "deep", "endless-number"])
def test_an_input_error_in_a_child_is_the_same_line_after_the_same_batches(monkeypatch, tmp_path, where):
    """Broken JSON, nesting too deep, a value of megabytes that is not a string: in record 1,100 (the third
    batch), so the two batches before it are planned and fetched, and the run stops with coco's one line."""
    images, objects = hostile_records()
    coco = write_records(tmp_path / "coco.json", images[:1100])
    text = coco.read_text()
    cut = text.index(json.dumps(images[1099])) + 40
    broken = {
        "truncated": text[:cut],
        "deep": text[:cut] + '", "deep": ' + "[" * 100 + "]" * 100 + "}]}",
        "endless-number": text[:cut] + '", "n": 1' + "1" * (3 << 20) + "}]}",
    }[where]
    coco.write_text(broken)
    thread, child = map(planned_only, both_paths(monkeypatch, tmp_path, coco, FakeBucket(objects)))
    assert thread == child
    assert thread["exit"] == ExitCode.USAGE and thread["stop"] == "input"
    assert str(coco) in str(thread["message"]) and "\n" not in str(thread["message"])
    planned = {row[0] for row in thread["rows"]}  # type: ignore[union-attr]
    assert planned <= first_batches(images) and {r["id"] for r in images[1000:1024]} <= planned  # type: ignore[index]


def planned_only(seen: dict[str, object]) -> dict[str, object]:
    """What a run stopped mid-download decided, without what its workers got done within the grace time."""
    rows = [row[:1] + row[2:] for row in seen["rows"]]  # type: ignore[attr-defined]
    rejects = [row for row in seen["failures"] if row["state"] not in ("pending", "done")]  # type: ignore[attr-defined]
    tally = {k: v for k, v in seen["tally"].items() if k in ("valid_records", "duplicates", "invalid")}  # type: ignore[attr-defined]
    return {
        "exit": seen["exit"],
        "stop": seen["stop"],
        "message": seen["message"],
        "rows": rows,
        "rejects": rejects,
        "tally": tally,
    }


def first_batches(images: list[object]) -> set[str]:
    """The ids of the records in the first two batches (those a stop in the third batch lets through)."""
    return {r["id"] for r in images[: 2 * reader.BATCH] if isinstance(r, dict)}


def spec_of(coco: Path, **fields: object) -> ReadSpec:
    values: dict[str, object] = {"limit": None, "variant": Variant.original, "key_template": None}
    values.update(fields)
    return ReadSpec(coco, verify_id_md5=True, **values)  # type: ignore[arg-type]


def gone(process: subprocess.Popen[bytes]) -> bool:
    """Ended and reaped (its exit status taken, its /proc entry gone): no orphan, no zombie."""
    return process.returncode is not None and not Path(f"/proc/{process.pid}").exists()


def test_the_child_is_reaped_on_every_way_out(monkeypatch, tmp_path):
    images, _objects = hostile_records()
    coco = write_records(tmp_path / "coco.json", images)
    spawned = Spawned(monkeypatch, 0)
    with reader.batches(spec_of(coco), lambda: False) as batches:  # to the end
        assert sum(len(tasks) for tasks, _rejects, _sizes in batches) == N - 4  # 3 invalid records, 1 unsafe name
    with reader.batches(spec_of(coco), lambda: False) as batches:  # the pass closed after one batch
        next(batches)
    stop = threading.Event()
    with reader.batches(spec_of(coco), stop.is_set) as batches:  # a stop while the planner waits
        next(batches)
        stop.set()
        list(batches)
    (tmp_path / "broken.json").write_text('{"images": [{"id": ')
    with (
        pytest.raises(InputError, match="broken JSON"),
        reader.batches(spec_of(tmp_path / "broken.json"), lambda: False) as batches,
    ):
        list(batches)
    assert len(spawned.made) == 4
    for process in spawned.processes():
        assert gone(process)


def test_a_bug_in_the_child_comes_up_with_its_traceback_and_the_child_is_reaped(monkeypatch, tmp_path):
    """No mapping of an unknown error: an AttributeError in make_task (a key template no check let through)
    is re-raised as a bug whose cause carries the child's traceback."""
    images, _objects = hostile_records()
    coco = write_records(tmp_path / "coco.json", images)
    spawned = Spawned(monkeypatch, 0)
    with (
        pytest.raises(ReaderBug, match="AttributeError") as caught,
        reader.batches(spec_of(coco, key_template="{id.nothing}"), lambda: False) as batches,
    ):
        list(batches)
    assert "Traceback" in str(caught.value.__cause__) and "make_task" in str(caught.value.__cause__)
    assert gone(spawned.processes()[0])


def test_the_child_ignores_sigint_and_sigterm(monkeypatch, tmp_path):
    """Ctrl-C reaches the whole process group; the parent's Stop owns signals and ends the child itself."""
    images, _objects = hostile_records(3000)
    coco = write_records(tmp_path / "coco.json", images)
    spawned = Spawned(monkeypatch, 0)
    monkeypatch.setattr(reader, "PIPE_BYTES", 4096)  # the child waits on the pipe after a batch or so
    with reader.batches(spec_of(coco), lambda: False) as batches:
        first = next(batches)
        pid = spawned.made[0]._process.pid
        assert pid is not None
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        rest = list(batches)  # to the end: the child lived on
    assert len(first[0]) + sum(len(tasks) for tasks, _, _ in rest) == 3000 - 4
    assert gone(spawned.processes()[0])


def test_a_killed_child_is_one_line_naming_it(monkeypatch, tmp_path):
    images, _objects = hostile_records(3000)
    coco = write_records(tmp_path / "coco.json", images)
    spawned = Spawned(monkeypatch, 0)
    monkeypatch.setattr(reader, "PIPE_BYTES", 4096)
    with pytest.raises(ReaderDied) as caught, reader.batches(spec_of(coco), lambda: False) as batches:
        next(batches)
        spawned.made[0]._process.kill()
        list(batches)
    message = str(caught.value)
    assert "\n" not in message and "COCO reader process" in message and "died (signal 9)" in message
    assert "after 510 of this run's images" in message  # the first batch: 512 records, 2 of them invalid
    assert gone(spawned.processes()[0])


def test_a_run_whose_reader_dies_stops_with_its_line_and_keeps_what_it_planned(monkeypatch, tmp_path, caplog):
    """The planner is held at its second batch while the child is killed; the batches before the death are
    planned and fetched, the rest stays unread (pending in the counts: exit 1), and no traceback is logged."""
    images, objects = hostile_records(3000)
    coco = write_records(tmp_path / "coco.json", images)
    spawned = Spawned(monkeypatch, 0)
    monkeypatch.setattr(reader, "PIPE_BYTES", 4096)
    held, release = threading.Event(), threading.Event()
    real = Manifest.plan_checked
    calls = []

    def plan_checked(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            held.set()
            assert release.wait(120)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Manifest, "plan_checked", plan_checked)

    def kill_when_held() -> None:  # beside the run: signal handlers want the run in the main thread
        try:
            wait_until(held.is_set, "the planner at its second batch")
            process = spawned.processes()[0]
            process.kill()
            wait_until(lambda: process.poll() is not None, "the reader dead")
        finally:
            release.set()

    settings = fake_settings(coco, tmp_path / "out")
    with ThreadPoolExecutor(1) as pool, caplog.at_level(logging.INFO, logger="sci_fetch"):
        killer = pool.submit(kill_when_held)
        result = download_with(settings, FakeBucket(objects))
        killer.result()
    process = spawned.processes()[0]
    assert result.stop_reason == "died" and result.exit_code == ExitCode.INCOMPLETE
    assert "COCO reader process" in (result.message or "") and "died (signal 9)" in (result.message or "")
    assert "Traceback" not in caplog.text
    with closing(Manifest(settings.manifest_path, readonly=True)) as m:
        planned = {r.image_id for r in m.rows()}
    assert {r["id"] for r in images[1000:1024]} <= planned <= first_batches(images)  # type: ignore[index]
    assert result.counts["pending"] >= 3000 - 2 * reader.BATCH  # the records never read among them
    assert gone(process)


def test_the_child_is_used_only_where_it_pays(monkeypatch, tmp_path):
    coco = write_records(tmp_path / "coco.json", hostile_records()[0])
    monkeypatch.setattr(reader, "CHILD_FROM_BYTES", coco.stat().st_size)
    assert reader.uses_child(spec_of(coco), dry_run=False)
    assert not reader.uses_child(spec_of(coco, share=(0, 2)), dry_run=False)  # --processes 2 uses the cores
    assert not reader.uses_child(spec_of(coco), dry_run=True)
    monkeypatch.setattr(reader, "CHILD_FROM_BYTES", coco.stat().st_size + 1)
    assert not reader.uses_child(spec_of(coco), dry_run=False)


def test_a_script_without_a_main_guard_is_not_run_again_in_the_child(tmp_path):
    """A spawned child would import the caller's main script again; a script with no ``if __name__ ==
    "__main__":`` would then run twice (and stop at multiprocessing's bootstrapping check)."""
    coco = write_records(tmp_path / "coco.json", hostile_records()[0])
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from pathlib import Path\n"
        "from sci_fetch.engine import reader\n"
        "from sci_fetch.keys.mapping import Variant\n"
        "reader.CHILD_FROM_BYTES = 0\n"
        f"spec = reader.ReadSpec(Path({str(coco)!r}), None, Variant.original, None, True)\n"
        "with reader.batches(spec, lambda: False) as batches:\n"
        "    print('images', sum(len(tasks) for tasks, _rejects, _sizes in batches))\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"images {N - 4}\n", "")


def test_ctrl_c_during_a_run_read_by_a_child_stops_it_and_leaves_no_process(tmp_path):
    """SIGINT to the parent while the child reads: the run stops as always (exit 130, rows kept), and the
    reader is killed and reaped by the parent before it exits (its pid is gone, not an orphan of init's)."""
    images, objects = hostile_records(3000)
    coco = write_records(tmp_path / "coco.json", images)
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_engine_pipeline import fake_settings\n"
        "from sci_fetch.engine import reader\n"
        "from sci_fetch.engine.job import download_with\n"
        "from sci_fetch.storage.fake import FakeBucket\n"
        "reader.CHILD_FROM_BYTES = 0\n"
        f"objects = {objects!r}\n"
        "bucket = FakeBucket(objects, faults={k: ['slow'] for k in objects}, slow_seconds=0.2)\n"
        f"settings = fake_settings(Path({str(coco)!r}), Path({str(tmp_path / 'out')!r}), concurrency=2)\n"
        "sys.exit(download_with(settings, bucket).exit_code)\n"
    )
    tests = str(Path(__file__).resolve().parent)
    run = subprocess.Popen([sys.executable, str(script), tests], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        manifest = tmp_path / "out" / ".sci-fetch" / "manifest.sqlite"
        wait_until(lambda: manifest.exists() and reader_of(run.pid), "the run reading in its child", proc=run)
        child = reader_of(run.pid)
        os.kill(run.pid, signal.SIGINT)
        output = run.communicate(timeout=300)[0].decode()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == ExitCode.SIGINT, output
    assert "Traceback" not in output and not Path(f"/proc/{child}").exists()


def reader_of(pid: int) -> int | None:
    """The pid of the reader child of ``pid`` (the only child running sci_fetch.engine.reader), if any."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                if b"child_entry" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return int(child)
    return None


def test_a_crashed_job_read_by_a_child_feeds_its_left_images_and_fetches_each_once(monkeypatch, tmp_path):
    """The feed's pages still go out in turn with the planned batches (Pipeline._batches), now the child's."""
    from test_engine_feed import TAIL, crash
    from test_engine_pipeline import Recording

    images, objects = hostile_records()
    coco = write_records(tmp_path / "coco.json", images)
    settings = fake_settings(coco, tmp_path / "out")
    assert download_with(settings, FakeBucket(objects)).exit_code == ExitCode.INCOMPLETE  # the invalid records
    crash(settings, images)
    with closing(Manifest(settings.manifest_path, readonly=True)) as manifest:
        assert feed.earlier_runs(manifest, settings)  # so the next run feeds the rows the crash left
    spawned = Spawned(monkeypatch, 0)
    recording = Recording(FakeBucket(objects))
    result = download_with(settings, recording)
    assert len(spawned.made) == 1 and gone(spawned.processes()[0])
    gets = Counter(key for storage in recording.made for key in storage.gets)
    assert gets == Counter({r["serving_bucket_key"]: 1 for r in images[-TAIL:]})  # type: ignore[index]
    assert result.counts["pending"] == 0 and result.stats["fetched"] == TAIL
