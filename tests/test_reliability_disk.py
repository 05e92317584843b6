"""Disk full: injected ENOSPC in the real write path, a real small filesystem (tmpfs, when this process may
mount one), and a manifest that cannot be written. Every case: exit 4 with one clear line, nothing
half-written under a final name, and the same command completes once there is room."""

from __future__ import annotations

import errno
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from helpers import settings_for, write_coco
from test_reliability_support import (
    KB,
    check_manifest_equals_disk,
    check_manifest_never_leads,
    last_summary,
    leftovers,
    rows,
    seeded_dataset,
    tree,
)

from sci_fetch.commands.download import download
from sci_fetch.errors import DiskError
from sci_fetch.files import partial
from sci_fetch.manifest.models import State
from sci_fetch.manifest.store import Manifest

N = 80


@pytest.fixture(scope="module")
def dataset(s3, tmp_path_factory):
    coco, images, blobs = seeded_dataset(
        s3, tmp_path_factory.mktemp("coco"), "disk", N, 51, [20 * KB, 40 * KB, 60 * KB]
    )
    return coco, images, {r["file_name"]: b for r, b in zip(images, blobs, strict=False)}


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a size-limited tmpfs; skipped where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        if not shutil.which("mount"):
            pytest.skip("no mount command")
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def resize(point: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(point)], check=True)


def test_enospc_injected_in_the_write_path_stops_the_run_and_a_later_run_completes(
    s3_env, dataset, tmp_path, monkeypatch, capsys
):
    """The disk 'fills' after 1 MB: the write that crosses it writes what fits and fails with ENOSPC,
    exactly as write(2) does, in the helper PartialFile writes through (so its error mapping and clean-up
    are what is tested)."""
    coco, _images, expected = dataset
    out = tmp_path / "out"
    room = {"left": 1_000_000}
    real_write = partial._hash_and_write

    def write(md5, raw, chunks):  # what write(2) does on a full disk: what fits, then ENOSPC
        data = b"".join(chunks)
        if len(data) > room["left"]:
            fits, room["left"] = room["left"], 0
            real_write(md5, raw, [data[:fits]])
            raise OSError(errno.ENOSPC, "No space left on device")
        room["left"] -= len(data)
        return real_write(md5, raw, chunks)

    monkeypatch.setattr(partial, "_hash_and_write", write)
    settings = settings_for(s3_env, coco, out, concurrency=8, chunk_size=8 * KB)
    assert download(settings) == 4
    printed = capsys.readouterr().out
    assert (
        "sci-fetch: stopping: write " in printed
        and ".partial: No space left on device; free some space and run the same command again" in printed
    )
    done = check_manifest_never_leads(out, settings.manifest_path, expected)
    states = [r.state for r in rows(settings.manifest_path).values()]
    assert states.count(State.failed) == 0 and states.count(State.missing) == 0  # the images are not blamed
    assert 0 < len(done) < N and leftovers(out) == []

    monkeypatch.setattr(partial, "_hash_and_write", real_write)  # room again
    assert download(settings) == 0
    assert tree(out) == expected and leftovers(out) == []
    summary = last_summary(settings)
    assert summary["already_done"] == len(done) and summary["fetched"] + summary["adopted"] == N - len(done)
    check_manifest_equals_disk(out, settings.manifest_path)


def test_a_real_small_filesystem_fills_up(s3_env, dataset, tmpfs, capsys):
    """Output and manifest on one 1 MB tmpfs (the default layout), 3 MB to download."""
    coco, _images, expected = dataset
    small = tmpfs("small", "1m")
    out = small / "out"
    settings = settings_for(s3_env, coco, out, concurrency=8)
    assert download(settings) == 4
    printed = capsys.readouterr().out
    assert "No space left on device; free some space and run the same command again" in printed
    # The manifest may not have room to record what finished last (the next run adopts those files).
    done = check_manifest_never_leads(out, settings.manifest_path, expected)
    assert len(done) <= len(tree(out)) < N and len(tree(out)) > 0 and leftovers(out) == []
    assert all(r.state in (State.done, State.pending) for r in rows(settings.manifest_path).values())

    resize(small, "8m")
    assert download(settings) == 0
    assert tree(out) == expected and leftovers(out) == []
    check_manifest_equals_disk(out, settings.manifest_path)


