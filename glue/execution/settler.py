"""Writing the outcomes of finished attempts back to the journal, several in one commit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from glue import journal
from glue.execution import wake

__all__ = ["SETTLE_WINDOW", "Settler"]

log = structlog.get_logger(__name__)

#: How long finished attempts that unblock others wait to be committed together (a group commit of
#: outcomes); the others wait for the journal's next commit to share (``prompt=False``).
SETTLE_WINDOW = 0.005


class Settler:
    """Queues outcomes and commits them in groups; wakes dispatch when a commit may have made another
    invocation runnable (the next of an ordering key, or a retry due at once). Outcomes that make
    none runnable are not ``prompt``: the journal may commit them with its next intake group, so
    under steady traffic an event's outcome costs no commit of its own."""

    def __init__(
        self,
        journal_: journal.WorkQueue,
        owner: str,
        *,
        clock: Callable[[], float],
        poll_seconds: float,
        unblocked: wake.Wake,
    ) -> None:
        self.journal = journal_
        self.owner = owner
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.unblocked = unblocked
        #: Outcomes queued and not yet committed (``committing``: those being committed now).
        self.pending: list[journal.Outcome] = []
        self.committing = 0
        self._unblocks = False  # an unsettled outcome may make another invocation runnable
        self._wake = wake.Wake()  # something is queued since the last commit began

    def settle(self, item: journal.Invocation, outcome: journal.Outcome) -> None:
        """Queue the outcome of ``item``'s attempt for the next commit."""
        self.pending.append(outcome)
        # Once committed, the next invocation of the same ordering key may run, or an immediate retry.
        if item.ordering_key is not None or (outcome.due_at is not None and outcome.due_at <= self.clock()):
            self._unblocks = True
        self._wake.set()

    async def run(self) -> None:
        """Commit queued outcomes until cancelled; a journal outage delays them, never drops them."""
        while True:
            await self._wake.wait()
            if self._unblocks:  # committed at once: let outcomes that finish together share it
                await asyncio.sleep(SETTLE_WINDOW)
            self._wake.clear()
            try:
                await self.flush()
            except journal.JournalUnavailable as exc:
                log.warning("settling paused: journal unavailable", error=str(exc))
                await asyncio.sleep(self.poll_seconds)
                self._wake.set()

    async def flush(self, *, prompt: bool = False) -> None:
        """Commit what is queued now (``prompt``: at once, even when nothing waits for it); on failure
        it stays queued and the error is raised."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        unblocks, self._unblocks = self._unblocks, False
        self.committing += len(batch)
        try:
            await self.journal.settle(self.owner, batch, now=self.clock(), prompt=prompt or unblocks)
        except BaseException:
            self.pending[:0] = batch
            self._unblocks = self._unblocks or unblocks
            raise
        finally:
            self.committing -= len(batch)
        if unblocks:
            self.unblocked.set()
