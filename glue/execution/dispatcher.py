"""Starting attempts: claim due invocations within the concurrency bounds, run each in its own task.

The journal keeps per-key order (it hands out an ordering key's next invocation only once the one
before it is settled); the dispatcher keeps the global bound (``execution.concurrency``) and each
route's own ``concurrency``, and the in-flight gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable

import structlog

from glue import journal, metrics, routing
from glue import settings as settings_mod
from glue.execution import runner, wake

__all__ = ["GAUGE_SECONDS", "Dispatcher"]

log = structlog.get_logger(__name__)

#: How often the age of the oldest pending invocation is read from the journal.
GAUGE_SECONDS = 5.0


class Dispatcher:
    """Claims what may run now and starts it with the runner; ``wake`` is set by whatever may have
    made more runnable (routing, a settled outcome); freed capacity sets it here."""

    def __init__(
        self,
        journal_: journal.WorkQueue,
        router: routing.Router,
        runner_: runner.Runner,
        config: settings_mod.Execution,
        *,
        owner: str,
        lease: float,
        clock: Callable[[], float],
        wake_: wake.Wake,
    ) -> None:
        self.journal = journal_
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
        self._last_gauge = 0.0
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
        return min(self.config.concurrency - len(self.in_flight), self.config.batch)

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
        admitted: list[journal.Invocation] = []
        for item in claimed:
            limit = self._route_limit(item.route)
            if limit is not None and self.per_route.get(item.route, 0) >= limit:
                # over this route's bound (several of its invocations came in one claim): give it back
                await self.journal.release(self.owner, now=self.clock(), ids=[item.id])
                continue
            self.per_route[item.route] = self.per_route.get(item.route, 0) + 1
            admitted.append(item)
        try:
            ready = await self._rate_limit(admitted)
        except BaseException:  # the journal failed: these claims run out their lease, then run
            ready = []
            raise
        finally:
            started_ids = {item.id for item in ready}
            for item in admitted:
                if item.id not in started_ids:  # waits (a token, the lease): its place is free again
                    self.per_route[item.route] -= 1
        started = 0
        for item in ready:
            if item.taken_by is not None:  # it runs its cancel step: not to be cancelled itself
                self.runner.cancelling[item.id] = item.taken_by
            task = asyncio.create_task(self.runner.run(item), name=f"invocation-{item.id}")
            self.in_flight[item.id] = task
            task.add_done_callback(functools.partial(self._finished, item))
            started += 1
        return started

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
