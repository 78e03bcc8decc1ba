"""The signal one part of the executor gives another: work may be waiting for you."""

from __future__ import annotations

import asyncio

from glue import aio

__all__ = ["Wake"]


class Wake:
    """A flag a loop sleeps on between rounds; any part that makes work for it sets it. Like an
    ``asyncio.Event``, on the loop :func:`glue.aio.running_loop` finds (an Event asks asyncio for it
    at every wait, and a timeout twice more: system calls in Python 3.11, several per event)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        self._set = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        """Return once set (at once when it is)."""
        if not self._set:
            await self._until(None)

    async def sleep(self, seconds: float) -> bool:
        """Wait until set (True) or for ``seconds`` (False), and clear it for the next round."""
        if not self._set:
            await self._until(seconds)
        woken, self._set = self._set, False
        return woken

    async def _until(self, seconds: float | None) -> None:
        loop = aio.running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(seconds, _end, waiter) if seconds is not None else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiters.remove(waiter)


def _end(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
