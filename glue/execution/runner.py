"""One claimed invocation, from claim to a queued outcome: its event, its handler's context, the
attempt, and what the attempt's ending means under the route's delivery policy.

Every attempt ends in exactly one outcome: ``done``; ``retry`` at a time persisted in the journal (so
a restart resumes the schedule); ``dead`` (dead-letter queue) or ``dropped`` (the route keeps no dead
letters). Each logs one ``dispatched`` line and counts in the metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from glue import contract, journal, metrics, routing
from glue.execution import attempt, cache, settler

__all__ = ["DeadLetterTap", "Runner"]

log = structlog.get_logger(__name__)

#: Called with a JSON-able record of every dead-lettered invocation (the bucket archive).
DeadLetterTap = Callable[[dict[str, Any]], None]


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
    ) -> None:
        self.journal = journal_
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
        dry_run = self.dry_run or compiled.route.dry_run or item.route in self.unconfigured
        event_ids: tuple[str, ...] = (event_id,)
        if compiled.route.coalesce is not None:
            try:
                event_ids = (*await self.journal.absorbed(item.id), event_id)
            except journal.JournalUnavailable as exc:
                self._retry(item, policy, f"journal unavailable: {exc}", None, bound)
                return
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
            event_ids=event_ids,
        )
        if item.taken_by is not None:  # a newer invocation of its group cancels it: only the cancel step
            self.cancelling[item.id] = item.taken_by  # the dispatcher leaves it be
            try:
                await self._cancel(item, item.taken_by, compiled, event, params, ctx, policy)
            finally:
                self.cancelling.pop(item.id, None)
            return
        started = time.perf_counter()
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
            await self._cancel(item, self.cancelling.get(item.id), compiled, event, params, ctx, policy)
            return
        finally:
            self.cancelling.pop(item.id, None)
            self._durations[item.route, item.handler].observe(time.perf_counter() - started)
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        if ended.outcome in ("done", "planned"):
            group = compiled.route.group
            undo = compiled.handler.cancel is not None and group is not None and group.on_conflict == "cancel"
            self.outcomes.settle(item, journal.Outcome(item.id, "done", undo=undo))
            self._attempts[item.route, item.handler, ended.outcome].inc()
            extra: dict[str, Any] = {}
            if ended.plan is not None:
                extra["plan"] = ended.plan.to_dict()
            bound.info("dispatched", outcome=ended.outcome, duration_ms=duration_ms, **extra)
        elif ended.outcome == "permanent":
            self._give_up(
                item,
                ended.error or "permanent error",
                dead_letter=policy.dead_letter,
                log_=bound,
                duration_ms=duration_ms,
            )
        elif item.attempt >= policy.attempts:
            self._give_up(
                item,
                f"{ended.error} (after {item.attempt} attempts)",
                dead_letter=policy.dead_letter,
                log_=bound,
                duration_ms=duration_ms,
            )
        else:
            self._retry(item, policy, ended.error or "failed", ended.delay, bound, duration_ms=duration_ms)

    async def _cancel(
        self,
        item: journal.Invocation,
        taker: int | None,
        compiled: routing.Compiled,
        event: Any,
        params: contract.Params,
        ctx: contract.Context,
        policy: routing.DeliveryPolicy,
    ) -> None:
        """End a cancelled invocation ``cancelled`` after its handler's cancel step (none: nothing to
        undo). A cancel step that fails is retried like an attempt, and stays a cancel step."""
        why = f"cancelled by invocation {taker}" if taker is not None else "cancelled"
        step = compiled.handler.cancel
        if step is not None:
            started = time.perf_counter()
            ended = await attempt.run_attempt(
                dataclasses.replace(compiled.handler, fn=step),
                event=event,
                params=params,
                ctx=ctx,
                seconds=policy.timeout,
            )
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            if ended.outcome not in ("done", "planned"):
                error = f"cancel step: {ended.error}"
                if ended.outcome == "permanent" or item.attempt >= policy.attempts:
                    self._give_up(
                        item, error, dead_letter=policy.dead_letter, log_=ctx.log, duration_ms=duration_ms
                    )
                else:
                    self._retry(item, policy, error, ended.delay, ctx.log, duration_ms=duration_ms)
                return
            if ended.plan is not None:
                ctx.log.info("cancel step planned", plan=ended.plan.to_dict())
        self.outcomes.settle(item, journal.Outcome(item.id, "cancelled", error=why))
        self._attempts[item.route, item.handler, "cancelled"].inc()
        ctx.log.info("dispatched", outcome="cancelled", reason=why)

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
            delay = policy.backoff.policy().delay(item.attempt, self.rng)
        delay = min(max(delay, 0.0), policy.backoff.max)
        self.outcomes.settle(
            item, journal.Outcome(item.id, "retry", due_at=self.clock() + delay, error=error)
        )
        self._attempts[item.route, item.handler, "retry"].inc()
        self._retries[item.route, item.handler].inc()
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
            self.outcomes.settle(item, journal.Outcome(item.id, "dead", error=error))
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
            self.outcomes.settle(item, journal.Outcome(item.id, "done", error=error))
            outcome = "dropped"
        self._attempts[item.route, item.handler, outcome].inc()
        log_.warning("dispatched", outcome=outcome, duration_ms=duration_ms, error=error)
