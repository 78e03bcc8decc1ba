"""Routed events kept parsed for the first attempt of their invocations, and the backpressure it gives.

Routing (the routing pass or routing at intake) keeps each event it routed with the number of its
invocations still to start; dispatch takes it back for each first attempt instead of reading and
parsing it from the journal again. The cache is bounded: routing runs ahead of dispatch only while a
batch more fits (:meth:`EventCache.make_room`), so a backlog is parsed once, and an event kept longer
than ``keep_seconds`` (its invocation waits behind its ordering key, or another replica took it) makes
room and is read from the journal again if its invocation runs here after all.
"""

from __future__ import annotations

import collections
import dataclasses

from glue import aio, events
from glue.execution import wake

__all__ = ["KEEP_SECONDS", "EventCache", "Kept"]

#: How long a routed event is kept parsed for the first attempt of its invocations (see the module).
KEEP_SECONDS = 2.0


@dataclasses.dataclass(slots=True)
class Kept:
    """One kept event: its id and parsed form, how many of its invocations are still to start, and
    the loop time it was kept at."""

    event_id: str
    event: events.CloudEvent
    uses: int
    kept_at: float


class EventCache:
    """Parsed events by journal seq, in the order they were kept (the oldest makes room first).

    ``kept`` is read outside (routing at intake compares its size with ``limit``) but changed only
    here. ``size`` bounds it; ``limit`` (a batch less) is how full routing may leave it."""

    def __init__(self, size: int, *, batch: int, keep_seconds: float = KEEP_SECONDS) -> None:
        self.kept: dict[int, Kept] = {}
        self.size = size
        self.limit = size - batch
        self.keep_seconds = keep_seconds
        # seq -> invocations that started before intake could keep their event (read from the journal)
        self._started_unkept: collections.Counter[int] = collections.Counter()
        self._room = wake.Wake()  # a kept event was used: routing may go on

    def keep(self, seq: int, event_id: str, event: events.CloudEvent, uses: int) -> bool:
        """Keep the parsed event for its ``uses`` new invocations, less those that already started
        without it (bounded: the oldest makes room; a miss reads the journal). False when none is
        left to start."""
        uses -= self._started_unkept.pop(seq, 0)
        if uses <= 0:
            return False
        if len(self.kept) >= self.size:
            self.kept.pop(next(iter(self.kept)))
        self.kept[seq] = Kept(event_id, event, uses, aio.running_loop().time())
        return True

    def recall(self, seq: int) -> Kept | None:
        """The kept event of an invocation about to start, or None (then note :meth:`started_unkept`)."""
        kept = self.kept.get(seq)
        if kept is None:
            return None
        kept.uses -= 1
        if kept.uses <= 0:
            del self.kept[seq]
            self._room.set()
        return kept

    def started_unkept(self, seq: int) -> None:
        """An invocation of event ``seq`` started without its kept event: if intake keeps the event
        after this (it committed before, and learns the seq after), that use is already gone."""
        if len(self._started_unkept) > self.size:
            self._started_unkept.clear()
        self._started_unkept[seq] += 1

    async def make_room(self) -> None:
        """Return once a batch more fits among the kept events: wait for dispatch to use them, and
        drop those kept longer than ``keep_seconds``."""
        loop = aio.running_loop()
        while len(self.kept) > self.limit:
            seq, kept = next(iter(self.kept.items()))
            wait = kept.kept_at + self.keep_seconds - loop.time()
            if wait <= 0:
                del self.kept[seq]
                continue
            await self._room.sleep(wait)
