"""The signal one part of the executor gives another: work may be waiting for you."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Wake"]


class Wake(asyncio.Event):
    """An event a loop sleeps on between rounds; any part that makes work for it sets it."""

    async def sleep(self, seconds: float) -> bool:
        """Wait until set (True) or for ``seconds`` (False), and clear it for the next round."""
        woken = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                woken = await self.wait()
        self.clear()
        return woken
