"""The SQLite journal's group-commit writer: how appends become durable together.

Appends made in the same turn of the event loop are inserted and committed together on the loop's own
connection, and acknowledged after one fsync of the WAL on the writer thread; groups committed while an
fsync runs share the next one (group commit), so concurrent requests share the cost of one fsync. The
writer thread's connection takes over while another process holds the write lock, and checkpoints the
WAL once it has grown. A batch of deliveries fetched together from a bus (``append_many``) is large
enough to be a group of its own: it commits on the writer thread, beside the event loop.

Execution writes that nothing waits for (outcomes that unblock no other invocation) ride the next
group's transaction (:meth:`GroupCommit.ride`): under steady traffic an outcome then costs no commit of
its own, and an idle journal commits it alone after :data:`RIDE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from glue import events
from glue import settings as settings_mod
from glue.journal import records, rows
from glue.journal.sqlite import intake, store

__all__ = ["CHECKPOINT_EVERY", "RIDE_SECONDS", "GroupCommit", "Pending"]

T = TypeVar("T")

#: Without fsyncs (``synchronous: normal``), the WAL's size is looked at every this many commits.
CHECKPOINT_EVERY = 64
#: How long an execution write that rides waits for an intake group before it commits alone (seconds).
RIDE_SECONDS = 0.05

#: An execution write riding the next group: its statements (run in the group's transaction) and the
#: future of their result.
_Rider = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]


class Pending:
    """One append waiting for its group's commit: what it stores, and its caller's future."""

    __slots__ = ("delivery", "future", "routing", "rows")

    def __init__(
        self,
        delivery: events.Delivery,
        rows: list[intake.Row],
        routing: records.Routing,
        future: rows.Answer,
    ) -> None:
        self.delivery = delivery
        self.rows = rows
        self.routing = routing
        self.future = future


def _rows(batch: Sequence[events.CloudEvent]) -> list[intake.Row]:
    """What :func:`glue.journal.sqlite.intake.insert` inserts of each event."""
    return [
        (
            events.identity(event),
            event.get_id(),
            event.get_source(),
            event.get_type(),
            event.get_subject(),
            events.to_json(event),
            rows.dedup_window(event),
        )
        for event in batch
    ]


#: Appends committed together, what they appended, and the first new seq among them (None: none new).
#: A plain tuple: one is made per group on the ingest path.
_Group = tuple[list[Pending], list[list[records.Appended]], int | None]


def _answer(riders: Sequence[_Rider], results: Sequence[Any]) -> None:
    """Resolve each rider still waiting with its result, or its error (an exception in its place)."""
    for (_, future), result in zip(riders, results, strict=True):
        if future.done():
            continue
        if isinstance(result, Exception):
            future.set_exception(records.JournalUnavailable(str(result) or type(result).__name__))
        else:
            future.set_result(result)


class GroupCommit(store.Store):
    """``append``: queue an append, commit the queue as one transaction, make it durable with one fsync
    shared by every group committed before it started, then resolve the callers' futures."""

    def __init__(self, config: settings_mod.Journal) -> None:
        super().__init__(config)
        self.group_commit = config.group_commit_ms / 1000
        self._queue: list[Pending] = []
        self._riders: list[_Rider] = []
        self._flush_handle: asyncio.Handle | None = None
        self._unsynced: list[_Group] = []
        self._in_sync: list[_Group] = []
        self._syncing: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._flushes = 0
        #: The WAL open on the writer thread for its fsyncs, and its (device, inode).
        self._wal: tuple[int, tuple[int, int]] | None = None
        self._deferred = False
        self._closing = False

    async def append(
        self, delivery: events.Delivery, batch: Sequence[events.CloudEvent], routing: records.Routing = None
    ) -> list[records.Appended]:
        rows.check_routing(batch, routing)
        loop = self._loop
        if self._closing or self._write_db is None or loop is None:
            raise records.JournalUnavailable("journal is closing")
        future: asyncio.Future[list[records.Appended]] = loop.create_future()
        self._queue.append(Pending(delivery, _rows(batch), routing, future))
        self._schedule(loop)
        return await future

    async def append_many(self, items: Sequence[records.Append]) -> list[list[records.Appended]]:
        """A batch is committed on the writer thread, by one multi-row statement per table
        (:func:`glue.journal.sqlite.intake.insert_many`), and durable when its commit returns: SQLite
        does that work with Python's lock released, so the event loop decodes the next batch
        meanwhile. Row by row, each step would wait for the lock again, for up to the interpreter's
        switch interval while the loop is busy."""
        for _, batch, routing in items:
            rows.check_routing(batch, routing)
        if self._closing or self._write_db is None:
            raise records.JournalUnavailable("journal is closing")
        if not items:
            return []
        inserted = [(delivery, _rows(batch), routing) for delivery, batch, routing in items]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._writer_pool, self._locked, self._commit_many, inserted)
        except Exception as exc:  # the whole batch fails together: nothing of it is journaled
            self.note_failure(exc)
            raise records.JournalUnavailable(f"journal write failed: {exc}") from exc
        self.note_written()
        return results

    def _commit_many(
        self, items: list[tuple[events.Delivery, list[intake.Row], records.Routing]]
    ) -> list[list[records.Appended]]:
        db = self._write_db
        if db is None:
            raise records.JournalUnavailable("journal is closing")
        with store.transaction(db):
            return intake.insert_many(db, items, time.time())

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit the queue soon, unless that is arranged already."""
        if self._flush_handle is None and not self._deferred:
            # Appends made in this turn of the loop (every request that arrived together) share one
            # transaction; groupCommitMs widens the window.
            if self.group_commit:
                self._flush_handle = loop.call_later(self.group_commit, self._flush)
            else:
                self._flush_handle = loop.call_soon(self._flush)

    async def ride(self, body: Callable[[sqlite3.Connection], T]) -> T | None:
        """Run ``body`` (statements, no transaction of its own) in the transaction of the next intake
        group committed on the event loop within :data:`RIDE_SECONDS`; its result, or None when none
        came (then the caller commits it alone). Only where execution commits on the loop's
        connection: a rider is answered at its group's commit, not at its fsync."""
        loop = self._loop
        if not self.direct or self._closing or self._loop_db is None or loop is None:
            return None
        future: asyncio.Future[T] = loop.create_future()
        rider: _Rider = (body, future)
        self._riders.append(rider)
        # A timer of the loop's own rather than asyncio.timeout, which asks for the running loop and
        # the current task (a system call each, per outcome).
        alone = loop.call_later(RIDE_SECONDS, self._unride, rider)
        try:
            return await future
        finally:
            alone.cancel()
            if future.cancelled():  # its caller gave up on it: no group is to commit it
                self._unride(rider)

    def _unride(self, rider: _Rider) -> None:
        """Take ``rider`` off the next group (no group came in time: None, then it commits alone)."""
        with contextlib.suppress(ValueError):  # a group took it meanwhile
            self._riders.remove(rider)
        if not rider[1].done():
            rider[1].set_result(None)

    async def _drain(self) -> None:
        """Stop taking appends; commit what is queued and answer every group before returning."""
        self._closing = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        while self._tasks or self._syncing is not None:
            await asyncio.wait([*self._tasks, *([self._syncing] if self._syncing else [])])

    def _flush(self) -> None:
        """Commit the queued appends in one transaction on the event loop's connection.

        The inserts and the commit cost less CPU than handing them to a thread; the commit does not
        wait for the disk. Durability comes after: one fsync of the WAL on the writer thread covers
        every transaction committed before it started (group commit), and only then are the appends
        acknowledged. Appends that arrive while an fsync runs wait for it and then commit together:
        one transaction per fsync writes each touched page to the WAL once. A power loss before that
        fsync leaves a WAL whose checksums end at the last whole transaction, as with
        ``synchronous=FULL``.
        While this process's writer thread holds the write lock (a checkpoint), the group waits for
        it; when another process holds it, the group goes to the writer thread (which waits for the
        lock) instead."""
        self._flush_handle = None
        if not self._queue:
            return
        if self.durable and self._syncing is not None and not self._closing:
            self._deferred = True  # _synced commits the queue
            return
        db = self._loop_db
        locked = db is not None and self._write_lock.acquire(blocking=False)
        if db is not None and not locked and not self._closing:
            # Briefly: handing the group to the writer thread would keep the lock busy for the next.
            self._flush_handle = asyncio.get_running_loop().call_later(store.LOCK_RETRY, self._flush)
            return
        pending, self._queue = self._queue, []
        results: list[list[records.Appended]] | None = None
        if locked:
            assert db is not None
            riders, self._riders = self._riders, []
            try:
                results, ridden = self._commit(pending, db, riders)
            except sqlite3.OperationalError as exc:
                if not store.busy(exc):
                    self._fail(pending, exc)
                    _answer(riders, [exc] * len(riders))
                    return
                self._riders[:0] = riders  # they ride the next group, or commit alone
            except Exception as exc:  # the whole group fails together: nobody is acknowledged
                self._fail(pending, exc)
                _answer(riders, [exc] * len(riders))
                return
            else:
                _answer(riders, ridden)
            finally:
                self._write_lock.release()
        if results is None:
            task = asyncio.get_running_loop().create_task(self._commit_on_writer(pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if not self.durable:
            self._resolve(pending, results)
            self.note_written()
            self._flushes += 1
            if self._flushes % CHECKPOINT_EVERY == 0 and self._syncing is None:
                # Nothing waits for this one: it only checkpoints the WAL once it has grown.
                self._syncing = asyncio.get_running_loop().run_in_executor(
                    self._writer_pool, self._maintain_wal, False
                )
                self._syncing.add_done_callback(functools.partial(self._synced, []))
            return
        first = min((a.seq for result in results for a in result if a.seq is not None), default=None)
        self._unsynced.append((pending, results, first))
        self._sync()

    def _sync(self) -> None:
        """Start one fsync of the WAL for every group committed so far, unless one is running."""
        if self._syncing is not None or not self._unsynced:
            return
        groups, self._unsynced = self._unsynced, []
        self._in_sync = groups
        loop = self._loop
        assert loop is not None  # groups are committed only once the journal is open
        self._syncing = loop.run_in_executor(self._writer_pool, self._maintain_wal, True)
        self._syncing.add_done_callback(functools.partial(self._synced, groups))

    def _synced(self, groups: list[_Group], done: Any) -> None:
        self._syncing = None
        self._in_sync = []
        error = done.exception()
        for pending, results, _ in groups:
            if error is not None:
                self._fail(pending, error)
            else:
                self._resolve(pending, results)
        if groups and error is None:
            self.note_written()
        if self._deferred:
            self._deferred = False
            self._flush()
        self._sync()

    def _undurable_from(self) -> int:
        firsts = [first for _, _, first in (*self._in_sync, *self._unsynced) if first is not None]
        return min(firsts) if firsts else store.NO_SEQ

    def _maintain_wal(self, fsync: bool) -> None:
        """On the writer thread: make the WAL durable (``fsync``), then checkpoint it once it has grown.

        The WAL stays open between fsyncs (an open and a close fewer per commit): SQLite removes it
        only when the last connection to the journal closes, and this process holds three. Its
        ``stat``, which gives the size, also says whether it is still the file opened."""
        status = os.stat(f"{self.path}-wal")
        if self._wal is None or self._wal[1] != (status.st_dev, status.st_ino):
            self._close_wal()
            self._wal = (os.open(f"{self.path}-wal", os.O_RDONLY), (status.st_dev, status.st_ino))
        if fsync:
            os.fsync(self._wal[0])
        size = status.st_size
        if size > store.CHECKPOINT_BYTES and self._write_db is not None:
            # Under the write lock, so that no commit lands meanwhile: the checkpoint then copies the
            # whole WAL (PASSIVE: what no reader still needs), and the next transaction starts the
            # WAL over from its beginning. Groups and execution arriving meanwhile wait for it.
            with self._write_lock:
                self._write_db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _close_wal(self) -> None:
        if self._wal is not None:
            os.close(self._wal[0])
            self._wal = None

    async def _close_connections(self) -> None:
        await super()._close_connections()
        self._close_wal()  # the writer thread has stopped

    async def _commit_on_writer(self, pending: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results, _ = await loop.run_in_executor(self._writer_pool, self._locked, self._commit, pending)
        except Exception as exc:
            self._fail(pending, exc)
        else:
            self._resolve(pending, results)
            self.note_written()  # the writer thread's commit waits for the disk itself

    @staticmethod
    def _resolve(pending: list[Pending], results: list[list[records.Appended]]) -> None:
        for item, result in zip(pending, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    def _fail(self, pending: list[Pending], exc: BaseException) -> None:
        self.note_failure(exc)
        error = records.JournalUnavailable(f"journal write failed: {exc}")
        for item in pending:
            if not item.future.done():
                item.future.set_exception(error)

    def _commit(
        self, pending: list[Pending], db: sqlite3.Connection | None = None, riders: Sequence[_Rider] = ()
    ) -> tuple[list[list[records.Appended]], list[Any]]:
        """Commit a group and its riders in one transaction; a rider that fails is rolled back alone
        (a savepoint), and its exception takes the place of its result."""
        db = db if db is not None else self._write_db
        assert db is not None
        now = time.time()
        ridden: list[Any] = []
        with store.transaction(db):
            results = [intake.insert(db, item.delivery, item.rows, item.routing, now) for item in pending]
            for body, future in riders:
                if future.done():  # cancelled: its caller gave up on it
                    ridden.append(None)
                    continue
                db.execute("SAVEPOINT rider")
                try:
                    ridden.append(body(db))
                except Exception as exc:
                    db.execute("ROLLBACK TO rider")
                    ridden.append(exc)
                db.execute("RELEASE rider")
        return results, ridden
