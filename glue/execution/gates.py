"""The safety rails at dispatch: before a claimed invocation's attempt starts, its route's gates decide
whether it runs now, waits ``held`` with a reason, or waits for an operator's approval.

Gates apply in this order: pause -> change window (and blackout) -> breaker -> client-down -> approval
-> budget. A gate never drops an invocation and a held one has not used an attempt: it is due again
when its gate may lift (a pause's end, the next window, the breaker's cooldown, the budget's free
room), and a resume or a closing breaker releases it at once. Rails live in the journal; each replica
reads them at most :data:`CACHE_SECONDS` old, so all obey a change within two seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import structlog

from glue import events, journal, rails, routing

__all__ = ["CACHE_SECONDS", "CLIENT_RECHECK", "ClientDown", "Gates", "Verdict"]

log = structlog.get_logger(__name__)

#: Longest a replica works from rails it read from the journal (seconds).
CACHE_SECONDS = 1.0
#: How soon an invocation held because its handler's client is down is checked again (seconds).
CLIENT_RECHECK = 2.0

#: ``client_down(handler_name)``: the name of the handler's client when it is down, else None.
ClientDown = Callable[[str], str | None]
#: Loads an invocation's event (None when it is gone: the runner then dead-letters it).
EventOf = Callable[[journal.Invocation], Awaitable[events.CloudEvent | None]]


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """What the gates decided: run (``hold`` and ``approval_until`` None), hold, or ask for approval
    (until ``approval_until``, when it expires)."""

    hold: journal.Hold | None = None
    approval_until: float | None = None


RUN = Verdict()


class Gates:
    """The gates of the router's routes over the journal's rails (cached for :data:`CACHE_SECONDS`)."""

    def __init__(
        self,
        journal_: journal.Journal,
        router: routing.Router,
        *,
        clock: Callable[[], float],
        probe_lease: float,
        client_down: ClientDown | None = None,
    ) -> None:
        self.journal = journal_
        self.router = router
        self.clock = clock
        self.probe_lease = probe_lease
        self.client_down = client_down
        self.rails: dict[str, journal.Rail] = {}
        self._read_at: float | None = None
        #: Routes a rails row may stop now (``*``: every route), as of the last refresh.
        self._stopped: set[str] = set()
        #: Routes whose attempts the breaker counts.
        self.breakers = {r.name for r in router.routes if r.route.breaker is not None}
        #: Routes with a gate other than a journal pause (those need a look at every claim).
        self._guarded = {
            r.name
            for r in router.routes
            if r.route.paused
            or r.route.budget is not None
            or r.route.breaker is not None
            or r.route.window is not None
            or r.route.blackout is not None
            or r.route.approval is not None
        }

    async def refresh(self, *, force: bool = False) -> None:
        """Read the rails again when the copy is older than :data:`CACHE_SECONDS` (or ``force``)."""
        now = self.clock()
        if not force and self._read_at is not None and now - self._read_at < CACHE_SECONDS:
            return
        self.rails = await self.journal.rails()
        self._read_at = now
        self._stopped = {
            name
            for name, rail in self.rails.items()
            if rail.paused_at(now) or rail.breaker_open_until is not None
        }

    def stale(self) -> None:
        """The rails changed here (a breaker opened): read them again at the next refresh."""
        self._read_at = None

    def guarded(self, route: str, handler: str) -> bool:
        """Whether any gate may stop an invocation of ``route`` now (else it runs without a look): for
        the common case, a route without rails, a few set lookups. A pause or breaker set elsewhere is
        seen at the next refresh (within :data:`CACHE_SECONDS`)."""
        if route in self._guarded or route in self._stopped or rails.GLOBAL in self._stopped:
            return True
        return self.client_down is not None and self.client_down(handler) is not None

    def pause_of(self, route: str) -> tuple[str | None, float] | None:
        """If ``route`` is paused now: the rails row that pauses it (None: its config) and when the
        pause ends by itself (:data:`~glue.rails.FOREVER` when it does not)."""
        now = self.clock()
        for name in (rails.GLOBAL, route):
            rail = self.rails.get(name)
            if rail is not None and rail.paused_at(now):
                return name, rail.until if rail.until is not None else rails.FOREVER
        compiled = self.router.by_name.get(route)
        if compiled is not None and compiled.route.paused:
            return None, rails.FOREVER
        return None

    async def check(self, item: journal.Invocation, event_of: EventOf) -> Verdict:
        """The verdict of ``item``'s gates, in their order (see the module docstring)."""
        compiled = self.router.by_name.get(item.route)
        if compiled is None:
            return RUN  # the runner dead-letters an invocation of a route no longer configured
        now = self.clock()
        route = compiled.route
        paused = self.pause_of(item.route)
        if paused is not None:
            return self._hold(item, "paused", paused[1], rail=paused[0])
        for verdict in (self._window(item, route, now), await self._breaker(item, route, now)):
            if verdict is not None:
                return verdict
        down = self.client_down(item.handler) if self.client_down is not None else None
        if down is not None:
            return self._hold(item, "client-down", now + CLIENT_RECHECK)
        if (route.approval is not None and item.approved_by is None) or route.budget is not None:
            event = await event_of(item)
            if event is None:
                return RUN
            if route.approval is not None and item.approved_by is None and compiled.needs_approval(event):
                return Verdict(approval_until=now + route.approval.ttl)
            if route.budget is not None:
                return await self._budget(item, compiled, event, now)
        return RUN

    def _hold(
        self, item: journal.Invocation, reason: str, due_at: float, *, rail: str | None = None
    ) -> Verdict:
        return Verdict(hold=journal.Hold(item.id, reason, due_at, rail))

    def _window(self, item: journal.Invocation, route: routing.Route, now: float) -> Verdict | None:
        if route.window is not None and route.window.open_at(now) is None:
            return self._hold(item, "window", route.window.next_open(now))
        if route.blackout is not None:
            ends = route.blackout.open_at(now)
            if ends is not None:
                return self._hold(item, "window", ends)
        return None

    async def _breaker(self, item: journal.Invocation, route: routing.Route, now: float) -> Verdict | None:
        rail = self.rails.get(item.route)
        if route.breaker is None or rail is None or rail.breaker_open_until is None:
            return None
        if now < rail.breaker_open_until:
            return self._hold(item, "breaker", rail.breaker_open_until)
        if await self.journal.breaker_probe(item.route, item.id, now=now, lease=self.probe_lease):
            log.info("breaker half-open: probing", route=item.route, invocation=item.id)
            return None
        # another invocation probes; its success releases this one, its failure reopens the breaker
        return self._hold(item, "breaker", now + route.breaker.cooldown)

    async def _budget(
        self, item: journal.Invocation, compiled: routing.Compiled, event: events.CloudEvent, now: float
    ) -> Verdict:
        keys = compiled.rail_keys(event)
        budgets = [
            (f"{index} {key}", budget.max, budget.per)
            for index, (budget, key) in enumerate(zip(compiled.route.budgets, keys, strict=True))
        ]
        free_at = await self.journal.take_starts(item.route, budgets, now=now)
        if free_at is None:
            return RUN
        return self._hold(item, "budget", free_at)

    async def attempt_ended(self, item: journal.Invocation, *, failed: bool) -> None:
        """Count an attempt's end for its route's breaker (routes without one: nothing)."""
        compiled = self.router.by_name.get(item.route)
        breaker = compiled.route.breaker if compiled is not None else None
        if breaker is None:
            return
        rail = self.rails.get(item.route)
        if not failed and (rail is None or rail.breaker_open_until is None):
            return  # closed and still fine: nothing to write
        changed = await self.journal.breaker_ended(
            item.route,
            item.id,
            failed=failed,
            failures=breaker.failures,
            within=breaker.within,
            cooldown=breaker.cooldown,
            now=self.clock(),
        )
        if changed is not None:
            log.warning(f"breaker {changed}", route=item.route, invocation=item.id)
            self.stale()
