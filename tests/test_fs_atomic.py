"""files.atomic: the one way sci_fetch replaces a file; files.layout: the one place its own names live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sci_fetch.errors import PermanentError
from sci_fetch.fs import layout
from sci_fetch.fs import root as root_module
from sci_fetch.fs.atomic import AtomicFile, temp_path, write_atomic
from sci_fetch.fs.root import OutputRoot
from sci_fetch.keys.mapping import Task
from sci_fetch.manifest.models import Action
from sci_fetch.manifest.store import Manifest


def test_write_atomic_replaces_whole_and_leaves_nothing_beside(tmp_path):
    dest = tmp_path / "sub" / "status.json"
    write_atomic(dest, "old")
    write_atomic(dest, '{"a": 1}\n')
    assert dest.read_bytes() == b'{"a": 1}\n'
    assert sorted(p.name for p in dest.parent.iterdir()) == ["status.json"]
    write_atomic(dest, b"\x00\xff")
    assert dest.read_bytes() == b"\x00\xff"


def test_a_write_that_fails_keeps_the_old_file_and_removes_the_temp(tmp_path):
    dest = tmp_path / "crops.csv"
    dest.write_text("previous")
    with pytest.raises(ZeroDivisionError), AtomicFile(dest) as out:
        out.fh.write("half of a new")
        1 / 0  # noqa: B018 - any error on the way
    assert dest.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["crops.csv"]


def test_leaving_without_commit_discards(tmp_path):
    dest = tmp_path / "x.csv"
    with AtomicFile(dest) as out:
        out.fh.write("never")
    assert list(tmp_path.iterdir()) == []


def test_text_mode_writes_utf8_without_newline_translation(tmp_path):
    dest = tmp_path / "t.csv"
    with AtomicFile(dest) as out:
        out.fh.write("café\r\nb\n")
        out.commit()
    assert dest.read_bytes() == "café\r\nb\n".encode()


def test_temp_names_are_unique_hidden_and_beside_the_target(tmp_path):
    dest = tmp_path / "gallery.html"
    names = {temp_path(dest) for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert name.parent == tmp_path
        assert name.name.startswith(".gallery.html.") and name.name.endswith(layout.PARTIAL_SUFFIX)


def test_a_symlink_planted_at_the_temp_name_is_replaced_not_followed(tmp_path, monkeypatch):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    dest = tmp_path / "out" / "f.txt"
    dest.parent.mkdir()
    planted = dest.parent / ".f.txt.planted.partial"
    planted.symlink_to(outside)
    monkeypatch.setattr("sci_fetch.fs.atomic.temp_path", lambda _dest: planted)
    write_atomic(dest, "mine")
    assert outside.read_text() == "keep me"
    assert dest.read_text() == "mine" and not dest.is_symlink()


def test_files_get_the_permissions_open_would_give(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    write_atomic(tmp_path / "f", "x")
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o666 & ~umask


def test_layout_names_every_state_file(tmp_path):
    assert layout.manifest_path(tmp_path) == tmp_path / ".sci-fetch" / "manifest.sqlite"
    suffix = layout.shard_suffix(3, 8)
    assert layout.manifest_path(tmp_path, suffix).name == "manifest-shard-3-of-8.sqlite"
    assert layout.shard_suffix(0, 1) == ""
    state = layout.state_dir(tmp_path)
    assert layout.state_file(state, layout.FAILURES_FILE, suffix).name == "failures-shard-3-of-8.csv"
    assert layout.state_file(state, layout.STATUS_FILE).name == "status.json"
    assert layout.partial_path(Path("a/b.jpg")) == Path("a/b.jpg.partial")


def test_manifests_in_lists_the_plain_one_then_each_shard(tmp_path):
    state = layout.state_dir(tmp_path)
    state.mkdir()
    for name in ("manifest-shard-1-of-2.sqlite", "manifest.sqlite", "manifest-shard-0-of-2.sqlite", "other.sqlite"):
        (state / name).write_bytes(b"")
    assert [p.name for p in layout.manifests_in(tmp_path)] == [
        "manifest.sqlite",
        "manifest-shard-0-of-2.sqlite",
        "manifest-shard-1-of-2.sqlite",
    ]


def test_output_root_contains_only_what_stays_inside(tmp_path):
    root = tmp_path / "out"
    (root / "cam").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    output = OutputRoot(root)
    assert output.contains("cam/a.jpg") and output.contains("new/folder/a.jpg") and output.contains("a.jpg")
    assert not output.contains("link/a.jpg")


def test_the_folders_made_are_remembered_up_to_a_bound_and_checked_again_after(tmp_path, monkeypatch):
    """A job with one folder per image must not keep every folder's name for the whole run (7.1M images,
    ~150 bytes each); a folder forgotten is made and checked again, so a link put there since is still refused."""
    monkeypatch.setattr(root_module, "CHECKED_FOLDERS", 8)
    root = tmp_path / "out"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    output = OutputRoot(root)
    for i in range(20):
        assert output.path_for(f"f{i:02d}/a.jpg") == root / f"f{i:02d}" / "a.jpg"
    assert len(output._made) <= 8  # noqa: SLF001 - the structure whose size is the point
    assert sorted(p.name for p in root.iterdir()) == [f"f{i:02d}" for i in range(20)]
    (root / "f00").rmdir()
    (root / "f00").symlink_to(tmp_path / "elsewhere")  # f00 was made first: forgotten by now
    with pytest.raises(PermanentError, match="leads outside the output dir"):
        output.path_for("f00/a.jpg")


def test_the_planner_does_not_trust_a_file_behind_a_folder_that_leads_out(tmp_path):
    """A file of the recorded size, reached through a symbolic link out of the output, is not adopted or
    kept as done: the planner stats files through the same containment check as every write."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "1.jpg").write_bytes(b"12345")
    (out / "p").symlink_to(tmp_path / "elsewhere")
    (out / "q").mkdir()
    (out / "q" / "2.jpg").write_bytes(b"12345")
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    tasks = [Task(image_id="p:1", key="k1", dest="p/1.jpg"), Task(image_id="p:2", key="k2", dest="q/2.jpg")]
    assert [d.action for d in m.plan(tasks, run, out)] == [Action.fetch, Action.adopt]
    m.close()


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
def test_size_of_asks_through_folder_descriptors_and_keeps_the_containment_rule(tmp_path):
    """size_of (the planner's stat of every done image): the size of what is there, fresh each time (a file
    changed or deleted is seen), None behind a folder that leads out of the output (even one that became a
    link after its descriptor was opened), at most OPEN_FOLDERS descriptors held, none after close."""
    from sci_fetch.fs.root import OPEN_FOLDERS

    root, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (root / "cam").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "a.jpg").write_bytes(b"12345")
    (root / "link").symlink_to(elsewhere)
    (root / "inner").symlink_to(root / "cam")  # a link that stays inside is fine
    (root / "cam" / "a.jpg").write_bytes(b"123")
    (root / "top.jpg").write_bytes(b"1")
    before = open_descriptors()
    output = OutputRoot(root)
    assert [output.size_of(r) for r in ("cam/a.jpg", "inner/a.jpg", "link/a.jpg", "top.jpg")] == [3, 3, None, 1]
    assert output.size_of("cam/b.jpg") is None and output.size_of("new/a.jpg") is None
    (root / "cam" / "a.jpg").write_bytes(b"1234")
    assert output.size_of("cam/a.jpg") == 4
    (root / "cam" / "a.jpg").unlink()
    assert output.size_of("cam/a.jpg") is None
    (root / "new").mkdir()
    (root / "new" / "a.jpg").write_bytes(b"12")
    assert output.size_of("new/a.jpg") == 2  # a folder that was not there is looked for again
    (root / "cam").rename(root / "cam-old")
    (root / "cam").symlink_to(elsewhere)
    assert output.size_of("cam/a.jpg") is None  # the folder it opened, never the link now in its place
    for i in range(3 * OPEN_FOLDERS):
        (root / f"f{i}").mkdir()
        (root / f"f{i}" / "x.jpg").write_bytes(b"1" * i)
        assert output.size_of(f"f{i}/x.jpg") == i
        assert open_descriptors() - before <= OPEN_FOLDERS
    output.close()
    assert open_descriptors() == before


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
def test_the_manifest_closes_the_planners_folder_descriptors(tmp_path):
    out = tmp_path / "out"
    for i in range(5):
        (out / f"f{i}").mkdir(parents=True)
        (out / f"f{i}" / "x.jpg").write_bytes(b"1")
    before = open_descriptors()
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    tasks = [Task(image_id=f"p:{i}", key=f"k{i}", dest=f"f{i}/x.jpg") for i in range(5)]
    assert {d.action for d in m.plan(tasks, run, out)} == {Action.adopt}
    m.close()
    assert open_descriptors() == before
