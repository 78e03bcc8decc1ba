"""The one path from a delivery to the journal, shared by every source.

decode -> (backlog bound) -> route -> journal append (group commit) -> answer. A delivery is
acknowledged only after :meth:`Intake.accept` returns: then every event in it is durably journaled,
together with its routing decision when the executor could route it at once. Any exception means
nothing of the delivery was journaled (the journal writes one delivery in one transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from glue import events, formats, journal, observability

Routing = list[list[journal.NewInvocation] | None] | None
Journaled = Callable[[list[journal.Appended], list[events.CloudEvent], Routing], None]


class Overloaded(Exception):
    """More events wait to be routed than the configured bound: the sender should retry later."""


class Recorder:
    """Appends every delivery that passed authentication as one replayable JSON line (no secrets)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = path.open("ab")

    def write(self, delivery: events.Delivery) -> None:
        self._file.write(orjson.dumps(delivery.to_record()) + b"\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Intake:
    def __init__(
        self,
        journal_: journal.Journal,
        *,
        max_backlog: int,
        record: Path | None = None,
        backlog_refresh: float = 1.0,
    ) -> None:
        self.journal = journal_
        self.max_backlog = max_backlog
        self.recorder = Recorder(record) if record is not None else None
        self._backlog = 0
        self._backlog_refresh = backlog_refresh
        self._refresher: asyncio.Task[None] | None = None
        self._journaled_counters: dict[str, Any] = {}
        #: Decides an event's invocations before it is journaled (the executor), or None to leave it
        #: pending for the executor's routing pass.
        self.router: Callable[[str, events.CloudEvent], list[journal.NewInvocation] | None] | None = None
        #: Called after a delivery with new events is committed, with what was appended, the events
        #: and their routing (None: left pending).
        self.on_journaled: list[Journaled] = []
        #: Called with every delivery as it arrives, beside the file recorder (the bucket archive).
        self.taps: list[Callable[[events.Delivery], None]] = []

    async def start(self) -> None:
        await self._refresh_backlog()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="intake-backlog")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self.recorder is not None:
            self.recorder.close()

    async def _refresh_backlog(self) -> None:
        try:
            self._backlog = await self.journal.backlog()
        except journal.JournalUnavailable:
            return
        observability.BACKLOG.set(self._backlog)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._backlog_refresh)
            await self._refresh_backlog()

    def _journaled(self, endpoint: str) -> Any:
        counter = self._journaled_counters.get(endpoint)
        if counter is None:
            counter = self._journaled_counters[endpoint] = observability.EVENTS_JOURNALED.labels(endpoint)
        return counter

    @property
    def backlog(self) -> int:
        return self._backlog

    async def accept(
        self, delivery: events.Delivery, options: formats.Options = formats.NO_OPTIONS
    ) -> list[journal.Appended]:
        """Decode and journal one delivery. Raises formats.DecodeError (4xx), Overloaded or
        journal.JournalUnavailable (503); returns once the events are committed."""
        if self.recorder is not None:
            self.recorder.write(delivery)
        for tap in self.taps:
            tap(delivery)
        batch = formats.decode(delivery, options)
        if not batch:  # an empty CloudEvents batch: valid, and nothing to journal
            return []
        if self._backlog >= self.max_backlog:
            raise Overloaded(f"{self._backlog} events wait to be routed (bound {self.max_backlog})")
        routing: Routing = None
        if self.router is not None:
            routing = [self.router(events.identity(event), event) for event in batch]
        started = time.perf_counter()
        appended = await self.journal.append(delivery, batch, routing)
        observability.JOURNAL_WRITE.observe(time.perf_counter() - started)
        new = sum(1 for item in appended if item.new)
        if new:
            waiting = new  # the backlog: events left for the executor to route
            if routing is not None:
                waiting = sum(
                    1 for a, decided in zip(appended, routing, strict=True) if a.new and decided is None
                )
            self._backlog += waiting
            self._journaled(delivery.endpoint).inc(new)
            for listener in self.on_journaled:
                listener(appended, batch, routing)
        if new < len(appended):
            observability.DUPLICATES.labels(delivery.endpoint).inc(len(appended) - new)
        return appended
