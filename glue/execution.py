"""Workers: route journaled events, run handlers, retry, dead-letter.

The :class:`Executor` is one component of the daemon (``name``, ``start()``, ``stop()``). It runs three
loops over the journal:

- routing: claim pending events, evaluate the routes, persist one invocation per matched route (all
  of a batch in one transaction);
- dispatch: claim due invocations within the global and per-route concurrency bounds (the journal
  keeps per-key order), run each handler under its route's timeout in its own task;
- settle: write the outcomes of finished attempts back in batches.

An attempt ends in exactly one outcome: ``done``; ``retry`` at a time persisted in the journal (so a
restart resumes the schedule); ``dead`` (dead-letter queue) or ``dropped`` (the route keeps no dead
letters). A handler exception never escapes; only cancellation passes through. On stop no new work is
claimed, in-flight attempts get ``execution.drainSeconds`` to finish, and the rest are cancelled and
released for another attempt.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import math
import os
import random
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import prometheus_client
import structlog

from glue import contract, enrich, events, journal, routing
from glue import settings as settings_mod

log = structlog.get_logger(__name__)

__all__ = ["Attempt", "Executor", "backoff_delay", "plan", "run_attempt"]

INVOCATIONS = prometheus_client.Counter(
    "glue_invocations_total",
    "Handler attempts by route, handler and outcome (done, planned, retry, dead, dropped).",
    ["route", "handler", "outcome"],
)
HANDLER_DURATION = prometheus_client.Histogram(
    "glue_handler_duration_seconds",
    "Time a handler attempt took, by route and handler.",
    ["route", "handler"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
RETRIES = prometheus_client.Counter(
    "glue_invocation_retries_total", "Attempts scheduled again, by route and handler.", ["route", "handler"]
)
DEAD_LETTERS = prometheus_client.Counter(
    "glue_dead_letters_total", "Invocations moved to the dead-letter queue, by route.", ["route"]
)
EVENTS_ROUTED = prometheus_client.Counter(
    "glue_events_routed_total", "Journaled events routed, by outcome (matched, unmatched).", ["outcome"]
)
OLDEST_PENDING = prometheus_client.Gauge(
    "glue_oldest_pending_invocation_age_seconds",
    "Age of the oldest invocation not yet done (0 when none).",
)
IN_FLIGHT = prometheus_client.Gauge("glue_invocations_in_flight", "Handler attempts running now.")


_CHILDREN: dict[tuple[Any, ...], Any] = {}


def _labelled(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached: the lookup is on every dispatch's path."""
    key = (metric, *labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


#: How often the age of the oldest pending invocation is read from the journal.
GAUGE_SECONDS = 5.0

#: How long finished attempts wait to be committed together (a group commit of outcomes).
SETTLE_WINDOW = 0.005

#: After new events are announced, how long routing waits for more to route them together. Every
#: journal round trip costs a thread hand-off (~0.1 ms of CPU here) however few rows it moves, so under
#: steady traffic batching is what keeps dispatch cheap; the wait is small beside the latency budget.
ROUTE_WINDOW = 0.003

#: How long a routed event is kept parsed for the first attempt of its invocations. Routing runs ahead of
#: dispatch only as far as the kept events allow (backpressure), so a backlog is parsed once; an event kept
#: longer than this (its invocation waits behind its ordering key, or another replica took it) makes room,
#: and is read from the journal again if its invocation runs here after all.
KEEP_SECONDS = 2.0


def backoff_delay(policy: routing.Backoff, attempt: int, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    try:
        base = policy.initial * policy.multiplier ** (attempt - 1)
    except OverflowError:
        base = math.inf
    base = min(base, policy.max)
    if policy.jitter:
        base *= rng.uniform(1 - policy.jitter, 1 + policy.jitter)
    return min(base, policy.max)


class Attempt:
    """The outcome of one attempt, as :func:`run_attempt` classifies it."""

    __slots__ = ("delay", "error", "outcome", "plan")

    def __init__(
        self,
        outcome: str,
        *,
        error: str | None = None,
        delay: float | None = None,
        plan: contract.Plan | None = None,
    ) -> None:
        self.outcome = outcome  # done | planned | temporary | permanent | failed
        self.error = error
        self.delay = delay
        self.plan = plan


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_attempt(
    handler: contract.Handler,
    *,
    event: Any,
    params: contract.Params,
    ctx: contract.Context,
    seconds: float,
) -> Attempt:
    """Call the handler with ``seconds`` to finish and classify how it ended. Never raises, except
    cancellation of the caller."""
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            result = await handler.fn(event=event, params=params, ctx=ctx)
    except contract.TemporaryError as exc:
        return Attempt("temporary", error=_reason(exc), delay=exc.delay)
    except contract.PermanentError as exc:
        return Attempt("permanent", error=_reason(exc))
    except TimeoutError as exc:
        if deadline.expired():
            return Attempt("failed", error=f"timed out after {seconds:g} s")
        return Attempt("failed", error=_reason(exc))  # the handler's own client timed out
    except Exception as exc:  # any other handler failure follows the route's delivery policy
        return Attempt("failed", error=_reason(exc))
    if ctx.dry_run:
        return Attempt("planned", plan=result if isinstance(result, contract.Plan) else contract.Plan())
    return Attempt("done")


async def plan(
    compiled: routing.Compiled,
    event: Any,
    params: Mapping[str, Any],
    *,
    identity: str,
    clients: contract.Clients,
    options: Mapping[str, Any] | None = None,
) -> Attempt:
    """What the route's handler would do for ``event``: its dry-run attempt, as the live executor runs
    it for a ``dryRun`` route (same context, same idempotency key). Used by replay and explain."""
    key = journal.idempotency_key(identity, compiled.name)
    try:
        model = compiled.handler.params.model_validate(dict(params))
    except Exception as exc:  # params the handler's model rejects
        return Attempt("permanent", error=_reason(exc))
    ctx = contract.Context(
        route=compiled.name,
        handler=compiled.handler.name,
        idempotency_key=key,
        attempt=1,
        dry_run=True,
        log=log.bind(route=compiled.name, handler=compiled.handler.name, event_id=event.get_id()),
        clients=clients,
        deadline=asyncio.get_running_loop().time() + compiled.route.delivery.timeout,
        options=options or {},
    )
    return await run_attempt(
        compiled.handler, event=event, params=model, ctx=ctx, seconds=compiled.route.delivery.timeout
    )


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Executor:
    """Routes and runs journaled events. ``clock`` gives wall time (persisted due times)."""

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
    ) -> None:
        self.journal = journal_
        self.router = router
        self.clients = clients
        config = config if config is not None else settings_mod.Execution()
        self.config = config
        self.dry_run = dry_run
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.options = options or {}
        self.enricher = enricher
        #: Called with a JSON-able record of every dead-lettered invocation (the bucket archive).
        self.on_dead_letter: list[Callable[[dict[str, Any]], None]] = []
        self.owner = config.owner or default_owner()
        longest = max((route.route.delivery.timeout for route in router.routes), default=0.0)
        self.lease = max(config.lease_seconds, longest + 10.0)
        self.in_flight: dict[int, asyncio.Task[None]] = {}
        self.per_route: dict[str, int] = {}
        self._outcomes: list[journal.Outcome] = []
        # seq -> [event id, parsed event, invocations still to start, loop time kept at]
        self._events: dict[int, list[Any]] = {}
        self._events_max = 4 * config.batch + config.concurrency
        # seq -> invocations that started before intake could keep their event (read from the journal)
        self._started_unkept: collections.Counter[int] = collections.Counter()
        self.keep_seconds = KEEP_SECONDS
        self._room = asyncio.Event()  # a kept event was used: routing may go on
        self._route_wake = asyncio.Event()
        self._dispatch_wake = asyncio.Event()
        self._settle_wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._full_claim = False  # the last claim took all it could: more may be runnable
        self._unblocks = False  # an unsettled outcome may make another invocation runnable
        self._loops: list[asyncio.Task[None]] = []
        self._settler: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_gauge = 0.0
        #: Routes whose handler has nothing to reach (its first client, e.g. the cluster, is not
        #: configured): they run in dry-run and log plans, so a laptop replays without a cluster.
        self.unconfigured: dict[str, str] = {}
        for compiled in router.routes:
            needs = compiled.handler.clients[:1]
            if needs and not clients.configured(needs[0]):
                self.unconfigured[compiled.route.name] = needs[0]

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take back this owner's claims left by a previous run, then start the loops."""
        released = await self.journal.release(self.owner, now=self.clock())
        if released:
            log.info("released stale claims", owner=self.owner, invocations=released)
        self._stopping = False
        for route, client in sorted(self.unconfigured.items()):
            log.warning("route runs in dry-run: its client is not configured", route=route, client=client)
        self._settler = asyncio.create_task(self._settle_loop(), name="executor-settle")
        self._loops = [
            asyncio.create_task(self._route_loop(), name="executor-route"),
            asyncio.create_task(self._dispatch_loop(), name="executor-dispatch"),
        ]

    def wake(self) -> None:
        """New events were journaled: route them now rather than at the next poll."""
        self._route_wake.set()

    async def stop(self) -> None:
        """Drain: no new claims; in-flight attempts finish within drainSeconds or are released."""
        self._stopping = True
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops = []
        pending = list(self.in_flight.values())
        if pending:
            log.info("draining", in_flight=len(pending), timeout=self.config.drain_seconds)
            _, still = await asyncio.wait(pending, timeout=self.config.drain_seconds)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
                log.warning("released unfinished invocations", count=len(still))
        if self._settler is not None:
            self._settle_wake.set()
            self._settler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._settler
            self._settler = None
        await self._flush()
        IN_FLIGHT.set(0)
        with contextlib.suppress(journal.JournalUnavailable):
            await self.journal.release(self.owner, now=self.clock())

    async def idle(self) -> None:
        """Wait until no event is pending routing and nothing is in flight or unsettled (tests, replay)."""
        while True:
            if not self.in_flight and not self._outcomes and await self.journal.backlog() == 0:
                return
            await asyncio.sleep(self.config.poll_seconds / 10)

    # -- loops ------------------------------------------------------------------------------------

    async def _wait(self, wake: asyncio.Event, seconds: float) -> bool:
        """Wait for ``wake`` (True) or ``seconds`` (False)."""
        woken = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                woken = await wake.wait()
        wake.clear()
        return woken

    async def _route_loop(self) -> None:
        while True:
            await self._make_room()
            try:
                routed = await self.route_once()
            except journal.JournalUnavailable as exc:
                log.warning("routing paused: journal unavailable", error=str(exc))
                routed = 0
            if routed >= self.config.batch:
                await asyncio.sleep(0)  # more are waiting; let intake and dispatch run in between
            elif await self._wait(self._route_wake, self.config.poll_seconds):
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
        for stored in claimed:
            try:
                event = stored.event()
                extra = await self._enrich(event)
                if extra is None:
                    continue  # keeps its claim: routed again when the lease lapses
                decisions[stored.seq] = self.router.invocations(stored, now=now, event=event, extra=extra)
                pending = sum(1 for item in decisions[stored.seq] if item.state == "pending")
                if pending:
                    self._remember_event(stored.seq, stored.id, event, pending)
            except Exception as exc:  # an event the journal holds but cannot be parsed: unmatched
                log.error("event cannot be routed", seq=stored.seq, id=stored.id, error=_reason(exc))
                decisions[stored.seq] = []
            self._routed(stored.id, decisions[stored.seq])
        await self.journal.record_routing(self.owner, decisions, now=now)
        self._dispatch_wake.set()
        return len(claimed)

    @staticmethod
    def _routed(event_id: str, decided: Sequence[journal.NewInvocation]) -> None:
        """Count one routed event; an invocation whose parameters could not be rendered is dead."""
        _labelled(EVENTS_ROUTED, "matched" if decided else "unmatched").inc()
        for item in decided:
            if item.state == "dead":
                log.warning(
                    "invocation dead on arrival",
                    route=item.route,
                    handler=item.handler,
                    event_id=event_id,
                    error=item.error,
                )
                _labelled(DEAD_LETTERS, item.route).inc()
                _labelled(INVOCATIONS, item.route, item.handler, "dead").inc()

    def route_at_intake(self, identity: str, event: events.CloudEvent) -> list[journal.NewInvocation] | None:
        """The invocations of an event about to be journaled, stored with it in one transaction, so
        no routing pass has to claim, read and parse it again. None leaves it pending for
        :meth:`route_once`: when a route reads the object store first, when routing fails (the pass
        logs why), and while dispatch is behind (pending events are the backlog that bounds intake)."""
        if self.router.enriched or self._stopping or len(self._events) > self._events_max - self.config.batch:
            return None
        try:
            return self.router.invocations_of(identity, event, now=self.clock())
        except Exception:
            return None

    def journaled(
        self,
        appended: list[journal.Appended],
        batch: list[events.CloudEvent],
        routing: list[list[journal.NewInvocation] | None] | None,
    ) -> None:
        """Intake committed new events: keep those routed at intake for dispatch, wake the loops."""
        pending = routing is None
        runnable = False
        for index, item in enumerate(appended):
            decided = routing[index] if routing is not None else None
            if not item.new:
                continue
            if decided is None or item.seq is None:
                pending = True
                continue
            self._routed(item.id, decided)
            # Dispatch may have claimed one already (between the commit and now): it read the event.
            uses = sum(1 for new in decided if new.state == "pending") - self._started_unkept.pop(item.seq, 0)
            if uses > 0:
                runnable = True
                self._remember_event(item.seq, item.id, batch[index], uses)
        if pending:
            self._route_wake.set()
        if runnable:
            self._dispatch_wake.set()

    def _remember_event(self, seq: int, event_id: str, event: events.CloudEvent, uses: int) -> None:
        """Keep the parsed event for its ``uses`` new invocations (bounded; a miss reads the journal)."""
        if len(self._events) >= self._events_max:
            self._events.pop(next(iter(self._events)))
        self._events[seq] = [event_id, event, uses, asyncio.get_running_loop().time()]

    def _recall(self, seq: int) -> tuple[str, events.CloudEvent] | None:
        entry = self._events.get(seq)
        if entry is None:
            return None
        entry[2] -= 1
        if entry[2] <= 0:
            del self._events[seq]
            self._room.set()
        return entry[0], entry[1]

    async def _make_room(self) -> None:
        """Route ahead of dispatch only while a batch more fits among the kept events: wait for dispatch
        to use them, and drop those kept longer than ``keep_seconds``."""
        limit = self._events_max - self.config.batch
        loop = asyncio.get_running_loop()
        while len(self._events) > limit:
            seq, entry = next(iter(self._events.items()))
            wait = entry[3] + self.keep_seconds - loop.time()
            if wait <= 0:
                del self._events[seq]
                continue
            await self._wait(self._room, wait)

    async def _enrich(self, event: events.CloudEvent) -> dict[str, dict[str, Any]] | None:
        """What routes with an ``enrich`` block read of the event's object ({} when none has one);
        None when MinIO could not be asked: a temporary error of this event, not of the executor."""
        if not self.router.enriched or self.enricher is None:
            return {}
        try:
            return await self.enricher.for_routes(event, self.router.enriched)
        except enrich.EnrichmentFailed as exc:
            log.warning("event not routed yet: enrichment failed", event_id=event.get_id(), error=str(exc))
            return None

    def _full_routes(self) -> list[str]:
        full: list[str] = []
        for route in self.router.routes:
            limit = route.route.concurrency
            if limit is not None and self.per_route.get(route.name, 0) >= limit:
                full.append(route.name)
        return full

    async def _dispatch_loop(self) -> None:
        while True:
            try:
                await self.dispatch_once()
            except journal.JournalUnavailable as exc:
                log.warning("dispatch paused: journal unavailable", error=str(exc))
                self._full_claim = False
            await self._update_gauges()
            # Claim again at once only after a full claim (more may be waiting); otherwise wait for
            # routing, freed capacity or an outcome that unblocks an ordering key (or the poll).
            if not self._full_claim or self._capacity() <= 0:
                await self._wait(self._dispatch_wake, self.config.poll_seconds)
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
        started = 0
        for item in claimed:
            limit = self._route_limit(item.route)
            if limit is not None and self.per_route.get(item.route, 0) >= limit:
                # over this route's bound (several of its invocations came in one claim): give it back
                await self.journal.release(self.owner, now=self.clock(), ids=[item.id])
                continue
            self.per_route[item.route] = self.per_route.get(item.route, 0) + 1
            task = asyncio.create_task(self._run(item), name=f"invocation-{item.id}")
            self.in_flight[item.id] = task
            task.add_done_callback(functools.partial(self._finished, item))
            started += 1
        return started

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
            self._dispatch_wake.set()  # capacity freed: what waited for it may run now

    async def _update_gauges(self) -> None:
        IN_FLIGHT.set(len(self.in_flight))  # once per dispatch round, not per invocation
        now = asyncio.get_running_loop().time()
        if self._last_gauge and now - self._last_gauge < GAUGE_SECONDS:
            return
        self._last_gauge = now
        with contextlib.suppress(journal.JournalUnavailable):
            oldest = await self.journal.oldest_pending()
            OLDEST_PENDING.set(max(self.clock() - oldest, 0.0) if oldest is not None else 0.0)

    # -- settling ---------------------------------------------------------------------------------

    def _settle(self, item: journal.Invocation, outcome: journal.Outcome) -> None:
        self._outcomes.append(outcome)
        # Once committed, the next invocation of the same ordering key may run, or an immediate retry.
        if item.ordering_key is not None or (outcome.due_at is not None and outcome.due_at <= self.clock()):
            self._unblocks = True
        self._settle_wake.set()

    async def _settle_loop(self) -> None:
        while True:
            await self._settle_wake.wait()
            await asyncio.sleep(SETTLE_WINDOW)  # let outcomes that finish together share one commit
            self._settle_wake.clear()
            try:
                await self._flush()
            except journal.JournalUnavailable as exc:
                log.warning("settling paused: journal unavailable", error=str(exc))
                await asyncio.sleep(self.config.poll_seconds)
                self._settle_wake.set()

    async def _flush(self) -> None:
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        unblocks, self._unblocks = self._unblocks, False
        try:
            await self.journal.settle(self.owner, batch, now=self.clock())
        except BaseException:
            self._outcomes[:0] = batch
            self._unblocks = self._unblocks or unblocks
            raise
        if unblocks:
            self._dispatch_wake.set()

    # -- one invocation ---------------------------------------------------------------------------

    async def _run(self, item: journal.Invocation) -> None:
        """One attempt of one invocation, from claim to a queued outcome. Never raises but
        cancellation (then the claim is released by :meth:`stop`)."""
        compiled = self.router.by_name.get(item.route)
        if compiled is None:
            error = f"route {item.route!r} is no longer configured"
            self._give_up(item, error, dead_letter=True, log_=self._logger(item))
            return
        policy = compiled.route.delivery
        if item.attempt > policy.attempts:  # attempts used up by crashes (expired leases)
            error = f"{policy.attempts} attempts used up"
            self._give_up(item, error, dead_letter=policy.dead_letter, log_=self._logger(item))
            return
        try:
            cached = self._recall(item.event_seq)
            if cached is not None:
                event_id, event = cached
            else:
                if len(self._started_unkept) > self._events_max:
                    self._started_unkept.clear()
                self._started_unkept[item.event_seq] += 1
                stored = await self.journal.get(item.event_seq)
                if stored is None:
                    raise LookupError(f"event {item.event_seq} is no longer in the journal")
                event_id, event = stored.id, stored.event()
            params = compiled.handler.params.model_validate(dict(item.params))
        except journal.JournalUnavailable as exc:
            self._retry(item, policy, f"journal unavailable: {exc}", None, self._logger(item))
            return
        except Exception as exc:  # a missing event or params the handler's model now rejects
            self._give_up(item, _reason(exc), dead_letter=True, log_=self._logger(item))
            return
        bound = self._logger(item, event_id)
        dry_run = self.dry_run or compiled.route.dry_run or item.route in self.unconfigured
        ctx = contract.Context(
            route=item.route,
            handler=item.handler,
            idempotency_key=item.idempotency_key,
            attempt=item.attempt,
            dry_run=dry_run,
            log=bound,
            clients=self.clients,
            deadline=asyncio.get_running_loop().time() + policy.timeout,
            options=self.options,
        )
        started = time.perf_counter()
        try:
            attempt = await run_attempt(
                compiled.handler, event=event, params=params, ctx=ctx, seconds=policy.timeout
            )
        finally:
            _labelled(HANDLER_DURATION, item.route, item.handler).observe(time.perf_counter() - started)
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        if attempt.outcome in ("done", "planned"):
            self._settle(item, journal.Outcome(item.id, "done"))
            _labelled(INVOCATIONS, item.route, item.handler, attempt.outcome).inc()
            extra: dict[str, Any] = {}
            if attempt.plan is not None:
                extra["plan"] = attempt.plan.to_dict()
            bound.info("dispatched", outcome=attempt.outcome, duration_ms=duration_ms, **extra)
        elif attempt.outcome == "permanent":
            self._give_up(
                item,
                attempt.error or "permanent error",
                dead_letter=policy.dead_letter,
                log_=bound,
                duration_ms=duration_ms,
            )
        elif item.attempt >= policy.attempts:
            self._give_up(
                item,
                f"{attempt.error} (after {item.attempt} attempts)",
                dead_letter=policy.dead_letter,
                log_=bound,
                duration_ms=duration_ms,
            )
        else:
            self._retry(
                item, policy, attempt.error or "failed", attempt.delay, bound, duration_ms=duration_ms
            )

    @staticmethod
    def _logger(item: journal.Invocation, event_id: str | None = None) -> Any:
        """The logger of one attempt, bound once: the handler's ``ctx.log`` and the dispatch line."""
        fields: dict[str, Any] = {
            "route": item.route,
            "handler": item.handler,
            "invocation": item.id,
            "attempt": item.attempt,
            "event_seq": item.event_seq,
        }
        if event_id is not None:
            fields["event_id"] = event_id
        return log.bind(**fields)

    def _retry(
        self,
        item: journal.Invocation,
        policy: routing.DeliveryPolicy,
        error: str,
        delay: float | None,
        log_: Any,
        duration_ms: float | None = None,
    ) -> None:
        if delay is None:
            delay = backoff_delay(policy.backoff, item.attempt, self.rng)
        delay = min(max(delay, 0.0), policy.backoff.max)
        self._settle(item, journal.Outcome(item.id, "retry", due_at=self.clock() + delay, error=error))
        _labelled(INVOCATIONS, item.route, item.handler, "retry").inc()
        _labelled(RETRIES, item.route, item.handler).inc()
        log_.info(
            "dispatched", outcome="retry", duration_ms=duration_ms, retry_in_s=round(delay, 3), error=error
        )

    def _give_up(
        self,
        item: journal.Invocation,
        error: str,
        *,
        dead_letter: bool,
        log_: Any,
        duration_ms: float | None = None,
    ) -> None:
        if dead_letter:
            self._settle(item, journal.Outcome(item.id, "dead", error=error))
            _labelled(DEAD_LETTERS, item.route).inc()
            outcome = "dead"
            if self.on_dead_letter:
                record = {
                    **item.summary(),
                    "params": dict(item.params),
                    "error": error,
                    "deadAt": self.clock(),
                }
                for tap in self.on_dead_letter:
                    tap(record)
        else:
            self._settle(item, journal.Outcome(item.id, "done", error=error))
            outcome = "dropped"
        _labelled(INVOCATIONS, item.route, item.handler, outcome).inc()
        log_.warning("dispatched", outcome=outcome, duration_ms=duration_ms, error=error)
