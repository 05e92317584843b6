"""The plan's pure math: totals from a sample, the range, the disk verdict, the time."""

from __future__ import annotations

import math
import random

import pytest

from sci_fetch.observe.units import human_bytes, human_duration
from sci_fetch.plan.check import nearest_existing
from sci_fetch.plan.estimate import Fit, disk_verdict, estimate_total, eta_seconds, rate


def test_a_sample_of_every_key_gives_exact_counts_and_a_zero_width_range():
    est = estimate_total(5, [100, 200, 300, 400], missing=1)
    assert est.exact
    assert est.found == 4 and est.sampled == 5
    assert est.mean_size == 250
    assert est.total == 1000 and est.low == est.high == 1000
    assert est.objects == 4


def test_missing_keys_count_zero_bytes_and_lower_the_object_estimate():
    est = estimate_total(1000, [500] * 8, missing=2)
    assert est.mean_size == 500
    assert est.objects == pytest.approx(800)
    assert est.total == pytest.approx(400_000)
    assert est.low < est.total < est.high


def test_equal_sizes_and_no_missing_have_no_spread():
    est = estimate_total(10_000, [700_000] * 50, missing=0)
    assert est.low == est.high == est.total == 7_000_000_000


def test_the_range_covers_the_true_total_about_95_percent_of_the_time():
    rng = random.Random(7)
    population = [int(rng.lognormvariate(13, 0.4)) if rng.random() > 0.05 else None for _ in range(5000)]
    truth = sum(s for s in population if s is not None)
    hits = 0
    for _ in range(400):
        sample = rng.sample(population, 200)
        sizes = [s for s in sample if s is not None]
        est = estimate_total(len(population), sizes, missing=len(sample) - len(sizes))
        hits += est.low <= truth <= est.high
    assert 0.90 <= hits / 400 <= 0.99


def test_the_low_end_is_never_below_the_bytes_the_sample_saw():
    est = estimate_total(1_000_000, [10, 10_000_000], missing=0)
    assert est.low >= 10_000_010


def test_one_answer_says_nothing_about_the_spread():
    est = estimate_total(100, [1000], missing=0)
    assert est.low == 1000 and math.isinf(est.high)


def test_nothing_sampled_or_nothing_left():
    assert estimate_total(0, [], 0).total == 0 and estimate_total(0, [], 0).exact
    est = estimate_total(10, [], 0)
    assert est.total == 0 and math.isinf(est.high) and est.mean_size is None


@pytest.mark.parametrize("args", [(3, [1, 2, 3, 4], 0), (3, [-1], 0), (3, [1], -1)])
def test_impossible_inputs_are_refused(args):
    with pytest.raises(ValueError):
        estimate_total(*args)


def test_disk_verdict_refuses_only_when_even_the_low_end_exceeds():
    est = estimate_total(1000, [900, 1100, 1000, 950, 1050], missing=0)
    assert disk_verdict(est, int(est.high) + 1) is Fit.fits
    assert disk_verdict(est, int(est.total)) is Fit.tight
    assert disk_verdict(est, int(est.low) - 1) is Fit.exceeds
    assert disk_verdict(estimate_total(0, [], 0), 0) is Fit.fits


def test_eta_takes_the_slower_of_the_request_and_byte_rates():
    assert eta_seconds(1000, 1e9, objects_per_second=100, bytes_per_second=1e7) == 100
    assert eta_seconds(1000, 1e6, objects_per_second=100, bytes_per_second=1e7) == 10
    assert eta_seconds(1000, 1e6, None, None) is None
    assert rate(10, 2) == 5 and rate(0, 2) is None and rate(3, 0) is None


def test_nearest_existing_walks_up_to_a_folder_that_exists(tmp_path):
    assert nearest_existing(tmp_path / "a" / "b" / "c") == tmp_path
    assert nearest_existing(tmp_path) == tmp_path


def test_human_units():
    assert human_bytes(999) == "999 B"
    assert human_bytes(75_800_000_000) == "75.8 GB"
    assert human_bytes(math.inf) == "unknown"
    assert human_duration(0.2) == "under 1 s"
    assert human_duration(42) == "42 s"
    assert human_duration(4000) == "1 h 07 min"
    assert human_duration(3 * 86400) == "3.0 days"
