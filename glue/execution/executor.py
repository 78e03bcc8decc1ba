"""The executor: the daemon component that routes journaled events, runs handlers, retries and
dead-letters, built from its parts:

- :class:`~glue.execution.routing_loop.RoutingLoop`: claim pending events, evaluate the routes,
  persist one invocation per matched route (all of a batch in one transaction); and routing at
  intake, for events intake is about to journal;
- :class:`~glue.execution.dispatcher.Dispatcher`: claim due invocations within the global and
  per-route concurrency bounds (the journal keeps per-key order), start each attempt in its own task;
- :class:`~glue.execution.runner.Runner`: run one attempt under its route's timeout and classify it;
- :class:`~glue.execution.settler.Settler`: write the outcomes of finished attempts back in batches;
- :class:`~glue.execution.cache.EventCache`: routed events kept parsed for their first attempts.

A handler exception never escapes; only cancellation passes through. On stop no new work is claimed,
in-flight attempts get ``execution.drainSeconds`` to finish, and the rest are cancelled and released
for another attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from glue import contract, enrich, journal, metrics, rails, routing
from glue import settings as settings_mod
from glue.execution import cache, dispatcher, gates, routing_loop, runner, settler, wake

if TYPE_CHECKING:
    from glue import tracing as tracing_mod

__all__ = ["Executor", "default_owner"]

log = structlog.get_logger(__name__)


def default_owner() -> str:
    """The name this process claims work under unless ``execution.owner`` is set: in a pod, the pod's
    name (stable across restarts of its container, so a restarted replica takes its own claims back
    at once); elsewhere host and pid."""
    if "KUBERNETES_SERVICE_HOST" in os.environ:
        return os.environ.get("POD_NAME") or socket.gethostname()
    return f"{socket.gethostname()}:{os.getpid()}"


class Executor:
    """Routes and runs journaled events. ``clock`` gives wall time (persisted due times).

    ``routing_loop`` is what intake calls to route events as it journals them; ``on_dead_letter`` is
    called with a record of every dead-lettered invocation."""

    name = "executor"

    def __init__(
        self,
        journal_: journal.Journal,
        router: routing.Router,
        clients: contract.Clients,
        config: settings_mod.Execution | None = None,
        *,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        options: Mapping[str, Any] | None = None,
        enricher: enrich.Enricher | None = None,
        on_dead_letter: runner.DeadLetterTap | None = None,
        keep_seconds: float = cache.KEEP_SECONDS,
        sole: bool = False,
        tracing: tracing_mod.Tracing | None = None,
        client_down: gates.ClientDown | None = None,
    ) -> None:
        config = config if config is not None else settings_mod.Execution()
        self.journal = journal_
        self.config = config
        self.clock = clock
        self.owner = config.owner or default_owner()
        self.dry_run = dry_run or config.dry_run
        #: The only daemon on this journal (SQLite): at start every claim left is a dead predecessor's.
        self.sole = sole
        longest = max((route.route.delivery.timeout for route in router.routes), default=0.0)
        self.lease = max(config.lease_seconds, longest + 10.0)
        self._longest = max(router.routes, key=lambda r: r.route.delivery.timeout, default=None)
        #: Routes whose handler has nothing to reach (its first client, e.g. the cluster, is not
        #: configured): they run in dry-run and log plans, so a laptop replays without a cluster.
        self.unconfigured: dict[str, str] = {}
        for compiled in router.routes:
            needs = compiled.handler.clients[:1]
            if needs and not clients.configured(needs[0]):
                self.unconfigured[compiled.route.name] = needs[0]
        dispatch_wake = wake.Wake()
        self.event_cache = cache.EventCache(
            4 * config.batch + config.concurrency, batch=config.batch, keep_seconds=keep_seconds
        )
        self.settler = settler.Settler(
            journal_, self.owner, clock=clock, poll_seconds=config.poll_seconds, unblocked=dispatch_wake
        )
        self.gates = gates.Gates(
            journal_, router, clock=clock, probe_lease=self.lease, client_down=client_down
        )
        self.runner = runner.Runner(
            journal_,
            router,
            clients,
            event_cache=self.event_cache,
            outcomes=self.settler,
            clock=clock,
            rng=rng if rng is not None else random.Random(),
            dry_run=self.dry_run,
            unconfigured=self.unconfigured,
            options=options or {},
            on_dead_letter=on_dead_letter,
            tracing=tracing,
            gates_=self.gates,
        )
        self.dispatcher = dispatcher.Dispatcher(
            journal_,
            router,
            self.runner,
            config,
            owner=self.owner,
            lease=self.lease,
            clock=clock,
            wake_=dispatch_wake,
            gates_=self.gates,
        )
        self.routing_loop = routing_loop.RoutingLoop(
            journal_,
            router,
            config,
            event_cache=self.event_cache,
            owner=self.owner,
            lease=self.lease,
            clock=clock,
            routed=dispatch_wake,
            enricher=enricher,
            tracing=tracing,
            hand_off=self.dispatcher if sole else None,
        )
        self._loops: list[asyncio.Task[None]] = []
        self._settling: asyncio.Task[None] | None = None
        self._router = router

    def modes(self) -> dict[str, tuple[str, str]]:
        """Per route: ``("live", "")`` or ``("dry-run", why)``, as its invocations will run."""
        found: dict[str, tuple[str, str]] = {}
        for compiled in self._router.routes:
            name = compiled.route.name
            if self.dry_run:
                found[name] = ("dry-run", "execution.dryRun (glue run --dry-run)")
            elif compiled.route.dry_run:
                found[name] = ("dry-run", "the route sets dryRun: true")
            elif name in self.unconfigured:
                found[name] = ("dry-run", f"client {self.unconfigured[name]} is not configured")
            else:
                found[name] = ("live", "")
        return found

    async def start(self) -> None:
        """Take back this owner's claims left by a previous run, then start the loops."""
        released = await self.journal.release(None if self.sole else self.owner, now=self.clock())
        # Held for a pause: looked at again under the rails and config as they are now (a route
        # paused by its config and no longer is, or a pause lifted while no daemon ran).
        await self.journal.release_held(rails.GLOBAL, "paused", now=self.clock())
        if released:
            owner = "any (the only daemon on this journal)" if self.sole else self.owner
            log.info("released stale claims", owner=owner, invocations=released)
        self.routing_loop.stopping = False
        for route, client in sorted(self.unconfigured.items()):
            log.warning("route runs in dry-run: its client is not configured", route=route, client=client)
        if self.lease > self.config.lease_seconds and self._longest is not None:
            log.warning(
                "lease raised above execution.leaseSeconds",
                configured=self.config.lease_seconds,
                lease=self.lease,
                reason=f"route {self._longest.route.name} has a timeout of "
                f"{self._longest.route.delivery.timeout:g} s (a claim lasts the longest timeout + 10 s)",
            )
        for route, (mode, why) in self.modes().items():
            log.info("route", route=route, mode=mode, **({"reason": why} if why else {}))
        self._settling = asyncio.create_task(
            self._keep_running("settle", self.settler.run), name="executor-settle"
        )
        self._loops = [
            asyncio.create_task(self._keep_running("route", self.routing_loop.run), name="executor-route"),
            asyncio.create_task(
                self._keep_running("dispatch", self.dispatcher.run), name="executor-dispatch"
            ),
        ]

    async def _keep_running(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one of the executor's loops until cancelled. An error the loop does not expect is logged
        and the loop starts again after a poll: a dead loop would stop routing, dispatch or settling
        for the rest of the process's life, and leave running invocations unsettled at drain."""
        while True:
            try:
                await loop()
            except Exception:
                log.exception("executor loop failed, restarting it", loop=name)
                await asyncio.sleep(self.config.poll_seconds)

    def wake(self) -> None:
        """New events were journaled: route them now rather than at the next poll."""
        self.routing_loop.wake.set()

    async def stop(self) -> None:
        """Drain: no new claims; in-flight attempts finish within drainSeconds or are released."""
        self.routing_loop.stopping = True
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops = []
        await self.dispatcher.drain()
        if self._settling is not None:
            self._settling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._settling
            self._settling = None
        await self.settler.flush(prompt=True)
        metrics.IN_FLIGHT.set(0)
        with contextlib.suppress(journal.JournalUnavailable):
            await self.journal.release(self.owner, now=self.clock())

    async def idle(self) -> None:
        """Wait until no event is pending routing and nothing is in flight or unsettled (tests, replay)."""
        while True:
            if (
                not self.dispatcher.in_flight
                and not self.settler.pending
                and not self.settler.committing
                and await self.journal.backlog() == 0
            ):
                return
            await asyncio.sleep(self.config.poll_seconds / 10)
