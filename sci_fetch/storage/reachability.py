"""Tells a dead endpoint or a network outage apart from bad objects, so that neither fails images.

A request that gets no answer at all (refused, DNS, TLS, connect or read timeout) says nothing about the
object it asked for. The storage layer reports each such failure here, per key:

- before any request of the run was answered, such failures on ``threshold`` distinct keys (or for
  ``startup_limit`` seconds, or on a key's last attempt) mean the endpoint is wrong or the machine is
  offline: ``UnreachableError`` stops the run at once, with one line naming the endpoint and the error;
- after that, the same streak (or a key's last attempt, with one worker) means an outage: new attempts
  wait in ``ready()``, one probe retries with backoff, and attempts lost meanwhile are given back to their
  keys. Images stay pending. The probe's first answer ends the outage; an outage longer than
  ``outage_limit`` stops the run (``UnreachableError``).

Any answer from the server, an error status included, resets the streak.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from sci_fetch.errors import FetchError, UnreachableError
from sci_fetch.observe.units import format_duration

log = logging.getLogger("sci_fetch")

Probe = Callable[[str], Awaitable[bool]]  # key -> True when the server answered anything


class Reachability:
    def __init__(
        self,
        where: str,
        probe: Probe,
        threshold: int,
        startup_limit: float = 30.0,
        outage_limit: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.where = where
        self.threshold = max(1, threshold)
        self.startup_limit = startup_limit
        self.outage_limit = outage_limit
        self._probe = probe
        self._clock = clock
        self.answered = False  # has any request of this run been answered?
        self._streak: set[str] = set()  # distinct keys that got no answer since the last answer
        self._first_failure: float | None = None
        self.down_since: float | None = None  # wall-clock time the current outage began
        self._down_at: float | None = None  # the same on the monotonic clock
        self._up = asyncio.Event()
        self._up.set()
        self._fatal: BaseException | None = None  # UnreachableError, or a bug in the probe
        self._probe_task: asyncio.Task[None] | None = None

    @property
    def down(self) -> bool:
        return not self._up.is_set()

    def on_answer(self) -> None:
        """The server answered a request (any status): the endpoint is reachable."""
        self.answered = True
        self._streak.clear()
        self._first_failure = None

    def on_no_answer(self, key: str, exc: FetchError, last_attempt: bool = False) -> bool:
        """Record a request that got no answer. True when it belongs to an outage: the attempt is given back.
        Raises UnreachableError when the endpoint has never answered and this looks permanent."""
        if self._fatal is not None:
            raise self._fatal
        if self.down:
            return True
        now = self._clock()
        self._streak.add(key)
        if self._first_failure is None:
            self._first_failure = now
        if not self.answered:
            if len(self._streak) >= self.threshold or now - self._first_failure >= self.startup_limit or last_attempt:
                self._stop_unreachable(exc, "no request of this run got an answer")
            return False
        if len(self._streak) >= self.threshold or last_attempt:
            self._go_down(key, exc)
            return True
        return False

    async def ready(self) -> None:
        """Wait while the endpoint is down; raise when the run must stop."""
        if not self._up.is_set():
            await self._up.wait()
        if self._fatal is not None:
            raise self._fatal

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)

    # ---- internals ------------------------------------------------------------------------------------
    def _stop_unreachable(self, exc: FetchError, why: str) -> None:
        self._fatal = UnreachableError(
            exc.op,
            exc.src,
            exc.dst,
            f"the endpoint cannot be reached ({why}): {exc.err}; {self.where}: check the endpoint URL, the region, "
            "the network (proxy, VPN, DNS, firewall) and that the server is running",
        )
        self._up.set()  # wake every waiter so it sees the stop
        raise self._fatal

    def _go_down(self, key: str, exc: FetchError) -> None:
        self._down_at = self._clock()
        self.down_since = time.time()
        self._up.clear()
        log.warning(
            "the endpoint is unreachable since %s (%s); downloads pause, images stay pending, one probe "
            "retries with backoff for up to %s",
            _clock_text(self.down_since),
            exc.err,
            format_duration(self.outage_limit),
        )
        self._probe_task = asyncio.create_task(self._probe_until_up(key, exc))

    async def _probe_until_up(self, key: str, exc: FetchError) -> None:
        delay, cap = 0.5, min(30.0, max(1.0, self.outage_limit / 10))
        try:
            while True:
                await asyncio.sleep(delay)
                if await self._probe(key):
                    lasted = self._clock() - (self._down_at or 0.0)
                    log.warning(
                        "the endpoint answers again after %s unreachable; downloads resume", format_duration(lasted)
                    )
                    self.on_answer()
                    self.down_since = self._down_at = None
                    self._up.set()
                    return
                lasted = self._clock() - (self._down_at or 0.0)
                if lasted >= self.outage_limit:
                    self._fatal = UnreachableError(
                        exc.op,
                        exc.src,
                        exc.dst,
                        f"the endpoint has been unreachable since {_clock_text(self.down_since or time.time())} "
                        f"({format_duration(lasted)}, over outage_limit {format_duration(self.outage_limit)}): {exc.err}; {self.where}: "
                        "images stay pending; run the same command again when the network is back",
                    )
                    self._up.set()
                    return
                log.info(
                    "still unreachable since %s; next probe in %s",
                    _clock_text(self.down_since or 0),
                    format_duration(delay),
                )
                delay = min(delay * 2, cap)
        except asyncio.CancelledError:
            raise
        except Exception as bug:  # a bug in the probe: every waiter re-raises it, so the run stops loudly
            self._fatal = bug
            self._up.set()


def _clock_text(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))
