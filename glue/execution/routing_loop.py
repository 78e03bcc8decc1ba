"""Turning journaled events into invocations: the routing pass over pending events, and routing at
intake (before the event is journaled, stored with it in one transaction).

Either way the routed event is kept parsed for its first attempts (:mod:`glue.execution.cache`) and
dispatch is woken; the invocations the sole daemon took at intake (``Dispatcher.take``) start at once
instead, with no claim. Routing runs ahead of dispatch only as far as the cache allows; while it is
full, intake leaves events pending, and they count in the backlog that bounds intake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from glue import enrich, events, journal, metrics, routing
from glue import settings as settings_mod
from glue.execution import attempt, cache, dispatcher, wake

if TYPE_CHECKING:
    from glue import tracing as tracing_mod

__all__ = ["ROUTE_WINDOW", "RoutingLoop"]

log = structlog.get_logger(__name__)

#: After new events are announced, how long routing waits for more to route them together: every
#: journal round trip costs a thread hand-off however few rows it moves, so under steady traffic
#: batching is what keeps dispatch cheap; the wait is small beside the latency budget.
ROUTE_WINDOW = 0.003


class RoutingLoop:
    """Routes events with the router: those intake journals (:meth:`route_at_intake`,
    :meth:`journaled`, called by :class:`glue.intake.Intake`) and those left pending (:meth:`run`).

    ``stopping`` is set when the executor drains: intake then leaves new events pending."""

    def __init__(
        self,
        journal_: journal.WorkQueue,
        router: routing.Router,
        config: settings_mod.Execution,
        *,
        event_cache: cache.EventCache,
        owner: str,
        lease: float,
        clock: Callable[[], float],
        routed: wake.Wake,
        enricher: enrich.Enricher | None,
        tracing: tracing_mod.Tracing | None = None,
        hand_off: dispatcher.Dispatcher | None = None,
    ) -> None:
        self.journal = journal_
        self.router = router
        self.config = config
        self.event_cache = event_cache
        self.owner = owner
        self.lease = lease
        self.clock = clock
        self.routed = routed
        self.enricher = enricher
        self.tracing = tracing  # None: enrichment makes no span
        self.hand_off = hand_off  # takes invocations at intake (the sole daemon); None: all wait pending
        self.stopping = False
        self._events_routed = metrics.Children(metrics.EVENTS_ROUTED)
        self._attempts = metrics.Children(metrics.INVOCATIONS)
        self._dead = metrics.Children(metrics.DEAD_LETTERS)
        self._shaped = {
            "coalesced": metrics.Children(metrics.COALESCED),
            "superseded": metrics.Children(metrics.SUPERSEDED),
        }
        self.wake = wake.Wake()  # new events are pending: route them now rather than at the next poll

    async def run(self) -> None:
        """Route pending events until cancelled."""
        while True:
            await self.event_cache.make_room()
            try:
                routed = await self.route_once()
            except journal.JournalUnavailable as exc:
                log.warning("routing paused: journal unavailable", error=str(exc))
                routed = 0
            if routed >= self.config.batch:
                await asyncio.sleep(0)  # more are waiting; let intake and dispatch run in between
            elif await self.wake.sleep(self.config.poll_seconds):
                await asyncio.sleep(ROUTE_WINDOW)  # events arriving together are routed together

    async def route_once(self) -> int:
        """Route one batch of pending events; returns how many were claimed."""
        now = self.clock()
        claimed = await self.journal.claim_events(
            self.owner, limit=self.config.batch, lease=self.lease, now=now
        )
        if not claimed:
            return 0
        decisions: dict[int, list[journal.NewInvocation]] = {}
        unfinished: list[int] = []
        for stored in claimed:
            try:
                event = stored.event()
                extra, failed = await self._enrich(event)
                only = None
                if failed:  # those routes wait; the others are decided now, their invocations kept
                    only = [name for name in self.router.by_name if name not in failed]
                    unfinished.append(stored.seq)
                decided = self.router.invocations(stored, now=now, event=event, extra=extra, only=only)
                decisions[stored.seq] = decided
                if failed:
                    continue  # counted, and kept for dispatch, when every route has decided
                pending = sum(1 for item in decided if item.state == "pending")
                if pending:
                    self.event_cache.keep(stored.seq, stored.id, event, pending)
            except Exception as exc:  # an event the journal holds but cannot be parsed: unmatched
                log.error("event cannot be routed", seq=stored.seq, id=stored.id, error=attempt.reason(exc))
                decisions[stored.seq] = []
            self._routed(stored.id, decisions[stored.seq])
        shaped = await self.journal.record_routing(self.owner, decisions, now=now, unfinished=unfinished)
        for route, state in shaped:
            self._shaped[state][route].inc()
        self.routed.set()
        return len(claimed)

    def _routed(self, event_id: str, decided: Sequence[journal.NewInvocation]) -> None:
        """Count one routed event; an invocation whose parameters could not be rendered is dead."""
        self._events_routed["matched" if decided else "unmatched"].inc()
        for item in decided:
            if item.state == "dead":
                log.warning(
                    "invocation dead on arrival",
                    route=item.route,
                    handler=item.handler,
                    event_id=event_id,
                    error=item.error,
                )
                self._dead[item.route].inc()
                self._attempts[item.route, item.handler, "dead"].inc()

    def route_at_intake(self, identity: str, event: events.CloudEvent) -> list[journal.NewInvocation] | None:
        """The invocations of an event about to be journaled, stored with it in one transaction, so
        no routing pass has to claim, read and parse it again. None leaves it pending for
        :meth:`route_once`: when a route reads the object store first, when routing fails (the pass
        logs why), while dispatch is behind (pending events are the backlog that bounds intake), and
        when a route coalesces or supersedes (decided in the routing pass's transaction, which sees the
        other invocations of the key)."""
        if self.router.enriched or self.stopping or len(self.event_cache.kept) > self.event_cache.limit:
            return None
        try:
            decided = self.router.invocations_of(identity, event, now=self.clock())
        except Exception:
            return None
        if self.router.shaping and any(item.shaped for item in decided):
            return None
        if self.hand_off is not None:
            return [self.hand_off.take(item) for item in decided]
        return decided

    def not_journaled(self, routing: list[list[journal.NewInvocation] | None]) -> None:
        """Intake could not journal a delivery routed at intake: free what was taken for it."""
        if self.hand_off is not None:
            self.hand_off.untake(sum(_taken(decided) for decided in routing))

    def journaled(
        self,
        appended: list[journal.Appended],
        batch: list[events.CloudEvent],
        routing: list[list[journal.NewInvocation] | None] | None,
    ) -> None:
        """Intake committed a delivery: keep its new events routed at intake for dispatch, start what
        was taken at intake (free the places of what was not journaled), wake the loops."""
        pending = routing is None
        runnable = False
        started: list[journal.Invocation] = []
        untaken = 0
        for index, item in enumerate(appended):
            decided = routing[index] if routing is not None else None
            if not item.new or decided is None or item.seq is None:
                untaken += _taken(decided)
                pending = pending or item.new
                continue
            self._routed(item.id, decided)
            # Kept for the invocations still to start: dispatch may have claimed one between the
            # commit and now (it read the event from the journal), and the cache leaves that one out.
            uses = sum(1 for new in decided if new.state == "pending")
            kept = self.event_cache.keep(item.seq, item.id, batch[index], uses)
            if not item.claimed:
                runnable = runnable or kept
                continue
            taken = [new for new in decided if new.owner is not None]
            for id_, new in zip(item.claimed, taken, strict=True):
                if id_ is None:
                    untaken += 1
                else:
                    started.append(_claimed(id_, item.seq, new))
            runnable = runnable or (kept and len(taken) < uses)
        if self.hand_off is not None and (untaken or started):
            self.hand_off.untake(untaken)
            self.hand_off.start_taken(started, self.stopping)
        if pending:
            self.wake.set()
        if runnable:
            self.routed.set()

    async def _enrich(self, event: events.CloudEvent) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """What routes with an ``enrich`` block read of the event's object ({} when none has one), and
        the routes whose read failed, with why: a temporary error of those routes for this event, not
        of the executor nor of the other routes."""
        if not self.router.enriched or self.enricher is None:
            return {}, {}
        if self.tracing is None:
            found, failed = await self.enricher.for_routes(event, self.router.enriched)
        else:
            with self.tracing.enrichment(event.get_extension("traceparent"), event.get_id()):
                found, failed = await self.enricher.for_routes(event, self.router.enriched)
        if failed:
            log.warning(
                "event not routed yet: enrichment failed",
                event_id=event.get_id(),
                routes=sorted(failed),
                error=next(iter(failed.values())),
            )
        return found, failed


def _taken(decided: Sequence[journal.NewInvocation] | None) -> int:
    """How many of an event's invocations were taken at intake."""
    return sum(1 for new in decided if new.owner is not None) if decided else 0


def _claimed(id_: int, seq: int, new: journal.NewInvocation) -> journal.Invocation:
    """An invocation taken at intake as its claim left it in the journal (running, first attempt)."""
    return journal.Invocation(
        id=id_,
        event_seq=seq,
        route=new.route,
        handler=new.handler,
        idempotency_key=new.idempotency_key,
        ordering_key=None,
        params=new.params,
        state="running",
        attempt=1,
        due_at=new.due_at,
        created_at=new.due_at,
        updated_at=new.due_at,
        last_error=None,
        owner=new.owner,
        lease_until=new.lease_until,
    )
