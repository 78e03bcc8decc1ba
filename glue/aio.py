"""The running event loop, found without a system call on the paths that run per event.

Python 3.11 asks the kernel for the process id (``getpid``) at every look-up of the running loop, to
tell a forked child's loop from its parent's: ``asyncio.get_running_loop`` and everything that calls
it (``asyncio.timeout``, ``asyncio.create_task``, an ``asyncio.Event``'s wait). Python 3.12 no longer
does; until 3.11 is dropped, the per-event paths ask :func:`running_loop` instead.
"""

from __future__ import annotations

import asyncio
import threading

__all__ = ["running_loop"]

_last: tuple[asyncio.AbstractEventLoop, int] | None = None  # the loop found last, and its thread


def running_loop() -> asyncio.AbstractEventLoop:
    """``asyncio.get_running_loop()``: the loop found last while it still runs in the thread it was
    found in (one loop runs in a thread at a time), else asyncio's answer. RuntimeError outside a loop."""
    global _last
    last, thread = _last, threading.get_ident()
    if last is not None and last[1] == thread and last[0].is_running():
        return last[0]
    loop = asyncio.get_running_loop()
    _last = (loop, thread)
    return loop
