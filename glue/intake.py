"""The one path from a delivery to the journal, shared by every source.

decode -> (backlog bound) -> route -> journal append (group commit) -> answer. A delivery is
acknowledged only after :meth:`Intake.accept` returns: then every event in it is durably journaled,
together with its routing decision when the executor could route it at once. Any exception means
nothing of the delivery was journaled (the journal writes one delivery in one transaction).

What intake is tied to is given to its constructor (see :mod:`glue.pipeline`): the :class:`Router`
that routes events as they are journaled, the taps that copy each delivery, and tracing (when on,
each delivery is a span, and an event without a ``traceparent`` extension is journaled with the
span's, so that its attempts continue the trace; see :mod:`glue.tracing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

import orjson
import structlog

from glue import events, formats, journal, metrics

if TYPE_CHECKING:
    from glue import tracing as tracing_mod

__all__ = ["Intake", "Overloaded", "Recorder", "Router", "Routing", "Tap"]

#: The routing decided at intake of each event of a delivery (None: left pending), or None for all.
Routing = list[list[journal.NewInvocation] | None] | None

log = structlog.get_logger(__name__)

#: Called with every delivery as it arrives, beside the file recorder (the bucket archive).
Tap = Callable[[events.Delivery], None]


class Router(Protocol):
    """Routes events as intake journals them (the executor's routing loop)."""

    def route_at_intake(self, identity: str, event: events.CloudEvent) -> list[journal.NewInvocation] | None:
        """The invocations to journal with the event, or None to leave it pending."""

    def journaled(
        self, appended: list[journal.Appended], batch: list[events.CloudEvent], routing: Routing
    ) -> None:
        """A delivery was committed: what was appended, the events, their routing."""

    def not_journaled(self, routing: list[list[journal.NewInvocation] | None]) -> None:
        """A delivery routed at intake could not be journaled (nothing of it was)."""


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
    """Decodes deliveries and journals their events, within the bound of events waiting to be routed.

    ``router`` routes events as they are journaled (None: they wait pending for a routing pass);
    ``taps`` see every delivery that passed authentication; ``record`` is the file recorder's path;
    ``tracing`` (None: off, and no tracing work at all) traces each delivery.
    """

    def __init__(
        self,
        journal_: journal.Inbox,
        *,
        max_backlog: int,
        record: Path | None = None,
        backlog_refresh: float = 1.0,
        router: Router | None = None,
        taps: Sequence[Tap] = (),
        tracing: tracing_mod.Tracing | None = None,
    ) -> None:
        self.journal = journal_
        self.max_backlog = max_backlog
        self.recorder = Recorder(record) if record is not None else None
        self._backlog = 0
        self._backlog_refresh = backlog_refresh
        self._refresher: asyncio.Task[None] | None = None
        self._journaled = metrics.Children(metrics.EVENTS_JOURNALED)
        # The router's methods, looked up once: accept calls them per event and per delivery.
        self._route = router.route_at_intake if router is not None else None
        self._on_journaled = router.journaled if router is not None else None
        self._not_journaled = router.not_journaled if router is not None else None
        self._taps = tuple(taps)
        self._tracing = tracing  # None: no span, no traceparent stamped, no tracing work at all

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
        metrics.BACKLOG.set(self._backlog)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._backlog_refresh)
            await self._refresh_backlog()

    @property
    def backlog(self) -> int:
        return self._backlog

    async def accept(
        self, delivery: events.Delivery, options: formats.Options = formats.NO_OPTIONS
    ) -> list[journal.Appended]:
        """Decode and journal one delivery. Raises formats.DecodeError (4xx), Overloaded or
        journal.JournalUnavailable (503); returns once the events are committed."""
        self._keep(delivery)
        if self._tracing is not None:
            return await self._accept_traced(self._tracing, delivery, options)
        return await self._journal(delivery, formats.decode(delivery, options))

    async def accept_many(
        self, items: Sequence[tuple[events.Delivery, formats.Options]]
    ) -> list[list[journal.Appended] | Exception]:
        """:meth:`accept` for a batch of deliveries (fetched together from a bus), journaled with one
        append: one commit and one wait for the batch. Each entry of the result is what its delivery
        appended, or the exception :meth:`accept` would have raised for it (its decoder's, Overloaded,
        journal.JournalUnavailable); one delivery that cannot be decoded does not hold up the others.
        Returns once every decoded delivery is committed."""
        if self._tracing is not None:  # a span per delivery, each around its own append
            traced = await asyncio.gather(*(self.accept(*item) for item in items), return_exceptions=True)
            return [_raised(outcome) for outcome in traced]
        results: list[list[journal.Appended] | Exception] = [[] for _ in items]
        decoded: list[tuple[int, events.Delivery, list[events.CloudEvent]]] = []
        for index, (delivery, options) in enumerate(items):
            self._keep(delivery)
            try:
                batch = formats.decode(delivery, options)
            except Exception as exc:
                results[index] = exc
                continue
            if batch:  # an empty CloudEvents batch: valid, and nothing to journal
                decoded.append((index, delivery, batch))
        if not decoded:
            return results
        appends: list[tuple[events.Delivery, list[events.CloudEvent], Routing]] = []
        try:
            self._check_backlog()
            appends = [(delivery, batch, self._routing(batch)) for _, delivery, batch in decoded]
            started = time.perf_counter()
            appended = await self.journal.append_many(appends)
        except BaseException as exc:
            if self._not_journaled is not None:
                for _, _, routing in appends:
                    if routing is not None:
                        self._not_journaled(routing)
            if not isinstance(exc, Overloaded | journal.JournalUnavailable):
                raise
            for index, _, _ in decoded:
                results[index] = exc
            return results
        metrics.JOURNAL_WRITE.observe(time.perf_counter() - started)
        for (index, _, _), (delivery, batch, routing), outcome in zip(
            decoded, appends, appended, strict=True
        ):
            self._account(delivery, batch, routing, outcome)
            results[index] = outcome
        return results

    def _keep(self, delivery: events.Delivery) -> None:
        """Record the delivery and show it to the taps (before decoding: a rejected one is kept too)."""
        if self.recorder is not None:
            self.recorder.write(delivery)
        for tap in self._taps:
            tap(delivery)

    async def _accept_traced(
        self, tracing: tracing_mod.Tracing, delivery: events.Delivery, options: formats.Options
    ) -> list[journal.Appended]:
        """:meth:`accept` in the delivery's span; events without a ``traceparent`` extension get the
        span's before they are journaled, so their attempts continue this trace."""
        span = tracing.delivery(delivery.transport, delivery.endpoint, delivery.format)
        header = delivery.headers.get("traceparent")
        try:
            batch = formats.decode(delivery, options)
        except formats.DecodeError as exc:
            span.open(header)
            span.close("unsupported" if exc.status == 415 else "rejected", error=exc.reason)
            raise
        traceparent = span.open(header, [event.get_extension("traceparent") for event in batch[:1]])
        for event in batch:
            if event.get_extension("traceparent") is None:
                event.get_attributes()["traceparent"] = traceparent  # the SDK event's own attributes
        try:
            appended = await self._journal(delivery, batch)
        except (Overloaded, journal.JournalUnavailable) as exc:
            span.close("unavailable", error=str(exc))
            raise
        except BaseException as exc:
            span.close("failed", error=type(exc).__name__)
            raise
        fresh = any(item.new for item in appended) or not appended
        span.close("accepted" if fresh else "duplicate", ids=[item.id for item in appended])
        return appended

    async def _journal(
        self, delivery: events.Delivery, batch: list[events.CloudEvent]
    ) -> list[journal.Appended]:
        """Route and journal the decoded events of a delivery, within the backlog bound."""
        if not batch:  # an empty CloudEvents batch: valid, and nothing to journal
            return []
        self._check_backlog()
        routing = self._routing(batch)
        started = time.perf_counter()
        try:
            appended = await self.journal.append(delivery, batch, routing)
        except BaseException:
            if self._not_journaled is not None and routing is not None:
                self._not_journaled(routing)
            raise
        metrics.JOURNAL_WRITE.observe(time.perf_counter() - started)
        self._account(delivery, batch, routing, appended)
        return appended

    def _check_backlog(self) -> None:
        if self._backlog >= self.max_backlog:
            raise Overloaded(f"{self._backlog} events wait to be routed (bound {self.max_backlog})")

    def _routing(self, batch: list[events.CloudEvent]) -> Routing:
        """What the router decides for each event now (None: no router, all left pending)."""
        if self._route is None:
            return None
        return [self._route(events.identity(event), event) for event in batch]

    def _account(
        self,
        delivery: events.Delivery,
        batch: list[events.CloudEvent],
        routing: Routing,
        appended: list[journal.Appended],
    ) -> None:
        """Count what a committed delivery appended, and tell the router about its new events."""
        new = sum(1 for item in appended if item.new)
        if new:
            waiting = new  # the backlog: events left for the executor to route
            if routing is not None:
                waiting = sum(
                    1 for a, decided in zip(appended, routing, strict=True) if a.new and decided is None
                )
            self._backlog += waiting
            self._journaled[delivery.endpoint].inc(new)
        if self._on_journaled is not None and (new or routing is not None):
            self._on_journaled(appended, batch, routing)
        if new < len(appended):
            self._duplicates(delivery, batch, appended)

    @staticmethod
    def _duplicates(
        delivery: events.Delivery, batch: list[events.CloudEvent], appended: list[journal.Appended]
    ) -> None:
        """Count the duplicates of a delivery; one identified by a digest is logged too (it may be a
        sender's retry, or a new event whose payload equals one received within the window)."""
        for event, item in zip(batch, appended, strict=True):
            if item.new:
                continue
            if not events.is_digested(event):
                metrics.DUPLICATES.labels(delivery.endpoint, "producer").inc()
                continue
            metrics.DUPLICATES.labels(delivery.endpoint, "digest").inc()
            log.info(
                "duplicate by digest",
                endpoint=delivery.endpoint,
                first_id=item.id,
                age=round(delivery.received_at - item.first_at, 3) if item.first_at is not None else None,
                window=event.window,
            )


def _raised(outcome: list[journal.Appended] | BaseException) -> list[journal.Appended] | Exception:
    """An outcome of a traced append; a cancellation or exit is raised again, not given back."""
    if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
        raise outcome
    return outcome
