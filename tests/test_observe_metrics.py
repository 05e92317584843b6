"""Prometheus metrics: read from the run's figures at scrape time, one label per shard, a taken port is one line."""

from __future__ import annotations

import socket
import urllib.request
from collections import Counter

import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from sci_fetch.errors import UsageError
from sci_fetch.observe.metrics import StatsCollector, serve
from sci_fetch.observe.stats import Stats


def figures() -> Stats:
    stats = Stats(total=40, done=5, adopted=2, skipped_done=3, failed=1, missing=4, forbidden=0, invalid=2)
    stats.bytes, stats.requests, stats.in_flight = 12345, 9, 3
    stats.retries = Counter({"timeout": 1, "slowdown": 2})
    return stats


def exposition(stats: Stats) -> set[str]:
    registry = CollectorRegistry()
    registry.register(StatsCollector(lambda: stats, "2/4"))
    return {line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")}


def test_every_outcome_and_figure_is_a_sample_labelled_with_the_shard():
    lines = exposition(figures())
    for outcome, value in [("fetched", 5), ("adopted", 2), ("already_done", 3), ("failed", 1), ("missing", 4)]:
        assert f'sci_fetch_images_total{{outcome="{outcome}",shard="2/4"}} {value}.0' in lines
    assert 'sci_fetch_images_total{outcome="invalid",shard="2/4"} 2.0' in lines
    assert 'sci_fetch_bytes_total{shard="2/4"} 12345.0' in lines
    assert 'sci_fetch_requests_total{shard="2/4"} 9.0' in lines
    assert 'sci_fetch_retries_total{reason="slowdown",shard="2/4"} 2.0' in lines
    assert 'sci_fetch_retries_total{reason="timeout",shard="2/4"} 1.0' in lines
    assert 'sci_fetch_in_flight{shard="2/4"} 3.0' in lines
    assert 'sci_fetch_images_total_in_coco{shard="2/4"} 40.0' in lines


def test_figures_are_read_at_scrape_time_and_an_unknown_eta_is_minus_one():
    stats = Stats(total=None)
    assert 'sci_fetch_eta_seconds{shard="2/4"} -1.0' in exposition(stats)
    stats.done = 7
    assert 'sci_fetch_images_total{outcome="fetched",shard="2/4"} 7.0' in exposition(stats)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_endpoint_serves_the_figures_until_stopped():
    port = free_port()
    stop = serve(port, "127.0.0.1", figures, "")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
            body = answer.read().decode()
    finally:
        stop()
    assert 'sci_fetch_bytes_total{shard=""} 12345.0' in body


def test_a_port_in_use_is_one_usage_error_naming_it():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=rf"^metrics_port {port}: cannot listen on 127\.0\.0\.1:{port} \("):
            serve(port, "127.0.0.1", figures, "")
