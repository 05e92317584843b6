"""This run's counters, and the figures people read off them (rates, ETA).

A value type at the bottom of the layers: the engine fills it, observe/ and manifest/report.py read it, so
none of them imports the engine.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sci_fetch.observe.units import format_duration


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    total: int | None = None  # images in the COCO file, once counted
    planned: int = 0  # valid records seen so far
    to_fetch: int = 0  # of those, handed to the workers
    skipped_done: int = 0
    skipped_missing: int = 0
    duplicates: int = 0
    invalid: int = 0
    done: int = 0
    adopted: int = 0
    failed: int = 0
    missing: int = 0
    forbidden: int = 0
    bytes: int = 0
    in_flight: int = 0
    requests: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    unreachable_since: float | None = None  # wall-clock start of the current outage, while there is one
    request_rate: float | None = None  # the run's adaptive request rate (storage.rate), req/s; None: not limited
    slowdowns: int = 0  # throttle answers (SlowDown, 503, 429) this run got
    read_all: bool = False  # the COCO pass read its last record: planned + invalid + duplicates is the total

    def absorb(self, parts: list[Stats]) -> None:
        """Become the sum of several processes' figures (engine.processes); start time and total stay ours."""
        for name in (
            "planned",
            "to_fetch",
            "skipped_done",
            "skipped_missing",
            "duplicates",
            "invalid",
            "done",
            "adopted",
            "failed",
            "missing",
            "forbidden",
            "bytes",
            "in_flight",
            "requests",
        ):
            setattr(self, name, sum(getattr(p, name) for p in parts))
        self.retries = sum((p.retries for p in parts), Counter())
        outages = [p.unreachable_since for p in parts if p.unreachable_since is not None]
        self.unreachable_since = min(outages) if outages else None
        self.slowdowns = sum(p.slowdowns for p in parts)
        self.read_all = bool(parts) and all(p.read_all for p in parts)
        rates = [p.request_rate for p in parts if p.request_rate is not None]
        self.request_rate = max(rates) if rates else None  # one run-wide rate, shared: every process sees it

    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def finished(self) -> int:
        return self.done + self.adopted + self.failed + self.missing + self.forbidden

    def with_unread(self, counts: dict[str, int]) -> dict[str, int]:
        """The manifest's counts of this run plus the images never read from the COCO file (a stopped run),
        as pending: done + failed + missing + forbidden + pending + invalid + duplicates = the images it names."""
        if self.total is None:
            return counts
        unread = max(0, self.total - sum(counts.values()) - self.invalid - self.duplicates)
        return counts | {"pending": counts.get("pending", 0) + unread}

    def images_per_second(self) -> float:
        return (self.done + self.adopted) / self.elapsed()

    def mb_per_second(self) -> float:
        return self.bytes / 1e6 / self.elapsed()

    def eta_seconds(self) -> float | None:
        """Time left for the images still to fetch, at this run's average rate."""
        if self.total is None:
            return None
        left = self.total - self.invalid - self.duplicates - self.skipped_done - self.skipped_missing - self.finished()
        rate = self.images_per_second()  # failures are not progress: a run failing fast has no ETA
        if left <= 0:
            return 0.0
        return left / rate if rate > 0 else None

    def line(self) -> str:
        """One progress line, the same figures as the bar, for logs when there is no terminal."""
        total = f"/{self.total}" if self.total is not None else ""
        eta = self.eta_seconds()
        eta_text = format_duration(eta) if eta is not None else "?"
        retries = sum(self.retries.values())
        return (
            f"images {self.skipped_done + self.done + self.adopted}{total} done ({self.skipped_done} already), "
            f"{self.images_per_second():.1f} img/s, {self.mb_per_second():.1f} MB/s, failed {self.failed}, "
            f"missing {self.missing}, forbidden {self.forbidden}, invalid {self.invalid}, retries {retries}, "
            f"in flight {self.in_flight}, {self.rate_text()}, ETA {eta_text}"
        )

    def rate_text(self) -> str:
        """The request rate and the throttle answers, for the progress line."""
        rate = f"{self.request_rate:.0f} req/s" if self.request_rate is not None else "unlimited"
        return f"request rate {rate}, slowdowns {self.slowdowns}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_records": self.total,
            "valid_records": self.planned,
            "to_fetch": self.to_fetch,
            "fetched": self.done,
            "adopted": self.adopted,
            "already_done": self.skipped_done,
            "failed": self.failed,
            "missing": self.missing,
            "forbidden": self.forbidden,
            "skipped_missing": self.skipped_missing,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "bytes": self.bytes,
            "seconds": round(self.elapsed(), 3),
            "images_per_second": round(self.images_per_second(), 2),
            "mb_per_second": round(self.mb_per_second(), 2),
            "requests": self.requests,
            "request_rate": round(self.request_rate, 1) if self.request_rate is not None else None,
            "slowdowns": self.slowdowns,
            "retries": dict(self.retries),
        }
