"""The run's adaptive request rate: cut on SlowDown once per round trip, grown back, shared by processes."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import threading
import uuid

import pytest
from fault_proxy import FaultProxy
from helpers import animl_image, random_blobs, settings_for, wait_until, write_coco
from test_reliability_support import KB, last_summary, rows, seed_parallel, tree

from sci_fetch.commands.download import download
from sci_fetch.manifest.models import State
from sci_fetch.storage.rate import BETA, HOLD, MIN_RATE, RequestRate, SharedRate, cubic_rate

# ---- the math and the shared state ------------------------------------------------------------------------


def test_the_cubic_starts_at_beta_of_the_cut_rate_comes_back_to_it_and_then_probes_above():
    w = 100.0
    k = (w * (1 - BETA) / 0.4) ** (1 / 3)
    assert cubic_rate(w, 0.0) == pytest.approx(BETA * w)
    assert cubic_rate(w, k) == pytest.approx(w)
    points = [cubic_rate(w, t / 10) for t in range(0, 100)]
    assert points == sorted(points)  # never falls between throttles
    assert cubic_rate(w, k + 5) > w


def test_no_throttle_no_limit_but_the_ceiling():
    assert SharedRate().rate(0.0) is None
    assert SharedRate(ceiling=25.0).rate(0.0) == 25.0


def test_a_throttle_cuts_the_rate_once_per_round_trip():
    shared = SharedRate()
    assert shared.throttled(sent_at=9.9, admitted=200.0, now=10.0)
    assert shared.rate(10.0) == pytest.approx(BETA * 200.0)  # from what S3 let through
    # Answers to requests that left before the cut went out at the old rate: no second cut for them,
    # nor for any answer within HOLD of the cut (a limit counted per second still remembers the overload).
    assert not shared.throttled(sent_at=9.95, admitted=200.0, now=10.01)
    assert not shared.throttled(sent_at=10.02, admitted=150.0, now=10.0 + HOLD / 2)
    assert shared.cuts == 1
    # Sent after the cut, answered after the hold, still throttled: the lower rate is still too high, cut again.
    assert shared.throttled(sent_at=10.5, admitted=60.0, now=10.0 + HOLD + 0.1)
    assert shared.cuts == 2 and shared.rate(10.0 + HOLD + 0.1) == pytest.approx(BETA * 60.0)


def test_the_rate_never_falls_below_the_floor_and_never_above_the_ceiling():
    shared = SharedRate(ceiling=50.0)
    now = 0.0
    for _ in range(40):
        now += 1.0
        shared.throttled(sent_at=now, admitted=0.0, now=now)
    assert shared.rate(now) >= MIN_RATE
    assert shared.rate(now + 1e4) == 50.0


def _child_throttles(shared: SharedRate, sent_at: float, now: float) -> None:
    shared.throttled(sent_at=sent_at, admitted=80.0, now=now)


def test_the_rate_is_one_for_every_process_of_the_run():
    """A cut in one spawned process is the rate of all: the state is in shared memory, handed over at spawn."""
    shared = SharedRate(members=2)
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_child_throttles, args=(shared, 100.0, 100.5))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert shared.cuts == 1 and shared.rate(100.5) == pytest.approx(BETA * 80.0)
    assert not shared.throttled(sent_at=100.2, admitted=80.0, now=100.6)  # sent before the other's cut


def test_the_processes_take_their_send_slots_from_one_clock():
    """Two members sending at once at a run rate of 40/s: together their requests leave at least 1/40 s apart,
    never two at the same instant (a lower bound only: a slow machine makes the gaps longer, never shorter)."""
    shared = SharedRate(members=2, ceiling=40.0)
    one, two = RequestRate(shared), RequestRate(shared)

    async def sends(pacer: RequestRate) -> list[float]:
        return [await pacer.wait() for _ in range(5)]

    async def both() -> list[float]:
        first, second = await asyncio.gather(sends(one), sends(two))
        return sorted(first + second)

    times = asyncio.run(both())
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 1 / 40 - 1e-3


# ---- against SeaweedFS behind a proxy that throttles above N requests/s ------------------------------------
N = 240


@pytest.fixture(scope="module")
def objects(s3, tmp_path_factory):
    project = "rte" + uuid.uuid4().hex[:6]
    blobs = random_blobs(N, seed=44, sizes=[2 * KB, 6 * KB])
    images = [animl_image(project, b, camera=f"CAM{i % 4}") for i, b in enumerate(blobs)]
    seed_parallel(s3, images, blobs)
    return write_coco(tmp_path_factory.mktemp("coco") / "coco.json", images), images, blobs


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_prefix_that_throttles_loses_no_image_and_the_rate_finds_its_limit(s3_env, objects, tmp_path, processes):
    """SlowDown above 40 req/s, lowered to 15 req/s mid-run, 32 downloads in flight: before the shared rate,
    half of all requests were SlowDown and images ended failed. Now every image is done, the SlowDown share
    stays bounded, and status.json / the summary show the rate and the count. (Speed: bench/throttle.py.)"""
    coco, images, blobs = objects
    out = tmp_path / "out"
    with FaultProxy(s3_env.endpoint_url) as proxy:
        proxy.limit_rate(40)

        def lower() -> None:
            wait_until(lambda: proxy.forwarded >= N // 3, "a third of the images fetched")
            proxy.limit_rate(15)

        lowering = threading.Thread(target=lower, daemon=True)
        lowering.start()
        settings = settings_for(
            s3_env, coco, out, endpoint_url=proxy.url, concurrency=32, processes=processes, status_interval=0.2
        )
        assert download(settings) == 0
        lowering.join(5)
        throttled, requests = proxy.injected["over-rate"], proxy.requests
    by_id = rows(settings.manifest_path)
    assert len(by_id) == N and all(r.state is State.done for r in by_id.values())
    assert tree(out) == {r["file_name"]: b for r, b in zip(images, blobs, strict=True)}
    assert throttled >= 1  # the limit was met, so the rate had something to find
    # Bounded: the opening burst (every download in flight at once, before any answer came back) and at most a
    # tenth of the rest; before the shared rate, 43-51 % of all requests were SlowDown.
    assert throttled <= 32 * int(processes) + 0.1 * requests, (throttled, requests)
    summary = last_summary(settings)
    assert summary["slowdowns"] == throttled and summary["request_rate"] is not None
    status = json.loads(settings.state_file("status", "json").read_text())
    assert status["slowdowns"] == throttled and status["request_rate"] is not None


def test_the_rate_and_the_slowdowns_reach_the_line_the_summary_and_the_metrics():
    from prometheus_client import CollectorRegistry, generate_latest

    from sci_fetch.observe.metrics import StatsCollector
    from sci_fetch.observe.stats import Stats

    one, two = Stats(request_rate=37.84, slowdowns=3), Stats(request_rate=37.84, slowdowns=4)
    run = Stats()
    run.absorb([one, two])  # two processes of one run: one shared rate, their SlowDowns added
    assert run.request_rate == 37.84 and run.slowdowns == 7
    assert "request rate 38 req/s, slowdowns 7" in run.line()
    assert run.as_dict()["request_rate"] == 37.8 and run.as_dict()["slowdowns"] == 7
    assert "request rate unlimited, slowdowns 0" in Stats().line()
    registry = CollectorRegistry()
    registry.register(StatsCollector(lambda: run, "0"))
    text = generate_latest(registry).decode()
    assert 'sci_fetch_slowdowns_total{shard="0"} 7.0' in text
    assert 'sci_fetch_request_rate{shard="0"} 37.84' in text
