"""The plan as a whole, for ``sci-fetch plan``, and the space check a download makes before it starts."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from sci_fetch.errors import DiskError
from sci_fetch.observe.units import human_bytes
from sci_fetch.plan.estimate import Estimate, Fit, disk_verdict, estimate_total, eta_seconds, rate
from sci_fetch.plan.population import Leftovers, Population, sample_leftovers, sample_remaining
from sci_fetch.plan.probe import Probe, probe_sample
from sci_fetch.settings import Settings
from sci_fetch.storage.base import Storage

EXIT_OK, EXIT_NOTHING_FOUND, EXIT_DISK = 0, 1, 4  # 1: no sampled key exists or answered
SPACE_CHECK_SAMPLE = 64  # keys a download HEADs before it starts: seconds, not minutes, on a WAN


@dataclass
class Plan:
    population: Population
    probe: Probe
    estimate: Estimate
    folder: Path  # the nearest existing folder of the output, whose free space counts
    free_bytes: int
    fit: Fit
    head_rate: float | None  # HEADs per second at the run's concurrency
    byte_rate: float | None  # bytes per second over the timed GETs
    eta: float | None  # seconds at those rates

    @property
    def exit_code(self) -> int:
        if self.fit is Fit.exceeds:
            return EXIT_DISK
        if self.probe.heads and not self.estimate.found:  # every key missing, or no answer at all
            return EXIT_NOTHING_FOUND
        return EXIT_OK


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists: where the output folder's bytes will land."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_space(path: Path) -> tuple[Path, int]:
    folder = nearest_existing(path)
    try:
        return folder, shutil.disk_usage(folder).free
    except OSError as exc:
        raise DiskError(f"cannot read the free space of {folder}: {exc.strerror or exc}") from exc


async def make_plan(
    settings: Settings,
    storage: Storage,
    sample: int = 200,
    gets: int = 8,
    seed: int | None = None,
    confidence: float = 0.95,
) -> Plan:
    """Sample the keys still to fetch, ask S3 about them, and put the figures together."""
    population = await asyncio.to_thread(sample_remaining, settings, sample, random.Random(seed))
    return await plan_for(settings, storage, population, gets, confidence)


async def plan_for(
    settings: Settings, storage: Storage, population: Population, gets: int, confidence: float = 0.95
) -> Plan:
    """Ask S3 about a population's sample and put the figures together."""
    probe = await probe_sample(storage, population.sample, settings.concurrency, gets, settings.anonymous)
    estimate = estimate_total(population.remaining, probe.sizes, len(probe.missing), confidence)
    folder, free = free_space(settings.output)
    head_rate = rate(probe.heads, probe.head_seconds)
    byte_rate = rate(probe.get_bytes, probe.get_seconds)
    eta = eta_seconds(estimate.objects, estimate.total, head_rate, byte_rate)
    return Plan(population, probe, estimate, folder, free, disk_verdict(estimate, free), head_rate, byte_rate, eta)


def space_population(settings: Settings, size: int, rng: random.Random, leftovers: Leftovers | None) -> Population:
    """A crashed job's from its manifest (no COCO parse: its first GET waits for no planning), else the COCO pass's."""
    if leftovers is not None:
        population = sample_leftovers(settings, leftovers, size, rng)
        if population is not None:
            return population
    return sample_remaining(settings, size, rng)


@dataclass(frozen=True)
class SpaceVerdict:
    """What a download does before it starts: go on, go on with a warning, or refuse (exit 4)."""

    fit: Fit | None  # None: the check was turned off
    message: str  # empty when there is nothing to say
    plan: Plan | None = None

    @property
    def refuse(self) -> bool:
        return self.fit is Fit.exceeds

    @property
    def exit_code(self) -> int:
        return EXIT_DISK if self.refuse else EXIT_OK


async def space_check(
    settings: Settings,
    storage: Storage,
    sample: int = SPACE_CHECK_SAMPLE,
    seed: int | None = None,
    leftovers: Leftovers | None = None,
) -> SpaceVerdict:
    """HEAD a small random sample of the keys left; refuse when even the low end of the estimate exceeds the free space.

    ``leftovers``: what a crashed job's feed resumes from (engine.feed); the sample and the count then come
    from the manifest (plan.population.sample_leftovers) instead of a pass over the whole COCO file.
    Call it inside the run's ``async with storage``; a FatalError (credentials, bucket) propagates as from a download.
    """
    if not settings.space_check or settings.dry_run:
        return SpaceVerdict(None, "")
    population = await asyncio.to_thread(space_population, settings, sample, random.Random(seed), leftovers)
    plan = await plan_for(settings, storage, population, gets=0)
    est = plan.estimate
    need = f"about {human_bytes(est.total)} (range {human_bytes(est.low)} to {human_bytes(est.high)}, from HEADs of {est.sampled} random keys left)"
    if plan.fit is Fit.exceeds:
        return SpaceVerdict(
            plan.fit,
            f"the {est.population} images left need {need} but {plan.folder} has "
            f"{human_bytes(plan.free_bytes)} free; free some space or choose another --output "
            "(or pass --no-space-check to start anyway)",
            plan,
        )
    if plan.fit is Fit.tight:
        return SpaceVerdict(
            plan.fit,
            f"the {est.population} images left need {need} and {plan.folder} has "
            f"{human_bytes(plan.free_bytes)} free: it may not fit",
            plan,
        )
    return SpaceVerdict(plan.fit, "", plan)
