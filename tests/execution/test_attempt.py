"""How one attempt ends under its deadline: the deadline's own expiry, a handler's own timeout and a
cancellation from outside (a drain) are told apart."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from glue import contract
from glue.execution import attempt


def _run(fn: Any, seconds: float) -> Any:
    handler = contract.Handler(name="h", fn=fn, params=contract.Params)
    ctx = contract.Context(
        route="r",
        handler="h",
        idempotency_key="k",
        attempt=1,
        dry_run=False,
        log=structlog.get_logger(),
        clients=contract.Clients(contract.Registry(), {}),
    )
    return attempt.run_attempt(handler, event=None, params=contract.Params(), ctx=ctx, seconds=seconds)


async def test_a_handler_past_its_deadline_fails_as_timed_out() -> None:
    async def slow(**_: Any) -> None:
        await asyncio.sleep(10)

    ended = await _run(slow, 0.05)
    assert (ended.outcome, ended.error) == ("failed", "timed out after 0.05 s")


async def test_a_handler_whose_own_client_times_out_fails_with_that_error() -> None:
    async def own(**_: Any) -> None:
        raise TimeoutError("upstream did not answer")

    ended = await _run(own, 5)
    assert (ended.outcome, ended.error) == ("failed", "TimeoutError: upstream did not answer")


async def test_a_handler_that_ends_in_time_is_done_and_its_deadline_never_fires() -> None:
    async def quick(**_: Any) -> None:
        await asyncio.sleep(0)

    ended = await _run(quick, 0.05)
    await asyncio.sleep(0.1)  # past the deadline: nothing cancels this task
    assert ended.outcome == "done"


async def test_a_cancellation_from_outside_passes_through() -> None:
    started = asyncio.Event()

    async def slow(**_: Any) -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(_run(slow, 5))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
