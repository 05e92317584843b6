"""Prometheus metrics, computed from the run's counters at scrape time.

A custom collector reads Stats only when Prometheus asks, so a fast run pays nothing per object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from sci_fetch.errors import UsageError
from sci_fetch.observe.stats import Stats


class StatsCollector(Collector):
    def __init__(self, stats: Callable[[], Stats], shard: str) -> None:
        self._stats = stats
        self._shard = shard

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        labels = ["shard"]
        images = CounterMetricFamily(
            "sci_fetch_images", "Images finished by this run, by outcome", labels=[*labels, "outcome"]
        )
        for outcome, value in (
            ("fetched", s.done),
            ("adopted", s.adopted),
            ("already_done", s.skipped_done),
            ("failed", s.failed),
            ("missing", s.missing),
            ("forbidden", s.forbidden),
            ("invalid", s.invalid),
        ):
            images.add_metric([self._shard, outcome], value)
        yield images
        yield _one(
            CounterMetricFamily("sci_fetch_bytes", "Bytes written by this run", labels=labels), self._shard, s.bytes
        )
        yield _one(
            CounterMetricFamily("sci_fetch_requests", "S3 requests sent, retries included", labels=labels),
            self._shard,
            s.requests,
        )
        retries = CounterMetricFamily("sci_fetch_retries", "Retries by reason", labels=[*labels, "reason"])
        for reason, value in sorted(s.retries.items()):
            retries.add_metric([self._shard, reason], value)
        yield retries
        yield _one(
            GaugeMetricFamily("sci_fetch_in_flight", "Downloads in flight", labels=labels), self._shard, s.in_flight
        )
        yield _one(
            GaugeMetricFamily(
                "sci_fetch_images_total_in_coco", "Images the COCO file names (this shard's share)", labels=labels
            ),
            self._shard,
            s.total or 0,
        )
        yield _one(
            GaugeMetricFamily("sci_fetch_images_per_second", "Average images per second this run", labels=labels),
            self._shard,
            s.images_per_second(),
        )
        yield _one(
            CounterMetricFamily("sci_fetch_slowdowns", "Throttle answers (SlowDown, 503, 429)", labels=labels),
            self._shard,
            s.slowdowns,
        )
        yield _one(
            GaugeMetricFamily(
                "sci_fetch_request_rate", "The run's adaptive request rate, req/s (-1 while unlimited)", labels=labels
            ),
            self._shard,
            s.request_rate if s.request_rate is not None else -1,
        )
        eta = s.eta_seconds()
        yield _one(
            GaugeMetricFamily("sci_fetch_eta_seconds", "Estimated seconds left (-1 when unknown)", labels=labels),
            self._shard,
            eta if eta is not None else -1,
        )


def _one(family: CounterMetricFamily | GaugeMetricFamily, shard: str, value: float) -> Metric:
    family.add_metric([shard], value)
    return family


def serve(port: int, host: str, stats: Callable[[], Stats], shard: str) -> Callable[[], None]:
    """Start the endpoint in a daemon thread; returns the function that stops it."""
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats, shard))
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise UsageError(f"metrics_port {port}: cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
    return server.shutdown
