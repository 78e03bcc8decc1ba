"""The executor's wake-up signal: a loop sleeping between rounds wakes when work is made for it, or
after its poll, and each round starts cleared."""

from __future__ import annotations

import asyncio

import pytest

from glue.execution import wake


async def test_a_sleep_ends_when_set_and_the_next_round_starts_cleared() -> None:
    signal = wake.Wake()
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, signal.set)
    started = loop.time()
    assert await signal.sleep(10) is True
    assert loop.time() - started < 1
    assert not signal.is_set()
    assert await signal.sleep(0.02) is False, "nothing set since: the poll ends it"


async def test_set_before_the_sleep_is_not_lost() -> None:
    signal = wake.Wake()
    signal.set()
    assert await signal.sleep(10) is True
    signal.set()
    await asyncio.wait_for(signal.wait(), 1)
    assert signal.is_set(), "wait leaves it set; the sleeper clears it"


async def test_every_waiter_wakes_and_a_cancelled_one_is_forgotten() -> None:
    signal = wake.Wake()
    first = asyncio.create_task(signal.wait())
    second = asyncio.create_task(signal.sleep(10))
    gone = asyncio.create_task(signal.sleep(10))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    signal.set()
    assert list(await asyncio.wait_for(asyncio.gather(first, second), 1)) == [None, True]
