"""Starting attempts: claim due invocations within the concurrency bounds, run each in its own task.

The journal keeps per-key order (it hands out an ordering key's next invocation only once the one
before it is settled); the dispatcher keeps the global bound (``execution.concurrency``) and each
route's own ``concurrency``, and the in-flight gauges.

The sole daemon on a journal also takes invocations at intake (:meth:`Dispatcher.take`): routing at
intake inserts them claimed, in the event's own commit, and they start from memory once it is durable
(:meth:`Dispatcher.start_taken`). That spares each event a claim transaction and a dispatch round, the
better part of its cost at platform rates. Only what no gate, bound or order can stop is taken so (an
unordered invocation of a route without rails, rate limit, group or concurrency, while dispatch has
room and no backlog); everything else waits pending for a claim as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from glue import aio, journal, metrics, routing
from glue import settings as settings_mod
from glue.execution import gates, runner, wake

__all__ = ["GAUGE_SECONDS", "Dispatcher"]

log = structlog.get_logger(__name__)

#: How often the age of the oldest pending invocation is read from the journal.
GAUGE_SECONDS = 5.0


class Dispatcher:
    """Claims what may run now and starts it with the runner; ``wake`` is set by whatever may have
    made more runnable (routing, a settled outcome); freed capacity sets it here."""

    def __init__(
        self,
        journal_: journal.Journal,
        router: routing.Router,
        runner_: runner.Runner,
        config: settings_mod.Execution,
        *,
        owner: str,
        lease: float,
        clock: Callable[[], float],
        wake_: wake.Wake,
        gates_: gates.Gates,
    ) -> None:
        self.journal = journal_
        self.gates = gates_
        self.router = router
        self.runner = runner_
        self.config = config
        self.owner = owner
        self.lease = lease
        self.clock = clock
        self.wake = wake_
        #: Attempts running now, by invocation id, and their count per route.
        self.in_flight: dict[int, asyncio.Task[None]] = {}
        self.per_route: dict[str, int] = {}
        self._full_claim = False  # the last claim took all it could: more may be runnable
        #: Places kept for invocations taken at intake whose commit is not durable yet.
        self.taken = 0
        #: Routes whose invocations may be taken at intake (see the module).
        self._takeable = {
            r.name
            for r in router.routes
            if r.route.concurrency is None and r.route.group is None and r.route.rate_limit is None
        }
        self._last_gauge = 0.0
        self._last_rails: float | None = None
        self._rate_waits = metrics.Children(metrics.RATE_LIMIT_WAIT)
        #: Routes whose running invocations a newer one may cancel (concurrencyGroup onConflict: cancel).
        self._cancellable = {
            r.name
            for r in router.routes
            if r.route.group is not None and r.route.group.on_conflict == "cancel"
        }

    async def run(self) -> None:
        """Claim and start attempts until cancelled."""
        while True:
            try:
                await self.keep_rails()
                await self.dispatch_once()
                await self.cancel_requested()
            except journal.JournalUnavailable as exc:
                log.warning("dispatch paused: journal unavailable", error=str(exc))
                self._full_claim = False
            await self._update_gauges()
            # Claim again at once only after a full claim (more may be waiting); otherwise wait for
            # routing, freed capacity or an outcome that unblocks an ordering key (or the poll).
            if not self._full_claim or self._capacity() <= 0:
                await self.wake.sleep(self.config.poll_seconds)
            else:
                await asyncio.sleep(0)  # the journal may answer without suspending: let others run

    def _capacity(self) -> int:
        return min(self.config.concurrency - len(self.in_flight) - self.taken, self.config.batch)

    def take(self, item: journal.NewInvocation) -> journal.NewInvocation:
        """``item`` claimed here when it may start as soon as its event's commit is durable (a place
        is kept for it until :meth:`start_taken` or :meth:`untake`); else ``item`` unchanged."""
        if (
            item.state != "pending"
            or item.ordering_key is not None
            or item.rate_key is not None
            or item.shaped
            or item.route not in self._takeable
            or self._full_claim
            or len(self.in_flight) + self.taken >= self.config.concurrency
            or item.due_at > self.clock()
            or self.gates.guarded(item.route, item.handler)
        ):
            return item
        self.taken += 1
        return dataclasses.replace(item, owner=self.owner, lease_until=self.clock() + self.lease)

    def untake(self, count: int) -> None:
        """Free the places of ``count`` taken invocations that were not journaled after all."""
        self.taken -= count

    def start_taken(self, started: list[journal.Invocation], stopping: bool) -> None:
        """Start invocations taken at intake, now durably claimed here; ``stopping``: leave them
        claimed (the executor releases its claims when it stops, the next start those of a crash)."""
        self.taken -= len(started)
        if stopping:
            return
        for item in started:
            self.per_route[item.route] = self.per_route.get(item.route, 0) + 1
            self._start(item, self.runner.run(item))
        if started:
            metrics.IN_FLIGHT.set(len(self.in_flight))

    async def dispatch_once(self) -> int:
        """Claim what may run now and start it; returns how many attempts were started."""
        room = self._capacity()
        self._full_claim = False
        if room <= 0:
            return 0
        claimed = await self.journal.claim_invocations(
            self.owner, limit=room, lease=self.lease, now=self.clock(), exclude_routes=self._full_routes()
        )
        self._full_claim = len(claimed) >= room
        holds: list[journal.Hold] = []
        admitted: list[journal.Invocation] = []
        for index, item in enumerate(claimed):
            limit = self._route_limit(item.route)
            if limit is not None and self.per_route.get(item.route, 0) >= limit:
                # over this route's bound (several of its invocations came in one claim): give it back
                await self.journal.release(self.owner, now=self.clock(), ids=[item.id])
                continue
            verdict = gates.RUN
            if self.gates.guarded(item.route, item.handler):
                try:
                    verdict = await self.gates.check(item, self.runner.event_of)
                except journal.JournalUnavailable:
                    for taken in admitted:  # not started: their places are free again
                        self.per_route[taken.route] -= 1
                    await self._give_back(
                        [h.invocation_id for h in holds]
                        + [i.id for i in admitted]
                        + [i.id for i in claimed[index:]]
                    )
                    raise
            if verdict.hold is not None:
                holds.append(verdict.hold)
                continue
            self.per_route[item.route] = self.per_route.get(item.route, 0) + 1
            if verdict.approval_until is not None:
                self._start(item, self.runner.ask_approval(item, verdict.approval_until, self.journal))
            else:
                admitted.append(item)
        if holds:
            await self._hold(holds)
        try:
            ready = await self._rate_limit(admitted)  # the last gate before a run
        except BaseException:  # the journal failed: these claims run out their lease, then run
            ready = []
            raise
        finally:
            started_ids = {item.id for item in ready}
            for item in admitted:
                if item.id not in started_ids:  # waits (a token, the lease): its place is free again
                    self.per_route[item.route] -= 1
        for item in ready:
            if item.taken_by is not None:  # it runs its cancel step: not to be cancelled itself
                self.runner.cancelling[item.id] = item.taken_by
            self._start(item, self.runner.run(item))
        return len(ready)

    def _start(self, item: journal.Invocation, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (an attempt, or the plan of one awaiting approval) in its own task."""
        task = aio.running_loop().create_task(work, name=f"invocation-{item.id}")
        self.in_flight[item.id] = task
        task.add_done_callback(functools.partial(self._finished, item))

    async def _give_back(self, ids: list[int]) -> None:
        """Release claims not started when the journal failed under a gate (best effort: if the
        journal cannot take that either, their leases expire)."""
        with contextlib.suppress(journal.JournalUnavailable):
            await self.journal.release(self.owner, now=self.clock(), ids=ids)

    async def _hold(self, holds: list[journal.Hold]) -> None:
        """Hold what the gates stopped; a hold a resume overtook is given back, to be claimed again
        under the rails as they are now."""
        held = set(await self.journal.hold(self.owner, holds, now=self.clock()))
        # one line per reason and round, not per invocation: a paused flood must not flood the log
        by_reason: dict[str, list[int]] = {}
        for hold in holds:
            if hold.invocation_id in held:
                by_reason.setdefault(hold.reason, []).append(hold.invocation_id)
        for reason, ids in by_reason.items():
            log.info("held", reason=reason, invocations=ids[:20], count=len(ids))
        overtaken = [hold.invocation_id for hold in holds if hold.invocation_id not in held]
        if overtaken:
            await self.gates.refresh(force=True)
            await self.journal.release(self.owner, now=self.clock(), ids=overtaken)

    async def keep_rails(self) -> None:
        """Once per :data:`~glue.execution.gates.CACHE_SECONDS`: read the rails again, wake held
        invocations whose time has come and dead-letter approvals past their ttl."""
        now = self.clock()
        if self._last_rails is not None and now - self._last_rails < gates.CACHE_SECONDS:
            return
        self._last_rails = now
        await self.gates.refresh()
        woken = await self.journal.wake_held(now=now)
        expired = await self.journal.expire_approvals(now=now)
        if expired:
            log.warning("approval expired", invocations=expired)
        if woken:
            self._full_claim = True  # claim again at once

    async def _rate_limit(self, claimed: list[journal.Invocation]) -> list[journal.Invocation]:
        """The rate-limit gate (the last before a run): an invocation whose route has ``rateLimit``
        takes a token from its key's bucket in the journal, or goes back to pending, due when a token
        will be there, with the reason ``rate-limit``. A cancel step takes no token."""
        allowed: list[journal.Invocation] = []
        deferred: dict[int, float] = {}
        now = self.clock()
        for item in claimed:
            compiled = self.router.by_name.get(item.route)
            limit = compiled.route.rate_limit if compiled is not None else None
            if limit is None or item.taken_by is not None:
                allowed.append(item)
                continue
            key = item.rate_key or item.route
            wait = await self.journal.take_token(key, rate=limit.per_second, burst=limit.burst, now=now)
            if wait > 0:
                deferred[item.id] = now + wait
                continue
            waited = max(now - item.created_at, 0.0) if item.wait_reason == "rate-limit" else 0.0
            self._rate_waits[item.route].observe(waited)
            allowed.append(item)
        if deferred:
            await self.journal.defer(self.owner, deferred, reason="rate-limit", now=now)
            log.debug("rate limit: invocations wait for a token", count=len(deferred))
        return allowed

    async def cancel_requested(self) -> int:
        """Cancel the attempts running here that a newer invocation of their group cancels (recorded
        by whichever replica routed it: this one learns of it from the journal). Returns how many."""
        if not self._cancellable or not any(
            task_route in self._cancellable for task_route in self.per_route if self.per_route[task_route]
        ):
            return 0
        cancelled = 0
        for invocation_id, taker in (await self.journal.cancel_requested(self.owner)).items():
            task = self.in_flight.get(invocation_id)
            if (
                task is None
                or invocation_id in self.runner.cancelling
                or invocation_id not in self.runner.active
            ):
                continue  # not here, cancelled already, or not started yet (the next round sees it)
            self.runner.cancelling[invocation_id] = taker
            task.cancel()
            cancelled += 1
        return cancelled

    async def drain(self) -> None:
        """Give in-flight attempts ``drainSeconds`` to finish; cancel the rest (their claims stay
        for the executor to release)."""
        pending = list(self.in_flight.values())
        if not pending:
            return
        log.info("draining", in_flight=len(pending), timeout=self.config.drain_seconds)
        _, still = await asyncio.wait(pending, timeout=self.config.drain_seconds)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still)
            log.warning("released unfinished invocations", count=len(still))

    def _full_routes(self) -> list[str]:
        full: list[str] = []
        for route in self.router.routes:
            limit = route.route.concurrency
            if limit is not None and self.per_route.get(route.name, 0) >= limit:
                full.append(route.name)
        return full

    def _route_limit(self, name: str) -> int | None:
        route = self.router.by_name.get(name)
        return route.route.concurrency if route is not None else None

    def _finished(self, item: journal.Invocation, _: asyncio.Task[None]) -> None:
        was_full = len(self.in_flight) >= self.config.concurrency
        self.in_flight.pop(item.id, None)  # the gauge follows at the next dispatch round
        count = self.per_route[item.route]
        self.per_route[item.route] = count - 1
        limit = self._route_limit(item.route)
        if was_full or (limit is not None and count >= limit):
            self.wake.set()  # capacity freed: what waited for it may run now

    async def _update_gauges(self) -> None:
        metrics.IN_FLIGHT.set(len(self.in_flight))  # once per dispatch round, not per invocation
        now = asyncio.get_running_loop().time()
        if self._last_gauge and now - self._last_gauge < GAUGE_SECONDS:
            return
        self._last_gauge = now
        with contextlib.suppress(journal.JournalUnavailable):
            oldest = await self.journal.oldest_pending()
            metrics.OLDEST_PENDING.set(max(self.clock() - oldest, 0.0) if oldest is not None else 0.0)
            metrics.DEAD_LETTER_DEPTH.set(await self.journal.dead_letters())
            self._rail_gauges(await self.journal.waiting())
            metrics.APPROVALS_PAST_HALF_TTL.set(await self.journal.approvals_past_half(now=self.clock()))

    def _rail_gauges(self, waiting: dict[tuple[str, str, str | None], int]) -> None:
        """The rails' gauges: held by route and reason, awaiting approval, paused and open breakers."""
        held: dict[tuple[str, str], int] = {}
        awaiting = 0
        for (route, state, reason), count in waiting.items():
            if state == "held":
                key = (route, reason or "unknown")
                held[key] = held.get(key, 0) + count
            elif state == "awaiting-approval":
                awaiting += count
        metrics.INVOCATIONS_HELD.clear()
        for (route, reason), count in held.items():
            metrics.INVOCATIONS_HELD.labels(route, reason).set(count)
        metrics.INVOCATIONS_AWAITING_APPROVAL.set(awaiting)
        for compiled in self.router.routes:
            rail = self.gates.rails.get(compiled.name)
            metrics.ROUTE_PAUSED.labels(compiled.name).set(1 if self.gates.pause_of(compiled.name) else 0)
            is_open = rail is not None and rail.breaker_open_until is not None
            metrics.ROUTE_BREAKER_OPEN.labels(compiled.name).set(1 if is_open else 0)
