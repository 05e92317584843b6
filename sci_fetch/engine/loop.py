"""The event loop a run uses: uvloop when it is installed (``pip install 'sci-fetch[fast]'``), else asyncio's;
and a worker thread with its own loop when the caller's thread already runs one (Jupyter, Colab).

uvloop's libuv loop spends less CPU per socket event than asyncio's selector loop; with 64 downloads in
flight that is a few percent of the client's CPU per object. It stays optional: the results are the same.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the fastest loop installed."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)


class _ThreadLoop(asyncio.SelectorEventLoop):
    """A loop for a worker thread: signal handlers are kept here, since only the main thread may set them."""

    def __init__(self) -> None:
        super().__init__()
        self.handlers: dict[int, tuple[Callable[..., object], tuple[Any, ...]]] = {}

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:  # type: ignore[override]
        self.handlers[sig] = (callback, args)

    def remove_signal_handler(self, sig: int) -> bool:
        return self.handlers.pop(sig, None) is not None


def run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run`` when no loop runs; else run it in a worker thread with its own loop.

    In the thread, Ctrl-C (a notebook's "interrupt kernel") reaches the main thread as KeyboardInterrupt;
    it is handed to the run's SIGINT handler, so the run stops as the command does on SIGINT.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run(factory())
    box: dict[str, Any] = {}
    loops: list[_ThreadLoop] = []
    finished = threading.Event()

    def new_loop() -> _ThreadLoop:
        loops.append(_ThreadLoop())
        return loops[-1]

    def work() -> None:
        try:
            with asyncio.Runner(loop_factory=new_loop) as runner:
                box["value"] = runner.run(factory())
        except BaseException as exc:  # handed to the caller's thread, raised there
            box["error"] = exc
        finally:
            finished.set()

    thread = threading.Thread(target=work, name="sci-fetch-run", daemon=True)
    _wait_forwarding_sigint(thread, finished, loops)
    if "error" in box:
        raise box["error"]
    result: T = box["value"]
    return result


def _wait_forwarding_sigint(thread: threading.Thread, finished: threading.Event, loops: list[_ThreadLoop]) -> None:
    """Start ``thread`` and wait for it; a KeyboardInterrupt meanwhile goes to its loop's SIGINT handler."""

    def forward_sigint() -> bool:
        handler = loops[0].handlers.get(signal.SIGINT) if loops else None
        if handler is None:
            return False
        loops[0].call_soon_threadsafe(handler[0], *handler[1])
        return True

    started = False
    while not finished.is_set():
        # An Event, not thread.join: a KeyboardInterrupt inside join() can mark a live thread as stopped
        # (CPython 3.11's bpo-45274 handling releases the thread's own lock).
        try:
            if not started:
                started = True
                thread.start()
            finished.wait(0.2)
        except KeyboardInterrupt:
            if not forward_sigint():
                raise
    thread.join()
