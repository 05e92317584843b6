"""The figures people read off a run: failures are never progress, every image is accounted for."""

from __future__ import annotations

from collections import Counter

import pytest

import sci_fetch.observe.stats as stats_module
from sci_fetch.observe.stats import Stats
from sci_fetch.observe.units import format_duration


def test_the_eta_counts_successes_only():
    stats = Stats(started=0.0, total=1000)
    stats.failed = 500  # a run failing fast has made no progress
    assert stats.eta_seconds() is None
    stats.done = 100
    eta = stats.eta_seconds()
    assert eta is not None
    # 400 images left at the rate of the 100 that succeeded, not at the rate of all 600 that finished
    assert abs(eta - 400 / stats.images_per_second()) < 1e-3 * eta


def test_images_never_read_count_as_pending():
    stats = Stats(total=700, invalid=3, duplicates=2)
    counts = {"done": 400, "failed": 10, "missing": 0, "forbidden": 0, "pending": 102}
    assert stats.with_unread(counts) == counts | {"pending": 102 + 183}  # 700 - 512 rows - 3 - 2
    assert Stats(total=None).with_unread(counts) == counts


def test_figures_of_several_processes_add_up():
    a = Stats(done=3, failed=1, bytes=30, retries=Counter({"slowdown": 2}), unreachable_since=50.0)
    b = Stats(done=4, forbidden=2, bytes=40, retries=Counter({"slowdown": 1, "timeout": 1}), unreachable_since=20.0)
    merged = Stats(total=10)
    merged.absorb([a, b])
    assert (merged.done, merged.failed, merged.forbidden, merged.bytes) == (7, 1, 2, 70)
    assert merged.retries == Counter({"slowdown": 3, "timeout": 1}) and merged.unreachable_since == 20.0
    assert merged.total == 10  # the parent's count stays


def test_the_progress_line_names_every_figure(monkeypatch):
    monkeypatch.setattr(stats_module.time, "monotonic", lambda: 110.0)  # 10 s into the run, whatever the machine
    stats = Stats(started=100.0, total=100, skipped_done=5, done=20, adopted=5, bytes=50_000_000)
    stats.failed, stats.missing, stats.forbidden, stats.invalid, stats.in_flight = 1, 2, 3, 4, 6
    stats.retries = Counter({"slowdown": 2, "timeout": 1})
    assert (
        stats.line()
        == (
            "images 30/100 done (5 already), 2.5 img/s, 5.0 MB/s, failed 1, missing 2, forbidden 3, invalid 4, "
            "retries 3, in flight 6, request rate unlimited, slowdowns 0, ETA 24s"  # 100 - 4 invalid - 5 already - 31 finished = 60 left at 2.5/s
        )
    )
    assert Stats(total=None).line().endswith("ETA ?")


def test_as_dict_is_what_the_run_summary_stores():
    stats = Stats(total=9, planned=8, to_fetch=7, done=3, adopted=1, skipped_done=2, failed=1, bytes=4096)
    stats.retries = Counter({"slowdown": 2})
    figures = stats.as_dict()
    assert {k: figures[k] for k in ("total_records", "valid_records", "to_fetch", "fetched", "adopted")} == {
        "total_records": 9,
        "valid_records": 8,
        "to_fetch": 7,
        "fetched": 3,
        "adopted": 1,
    }
    assert (figures["already_done"], figures["failed"], figures["bytes"], figures["retries"]) == (
        2,
        1,
        4096,
        {"slowdown": 2},
    )
    assert list(figures)[-1] == "retries" and len(figures) == 20


def test_nothing_left_means_no_time_left():
    stats = Stats(total=10, invalid=2, duplicates=1, skipped_done=7)
    assert stats.eta_seconds() == 0.0
    assert stats.finished() == 0 and Stats(done=1, adopted=2, failed=3, missing=4, forbidden=5).finished() == 15


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0s"), (0.4, "0.4s"), (9.94, "9.9s"), (9.96, "10s"), (12, "12s"), (185, "3m05s"), (3725, "1h02m")],
)
def test_durations_read_as_people_say_them(seconds, text):
    assert format_duration(seconds) == text
