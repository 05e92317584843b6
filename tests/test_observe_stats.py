"""The figures people read off a run: failures are never progress, every image is accounted for."""

from __future__ import annotations

from collections import Counter

from sci_fetch.observe.stats import Stats


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
