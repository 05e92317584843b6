"""The manifest as input (issue 21.10): a damaged file, a newer schema, a state folder that is a symbolic
link. Every command that reads the manifest ends with exit 2 and one line saying what is wrong and what
to do; none writes into a newer manifest or through the link."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from sci_fetch.cli import main
from sci_fetch.errors import UsageError
from sci_fetch.keys.mapping import Task
from sci_fetch.manifest.models import Outcome, State
from sci_fetch.manifest.store import SCHEMA_VERSION, Manifest

NOWHERE = ["--profile", "", "--anonymous", "--endpoint-url", "http://127.0.0.1:9", "--no-space-check"]


def make_job(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A COCO file, its output folder and a manifest with a finished run of 300 images."""
    images = [{"id": f"p:{i}", "file_name": f"d/{i:04d}.jpg"} for i in range(300)]
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 1, "name": "fox"}]}))
    out = tmp_path / "out"
    path = out / ".sci-fetch" / "manifest.sqlite"
    m = Manifest(path)
    run = m.begin_run({})
    m.plan([Task(i["id"], f"k/{i['id']}", i["file_name"]) for i in images], run, out)
    m.record([Outcome(image_id=i["id"], state=State.done, bytes=3, attempts=1) for i in images])
    m.end_run(run, 0, {})
    m.close()
    return coco, out, path


