"""How close the run's adaptive request rate (sci_fetch.storage.rate) comes to a prefix's limit, and at what cost.

A local SeaweedFS behind ``tests/fault_proxy.py`` in its ``limit_rate(N)`` mode (503 SlowDown for every request
above N per second, a token bucket holding N/10), small objects so the run is request-bound, 32 downloads in
flight. For each case it samples the proxy's counters twice a second and prints, over the steady state (from
``--warmup`` seconds after the first request to the last request; for the case whose limit drops mid-run, from
``--warmup`` seconds after the drop):

- SlowDown share: answers SlowDown / requests received          target <= 2 %
- objects/s: objects let through per second, against N          target >= 90 % of N

and whether every image ended done. The targets are printed as met / not met; nothing is asserted (the tests
in tests/test_storage_rate.py check the behaviour, never the speed).

    python -m bench.throttle                       # the four cases, about 5 minutes
    python -m bench.throttle --out bench/results/2026-12-02-throttle.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fault_proxy import FaultProxy  # noqa: E402
from helpers import animl_image, random_blobs, settings_for, write_coco  # noqa: E402
from test_reliability_support import seed_parallel  # noqa: E402

from sci_fetch.commands.download import download  # noqa: E402
from sci_fetch.demo.seaweed import SeaweedS3  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    limit: float  # N, requests/s the proxy lets through
    processes: int
    seconds: float  # about how long the run should last at N (sets the number of objects)
    drop_to: float | None = None  # the limit falls to this when a third of the objects are through


@dataclass
class Result:
    case: Case
    exit_code: int = -1
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)  # (t, requests, over-rate, through)
    dropped_at: float | None = None

    def window(self, warmup: float) -> tuple[float, int, int, int]:
        """(seconds, requests, SlowDowns, objects through) of the steady state."""
        start_from = (self.dropped_at if self.dropped_at is not None else self._first()) + warmup
        active = [s for s in self.samples if s[1] > 0]
        last = max(active, key=lambda s: s[1])
        end = next(s for s in active if s[1] == last[1])  # the first sample that saw the last request
        begin = next((s for s in active if s[0] >= start_from), end)
        return end[0] - begin[0], end[1] - begin[1], end[2] - begin[2], end[3] - begin[3]

    def _first(self) -> float:
        return next(s[0] for s in self.samples if s[1] > 0)


CASES = [
    Case("N=40, 1 process", 40, 1, 75),
    Case("N=40, 2 processes", 40, 2, 75),
    Case("N=80 lowered to 20 mid-run, 2 processes", 80, 2, 75, drop_to=20),
    Case("N=200, 1 process", 200, 1, 45),
]


def run_case(s3: SeaweedS3, work: Path, case: Case, index: int) -> Result:
    """Seed the objects, run one download through the throttling proxy, and sample its counters."""
    count = int(case.limit * case.seconds if case.drop_to is None else case.limit * 5 + case.drop_to * case.seconds)
    blobs = random_blobs(count, seed=100 + index, sizes=[1500, 2500])
    images = [animl_image(f"thr{index}", b, camera=f"CAM{i % 5}") for i, b in enumerate(blobs)]
    seed_parallel(s3, images, blobs)
    coco = write_coco(work / f"coco{index}.json", images)
    result = Result(case)
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.limit_rate(case.limit)
        settings = settings_for(
            s3,
            coco,
            work / f"out{index}",
            endpoint_url=proxy.url,
            concurrency=32,
            processes=str(case.processes),
            retry_base_delay=0.5,
            retry_max_delay=20.0,
        )
        done = threading.Event()
        sampler = threading.Thread(target=_sample, args=(proxy, case, count, result, done), daemon=True)
        sampler.start()
        result.exit_code = download(settings)
        done.set()
        sampler.join(5)
    return result


def _sample(proxy: FaultProxy, case: Case, count: int, result: Result, done: threading.Event) -> None:
    started = time.monotonic()
    while not done.is_set():
        now = time.monotonic() - started
        through = proxy.forwarded
        result.samples.append((now, proxy.requests, proxy.injected["over-rate"], through))
        if case.drop_to is not None and result.dropped_at is None and through >= count // 3:
            proxy.limit_rate(case.drop_to)
            result.dropped_at = now
        time.sleep(0.5)


def report(results: list[Result], warmup: float) -> str:
    lines = [
        "| case | exit | steady window | requests | SlowDown share (≤ 2 %) | objects/s vs N (≥ 90 %) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        seconds, requests, slow, through = r.window(warmup)
        limit = r.case.drop_to or r.case.limit
        share = slow / requests if requests else 0.0
        rate = through / seconds if seconds > 0 else 0.0
        lines.append(
            f"| {r.case.name} | {r.exit_code} | {seconds:.0f} s | {requests} | {share:.1%} "
            f"({'met' if share <= 0.02 else 'not met'}) | {rate:.1f} = {rate / limit:.0%} of {limit:.0f} "
            f"({'met' if rate >= 0.9 * limit else 'not met'}) |"
        )
    for r in results:
        total_slow = r.samples[-1][2] if r.samples else 0
        total_req = r.samples[-1][1] if r.samples else 0
        lines.append(f"\n{r.case.name}: whole run {total_req} requests, {total_slow} SlowDown, exit {r.exit_code}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds left out at the start (and after a drop)")
    parser.add_argument("--cases", default="", help="indexes of the cases to run, e.g. 0,2 (default all)")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    chosen = [CASES[int(i)] for i in args.cases.split(",")] if args.cases else CASES
    work = Path(tempfile.mkdtemp(prefix="sci-fetch-throttle-"))
    s3 = SeaweedS3(work / "seaweed", buckets=["test-bucket"])
    s3.start()
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = s3.access_key, s3.secret_key
    try:
        results = []
        for index, case in enumerate(chosen):
            print(f"-- {case.name}", flush=True)
            results.append(run_case(s3, work, case, index))
    finally:
        s3.stop()
    table = report(results, args.warmup)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
