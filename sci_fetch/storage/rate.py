"""One request rate for the whole run that finds S3's limit: cut on SlowDown, grown back CUBIC-like.

S3 answers 503 SlowDown above about 5,500 GET/s per prefix, and while it repartitions one. Backing off per
request alone keeps the run above the limit (every waiting key comes back at once), so a run also keeps one
send rate, as botocore's ``adaptive`` retry mode does: unlimited until the first throttle answer, then cut to
``BETA`` times the rate that was being sent, then grown back along a cubic curve (fast at first, flat around the
rate that was throttled, then probing above it), with botocore's constants (``CubicCalculator``: beta 0.7, scale
0.4). botocore's measuring piece, ``RateClocker``, is used as it is.

Why not botocore's ``ClientRateLimiter`` itself (or aiobotocore's async one): its state lives in one client in
one process, and a run of ``--processes N`` is N clients that must share ONE rate (S3 counts the prefix's
requests, not each process's). So the state here is four numbers in shared memory (``SharedRate``), created
once by the run's owner and handed to every process's storage; each process paces its requests at its share
of it (``RequestRate``). Two more rules keep it stable:

- a cut is answered once per round trip, as TCP does: a throttle answer to a request sent before the last cut
  does not cut again (that request left at the old rate), so a burst of SlowDowns is one cut, not ten;
- the fixed ``max_requests_per_second`` stays the ceiling (asyncio-throttle in storage.s3), split evenly
  between the processes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from multiprocessing.context import BaseContext
from typing import Any

from botocore.retries.adaptive import RateClocker

BETA = 0.7  # the share of the throttled rate kept after a cut (botocore's CubicCalculator, RFC 8312's beta)
SCALE = 0.4  # how fast the cubic grows back, in requests/s per s^3 (botocore's CubicCalculator)
MIN_RATE = 0.5  # requests/s the run never goes below (botocore's floor)

_ENABLED, _W_MAX, _T_CUT, _CUTS = range(4)


def cubic_rate(w_max: float, since_cut: float) -> float:
    """The rate ``since_cut`` seconds after a cut from ``w_max``: ``BETA * w_max`` at the cut, ``w_max`` again after
    ``K = cbrt(w_max (1 - BETA) / SCALE)`` seconds, growing faster beyond it (CUBIC's window curve)."""
    k = (w_max * (1 - BETA) / SCALE) ** (1 / 3)
    return float(SCALE * (since_cut - k) ** 3 + w_max)


class _MonotonicClock:
    """RateClocker's clock: monotonic seconds, the same clock in every process of the machine."""

    def current_time(self) -> float:
        return time.monotonic()


class SharedRate:
    """The run's rate state in shared memory: whether a throttle was seen, the rate cut from, when, how often.

    Create it once where the run is owned and hand it to every process's storage (``S3Storage(..., rate=it)``);
    it pickles only while a process is spawned (multiprocessing's rule for shared memory), which is how the run
    owner passes it. ``members`` is the number of processes sharing it; ``ceiling`` the fixed cap, run-wide."""

    def __init__(self, members: int = 1, ceiling: float | None = None, context: BaseContext | None = None) -> None:
        ctx: Any = context or multiprocessing.get_context("spawn")
        self.members = max(1, members)
        self.ceiling = ceiling
        self._lock = ctx.Lock()
        self._state = ctx.RawArray("d", 4)

    def rate(self, now: float) -> float | None:
        """The run-wide rate at ``now``: None while no throttle has been seen (only the ceiling holds)."""
        with self._lock:
            enabled, w_max, t_cut = self._state[_ENABLED], self._state[_W_MAX], self._state[_T_CUT]
        if not enabled:
            return self.ceiling
        value = max(MIN_RATE, cubic_rate(w_max, now - t_cut))
        return min(value, self.ceiling) if self.ceiling else value

    def throttled(self, sent_at: float, sending: float, now: float) -> bool:
        """A throttle answer to a request sent at ``sent_at`` while the run sent ``sending`` requests/s: cut the
        rate, unless a cut came after that request left. True when this answer cut it."""
        with self._lock:
            enabled, w_max, t_cut = self._state[_ENABLED], self._state[_W_MAX], self._state[_T_CUT]
            if enabled and sent_at < t_cut:
                return False
            current = cubic_rate(w_max, now - t_cut) if enabled else sending
            basis = min(current, sending) if enabled and sending > 0 else current
            self._state[_ENABLED] = 1.0
            self._state[_W_MAX] = max(MIN_RATE, basis)
            self._state[_T_CUT] = now
            self._state[_CUTS] += 1
            return True

    @property
    def cuts(self) -> int:
        with self._lock:
            return int(self._state[_CUTS])


class RequestRate:
    """This process's share of a SharedRate: paces its requests, measures what it sends, reports throttles."""

    def __init__(self, shared: SharedRate) -> None:
        self.shared = shared
        self.slowdowns = 0  # throttle answers this process got (summed over processes by the engine's Stats)
        self._clocker = RateClocker(_MonotonicClock())
        self._next = 0.0
        self._started = time.monotonic()
        self._sent = 0

    def current(self) -> float | None:
        """The run-wide rate now (requests/s), None while unlimited."""
        return self.shared.rate(time.monotonic())

    async def wait(self) -> float:
        """Wait for this process's next slot at its share of the run's rate; returns the send time."""
        now = time.monotonic()
        rate = self.shared.rate(now)
        if rate is not None and rate > 0:
            slot = max(now, self._next)
            self._next = slot + self.shared.members / rate
            if slot > now:
                await asyncio.sleep(slot - now)
                now = time.monotonic()
        self._clocker.record()
        self._sent += 1
        return now

    def throttled(self, sent_at: float) -> bool:
        """A SlowDown / 503 / 429 for a request sent at ``sent_at``; True when it cut the run's rate."""
        self.slowdowns += 1
        now = time.monotonic()
        local = self._clocker.measured_rate or self._sent / max(now - self._started, 1e-3)
        return self.shared.throttled(sent_at, local * self.shared.members, now)