def fill(point: Path) -> Path:
    """Something else fills the disk: write zeros until ENOSPC."""
    ballast = point / "ballast"
    with open(ballast, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    return ballast


def test_a_manifest_filling_its_disk_while_planning_stops_the_run_with_exit_4(
    s3_env, dataset, tmp_path, tmpfs, capsys, caplog
):
    """The manifest on its own 160 KB disk, 80 images with 900-character paths (about 2 KB of manifest each):
    SQLite's SQLITE_FULL becomes the same one line and exit 4 as a full image disk, not a traceback, and
    not a silent exit 0 with a half-planned run."""
    _coco, images, blobs_by_name = dataset
    deep = "/".join(["d" * 220] * 4)
    long_images = [dict(r, file_name=f"{deep}/{r['file_name']}") for r in images]
    expected = {f"{deep}/{name}": data for name, data in blobs_by_name.items()}
    long_coco = write_coco(tmp_path / "long.json", long_images)
    small = tmpfs("state", "160k")
    out = tmp_path / "out"
    settings = settings_for(s3_env, long_coco, out, manifest=small / "manifest.sqlite", concurrency=8)
    assert download(settings) == 4
    printed = capsys.readouterr().out
    assert (
        f"sci-fetch: stopping: manifest {small / 'manifest.sqlite'} cannot be written: database or disk is full; free some space"
        in printed
    )
    assert "Traceback" not in printed
    # failures.csv and status.json beside the manifest do not fit either: said, and no half-written temp left.
    assert f"{small / 'failures.csv'} not written: No space left on device" in caplog.text
    assert not [p.name for p in small.iterdir() if p.name.endswith((".tmp", ".partial"))]
    assert not out.exists() or leftovers(out) == []
    check_manifest_never_leads(out, settings.manifest_path, expected)

    resize(small, "2m")
    assert download(settings) == 0
    assert tree(out) == expected and leftovers(out) == []
    check_manifest_equals_disk(out, settings.manifest_path)


def test_a_manifest_on_a_disk_already_full_is_one_clear_error(s3_env, dataset, tmp_path, tmpfs, capsys):
    """Whether SQLite fails opening the manifest (a DiskError before the run, which the CLI prints as one
    line) or at the run's first write (exit 4) depends on what it still has cached; the line is the same."""
    coco, _images, expected = dataset
    small = tmpfs("state", "256k")
    Manifest(small / "manifest.sqlite").close()  # made while there was room
    ballast = fill(small)
    settings = settings_for(s3_env, coco, tmp_path / "out", manifest=small / "manifest.sqlite")
    try:
        outcome, message = download(settings), capsys.readouterr().out
    except DiskError as exc:
        outcome, message = "raised", str(exc)
    assert outcome in (4, "raised")
    assert re.search(
        r"manifest \S+manifest.sqlite cannot be written: (database or disk is full|disk I/O error); "
        r"free some space and run the same command again",
        message,
    ), message
    assert tree(tmp_path / "out") == {}
    ballast.unlink()
    # Room again: 256 KB barely holds the manifest's write-ahead log for a whole run, so grow it as a user
    # would free space, rather than depend on how many transactions the run happens to batch.
    resize(small, "2m")
    assert download(settings) == 0
    assert tree(tmp_path / "out") == expected


def test_a_manifest_write_failing_mid_run_keeps_the_files_and_the_next_run_adopts_them(
    s3_env, dataset, tmp_path, monkeypatch, capsys
):
    """SQLITE_FULL on the third batch of outcomes: the run stops; files already renamed stay, and the next
    run adopts the ones the manifest did not hear about (checked against their id md5, no request)."""
    coco, _images, expected = dataset
    out = tmp_path / "out"
    real_record = Manifest.record.__wrapped__
    calls = {"n": 0}

    def record(self, outcomes):
        calls["n"] += 1
        if calls["n"] >= 3:
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise error
        return real_record(self, outcomes)

    original = Manifest.record
    monkeypatch.setattr(Manifest, "record", _disk_mapped(record))
    settings = settings_for(s3_env, coco, out, concurrency=4, flush_interval=0.05, max_requests_per_second=20)
    assert download(settings) == 4
    assert "cannot be written: database or disk is full" in capsys.readouterr().out
    done = check_manifest_never_leads(out, settings.manifest_path, expected)
    on_disk = len(tree(out))
    # The files renamed after the last recorded batch are kept: more on disk than the manifest knows. (On a
    # loaded machine the downloads may all finish before the failing flush: then every file is on disk.)
    assert len(done) < on_disk <= N and leftovers(out) == []

    monkeypatch.setattr(Manifest, "record", original)  # room again
    assert download(settings) == 0
    summary = last_summary(settings)
    assert summary["already_done"] == len(done) and summary["adopted"] == on_disk - len(done)
    assert summary["fetched"] == summary["requests"] == N - on_disk
    assert tree(out) == expected
    check_manifest_equals_disk(out, settings.manifest_path)


def _disk_mapped(function):
    """Wrap a replacement Manifest method the way the real ones are (SQLITE_FULL -> DiskError)."""
    from sci_fetch.manifest import store

    return store._disk_errors(function)
