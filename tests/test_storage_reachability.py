"""The outage gate on its own: a fake clock and a scripted probe, no server."""

from __future__ import annotations

import asyncio

import pytest

from sci_fetch.errors import TransientError, UnreachableError
from sci_fetch.storage.reachability import Reachability


def refused(key: str) -> TransientError:
    err = TransientError("get", f"s3://b/{key}", None, "EndpointConnectionError: refused", reason="connection")
    err.no_answer = True
    return err


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def never(_key: str) -> bool:
    return False


def test_never_answered_endpoint_stops_after_threshold_distinct_keys():
    gate = Reachability("bucket 'b' at http://127.0.0.1:9", never, threshold=3, clock=Clock())
    assert gate.on_no_answer("k1", refused("k1")) is False
    assert gate.on_no_answer("k1", refused("k1")) is False  # the same key again is not a new one
    assert gate.on_no_answer("k2", refused("k2")) is False
    with pytest.raises(UnreachableError) as info:
        gate.on_no_answer("k3", refused("k3"))
    text = str(info.value)
    assert (
        "cannot be reached" in text
        and "http://127.0.0.1:9" in text
        and "refused" in text
        and "check the endpoint" in text
    )


def test_never_answered_endpoint_stops_after_the_startup_limit_even_on_one_key():
    clock = Clock()
    gate = Reachability("bucket 'b'", never, threshold=8, startup_limit=30, clock=clock)
    assert gate.on_no_answer("k1", refused("k1")) is False
    clock.now = 31.0
    with pytest.raises(UnreachableError):
        gate.on_no_answer("k1", refused("k1"))


async def test_a_last_attempt_without_an_answer_stops_before_any_answer_and_is_an_outage_after():
    gate = Reachability("bucket 'b'", never, threshold=8, clock=Clock())
    with pytest.raises(UnreachableError):
        gate.on_no_answer("k1", refused("k1"), last_attempt=True)
    answered = Reachability("bucket 'b'", never, threshold=8, clock=Clock())
    answered.on_answer()
    assert answered.on_no_answer("k1", refused("k1")) is False
    assert answered.on_no_answer("k1", refused("k1"), last_attempt=True) is True  # one worker: pause, do not fail
    assert answered.down
    await answered.close()


async def test_outage_after_an_answer_pauses_until_the_probe_gets_through():
    answers = iter([False, False, True])

    async def probe(_key: str) -> bool:
        return next(answers)

    gate = Reachability("bucket 'b'", probe, threshold=2, outage_limit=600)
    gate.on_answer()
    assert gate.on_no_answer("k1", refused("k1")) is False
    assert gate.on_no_answer("k2", refused("k2")) is True  # the streak makes it an outage
    assert gate.down and gate.down_since is not None
    assert gate.on_no_answer("k3", refused("k3")) is True  # attempts during the outage are given back
    await asyncio.wait_for(gate.ready(), timeout=60)  # returns once the third probe is answered
    assert not gate.down
    await gate.close()


async def test_outage_longer_than_the_limit_stops_the_run():
    gate = Reachability("bucket 'b'", never, threshold=1, outage_limit=0.2)
    gate.on_answer()
    assert gate.on_no_answer("k1", refused("k1")) is True
    with pytest.raises(UnreachableError) as info:
        await asyncio.wait_for(gate.ready(), timeout=60)
    assert "unreachable since" in str(info.value) and "outage_limit" in str(info.value) and "pending" in str(info.value)
    await gate.close()
