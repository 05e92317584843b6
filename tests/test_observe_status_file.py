"""status.json: every image accounted for, the schema's keys, replaced whole, a failed write is one warning."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
from helpers import wait_until

import sci_fetch.observe.stats as stats_module
import sci_fetch.observe.status_file as status_file
from sci_fetch.observe.stats import Stats
from sci_fetch.observe.status_file import RateWindow, keep_writing, snapshot, write_atomic, write_final

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs/schema/status-file.json").read_text())


def figures() -> Stats:
    stats = Stats(started=100.0, total=50, skipped_done=10, skipped_missing=2, duplicates=1, invalid=3)
    stats.done, stats.adopted, stats.failed, stats.missing, stats.forbidden = 12, 3, 2, 1, 1
    stats.bytes, stats.in_flight, stats.requests = 1_500_000, 4, 20
    stats.retries = Counter({"slowdown": 3})
    return stats


def test_a_snapshot_accounts_for_every_image(monkeypatch):
    monkeypatch.setattr(stats_module.time, "monotonic", lambda: 110.0)
    doc = snapshot(figures(), (1.234, 5678.9), ["p:1: 503"], "running", "1/4").document()
    jsonschema.validate(doc, SCHEMA)
    assert doc["images"] == {
        "total": 50,
        "done": 25,  # 10 already + 12 fetched + 3 adopted
        "fetched": 12,
        "adopted": 3,
        "already_done": 10,
        "failed": 2,
        "missing": 3,  # 1 now + 2 known from an earlier run
        "forbidden": 1,
        "invalid": 3,
        "duplicates": 1,
        "in_flight": 4,
        "pending": 15,  # 50 - 10 - 2 - 18 finished - 3 - 1
    }
    assert doc["rates"] == {
        "images_per_second": 1.23,
        "bytes_per_second": 5679,
        "average_images_per_second": 1.5,
        "average_bytes_per_second": 150000,
    }
    assert (doc["state"], doc["shard"], doc["bytes"], doc["requests"]) == ("running", "1/4", 1_500_000, 20)
    assert (doc["elapsed_seconds"], doc["eta_seconds"], doc["retries"]) == (10.0, 10, {"slowdown": 3})
    assert doc["last_errors"] == ["p:1: 503"] and doc["unreachable_since"] is None
    assert "exit_code" not in doc and "processes" not in doc


def test_before_the_count_the_total_and_pending_are_null():
    doc = snapshot(Stats(), (0.0, 0.0), [], "running", "").document()
    assert doc["images"]["total"] is None and doc["images"]["pending"] is None and doc["eta_seconds"] is None
    jsonschema.validate(doc, SCHEMA)


def test_the_current_rate_is_over_the_recent_window(monkeypatch):
    clock = iter([0.0, 10.0, 20.0, 60.0])
    monkeypatch.setattr(status_file.time, "monotonic", lambda: next(clock))
    window, stats = RateWindow(span=30.0), Stats()
    assert window.add(stats) == (0.0, 0.0)  # one point: no rate yet
    stats.done, stats.bytes = 10, 1000
    assert window.add(stats) == (1.0, 100.0)
    stats.done, stats.bytes = 30, 3000
    assert window.add(stats) == (1.5, 150.0)
    stats.done, stats.bytes = 40, 4000  # then 40 s slower: points older than 30 s drop out, two stay
    assert window.add(stats) == (0.25, 25.0)  # (40 - 30) / (60 - 20), not the 40 / 60 since the start


def test_the_file_is_replaced_whole(tmp_path):
    path = tmp_path / "status.json"
    write_atomic(path, {"state": "running"})
    write_atomic(path, {"state": "finished", "exit_code": 0})
    assert json.loads(path.read_text()) == {"state": "finished", "exit_code": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]  # no .tmp left behind


def test_a_final_write_that_fails_is_one_warning(tmp_path, caplog):
    final = snapshot(Stats(), (0.0, 0.0), [], "finished", "") | {"exit_code": 0}
    blocker = tmp_path / "a-file"  # a state folder that cannot be made: a file stands where it would go
    blocker.write_text("x")
    write_final(blocker / "status.json", final)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert caplog.records[0].getMessage().startswith("status file not written: ")
    write_final(tmp_path / "status.json", final)
    written = json.loads((tmp_path / "status.json").read_text())
    assert written["exit_code"] == 0 and written["state"] == "finished"
    jsonschema.validate(written, SCHEMA)


async def test_keep_writing_rewrites_until_cancelled(tmp_path):
    path, stats = tmp_path / "status.json", Stats(total=3)
    task = asyncio.create_task(
        keep_writing(
            path, 0.01, lambda: stats, lambda s, rates: snapshot(s, rates, [], "running", "") | {"processes": 2}
        )
    )
    try:
        await asyncio.to_thread(wait_until, path.exists, "a first status file", 30.0)
        stats.done = 3
        await asyncio.to_thread(
            wait_until, lambda: json.loads(path.read_text())["images"]["fetched"] == 3, "the figures to move", 30.0
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    doc = json.loads(path.read_text())
    assert doc["processes"] == 2 and doc["images"]["pending"] == 0
    jsonschema.validate(doc, SCHEMA)
