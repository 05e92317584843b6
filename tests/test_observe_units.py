"""Sizes and durations in the plan's report: decimal units, and words for long times."""

from __future__ import annotations

import pytest

from sci_fetch.observe.units import human_bytes, human_duration


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 KB"),
        (75_800_000_000, "75.8 GB"),
        (3e18, "3000.0 PB"),
        (float("inf"), "unknown"),
    ],
)
def test_bytes_in_decimal_units(n, text):
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "unknown"),
        (0.2, "under 1 s"),
        (40, "40 s"),
        (720, "12 min"),
        (3 * 3600 + 300, "3 h 05 min"),
        (60 * 3600, "2.5 days"),
    ],
)
def test_durations_in_words(seconds, text):
    assert human_duration(seconds) == text
