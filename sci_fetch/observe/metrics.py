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
        yield self._images(s)
        yield from (self._single(m, s) for m in _BEFORE_RETRIES)
        retries = CounterMetricFamily("sci_fetch_retries", "Retries by reason", labels=["shard", "reason"])
        for reason, value in sorted(s.retries.items()):
            retries.add_metric([self._shard, reason], value)
        yield retries
        yield from (self._single(m, s) for m in _AFTER_RETRIES)

    def _images(self, s: Stats) -> Metric:
        images = CounterMetricFamily(
            "sci_fetch_images", "Images finished by this run, by outcome", labels=["shard", "outcome"]
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
        return images

    def _single(self, metric: _Single, s: Stats) -> Metric:
        kind, name, text, value = metric
        return _one(kind(name, text, labels=["shard"]), self._shard, value(s))


def _or_minus_one(value: float | None) -> float:
    """Prometheus has no null: -1 stands for unknown / unlimited."""
    return value if value is not None else -1


_Single = tuple[type[CounterMetricFamily] | type[GaugeMetricFamily], str, str, Callable[[Stats], float]]
_BEFORE_RETRIES: tuple[_Single, ...] = (
    (CounterMetricFamily, "sci_fetch_bytes", "Bytes written by this run", lambda s: s.bytes),
    (CounterMetricFamily, "sci_fetch_requests", "S3 requests sent, retries included", lambda s: s.requests),
)
_AFTER_RETRIES: tuple[_Single, ...] = (
    (GaugeMetricFamily, "sci_fetch_in_flight", "Downloads in flight", lambda s: s.in_flight),
    (
        GaugeMetricFamily,
        "sci_fetch_images_total_in_coco",
        "Images the COCO file names (this shard's share)",
        lambda s: s.total or 0,
    ),
    (
        GaugeMetricFamily,
        "sci_fetch_images_per_second",
        "Average images per second this run",
        lambda s: s.images_per_second(),
    ),
    (CounterMetricFamily, "sci_fetch_slowdowns", "Throttle answers (SlowDown, 503, 429)", lambda s: s.slowdowns),
    (
        GaugeMetricFamily,
        "sci_fetch_request_rate",
        "The run's adaptive request rate, req/s (-1 while unlimited)",
        lambda s: _or_minus_one(s.request_rate),
    ),
    (
        GaugeMetricFamily,
        "sci_fetch_eta_seconds",
        "Estimated seconds left (-1 when unknown)",
        lambda s: _or_minus_one(s.eta_seconds()),
    ),
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
