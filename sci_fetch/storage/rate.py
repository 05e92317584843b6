"""One request rate for the whole run that finds S3's limit: cut on SlowDown, grown back CUBIC-like.

S3 answers 503 SlowDown above about 5,500 GET/s per prefix, and while it repartitions one. Backing off per
request alone keeps the run above the limit (every waiting key comes back at once), so a run also keeps one
send rate, as botocore's ``adaptive`` retry mode does: unlimited until the first throttle answer, then cut to
``BETA`` times the rate S3 let through, then grown back along a cubic curve (fast at first, flat around the
rate that was throttled, then probing above it) with botocore's constants (``CubicCalculator``: beta 0.7,
scale 0.4, floor 0.5 req/s).

Why not botocore's ``ClientRateLimiter`` itself (or aiobotocore's async one):
- its state lives in one client in one process, and a run of ``--processes N`` is N clients that must share
  ONE rate (S3 counts the prefix's requests, not each process's). Here the state is five numbers in shared
  memory (``SharedRate``), created once by the run's owner and handed to every process's storage; each process
  paces its requests at the run's rate (``RequestRate``), taking its send slots from the one clock;
- it cuts from the rate being SENT (``RateClocker``) at every throttle answer. Against a limit counted per
  second, an overload (the start of a run, or a limit that drops) is answered with SlowDown for up to a second
  whatever the client does meanwhile, and those cuts compound down to the floor (tried: 240 images took 3 min
  with 39 % SlowDown). Here a cut starts from the rate S3 let THROUGH in the last second (the limit itself,
  measured), and is answered once: a throttle answer to a request sent before the last cut, or within
  ``HOLD`` seconds of it, does not cut again.

The fixed ``max_requests_per_second`` stays the ceiling (asyncio-throttle in storage.s3), split evenly between
the processes. The processes take their send slots from one clock in the shared state, so their requests
never bunch up (a prefix that allows little burst answers bunched requests with SlowDown however low the rate).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import deque
from multiprocessing.context import BaseContext
from typing import Any

BETA = 0.7  # the share of the throttled rate kept after a cut (botocore's CubicCalculator, RFC 8312's beta)
SCALE = 0.4  # how fast the cubic grows back, in requests/s per s^3 (botocore's CubicCalculator)
MIN_RATE = 0.5  # requests/s the run never goes below (botocore's floor)
HOLD = 1.0  # seconds after a cut in which further throttle answers do not cut again (S3 limits per second)

_ENABLED, _W_MAX, _T_CUT, _CUTS, _LAST = range(5)


def cubic_rate(w_max: float, since_cut: float) -> float:
    """The rate ``since_cut`` seconds after a cut from ``w_max``: ``BETA * w_max`` at the cut, ``w_max`` again after
    ``K = cbrt(w_max (1 - BETA) / SCALE)`` seconds, growing faster beyond it (CUBIC's window curve)."""
    k = (w_max * (1 - BETA) / SCALE) ** (1 / 3)
    return float(SCALE * (since_cut - k) ** 3 + w_max)


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
        self._state = ctx.RawArray("d", 5)

    def rate(self, now: float) -> float | None:
        """The run-wide rate at ``now``: None while no throttle has been seen (only the ceiling holds)."""
        with self._lock:
            enabled, w_max, t_cut = self._state[_ENABLED], self._state[_W_MAX], self._state[_T_CUT]
        if not enabled:
            return self.ceiling
        value = max(MIN_RATE, cubic_rate(w_max, now - t_cut))
        return min(value, self.ceiling) if self.ceiling else value

    def take(self, now: float) -> float:
        """Take the run's next send slot: 0 when the request may leave now (and it is recorded as sent), else the
        seconds until the next slot. One clock of slots for all processes, so two never send at the same
        instant and the run as a whole keeps its rate, however its requests are spread over the processes."""
        rate = self.rate(now)
        if not rate:
            return 0.0
        with self._lock:
            due = float(self._state[_LAST]) + 1.0 / rate
            if now < due:
                return due - now
            self._state[_LAST] = now
            return 0.0

    def throttled(self, sent_at: float, admitted: float, now: float) -> bool:
        """A throttle answer to a request sent at ``sent_at``, while S3 let ``admitted`` requests/s of the run
        through: cut the rate to ``BETA`` times that (or times the rate itself, when lower), unless the last cut
        came after that request left or less than ``HOLD`` seconds ago. True when this answer cut it."""
        with self._lock:
            enabled, w_max, t_cut = self._state[_ENABLED], self._state[_W_MAX], self._state[_T_CUT]
            if enabled and (sent_at < t_cut or now - t_cut < HOLD):
                return False
            basis = min(admitted, cubic_rate(w_max, now - t_cut)) if enabled else admitted
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
    """This process's side of a SharedRate: paces its requests, counts what S3 let through, reports throttles."""

    RECHECK = 0.1  # seconds a paced request waits at most before it looks at the rate again (it may have grown)

    def __init__(self, shared: SharedRate) -> None:
        self.shared = shared
        self.slowdowns = 0  # throttle answers this process got (summed over processes by the engine's Stats)
        self._turn = asyncio.Lock()  # one request at a time waits for its slot, in arrival order
        self._admitted: deque[float] = deque()  # when requests of the last second were answered (not throttled)
        self._first: float | None = None  # when this process sent its first request

    def current(self) -> float | None:
        """The run-wide rate now (requests/s), None while unlimited."""
        return self.shared.rate(time.monotonic())

    async def wait(self) -> float:
        """Wait for the run's next send slot; returns the send time. The slot is asked again after at most
        ``RECHECK`` seconds, so a rate that grows (or is cut by another process) applies at once."""
        async with self._turn:  # this process's waiters queue here; its first one competes for the run's slots
            while True:
                now = time.monotonic()
                wait = self.shared.take(now)
                if wait <= 0:
                    break
                await asyncio.sleep(min(wait, self.RECHECK))
        if self._first is None:
            self._first = now
        return now

    def answered(self) -> None:
        """S3 answered a request without throttling it (its head arrived): counts toward the rate it lets through."""
        now = time.monotonic()
        self._admitted.append(now)
        while now - self._admitted[0] > 1.0:
            self._admitted.popleft()

    def throttled(self, sent_at: float) -> bool:
        """A SlowDown / 503 / 429 for a request sent at ``sent_at``; True when it cut the run's rate."""
        self.slowdowns += 1
        now = time.monotonic()
        while self._admitted and now - self._admitted[0] > 1.0:
            self._admitted.popleft()
        window = min(1.0, max(now - (self._first or now), 0.05))  # a young run has seen less than a second
        admitted = len(self._admitted) / window * self.shared.members  # run-wide, from this process's share
        return self.shared.throttled(sent_at, admitted, now)