def commands(coco: Path, out: Path) -> dict[str, list[str]]:
    return {
        "download": ["download", str(coco), "--output", str(out), *NOWHERE],
        "dry-run": ["download", str(coco), "--output", str(out), "--dry-run", *NOWHERE],
        "status": ["status", "--output", str(out)],
        "verify": ["verify", "--output", str(out)],
        "crops": ["crops", str(coco), "--output", str(out), "--workers", "1"],
    }


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("sci-fetch: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def corrupt(path: Path) -> None:
    """Garbage over every page but the first (the header and the schema): the tables' pages are damaged."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for i in range(page, len(data)):
        data[i] = (i * 131 + 7) & 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command", ["download", "dry-run", "status", "verify", "crops"])
def test_a_damaged_manifest_is_one_line_saying_how_to_move_it_aside(tmp_path, capsys, command):
    coco, out, path = make_job(tmp_path)
    corrupt(path)
    assert main(commands(coco, out)[command]) == 2
    line = one_error_line(capsys)
    assert f"manifest {path} is damaged" in line and f"mv {path} {path}.damaged" in line
    assert "adopts them" in line


def test_a_damaged_manifest_moved_aside_lets_the_next_run_start(tmp_path, capsys):
    coco, out, path = make_job(tmp_path)
    corrupt(path)
    path.rename(path.with_name(path.name + ".damaged"))
    fresh = Manifest(path)
    assert fresh.counts()["done"] == 0
    fresh.close()


@pytest.mark.parametrize("command", ["download", "dry-run", "status", "verify", "crops"])
def test_a_newer_schema_is_refused_and_never_written(tmp_path, capsys, command):
    coco, out, path = make_job(tmp_path)
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    db.commit()
    db.close()
    before = path.read_bytes()
    assert main(commands(coco, out)[command]) == 2
    line = one_error_line(capsys)
    assert "schema version 99" in line and f"up to {SCHEMA_VERSION}" in line and "newer sci-fetch" in line
    assert path.read_bytes() == before
    assert not Path(str(path) + "-wal").exists() or Path(str(path) + "-wal").stat().st_size == 0


@pytest.mark.parametrize("command", ["download", "dry-run", "status", "verify", "crops"])
def test_a_state_folder_linked_outside_the_output_is_refused(tmp_path, capsys, command):
    coco, out, path = make_job(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (out / ".sci-fetch").rename(elsewhere)
    (out / ".sci-fetch").symlink_to(elsewhere)
    listing = sorted(p.name for p in elsewhere.iterdir())
    assert main(commands(coco, out)[command]) == 2
    line = one_error_line(capsys)
    assert "is a symbolic link to" in line and str(elsewhere) in line and "outside the output folder" in line
    assert sorted(p.name for p in elsewhere.iterdir()) == listing  # nothing written there


def test_a_state_folder_linked_inside_the_output_is_fine(tmp_path):
    _coco, out, path = make_job(tmp_path)
    inner = out / "state-real"
    (out / ".sci-fetch").rename(inner)
    (out / ".sci-fetch").symlink_to(inner)
    m = Manifest(path)
    assert m.counts()["done"] == 300
    m.close()


def test_a_manifest_file_linked_outside_is_refused(tmp_path):
    _coco, out, path = make_job(tmp_path)
    target = tmp_path / "m.sqlite"
    path.rename(target)
    path.symlink_to(target)
    with pytest.raises(UsageError, match="is a symbolic link to"):
        Manifest(path, readonly=True)


def test_a_schema_version_that_is_no_number_is_damaged(tmp_path):
    _coco, _out, path = make_job(tmp_path)
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = 'two' WHERE name = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(UsageError, match="schema version 'two', which no sci-fetch writes"):
        Manifest(path)


def files_on_disk(out: Path) -> None:
    """The 300 images of make_job on disk with their recorded size: a run over them sends no request."""
    (out / "d").mkdir(parents=True, exist_ok=True)
    for i in range(300):
        (out / "d" / f"{i:04d}.jpg").write_bytes(b"abc")


def runs_of(path: Path) -> list[tuple[int, int | None]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT run_id, exit_code FROM runs ORDER BY run_id").fetchall()
    finally:
        db.close()


def test_damage_the_check_finds_after_the_run_started_stops_it_with_the_one_line(tmp_path, capsys, monkeypatch):
    """The quick_check runs beside the run (manifest.checks.IntegrityCheck): here it reports a damaged page
    only once the run has begun (its runs row is committed); the run still ends with exit 2 and the one
    line, never as a success: no exit code in its runs row, no fingerprint for a quick check next time."""
    from sci_fetch.manifest import checks
    from tests.helpers import wait_until

    coco, out, path = make_job(tmp_path)
    files_on_disk(out)

    def late_damage(db: sqlite3.Connection) -> tuple[str]:
        wait_until(lambda: db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2, "the run has begun")
        return ("*** in database main ***\nPage 7: btree page has a bad cell",)

    monkeypatch.setattr(checks, "_quick_check", late_damage)
    assert main(commands(coco, out)["download"]) == 2
    line = one_error_line(capsys)
    assert f"manifest {path} is damaged (Page 7: btree page has a bad cell)" in line and "mv " in line
    assert runs_of(path) == [(1, 0), (2, None)]
    monkeypatch.undo()
    m = Manifest(path, readonly=True)
    assert m.meta("finished_fingerprint") is None and sum(m.counts().values()) == 300
    assert sorted(p.read_bytes() for p in (out / "d").iterdir()) == [b"abc"] * 300  # nothing lost either
    m.close()


def test_a_damaged_index_the_run_never_reads_is_still_refused(tmp_path, capsys):
    """Real damage where a resume of finished images does not look (the updated_at index): only the
    quick_check finds it, and the run is refused all the same."""
    coco, out, path = make_job(tmp_path)
    files_on_disk(out)
    db = sqlite3.connect(path)
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'images_updated'").fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    data = bytearray(path.read_bytes())
    for i in range((root - 1) * size + 8, root * size):
        data[i] = (i * 131 + 7) & 0xFF
    path.write_bytes(bytes(data))
    assert main(commands(coco, out)["download"]) == 2
    line = one_error_line(capsys)
    assert f"manifest {path} is damaged" in line and "adopts them" in line
    assert runs_of(path)[0] == (1, 0) and all(code is None for _run, code in runs_of(path)[1:])


def test_a_writable_open_cannot_end_a_run_or_close_past_its_check(tmp_path, monkeypatch):
    """Whatever the caller does, the check's finding is said: an outcome recorded meanwhile is kept (its file
    is on disk), but the run cannot be ended as if the manifest were sound, and closing raises the line."""
    from sci_fetch.manifest import checks

    _coco, _out, path = make_job(tmp_path)
    monkeypatch.setattr(checks, "_quick_check", lambda db: ("row 5 missing from index images_state",))
    m = Manifest(path)
    run = m.begin_run({})
    m.record([Outcome(image_id="p:1", state=State.failed, attempts=1, error="x")])
    with pytest.raises(UsageError, match="is damaged \\(row 5 missing from index images_state\\)"):
        m.end_run(run, 0, {})
    with pytest.raises(UsageError, match="is damaged"):
        m.close()
    monkeypatch.undo()
    assert runs_of(path) == [(1, 0), (2, None)]
    m = Manifest(path, readonly=True)
    assert m.counts()["done"] == 299 and m.counts()["failed"] == 1
    m.close()
