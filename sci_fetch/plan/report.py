"""The plan as a person reads it (a few lines) and as a script reads it (one JSON object)."""

from __future__ import annotations

import math

from sci_fetch.observe.outputs import PlanReport
from sci_fetch.observe.units import human_bytes, human_duration
from sci_fetch.plan.check import Plan


def plan_lines(plan: Plan) -> list[str]:
    pop, probe, est = plan.population, plan.probe, plan.estimate
    lines = [
        f"images: {pop.images:,} in the COCO file; {pop.done:,} already done, {pop.known_missing:,} missing in an earlier run, "
        f"{pop.invalid:,} unusable records; {pop.remaining:,} to fetch"
    ]
    if pop.remaining == 0:
        return [*lines, "nothing left to fetch"]
    kind = "every key left" if len(pop.sample) >= pop.remaining else f"a random sample of {len(pop.sample):,} keys"
    lines.append(
        f"asked S3 about {kind}: {est.found:,} exist, {len(probe.missing):,} missing, {len(probe.errors):,} without an answer"
    )
    if probe.missing:
        lines.append(f"  a missing key: {probe.missing[0]}  (wrong bucket, variant or --key-template?)")
    if probe.errors:
        lines.append(f"  an unanswered key: {probe.errors[0]}")
    if est.mean_size is None and not est.sampled:
        return [*lines, "no sampled key got an answer: check --endpoint-url, the region and the network before a run"]
    if est.mean_size is None:
        return [*lines, "none of the sampled keys exists: check the bucket, --variant and --key-template before a run"]
    rng = (
        "exact: every key was asked"
        if est.exact
        else f"{est.confidence:.0%} range {human_bytes(est.low)} to {human_bytes(est.high)}"
    )
    lines.append(f"mean object size: {human_bytes(est.mean_size)}")
    lines.append(f"total to fetch: {human_bytes(est.total)} ({rng}) in about {est.objects:,.0f} objects")
    verdict = {
        "fits": "fits",
        "tight": "MAY NOT FIT (the range straddles the free space)",
        "exceeds": "DOES NOT FIT: a download would refuse to start (exit 4; --no-space-check overrides)",
    }[plan.fit.value]
    lines.append(f"free space at {plan.folder}: {human_bytes(plan.free_bytes)}: {verdict}")
    rates = []
    if plan.byte_rate:
        rates.append(f"{human_bytes(plan.byte_rate)}/s over {probe.get_count} parallel GETs")
    if plan.head_rate:
        rates.append(f"{plan.head_rate:,.0f} HEAD/s")
    took = human_duration(plan.eta)
    lines.append(
        f"time: {took if took.startswith('under') else 'about ' + took} at the rates measured ({', '.join(rates) or 'none'}); "
        "a long run at full concurrency is usually faster"
    )
    return lines


def plan_json(plan: Plan) -> PlanReport:
    """``plan --json``: the same figures as the lines, for scripts (docs/schema/plan-command.json)."""
    pop, probe, est = plan.population, plan.probe, plan.estimate

    def finite(x: float) -> float | None:
        return None if math.isinf(x) else round(x, 1)

    return PlanReport(
        images=pop.images,
        done=pop.done,
        known_missing=pop.known_missing,
        invalid=pop.invalid,
        remaining=pop.remaining,
        sampled=est.sampled,
        found=est.found,
        missing=len(probe.missing),
        errors=len(probe.errors),
        missing_example=probe.missing[0] if probe.missing else None,
        exact=est.exact,
        mean_size=finite(est.mean_size) if est.mean_size is not None else None,
        objects=finite(est.objects),
        total_bytes=finite(est.total),
        low_bytes=finite(est.low),
        high_bytes=finite(est.high),
        confidence=est.confidence,
        folder=str(plan.folder),
        free_bytes=plan.free_bytes,
        fit=plan.fit.value,
        head_rate=plan.head_rate,
        bytes_per_second=plan.byte_rate,
        eta_seconds=plan.eta,
        exit_code=plan.exit_code,
    )
