"""Retention: finished work leaves the journal after ``journal.retentionDays``.

Pruned: invocations that are done or planned (and their attempts), events whose routing is over and
that have no invocation left (dead letters keep their event), and deliveries no event refers to.
Kept: pending and running work, the dead-letter queue and rejected deliveries (both leave by hand:
``glue dlq purge``). Raw deliveries that must be kept longer belong in a recording (``--record``)
archived to the bucket.

:class:`Retention` is a daemon component that prunes at start and then every ``interval`` seconds; with
several replicas each prunes, which is harmless (the deletes are idempotent) and needs no leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import Callable

import structlog

from glue import journal, metrics
from glue.journal import postgres, sqlite

__all__ = ["Retention", "prune"]

log = structlog.get_logger(__name__)


_SQLITE_PRUNE = {
    "invocations": "DELETE FROM invocations WHERE id IN (SELECT id FROM invocations"
    " WHERE state IN ('done', 'planned', 'coalesced', 'superseded', 'cancelled')"
    " AND updated_at < ? LIMIT ?)",
    "events": "DELETE FROM events WHERE seq IN (SELECT e.seq FROM events e"
    " WHERE e.status IN ('routed', 'unmatched') AND e.updated_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM invocations i WHERE i.event_seq = e.seq)"
    " AND NOT EXISTS (SELECT 1 FROM event_claims c WHERE c.seq = e.seq) LIMIT ?)",
    "deliveries": "DELETE FROM deliveries WHERE id IN (SELECT d.id FROM deliveries d"
    " WHERE d.rejected IS NULL AND d.received_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id) LIMIT ?)",
}


def _delete_chunk(db: sqlite3.Connection, sql: str, before: float, chunk: int) -> int:
    with sqlite.transaction(db):
        return db.execute(sql, (before, chunk)).rowcount


async def prune(store: journal.Journal, *, before: float, chunk: int = 5000) -> dict[str, int]:
    """Delete finished work older than ``before`` (epoch seconds); returns rows deleted per table.

    Works in chunks of ``chunk`` rows, each its own transaction, so intake commits interleave."""
    if isinstance(store, postgres.PostgresJournal):
        counts = await store.prune(before=before, chunk=chunk)
    elif isinstance(store, sqlite.SQLiteJournal):
        counts = {}
        for table, sql in _SQLITE_PRUNE.items():
            counts[table] = 0
            while True:
                deleted = await store.write(lambda db, sql=sql: _delete_chunk(db, sql, before, chunk))  # type: ignore[misc]
                counts[table] += deleted
                if deleted < chunk:
                    break
    else:
        raise TypeError(f"no retention for {type(store).__name__}")
    for table, count in counts.items():
        if count:
            metrics.JOURNAL_PRUNED.labels(table).inc(count)
    return counts


class Retention:
    """Daemon component: prune now, then every ``interval`` seconds (with jitter), until stopped."""

    name = "retention"

    def __init__(
        self,
        store: journal.Journal,
        *,
        days: float,
        interval: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.age = days * 86400
        self.interval = min(interval, max(self.age / 4, 1.0))
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()  # its own: the process-wide random state is left alone

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="journal-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> dict[str, int]:
        counts = await prune(self.store, before=self.clock() - self.age)
        if any(counts.values()):
            log.info("journal pruned", **counts)
        return counts

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except journal.JournalUnavailable as exc:
                log.warning("journal prune failed", error=str(exc))
            await asyncio.sleep(self.interval * self._rng.uniform(0.9, 1.1))  # replicas drift apart
