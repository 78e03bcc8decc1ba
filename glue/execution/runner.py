"""One claimed invocation, from claim to a queued outcome: its event, its handler's context, the
attempt, and what the attempt's ending means under the route's delivery policy.

Every attempt ends in exactly one outcome: ``done``; ``planned`` (a dry run, with its plan);
``retry`` at a time persisted in the journal (so a restart resumes the schedule); ``dead`` (dead-letter
queue) or ``dropped`` (the route keeps no dead letters). Each logs one ``dispatched`` line, counts in
the metrics and is kept in the invocation's history of attempts; with tracing on, each attempt that
reaches its handler is a span, child of the event's ``traceparent`` (see :mod:`glue.tracing`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from glue import aio, contract, events, journal, metrics, routing
from glue.execution import attempt, cache, gates, settler

if TYPE_CHECKING:
    from glue import tracing as tracing_mod

__all__ = ["DeadLetterTap", "Runner"]

log = structlog.get_logger(__name__)

#: Called with a JSON-able record of every dead-lettered invocation (the bucket archive).
DeadLetterTap = Callable[[dict[str, Any]], None]


class _Ran:
    """When an attempt started (epoch seconds) and how long its handler ran (None: not called), for
    its outcome's row in the invocation's history and the dispatch line."""

    __slots__ = ("duration", "started_at")

    def __init__(self, started_at: float, duration: float | None) -> None:
        self.started_at = started_at
        self.duration = duration

    @property
    def ms(self) -> float | None:
        return round(self.duration * 1000, 3) if self.duration is not None else None

    def fields(self) -> dict[str, Any]:
        return {"started_at": self.started_at, "duration": self.duration}


class Runner:
    """Runs claimed invocations of the router's routes and queues their outcomes with the settler.

    ``unconfigured`` names the routes run in dry-run because their handler's client is not configured.
    """

    def __init__(
        self,
        journal_: journal.WorkQueue,
        router: routing.Router,
        clients: contract.Clients,
        *,
        event_cache: cache.EventCache,
        outcomes: settler.Settler,
        clock: Callable[[], float],
        rng: random.Random,
        dry_run: bool,
        unconfigured: Mapping[str, str],
        options: Mapping[str, Any],
        on_dead_letter: DeadLetterTap | None,
        tracing: tracing_mod.Tracing | None = None,
        gates_: gates.Gates | None = None,
    ) -> None:
        self.journal = journal_
        self.gates = gates_
        self.router = router
        self.clients = clients
        self.event_cache = event_cache
        self.outcomes = outcomes
        self.clock = clock
        self.rng = rng
        self._durations = metrics.Children(metrics.HANDLER_DURATION)
        self._attempts = metrics.Children(metrics.INVOCATIONS)
        self._retries = metrics.Children(metrics.RETRIES)
        self._dead = metrics.Children(metrics.DEAD_LETTERS)
        self.dry_run = dry_run
        self.unconfigured = unconfigured
        self.options = options
        self.on_dead_letter = on_dead_letter
        self.tracing = tracing  # None: attempts make no span
        #: Attempts whose task the dispatcher cancels because a newer invocation of their group
        #: cancels them (not a drain): they end ``cancelled``, after the handler's cancel step.
        self.cancelling: dict[int, int | None] = {}  # invocation -> the one that cancels it
        #: Invocations whose attempt has started here (a task cancelled before it starts never runs).
        self.active: set[int] = set()

    async def run(self, item: journal.Invocation) -> None:
        """One attempt of one invocation, from claim to a queued outcome. Never raises but
        cancellation (then the claim is released by the executor's stop)."""
        self.active.add(item.id)
        try:
            await self._run(item)
        finally:
            self.active.discard(item.id)

    async def _run(self, item: journal.Invocation) -> None:
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
            kept = self.event_cache.recall(item.event_seq)
            if kept is not None:
                event_id, event = kept.event_id, kept.event
            else:
                self.event_cache.started_unkept(item.event_seq)
                stored = await self.journal.get(item.event_seq)
                if stored is None:
                    raise LookupError(f"event {item.event_seq} is no longer in the journal")
                event_id, event = stored.id, stored.event()
            params = compiled.handler.params.model_validate(dict(item.params))
        except journal.JournalUnavailable as exc:
            self._retry(item, policy, f"journal unavailable: {exc}", None, self._logger(item))
            return
        except Exception as exc:  # a missing event or params the handler's model now rejects
            self._give_up(item, attempt.reason(exc), dead_letter=True, log_=self._logger(item))
            return
        bound = self._logger(item, event_id)
        if self.tracing is None:
            await self._attempt(item, compiled, event, event_id, params, bound)
            return
        with self.tracing.attempt(
            event.get_extension("traceparent"),
            route=item.route,
            handler=item.handler,
            attempt=item.attempt,
            event_id=event_id,
            idempotency_key=item.idempotency_key,
        ) as span:
            outcome, failure = await self._attempt(item, compiled, event, event_id, params, bound)
            span.ended(outcome, failure)

    async def _attempt(
        self,
        item: journal.Invocation,
        compiled: routing.Compiled,
        event: Any,
        event_id: str,
        params: contract.Params,
        bound: Any,
    ) -> tuple[str, str | None]:
        """Run the handler once (or, for an invocation a newer one of its group cancels, its cancel
        step) and queue the outcome; returns it (done, planned, retry, dead, dropped, cancelled) and
        its error."""
        policy = compiled.route.delivery
        dry_run = self.dry_run or compiled.route.dry_run or item.route in self.unconfigured
        event_ids: tuple[str, ...] = (event_id,)
        if compiled.route.coalesce is not None:
            try:
                event_ids = (*await self.journal.absorbed(item.id), event_id)
            except journal.JournalUnavailable as exc:
                error = f"journal unavailable: {exc}"
                self._retry(item, policy, error, None, bound)
                return "retry", error
        ctx = contract.Context(
            route=item.route,
            handler=item.handler,
            idempotency_key=item.idempotency_key,
            attempt=item.attempt,
            dry_run=dry_run,
            log=bound,
            clients=self.clients,
            deadline=aio.running_loop().time() + policy.timeout,
            options=self.options,
            event_ids=event_ids,
        )
        if item.taken_by is not None:  # a newer invocation of its group cancels it: only the cancel step
            self.cancelling[item.id] = item.taken_by  # the dispatcher leaves it be
            try:
                return await self._cancel(item, item.taken_by, compiled, event, params, ctx, policy)
            finally:
                self.cancelling.pop(item.id, None)
        started_at, started = self.clock(), time.perf_counter()
        try:
            ended = await attempt.run_attempt(
                compiled.handler, event=event, params=params, ctx=ctx, seconds=policy.timeout
            )
        except asyncio.CancelledError:
            if item.id not in self.cancelling:
                raise  # a drain: the claim is released
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            bound.info("attempt cancelled: a newer invocation of its group arrived")
            taker = self.cancelling.get(item.id)
            return await self._cancel(item, taker, compiled, event, params, ctx, policy)
        finally:
            self.cancelling.pop(item.id, None)
            self._durations[item.route, item.handler].observe(time.perf_counter() - started)
        ran = _Ran(started_at, time.perf_counter() - started)
        if self.gates is not None and item.route in self.gates.breakers:
            await self._breaker(item, failed=ended.outcome not in ("done", "planned"))
        if ended.outcome == "done":
            group = compiled.route.group
            undo = compiled.handler.cancel is not None and group is not None and group.on_conflict == "cancel"
            self.outcomes.settle(item, journal.Outcome(item.id, "done", undo=undo, **ran.fields()))
            self._attempts[item.route, item.handler, "done"].inc()
            bound.info("dispatched", outcome="done", duration_ms=ran.ms)
            return "done", None
        if ended.outcome == "planned":
            # A dry run did nothing: the invocation ends ``planned`` with its plan, never ``done``.
            plan = (ended.plan or contract.Plan()).to_dict()
            self.outcomes.settle(item, journal.Outcome(item.id, "planned", plan=plan, **ran.fields()))
            self._attempts[item.route, item.handler, "planned"].inc()
            bound.info("dispatched", outcome="planned", duration_ms=ran.ms, plan=plan)
            return "planned", None
        if ended.outcome == "permanent":
            error = ended.error or "permanent error"
            return self._give_up(item, error, dead_letter=policy.dead_letter, log_=bound, ran=ran), error
        if item.attempt >= policy.attempts:
            error = f"{ended.error} (after {item.attempt} attempts)"
            return self._give_up(item, error, dead_letter=policy.dead_letter, log_=bound, ran=ran), error
        error = ended.error or "failed"
        self._retry(item, policy, error, ended.delay, bound, ran=ran)
        return "retry", error

    async def _cancel(
        self,
        item: journal.Invocation,
        taker: int | None,
        compiled: routing.Compiled,
        event: Any,
        params: contract.Params,
        ctx: contract.Context,
        policy: routing.DeliveryPolicy,
    ) -> tuple[str, str | None]:
        """End a cancelled invocation ``cancelled`` after its handler's cancel step (none: nothing to
        undo). A cancel step that fails is retried like an attempt, and stays a cancel step."""
        why = f"cancelled by invocation {taker}" if taker is not None else "cancelled"
        step = compiled.handler.cancel
        started_at = self.clock()
        ran = _Ran(started_at, None)
        if step is not None:
            started = time.perf_counter()
            ended = await attempt.run_attempt(
                dataclasses.replace(compiled.handler, fn=step),
                event=event,
                params=params,
                ctx=ctx,
                seconds=policy.timeout,
            )
            ran = _Ran(started_at, time.perf_counter() - started)
            if ended.outcome not in ("done", "planned"):
                error = f"cancel step: {ended.error}"
                if ended.outcome == "permanent" or item.attempt >= policy.attempts:
                    return self._give_up(
                        item, error, dead_letter=policy.dead_letter, log_=ctx.log, ran=ran
                    ), error
                self._retry(item, policy, error, ended.delay, ctx.log, ran=ran)
                return "retry", error
            if ended.plan is not None:
                ctx.log.info("cancel step planned", plan=ended.plan.to_dict())
        self.outcomes.settle(item, journal.Outcome(item.id, "cancelled", error=why, **ran.fields()))
        self._attempts[item.route, item.handler, "cancelled"].inc()
        ctx.log.info("dispatched", outcome="cancelled", reason=why)
        return "cancelled", why

    async def event_of(self, item: journal.Invocation) -> events.CloudEvent | None:
        """``item``'s event (parsed once routing kept it; else read back), None when it is gone or the
        journal cannot be read now (the attempt then says why)."""
        kept = self.event_cache.recall(item.event_seq)
        if kept is not None:
            return kept.event
        try:
            stored = await self.journal.get(item.event_seq)
        except journal.JournalUnavailable:
            return None
        return stored.event() if stored is not None else None

    async def ask_approval(self, item: journal.Invocation, deadline: float, rails: journal.Rails) -> None:
        """Plan ``item`` (its handler in dry-run, as ``glue explain`` does) and let it wait for approval
        with that plan until ``deadline``. Never raises but cancellation (the claim is then released)."""
        bound = self._logger(item)
        compiled = self.router.by_name.get(item.route)
        event = await self.event_of(item)
        if compiled is None or event is None:
            await self.run(item)  # the attempt dead-letters it with the reason
            return
        planned = await attempt.plan(
            compiled,
            event,
            item.params,
            identity=item.idempotency_key.split(" ", 1)[1],
            clients=self.clients,
            options=self.options,
        )
        plan: dict[str, Any] = planned.plan.to_dict() if planned.plan is not None else {}
        if planned.error is not None:
            plan["error"] = planned.error
        try:
            waiting = await rails.await_approval(
                self.outcomes.owner, item.id, plan, deadline=deadline, now=self.clock()
            )
        except journal.JournalUnavailable as exc:
            self._retry(item, compiled.route.delivery, f"journal unavailable: {exc}", 0.0, bound)
            return
        if waiting:
            bound.warning("awaiting approval", plan=plan, expires=deadline)

    async def _breaker(self, item: journal.Invocation, *, failed: bool) -> None:
        """Tell the breaker how the attempt ended; a journal outage only delays the breaker."""
        if self.gates is None:
            return
        try:
            await self.gates.attempt_ended(item, failed=failed)
        except journal.JournalUnavailable as exc:
            log.warning("breaker not updated: journal unavailable", route=item.route, error=str(exc))

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
        ran: _Ran | None = None,
    ) -> None:
        if delay is None:
            delay = policy.backoff.policy().delay(item.attempt, self.rng)
        delay = min(max(delay, 0.0), policy.backoff.max)
        ran = ran or _Ran(self.clock(), None)
        self.outcomes.settle(
            item, journal.Outcome(item.id, "retry", due_at=self.clock() + delay, error=error, **ran.fields())
        )
        self._attempts[item.route, item.handler, "retry"].inc()
        self._retries[item.route, item.handler].inc()
        log_.info("dispatched", outcome="retry", duration_ms=ran.ms, retry_in_s=round(delay, 3), error=error)

    def _give_up(
        self,
        item: journal.Invocation,
        error: str,
        *,
        dead_letter: bool,
        log_: Any,
        ran: _Ran | None = None,
    ) -> str:
        """Dead-letter the invocation (or drop it, as its route keeps none); returns which."""
        ran = ran or _Ran(self.clock(), None)
        if dead_letter:
            self.outcomes.settle(item, journal.Outcome(item.id, "dead", error=error, **ran.fields()))
            self._dead[item.route].inc()
            outcome = "dead"
            if self.on_dead_letter is not None:
                record = {
                    **item.summary(),
                    "params": dict(item.params),
                    "error": error,
                    "deadAt": self.clock(),
                }
                self.on_dead_letter(record)
        else:
            self.outcomes.settle(item, journal.Outcome(item.id, "done", error=error, **ran.fields()))
            outcome = "dropped"
        self._attempts[item.route, item.handler, outcome].inc()
        log_.warning("dispatched", outcome=outcome, duration_ms=ran.ms, error=error)
        return outcome
