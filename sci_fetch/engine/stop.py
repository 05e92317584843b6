"""How a run stops: one ``Stop`` that every part of it (workers, helpers, signal handlers) asks, the first
reason winning, and the supervision that turns a failing background task into a loud stop (exit 70)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from sci_fetch.exits import StopReason

log = logging.getLogger("sci_fetch")


class Stop:
    """The stop request of one run (or of one process of it)."""

    def __init__(self) -> None:
        self.reason: StopReason | None = None
        self.message: str | None = None
        self._event = asyncio.Event()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def request(self, reason: StopReason, message: str | None = None) -> None:
        """First reason wins: a SIGTERM during the shutdown after a fatal error leaves it reported as fatal."""
        if self.reason is None:
            self.reason = reason
            self.message = message
            if message:
                log.error(message)
        self._event.set()

    def settle(self, reason: StopReason | None, message: str | None) -> None:
        """Replace the reason once it is known better (the parent of --processes, from its children's)."""
        self.reason, self.message = reason, message


@contextmanager
def catch_signals(stop: Stop, on_signal: Callable[[str], None] | None = None) -> Iterator[None]:
    """SIGINT/SIGTERM ask ``stop`` to stop while the block runs (``on_signal(name)`` first, when given)."""
    loop = asyncio.get_running_loop()

    def handle(name: str) -> None:
        if on_signal is not None:
            on_signal(name)
        stop.request(StopReason(name))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handle, sig.name)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def supervised(name: str, work: Coroutine[Any, Any, None], stop: Stop) -> None:
    """A background task that fails stops the run loudly (exit 70) instead of ending unnoticed."""
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("internal error in the %s", name)
        stop.request(StopReason.internal, f"stopping: internal error in the {name}: {type(exc).__name__}: {exc}")


def start_supervised(stop: Stop, work: list[tuple[str, Coroutine[Any, Any, None]]]) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(supervised(name, coro, stop)) for name, coro in work]


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
