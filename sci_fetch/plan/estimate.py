"""Pure math of the plan: total bytes from a random sample, its range, the disk verdict, the time.

The sample is a simple random sample without replacement of the keys still to fetch. Each sampled key
contributes its size, or 0 when it does not exist, so one mean covers both "how many exist" and "how big":
total = N x mean, with the finite-population correction, so a sample of every key gives the exact
total and a zero-width range. The range is the normal approximation (z for the confidence asked);
its low end is never below the bytes the sample itself saw, which certainly exist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from statistics import NormalDist


@dataclass(frozen=True)
class Estimate:
    population: int  # keys still to fetch
    sampled: int  # keys of the sample that got an answer (exists or missing)
    found: int  # of those, how many exist
    sample_bytes: int  # their total size
    mean_size: float | None  # mean size of the objects found; None when none was found
    objects: float  # estimated objects that exist among the population
    total: float  # estimated bytes of the population
    low: float  # range of ``total`` at ``confidence``
    high: float  # math.inf when the sample cannot say (fewer than 2 answers)
    confidence: float

    @property
    def exact(self) -> bool:
        """Every key was asked: the figures are counts, not estimates."""
        return self.sampled >= self.population


def estimate_total(population: int, sizes: Sequence[int], missing: int, confidence: float = 0.95) -> Estimate:
    """Estimate the bytes of ``population`` keys from the sizes of the sampled ones found and the count missing."""
    if population < 0 or missing < 0 or any(s < 0 for s in sizes):
        raise ValueError("population, sizes and missing must not be negative")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    n = len(sizes) + missing
    if n > population:
        raise ValueError(f"a sample of {n} keys cannot come from {population}")
    seen = int(sum(sizes))
    mean_size = seen / len(sizes) if sizes else None
    if n == 0:
        return Estimate(population, 0, 0, 0, None, 0.0, 0.0, 0.0, math.inf if population else 0.0, confidence)
    mean = seen / n  # per sampled key, missing ones counting 0
    total = population * mean
    objects = population * len(sizes) / n
    if n == population:
        low = high = total
    elif n < 2:
        low, high = float(seen), math.inf
    else:
        variance = (sum((s - mean) ** 2 for s in sizes) + missing * mean**2) / (n - 1)
        spread = (
            NormalDist().inv_cdf(0.5 + confidence / 2) * population * math.sqrt(variance / n * (1 - n / population))
        )
        low, high = max(float(seen), total - spread), total + spread
    return Estimate(population, n, len(sizes), seen, mean_size, objects, total, low, high, confidence)


class Fit(str, Enum):
    fits = "fits"  # even the high end of the range fits
    tight = "tight"  # the range straddles the free space: it may not fit
    exceeds = "exceeds"  # even the low end of the range is more than the free space


def disk_verdict(estimate: Estimate, free_bytes: int) -> Fit:
    """``exceeds`` only when the download clearly cannot fit: the low end of the range is above the free space."""
    if estimate.low > free_bytes:
        return Fit.exceeds
    if estimate.high > free_bytes:
        return Fit.tight
    return Fit.fits


def rate(count: float, seconds: float) -> float | None:
    """Per second, or None when nothing was timed."""
    return count / seconds if count > 0 and seconds > 0 else None


def eta_seconds(
    objects: float, total_bytes: float, objects_per_second: float | None, bytes_per_second: float | None
) -> float | None:
    """Time at the measured rates: whichever of the request rate and the byte rate is the slower bound."""
    bounds = []
    if objects_per_second:
        bounds.append(objects / objects_per_second)
    if bytes_per_second:
        bounds.append(total_bytes / bytes_per_second)
    return max(bounds) if bounds else None
