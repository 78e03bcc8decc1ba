"""glue.aio.running_loop answers as asyncio.get_running_loop does, loop after loop and thread by thread."""

from __future__ import annotations

import asyncio

import pytest

from glue import aio


def _elsewhere() -> str:
    try:
        aio.running_loop()
    except RuntimeError:
        return "no loop"
    return "a loop"


async def _found() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop, str]:
    found = aio.running_loop()
    # Another thread, while this loop runs and is the one found last: it has no loop of its own.
    return found, asyncio.get_running_loop(), await asyncio.to_thread(_elsewhere)


def test_each_loop_is_found_in_its_own_thread_while_it_runs() -> None:
    for _ in range(2):  # the second loop of this thread is not the first, which has stopped
        with asyncio.Runner() as runner:
            found, running, elsewhere = runner.run(_found())
            assert found is running
            assert elsewhere == "no loop"
    with pytest.raises(RuntimeError):
        aio.running_loop()
