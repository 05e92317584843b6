"""``sci-fetch verify``: good files pass, each kind of damage is found, named and sent back to pending."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jsonschema
import pytest
from manifests import downloaded, jpeg

from sci_fetch.cli import main
from sci_fetch.commands.verify import Checked, report, text_lines
from sci_fetch.files.verify import Problem
from sci_fetch.manifest.models import State
from sci_fetch.manifest.store import Manifest

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs/schema/verify-command.json").read_text())


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    for name in [n for n in os.environ if n.startswith("SCI_FETCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_damaged_files_are_named_and_marked_pending(here, capsys):
    manifest = downloaded(here / "out", "manifest.sqlite", done=[1, 2, 3, 4, 5], failed={})
    (here / "out/p/2.jpg").unlink()
    (here / "out/p/3.jpg").write_bytes(jpeg(3)[:-1])  # one byte short
    flipped = bytearray(jpeg(4))
    flipped[-1] ^= 1
    (here / "out/p/4.jpg").write_bytes(bytes(flipped))
    assert main(["verify", "out", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    jsonschema.validate(result, SCHEMA)
    assert (result["checked"], result["good"], result["marked_pending"]) == (5, 2, 3)
    assert result["by_kind"] == {"missing": 1, "size": 1, "md5": 1}
    assert result["manifests"] == ["out/.sci-fetch/manifest.sqlite"] and result["decode"] is False
    found = {p["image_id"]: (p["destination"], p["kind"]) for p in result["problems"]}
    assert found == {"p:2": ("p/2.jpg", "missing"), "p:3": ("p/3.jpg", "size"), "p:4": ("p/4.jpg", "md5")}
    m = Manifest(manifest, readonly=True)
    try:
        assert {r.image_id for r in m.rows([State.pending])} == {"p:2", "p:3", "p:4"}
        assert m.get("p:3").last_error == "verify: size differs from the manifest: 143 bytes on disk, 144 recorded"
        assert m.get("p:1").state is State.done
    finally:
        m.close()
    assert main(["verify", "out", "--json"]) == 0  # the bad ones are pending now, the rest still check out
    assert json.loads(capsys.readouterr().out)["checked"] == 2


def test_the_text_report_counts_kinds_and_lists_the_first_few(here, capsys):
    downloaded(here / "out", "manifest.sqlite", done=[1, 2, 3], failed={})
    for n in (1, 2, 3):
        page = b"<html><body>Access Denied</body></html>"
        (here / f"out/p/{n}.jpg").write_bytes(page.ljust(len(jpeg(n))))  # the recorded size, other bytes
    assert main(["verify", "--output", "out", "--errors", "1"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("verified 3 done images (size and MD5) in ") and lines[0].endswith(": 0 good, 3 bad")
    assert lines[1] == "  MD5 differs from the manifest: 3"
    assert lines[2].startswith("  md5: p/1.jpg: MD5 ")
    assert lines[3:] == [
        "  ... and 2 more (--json lists them all)",
        "marked 3 images pending: run the same 'sci-fetch download' again to fetch them",
    ]


def test_a_manifest_written_moments_ago_warns_of_a_running_download(here, capsys):
    downloaded(here / "out", "manifest.sqlite", done=[1], failed={}, ended=None)
    assert main(["verify", "out"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "warning: out/.sci-fetch/manifest.sqlite was written less than 60s ago; a download may be running, "
        "and images it finishes meanwhile are not checked"
    )
    assert lines[1].endswith(": 1 good, 0 bad") and len(lines) == 2


def test_an_image_that_does_not_decode_gets_the_note_about_s3():
    problems = [Problem("p:1", "p/1.jpg", "decode", "Pillow cannot decode it: truncated")]
    result = report(Path("out"), [Checked("m.sqlite", 4, problems, False)], True, 0.5)
    jsonschema.validate(result.document(), SCHEMA)
    assert (result.good, result.by_kind, result.seconds) == (3, {"decode": 1}, 0.5)
    lines = text_lines(result, [], 20)
    assert lines[0] == "verified 4 done images (size, MD5 and decoding) in 0.5s: 3 good, 1 bad"
    assert lines[1:3] == ["  Pillow cannot decode it: 1", "  decode: p/1.jpg: Pillow cannot decode it: truncated"]
    assert lines[-1].startswith("note: an image whose MD5 still matches but does not decode is damaged in S3 itself")


def test_sharded_output_is_verified_as_one(here, capsys):
    downloaded(here / "out", "manifest-shard-0-of-2.sqlite", done=[1], failed={})
    downloaded(here / "out", "manifest-shard-1-of-2.sqlite", done=[2], failed={})
    started = time.monotonic()
    assert main(["verify", "out", "--json", "--workers", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["checked"] == 2 and len(result["manifests"]) == 2
    assert 0 <= result["seconds"] <= time.monotonic() - started + 0.01
