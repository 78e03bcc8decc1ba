"""The PostgreSQL journal's group-commit writer: appends that arrive together are committed by one
statement (:data:`glue.journal.postgres.intake.APPEND`), then their callers are answered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg

from glue import events
from glue import settings as settings_mod
from glue.journal import records, rows
from glue.journal.postgres import intake, store

__all__ = ["GroupCommit"]


def _usable(conn: Any) -> bool:
    """Whether a writer's connection still works: the pool takes back one whose server went away."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # "connection has been released back to the pool"
        return False


class GroupCommit(store.Store):
    """``append``: queue an append; one writer task commits the queue as one group after the other."""

    def __init__(self, config: settings_mod.Journal) -> None:
        super().__init__(config)
        self.group_commit = config.group_commit_ms / 1000
        self._queue: list[intake.Pending] = []
        self._wakeup: asyncio.Event | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._closing = False

    async def append(
        self, delivery: events.Delivery, batch: Sequence[events.CloudEvent], routing: records.Routing = None
    ) -> list[records.Appended]:
        rows.check_routing(batch, routing)
        if self._closing or self._wakeup is None:
            raise records.JournalUnavailable("journal is closing")
        future: asyncio.Future[list[records.Appended]] = asyncio.get_running_loop().create_future()
        self._queue.append(intake.Pending(delivery, batch, routing, future))
        self._wakeup.set()
        return await future

    async def append_many(self, items: Sequence[records.Append]) -> list[list[records.Appended]]:
        for _, batch, routing in items:
            rows.check_routing(batch, routing)
        if self._closing or self._wakeup is None:
            raise records.JournalUnavailable("journal is closing")
        if not items:
            return []
        answers = rows.Answers(asyncio.get_running_loop().create_future(), len(items))
        self._queue.extend(
            intake.Pending(delivery, batch, routing, answers.slot(index))
            for index, (delivery, batch, routing) in enumerate(items)
        )
        self._wakeup.set()
        return await answers.future

    def _start_writer(self) -> None:
        self._wakeup = asyncio.Event()
        self._closing = False
        self._writer_task = asyncio.create_task(self._writer(), name="journal-writer")

    async def _stop_writer(self) -> None:
        """Stop taking appends; the writer commits what is queued, then stops."""
        self._closing = True
        if self._writer_task is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            await asyncio.gather(self._writer_task, return_exceptions=True)
            self._writer_task = None

    async def _writer(self) -> None:
        """Commit groups, one after the other: each takes every append queued meanwhile.

        One writer: a second group in flight made the groups smaller and cost ingest rate
        (bench/scaleout.py), since PostgreSQL spends about as much CPU on a small statement as on a
        large one. The writer takes the next group in the same step as it settles the last, without
        a task switch in between, and keeps its connection: a pool acquire and release per group cost
        more client CPU than the statement."""
        assert self._wakeup is not None
        conn: Any = None
        try:
            while True:
                while not self._queue:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                if self.group_commit and not self._closing:
                    await asyncio.sleep(self.group_commit)
                pending, self._queue = self._queue, []
                conn = await self._commit(conn, pending)
        finally:
            if conn is not None:
                await self._release(conn)

    async def _release(self, conn: Any) -> None:
        """Give a writer's connection back to the pool, which resets it, or closes it if it failed."""
        with contextlib.suppress(Exception):
            await self.pool.release(conn)

    async def _commit(self, conn: Any, pending: list[intake.Pending]) -> Any:
        """Insert one group and settle its callers. Returns the connection for the next group, or
        None when it failed: the whole group fails together, and nobody is acknowledged."""
        try:
            if conn is not None and not _usable(conn):
                conn = None
            if conn is None:
                conn = await self.pool.acquire(timeout=self.command_timeout)
            results = await intake.insert(conn, pending)
        except Exception as exc:
            if conn is not None:
                if isinstance(exc, asyncpg.InternalClientError):
                    conn.terminate()  # see store.UNAVAILABLE
                await self._release(conn)
            if isinstance(exc, records.JournalUnavailable):
                error = exc
            elif isinstance(exc, store.UNAVAILABLE):
                error = store.unavailable(exc)
            else:
                error = records.JournalUnavailable(f"journal write failed: {exc}")
            for item in pending:
                if not item.future.done():
                    item.future.set_exception(error)
            return None
        for item, result in zip(pending, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)
        return conn
