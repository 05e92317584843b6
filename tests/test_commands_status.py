"""``sci-fetch status``: the manifests of one output folder merged, as text, as schema-valid JSON, and as health."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from manifests import downloaded, jpeg

from sci_fetch.cli import main
from sci_fetch.commands.status import health

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs/schema/status-command.json").read_text())


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """An empty working folder without settings.toml or SCI_FETCH_* variables."""
    for name in [n for n in __import__("os").environ if n.startswith("SCI_FETCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_two_shards_read_as_one_job_in_json(here, capsys):
    downloaded(here / "out", "manifest-shard-0-of-2.sqlite", done=[1, 2], failed={})
    downloaded(here / "out", "manifest-shard-1-of-2.sqlite", done=[3], failed={4: "503 SlowDown"}, ended=1)
    assert main(["status", "out", "--json"]) == 1  # not every image is done
    report = json.loads(capsys.readouterr().out)
    jsonschema.validate(report, SCHEMA)
    assert report["manifests"] == [
        "out/.sci-fetch/manifest-shard-0-of-2.sqlite",
        "out/.sci-fetch/manifest-shard-1-of-2.sqlite",
    ]
    assert report["counts"] == {"pending": 0, "done": 3, "failed": 1, "missing": 0, "forbidden": 0}
    assert report["images"] == 4 and report["bytes_done"] == sum(len(jpeg(n)) for n in (1, 2, 3))
    assert report["running"] is False and report["last_run"] is None  # one per manifest, in last_runs
    assert [(r["run_id"], r["exit_code"], r["summary"]) for r in report["last_runs"]] == [
        (1, 0, {"fetched": 2}),
        (1, 1, {"fetched": 1}),
    ]
    assert report["last_errors"] == [{"key": "original/p:4.jpg", "state": "failed", "error": "503 SlowDown"}]


def test_the_text_report_names_counts_runs_and_errors(here, capsys):
    downloaded(here / "out", "manifest.sqlite", done=[1], failed={2: "403 AccessDenied"}, ended=None)
    assert main(["status", "--output", "out"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "manifest out/.sci-fetch/manifest.sqlite"
    assert lines[1] == "  images 2: done 1, pending 0, failed 1, missing 0, forbidden 0"
    assert lines[2].startswith("  0.0 MB on disk; last minute: ")
    assert "  last run #1: running" in lines
    assert lines[-2:] == ["  latest errors:", "    failed: original/p:2.jpg: 403 AccessDenied"]


def test_every_image_done_exits_0_and_json_has_the_single_last_run(here, capsys):
    downloaded(here / "out", "manifest.sqlite", done=[1, 2], failed={})
    assert main(["status", "out", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    jsonschema.validate(report, SCHEMA)
    assert report["last_run"]["exit_code"] == 0 and report["last_runs"] == [report["last_run"]]
    assert report["last_errors"] == [] and report["counts"]["done"] == 2


def test_health_is_alive_while_the_heartbeat_is_fresh_or_the_run_ended_well(here, capsys):
    downloaded(here / "out", "manifest.sqlite", done=[1], failed={})
    assert main(["status", "out", "--health"]) == 0
    assert capsys.readouterr().out == "healthy: manifest.sqlite: finished, all images done\n"


@pytest.mark.parametrize(
    ("last_run", "heartbeat", "ok", "text"),
    [
        (None, None, False, "m.sqlite: no run recorded"),
        ({"ended_at": None}, 990.0, True, "m.sqlite: running, last manifest write 10s ago"),
        ({"ended_at": None}, 800.0, False, "m.sqlite: stalled, no manifest write for 200s (limit 120s)"),
        ({"ended_at": None}, None, False, "m.sqlite: stalled, no manifest write for infs (limit 120s)"),
        ({"ended_at": 5.0, "exit_code": 3}, 5.0, False, "m.sqlite: last run ended with exit code 3"),
    ],
)
def test_health_verdicts(last_run, heartbeat, ok, text):
    part = {"path": "/x/m.sqlite", "last_run": last_run, "heartbeat": heartbeat}
    assert health(part, 120.0, 1000.0) == (ok, text)


def test_no_manifest_is_one_usage_error(here, capsys):
    assert main(["status", "nothing-here"]) == 2
    assert capsys.readouterr().err == (
        "sci-fetch: error: no manifest in nothing-here/.sci-fetch; has a download been started with this output dir?\n"
    )
