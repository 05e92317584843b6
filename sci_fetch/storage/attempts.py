"""One key's attempts under the retry policy and the outage gate, for every Storage implementation.

S3Storage and the in-memory FakeStorage run their requests through the same loop, so what the engine's unit
tests see of retries, attempt counts and outages is what a real run does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from sci_fetch.errors import FetchError, TransientError
from sci_fetch.storage.options import StorageOptions
from sci_fetch.storage.reachability import Reachability
from sci_fetch.storage.retry import Budget, retrying

T = TypeVar("T")


class Pacer(Protocol):
    """What paces a storage's requests (S3Storage: the bucket's region found, then a slot of the run's adaptive
    request rate); a storage without one sends at once."""

    async def before(self) -> float:
        """Wait until this attempt may be sent; returns when it was sent (what a SlowDown cut is measured from)."""
        ...

    def throttled(self, sent: float) -> None:
        """The attempt sent at ``sent`` was answered SlowDown: the run's rate is cut."""
        ...


async def with_retries(
    key: str,
    once: Callable[[], Awaitable[T]],
    options: StorageOptions,
    gate: Reachability,
    on_retry: Callable[[str], None],
    pacer: Pacer | None = None,
) -> tuple[T, int]:
    """Run ``once`` under the retry policy and the outage gate; returns its result and the attempts counted.
    An attempt lost to an outage is given back to the key, and one answered SlowDown does not use it up (the
    rate was cut for it instead); a FetchError carries the attempts it took."""
    budget = Budget(options.max_attempts)
    try:
        async for attempt in retrying(
            options.max_attempts, options.retry_base_delay, options.retry_max_delay, on_retry, budget
        ):
            with attempt:
                await gate.ready()
                sent = await pacer.before() if pacer is not None else 0.0
                budget.used += 1
                try:
                    return await once(), budget.counted()
                except TransientError as exc:
                    if exc.reason == "slowdown" and pacer is not None:
                        pacer.throttled(sent)
                        budget.forgive()
                    if budget.can_give_back():
                        if gate.down:  # lost to the outage (a body cut when it began, say)
                            budget.give_back()
                        elif exc.no_answer and gate.on_no_answer(key, exc, budget.last_attempt()):
                            budget.give_back()
                    raise
    except FetchError as exc:
        exc.attempts = budget.counted()
        raise
    raise AssertionError("unreachable")
