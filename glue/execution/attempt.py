"""One attempt of a handler: run it under a deadline and classify how it ended.

:func:`run_attempt` is the one place a handler is called; it turns every ending into an
:class:`Attempt` and never lets a handler error escape (only cancellation passes through).
:func:`plan` runs a route's handler in dry-run for replay and explain, exactly as the executor runs a
``dryRun`` route.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog

from glue import aio, contract, journal, routing

__all__ = ["Attempt", "plan", "reason", "run_attempt"]

log = structlog.get_logger(__name__)


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


def reason(exc: BaseException) -> str:
    """An exception as one line for the journal and the log: its type and the first line of its text."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Deadline:
    """``asyncio.timeout(seconds)`` for one attempt, the same on expiry (the task is cancelled and the
    block raises TimeoutError unless something else cancelled it too) and on a cancellation from
    outside (it passes through), on the loop :func:`glue.aio.running_loop` finds: asyncio's asks
    for the running loop three times, a system call each in Python 3.11 (see :mod:`glue.aio`). Once
    3.11 is no longer supported, ``asyncio.timeout`` serves again."""

    __slots__ = ("_cancelling", "_expired", "_handle", "_seconds", "_task")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._expired = False
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._cancelling = 0

    def expired(self) -> bool:
        return self._expired

    async def __aenter__(self) -> _Deadline:
        loop = aio.running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("an attempt runs in a task")
        self._task, self._cancelling = task, task.cancelling()
        self._handle = loop.call_later(self._seconds, self._expire)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, _: Any
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        # uncancel() first, as asyncio.timeout: the deadline's own cancellation is taken back either way
        expired, task = self._expired, self._task
        if (
            expired
            and task is not None
            and task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc  # no other cancellation came: the deadline's own

    def _expire(self) -> None:
        assert self._task is not None
        self._task.cancel()
        self._expired = True
        self._handle = None


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
    deadline = _Deadline(seconds)
    try:
        async with deadline:
            result = await handler.fn(event=event, params=params, ctx=ctx)
    except contract.TemporaryError as exc:
        return Attempt("temporary", error=reason(exc), delay=exc.delay)
    except contract.PermanentError as exc:
        return Attempt("permanent", error=reason(exc))
    except TimeoutError as exc:
        if deadline.expired():
            return Attempt("failed", error=f"timed out after {seconds:g} s")
        return Attempt("failed", error=reason(exc))  # the handler's own client timed out
    except Exception as exc:  # any other handler failure follows the route's delivery policy
        return Attempt("failed", error=reason(exc))
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
        return Attempt("permanent", error=reason(exc))
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
