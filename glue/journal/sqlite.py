"""SQLite journal: the embedded default. One file in WAL mode, zero setup.

Appends made in the same turn of the event loop are inserted and committed together on the loop's own
connection, and acknowledged after one fsync of the WAL on the writer thread; groups committed while an
fsync runs share the next one (group commit), so concurrent requests share the cost of one fsync.
Execution state commits on the same connection without an fsync. The writer thread's own connection
takes over while another process holds the write lock, and checkpoints the WAL. Reads use a third
connection on a reader thread, so a slow ``glue events list`` never delays intake.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from glue import events, journal
from glue import settings as settings_mod

T = TypeVar("T")

SCHEMA_VERSION = 1

#: WAL size past which the writer thread checkpoints it into the database file (after an fsync).
_CHECKPOINT_BYTES = 2 << 20
#: What a WAL that starts over is cut back to (SQLite's ``journal_size_limit``): its size then says how
#: much it holds, and a WAL that has started over is not checkpointed again at once.
_WAL_KEEP_BYTES = _CHECKPOINT_BYTES // 2
#: Above every seq (no event is waiting for its fsync).
_NO_SEQ = 1 << 62
#: How soon a group retries the write lock held by the writer thread (seconds).
_LOCK_RETRY = 0.0005
#: Without fsyncs (``synchronous: normal``), the WAL's size is looked at every this many commits.
_CHECKPOINT_EVERY = 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    transport   TEXT NOT NULL,
    endpoint    TEXT NOT NULL,
    format      TEXT NOT NULL,
    headers     BLOB NOT NULL,
    body        BLOB NOT NULL,
    key         BLOB,
    rejected    TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_rejected ON deliveries (id) WHERE rejected IS NOT NULL;

CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,
    identity    TEXT NOT NULL UNIQUE,
    id          TEXT NOT NULL,
    source      TEXT NOT NULL,
    type        TEXT NOT NULL,
    subject     TEXT,
    received_at REAL NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending',
    updated_at  REAL NOT NULL,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
    cloudevent  BLOB NOT NULL
);
-- only events still to be routed: most are journaled routed already and never enter this index
DROP INDEX IF EXISTS events_status;
CREATE INDEX IF NOT EXISTS events_pending ON events (seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS events_id ON events (id);

-- execution: claims on events being routed, and one invocation per (event, matched route)
CREATE TABLE IF NOT EXISTS event_claims (
    seq         INTEGER PRIMARY KEY REFERENCES events (seq),
    owner       TEXT NOT NULL,
    lease_until REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS invocations (
    id              INTEGER PRIMARY KEY,
    event_seq       INTEGER NOT NULL REFERENCES events (seq),
    route           TEXT NOT NULL,
    handler         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    ordering_key    TEXT,
    params          BLOB NOT NULL,
    state           TEXT NOT NULL,
    attempt         INTEGER NOT NULL DEFAULT 0,
    due_at          REAL NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    last_error      TEXT,
    owner           TEXT,
    lease_until     REAL
);
-- claims read pending invocations in due order and stop at the limit (no sort of the whole queue)
DROP INDEX IF EXISTS invocations_runnable;
CREATE INDEX IF NOT EXISTS invocations_due ON invocations (due_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS invocations_ordering ON invocations (ordering_key, event_seq, id)
    WHERE ordering_key IS NOT NULL AND state IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS invocations_event ON invocations (event_seq);
CREATE INDEX IF NOT EXISTS invocations_state ON invocations (state, id);
"""

_EVENT_COLUMNS = "seq, identity, id, source, type, subject, received_at, status, delivery_id, cloudevent"


_INVOCATION_COLUMNS = (
    "id, event_seq, route, handler, idempotency_key, ordering_key, params, state, attempt, due_at,"
    " created_at, updated_at, last_error, owner, lease_until"
)


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (the write lock at once) ... ``COMMIT``, or ``ROLLBACK`` on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _stored(row: sqlite3.Row | tuple[Any, ...]) -> journal.StoredEvent:
    return journal.StoredEvent(*row)


def _invocation(row: tuple[Any, ...]) -> journal.Invocation:
    values = list(row)
    values[6] = orjson.loads(values[6])
    return journal.Invocation(*values)


def _page(
    select: str, key: str, after: int, limit: int, equal: dict[str, Any], since: float | None = None
) -> tuple[str, list[Any]]:
    """``select`` past ``after`` in ``key`` order: equality filters (None: none), updated since, a limit."""
    sql = f"{select} WHERE {key} > ?"
    args: list[Any] = [after]
    for column, value in equal.items():
        if value is not None:
            sql += f" AND {column} = ?"
            args.append(value)
    if since is not None:
        sql += " AND updated_at >= ?"
        args.append(since)
    return sql + f" ORDER BY {key} LIMIT ?", [*args, limit]


def _in(ids: Collection[int]) -> tuple[str, list[int]]:
    values = [int(i) for i in ids]
    return ",".join("?" * len(values)), values


#: One event as the writer thread inserts it: identity, id, source, type, subject, structured JSON.
_Row = tuple[str, str, str, str, str | None, bytes]


_Routing = Sequence[Sequence[journal.NewInvocation] | None] | None


#: Appends committed together, what they appended, and the first new seq among them (None: none new).
_Group = tuple[list["_Pending"], list[list[journal.Appended]], int | None]


class _Pending:
    __slots__ = ("delivery", "future", "routing", "rows")

    def __init__(
        self, delivery: events.Delivery, rows: list[_Row], routing: _Routing, future: asyncio.Future[Any]
    ) -> None:
        self.delivery = delivery
        self.rows = rows
        self.routing = routing
        self.future = future


_INSERT_INVOCATION = (
    "INSERT OR IGNORE INTO invocations (event_seq, route, handler, idempotency_key, ordering_key, params,"
    " state, attempt, due_at, created_at, updated_at, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)"
)


def _invocation_row(seq: int, item: journal.NewInvocation, now: float) -> tuple[Any, ...]:
    """The values of :data:`_INSERT_INVOCATION` for one routing decision."""
    return (
        seq,
        item.route,
        item.handler,
        item.idempotency_key,
        item.ordering_key,
        orjson.dumps(dict(item.params)),
        item.state,
        item.due_at,
        now,
        now,
        item.error,
    )


class SQLiteJournal:
    """The :class:`glue.journal.Journal` protocol on one SQLite file."""

    def __init__(self, config: settings_mod.Journal) -> None:
        self.path = Path(config.path)
        self.group_commit = config.group_commit_ms / 1000
        self.synchronous = config.synchronous.upper()
        #: Execution state commits without waiting for the disk (see :meth:`_execution`).
        self.relaxed = not config.durable_execution_commits and self.synchronous in ("FULL", "EXTRA")
        #: ... and then runs on the event loop's own connection (see :meth:`_run_execution`).
        self.direct = self.relaxed or self.synchronous in ("NORMAL", "OFF")
        self._loop_db: sqlite3.Connection | None = None
        #: Held around every write transaction of this process. The writer thread waits on it (and wakes
        #: the moment it is free) instead of meeting SQLite's busy handler, which sleeps for milliseconds
        #: at a time; the event loop only ever tries it.
        self._write_lock = threading.Lock()
        self._writer_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal-write")
        self._reader_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal-read")
        self._write_db: sqlite3.Connection | None = None
        self._read_db: sqlite3.Connection | None = None
        #: Intake commits wait for an fsync of the WAL before they are acknowledged.
        self.durable = self.synchronous in ("FULL", "EXTRA")
        self._queue: list[_Pending] = []
        self._flush_handle: asyncio.Handle | None = None
        self._unsynced: list[_Group] = []
        self._in_sync: list[_Group] = []
        self._syncing: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._flushes = 0
        self._deferred = False
        self._closing = False

    # -- lifecycle --------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA journal_size_limit={_WAL_KEEP_BYTES}")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    def _migrate(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise journal.JournalUnavailable(
                f"{self.path} has schema version {version}, newer than this glue ({SCHEMA_VERSION})"
            )
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return db

    def _connect_loop(self) -> sqlite3.Connection:
        """The event loop's connection for intake and execution state: its commits never wait for the
        disk (intake waits for a separate fsync, see :meth:`_flush`), never checkpoint (the writer
        thread does) and never wait for the write lock (``timeout=0``: a journal busy in another
        process sends the transaction to the writer thread instead)."""
        db = sqlite3.connect(self.path, isolation_level=None, timeout=0)
        db.execute(f"PRAGMA synchronous={'OFF' if self.synchronous == 'OFF' else 'NORMAL'}")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute(f"PRAGMA journal_size_limit={_WAL_KEEP_BYTES}")
        return db

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._write_db = await loop.run_in_executor(self._writer_pool, self._migrate)
            self._read_db = await loop.run_in_executor(self._reader_pool, self._connect)
            self._loop_db = self._connect_loop()
        except sqlite3.Error as exc:
            raise journal.JournalUnavailable(f"cannot open {self.path}: {exc}") from exc
        self._closing = False

    async def close(self) -> None:
        self._closing = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        while self._tasks or self._syncing is not None:  # the last groups are answered before closing
            await asyncio.wait([*self._tasks, *([self._syncing] if self._syncing else [])])
        loop = asyncio.get_running_loop()
        if self._loop_db is not None:
            self._loop_db.close()
            self._loop_db = None
        if self._write_db is not None:
            await loop.run_in_executor(self._writer_pool, self._write_db.close)
            self._write_db = None
        if self._read_db is not None:
            await loop.run_in_executor(self._reader_pool, self._read_db.close)
            self._read_db = None
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)

    # -- thread helpers ---------------------------------------------------------------------------

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer thread (for layers that extend the schema)."""
        if self._write_db is None:
            raise journal.JournalUnavailable("journal is not open")
        db = self._write_db
        try:
            return await asyncio.get_running_loop().run_in_executor(self._writer_pool, self._locked, fn, db)
        except sqlite3.OperationalError as exc:
            raise journal.JournalUnavailable(str(exc)) from exc

    def _locked(self, fn: Callable[[Any], T], arg: Any) -> T:
        with self._write_lock:
            return fn(arg)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._read_db is None:
            raise journal.JournalUnavailable("journal is not open")
        db = self._read_db
        return await asyncio.get_running_loop().run_in_executor(self._reader_pool, fn, db)

    # -- intake -----------------------------------------------------------------------------------

    async def append(
        self, delivery: events.Delivery, batch: Sequence[events.CloudEvent], routing: _Routing = None
    ) -> list[journal.Appended]:
        journal.check_routing(batch, routing)
        if self._closing or self._write_db is None:
            raise journal.JournalUnavailable("journal is closing")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[journal.Appended]] = loop.create_future()
        rows: list[_Row] = [
            (
                events.identity(event),
                event.get_id(),
                event.get_source(),
                event.get_type(),
                event.get_subject(),
                events.to_json(event),
            )
            for event in batch
        ]
        self._queue.append(_Pending(delivery, rows, routing, future))
        if self._flush_handle is None and not self._deferred:
            # Appends made in this turn of the loop (every request that arrived together) share one
            # transaction; groupCommitMs widens the window.
            if self.group_commit:
                self._flush_handle = loop.call_later(self.group_commit, self._flush)
            else:
                self._flush_handle = loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        """Commit the queued appends in one transaction on the event loop's connection.

        The inserts and the commit are a few tens of microseconds of C per event, less than handing
        them to a thread costs; the commit does not wait for the disk. Durability comes after: one
        fsync of the WAL on the writer thread covers every transaction committed before it started
        (group commit), and only then are the appends acknowledged. Appends that arrive while an
        fsync runs wait for it and then commit together: one transaction per fsync writes each
        touched page to the WAL once (measured: 16 instead of 23 us per event under load). A power
        loss before that fsync leaves a WAL whose checksums end at the last whole transaction, as
        with ``synchronous=FULL``.
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
            self._flush_handle = asyncio.get_running_loop().call_later(_LOCK_RETRY, self._flush)
            return
        pending, self._queue = self._queue, []
        results: list[list[journal.Appended]] | None = None
        if locked:
            assert db is not None
            try:
                results = self._commit(pending, db)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    self._fail(pending, exc)
                    return
            except Exception as exc:  # the whole group fails together: nobody is acknowledged
                self._fail(pending, exc)
                return
            finally:
                self._write_lock.release()
        if results is None:
            task = asyncio.get_running_loop().create_task(self._commit_on_writer(pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if not self.durable:
            self._resolve(pending, results)
            self._flushes += 1
            if self._flushes % _CHECKPOINT_EVERY == 0 and self._syncing is None:
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
        loop = asyncio.get_running_loop()
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
        if self._deferred:
            self._deferred = False
            self._flush()
        self._sync()

    def _undurable_from(self) -> int:
        """The first seq committed but not yet fsync'd: invocations of events from there on are not
        claimed yet (nothing acts on an event before its delivery is acknowledged)."""
        firsts = [first for _, _, first in (*self._in_sync, *self._unsynced) if first is not None]
        return min(firsts) if firsts else _NO_SEQ

    def _maintain_wal(self, fsync: bool) -> None:
        """On the writer thread: make the WAL durable (``fsync``), then checkpoint it once it has grown."""
        wal = f"{self.path}-wal"
        fd = os.open(wal, os.O_RDONLY)
        try:
            if fsync:
                os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > _CHECKPOINT_BYTES and self._write_db is not None:
            # Under the write lock, so that no commit lands meanwhile: the checkpoint then copies the
            # whole WAL (PASSIVE: what no reader still needs), and the next transaction starts the
            # WAL over from its beginning. Groups and execution arriving meanwhile wait for it.
            with self._write_lock:
                self._write_db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def _commit_on_writer(self, pending: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._writer_pool, self._locked, self._commit, pending)
        except Exception as exc:
            self._fail(pending, exc)
        else:
            self._resolve(pending, results)

    @staticmethod
    def _resolve(pending: list[_Pending], results: list[list[journal.Appended]]) -> None:
        for item, result in zip(pending, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    @staticmethod
    def _fail(pending: list[_Pending], exc: BaseException) -> None:
        error = journal.JournalUnavailable(f"journal write failed: {exc}")
        for item in pending:
            if not item.future.done():
                item.future.set_exception(error)

    def _commit(
        self, pending: list[_Pending], db: sqlite3.Connection | None = None
    ) -> list[list[journal.Appended]]:
        db = db if db is not None else self._write_db
        assert db is not None
        now = time.time()
        with transaction(db):
            return [self._insert(db, item, now) for item in pending]

    @staticmethod
    def _insert_delivery(
        db: sqlite3.Connection, delivery: events.Delivery, rejected: str | None = None
    ) -> int:
        cursor = db.execute(
            "INSERT INTO deliveries (received_at, transport, endpoint, format, headers, body, key, rejected)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                delivery.received_at,
                delivery.transport,
                delivery.endpoint,
                delivery.format,
                orjson.dumps(dict(delivery.headers)),
                delivery.body,
                delivery.key,
                rejected,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _insert(self, db: sqlite3.Connection, item: _Pending, now: float) -> list[journal.Appended]:
        """Insert the delivery, its new events and their routing; the unique identity makes
        redeliveries no-ops."""
        delivery = item.delivery
        delivery_id = self._insert_delivery(db, delivery)
        appended: list[journal.Appended] = []
        invocations: list[tuple[Any, ...]] = []
        for index, (identity, event_id, source, type_, subject, document) in enumerate(item.rows):
            decided = item.routing[index] if item.routing is not None else None
            cursor = db.execute(
                "INSERT INTO events (identity, id, source, type, subject, received_at, updated_at,"
                " delivery_id, cloudevent, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (identity) DO NOTHING",
                (
                    identity,
                    event_id,
                    source,
                    type_,
                    subject,
                    delivery.received_at,
                    now,
                    delivery_id,
                    document,
                    journal.appended_status(decided),
                ),
            )
            if cursor.rowcount == 1:
                seq = cursor.lastrowid
                assert seq is not None
                if decided:
                    invocations.extend(_invocation_row(seq, new, now) for new in decided)
                appended.append(journal.Appended(identity, event_id, True, seq))
            else:
                appended.append(journal.Appended(identity, event_id, False))
        if invocations:
            db.executemany(_INSERT_INVOCATION, invocations)
        elif not any(item.new for item in appended):  # a pure redelivery keeps no second copy
            db.execute("DELETE FROM deliveries WHERE id = ?", (delivery_id,))
        return appended

    async def reject(self, delivery: events.Delivery, reason: str) -> int:
        def run(db: sqlite3.Connection) -> int:
            with transaction(db):
                return self._insert_delivery(db, delivery, rejected=reason)

        return await self.write(run)

    async def ping(self) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")

        await self.write(run)

    # -- reads ------------------------------------------------------------------------------------

    async def backlog(self) -> int:
        def run(db: sqlite3.Connection) -> int:
            return int(db.execute("SELECT count(*) FROM events WHERE status = 'pending'").fetchone()[0])

        return await self.read(run)

    async def get(self, key: int | str) -> journal.StoredEvent | None:
        def run(db: sqlite3.Connection) -> journal.StoredEvent | None:
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                row = db.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq = ?", (int(key),)).fetchone()
                if row is not None:
                    return _stored(row)
            row = db.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE identity = ? OR id = ? ORDER BY seq LIMIT 1",
                (key, key),
            ).fetchone()
            return _stored(row) if row is not None else None

        return await self.read(run)

    async def list(
        self, *, limit: int = 100, after: int = 0, status: str | None = None, type: str | None = None
    ) -> builtins.list[journal.StoredEvent]:
        def run(db: sqlite3.Connection) -> list[journal.StoredEvent]:
            sql, args = _page(
                f"SELECT {_EVENT_COLUMNS} FROM events", "seq", after, limit, {"status": status, "type": type}
            )
            return [_stored(row) for row in db.execute(sql, args)]

        return await self.read(run)

    @staticmethod
    def _delivery(row: tuple[Any, ...]) -> events.Delivery:
        received_at, transport, endpoint, fmt, headers, body, key = row
        return events.Delivery(
            transport=transport,
            endpoint=endpoint,
            format=fmt,
            headers=orjson.loads(headers),
            body=bytes(body),
            received_at=received_at,
            key=bytes(key) if key is not None else None,
        )

    async def delivery(self, delivery_id: int) -> events.Delivery | None:
        def run(db: sqlite3.Connection) -> events.Delivery | None:
            row = db.execute(
                "SELECT received_at, transport, endpoint, format, headers, body, key"
                " FROM deliveries WHERE id = ?",
                (delivery_id,),
            ).fetchone()
            return self._delivery(row) if row is not None else None

        return await self.read(run)

    async def rejected(self, *, limit: int = 100) -> builtins.list[journal.Rejected]:
        def run(db: sqlite3.Connection) -> list[journal.Rejected]:
            rows = db.execute(
                "SELECT id, rejected, received_at, transport, endpoint, format, headers, body, key"
                " FROM deliveries WHERE rejected IS NOT NULL ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [journal.Rejected(row[0], row[1], self._delivery(row[2:])) for row in rows]

        return await self.read(run)

    # -- execution --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _execution(self, db: sqlite3.Connection) -> Iterator[None]:
        """One transaction of execution state (claims, routing, outcomes, releases).

        Unless ``journal.durableExecutionCommits``, it commits without waiting for the disk
        (``synchronous=NORMAL``, the PostgreSQL journal's ``synchronous_commit=off``): the WAL stays
        consistent, the next intake commit flushes it along, and a power loss can only forget the last
        moments of execution state, whose invocations then run again (handlers are idempotent). Intake
        commits always keep ``journal.synchronous``."""
        relaxed = self.relaxed and db is self._write_db  # the loop's connection is relaxed already
        if relaxed:
            db.execute("PRAGMA synchronous=NORMAL")
        try:
            with transaction(db):
                yield
        finally:
            if relaxed:
                db.execute(f"PRAGMA synchronous={self.synchronous}")

    async def _run_execution(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run an execution transaction ``fn(connection)``.

        When its commit does not wait for the disk it runs right here on the event loop's connection:
        a hand-off to the writer thread and back costs more CPU (~0.1 ms in a VM) than the transaction
        itself (tens of microseconds for a live batch, a few milliseconds for a full one). While the
        writer thread holds the write lock (a checkpoint) it waits; when another process holds it,
        it goes to the writer thread (which waits for the lock) instead."""
        db = self._loop_db if self.direct else None
        if db is not None:
            # A threading lock, released by the writer thread: polled, for as long as a checkpoint.
            while not self._write_lock.acquire(blocking=False):  # noqa: ASYNC110
                await asyncio.sleep(_LOCK_RETRY)
            try:
                return fn(db)
            except sqlite3.OperationalError as exc:  # busy: another process (a `glue` command) writes
                if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise journal.JournalUnavailable(str(exc)) from exc
            finally:
                self._write_lock.release()
        return await self.write(fn)

    async def claim_events(
        self, owner: str, *, limit: int, lease: float, now: float
    ) -> builtins.list[journal.StoredEvent]:
        def run(db: sqlite3.Connection) -> list[journal.StoredEvent]:
            with self._execution(db):
                rows = db.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM events e WHERE status = 'pending' AND NOT EXISTS"
                    " (SELECT 1 FROM event_claims c"
                    "  WHERE c.seq = e.seq AND c.lease_until > ? AND c.owner != ?)"
                    " ORDER BY seq LIMIT ?",
                    (now, owner, limit),
                ).fetchall()
                db.executemany(
                    "INSERT OR REPLACE INTO event_claims (seq, owner, lease_until) VALUES (?, ?, ?)",
                    [(row[0], owner, now + lease) for row in rows],
                )
            return [_stored(row) for row in rows]

        return await self._run_execution(run)

    async def record_routing(
        self, owner: str, decisions: Mapping[int, Sequence[journal.NewInvocation]], *, now: float
    ) -> None:
        def run(db: sqlite3.Connection) -> None:
            with self._execution(db):
                marks, seqs = _in(decisions)
                held = {
                    row[0]
                    for row in db.execute(
                        f"SELECT e.seq FROM events e JOIN event_claims c ON c.seq = e.seq"
                        f" WHERE e.seq IN ({marks}) AND e.status = 'pending' AND c.owner = ?",
                        (*seqs, owner),
                    )
                }
                rows = [
                    _invocation_row(seq, item, now)
                    for seq, invocations in decisions.items()
                    if seq in held
                    for item in invocations
                ]
                db.executemany(_INSERT_INVOCATION, rows)
                for status, chosen in (
                    ("routed", [seq for seq in held if decisions[seq]]),
                    ("unmatched", [seq for seq in held if not decisions[seq]]),
                ):
                    if chosen:
                        marks, values = _in(chosen)
                        db.execute(
                            f"UPDATE events SET status = ?, updated_at = ? WHERE seq IN ({marks})",
                            (status, now, *values),
                        )
                if held:
                    marks, values = _in(held)
                    db.execute(f"DELETE FROM event_claims WHERE seq IN ({marks})", values)

        await self._run_execution(run)

    async def claim_invocations(
        self,
        owner: str,
        *,
        limit: int,
        lease: float,
        now: float,
        exclude_routes: Collection[str] = (),
    ) -> builtins.list[journal.Invocation]:
        def run(db: sqlite3.Connection) -> list[journal.Invocation]:
            marks, routes = ",".join("?" * len(exclude_routes)), list(exclude_routes)
            with self._execution(db):
                unrouted = db.execute("SELECT min(seq) FROM events WHERE status = 'pending'").fetchone()[0]
                runnable = (
                    (f" AND i.route NOT IN ({marks})" if routes else "")
                    + " AND (i.ordering_key IS NULL OR ((? IS NULL OR i.event_seq < ?) AND NOT EXISTS ("
                    "   SELECT 1 FROM invocations j WHERE j.ordering_key = i.ordering_key"
                    "   AND j.state IN ('pending', 'running')"
                    "   AND (j.event_seq < i.event_seq OR (j.event_seq = i.event_seq AND j.id < i.id)))))"
                    " ORDER BY i.due_at, i.id LIMIT ?"
                )
                args = (*routes, unrouted, unrouted, limit)
                # Two queries, each walking an index in due order and stopping at the limit: due
                # pending invocations (of acknowledged events), and running ones whose owner's lease
                # expired (few).
                rows = db.execute(
                    f"SELECT {_INVOCATION_COLUMNS} FROM invocations i"
                    " WHERE i.state = 'pending' AND i.due_at <= ? AND i.event_seq < ?" + runnable,
                    (now, self._undurable_from(), *args),
                ).fetchall()
                rows += db.execute(
                    f"SELECT {_INVOCATION_COLUMNS} FROM invocations i"
                    " WHERE i.state = 'running' AND i.lease_until <= ?" + runnable,
                    (now, *args),
                ).fetchall()
                rows = sorted(rows, key=lambda row: (row[9], row[0]))[:limit]
                claimed: list[journal.Invocation] = []
                if rows:
                    marks, ids = _in([row[0] for row in rows])
                    db.execute(
                        f"UPDATE invocations SET state = 'running', owner = ?, lease_until = ?,"
                        f" attempt = attempt + 1, updated_at = ? WHERE id IN ({marks})",
                        (owner, now + lease, now, *ids),
                    )
                for row in rows:  # as the UPDATE left them
                    values = list(row)
                    values[6] = orjson.loads(values[6])
                    values[7], values[8], values[11] = "running", values[8] + 1, now
                    values[13], values[14] = owner, now + lease
                    claimed.append(journal.Invocation(*values))
            return claimed

        return await self._run_execution(run)

    async def settle(self, owner: str, outcomes: Sequence[journal.Outcome], *, now: float) -> int:
        def run(db: sqlite3.Connection) -> int:
            applied = 0
            done = [o.invocation_id for o in outcomes if o.state == "done" and o.error is None]
            with self._execution(db):
                if done:  # the common case, in one statement
                    marks, ids = _in(done)
                    applied += db.execute(
                        f"UPDATE invocations SET state = 'done', owner = NULL, lease_until = NULL,"
                        f" updated_at = ? WHERE id IN ({marks}) AND state = 'running' AND owner = ?",
                        (now, *ids, owner),
                    ).rowcount
                for outcome in outcomes:
                    if outcome.state == "done" and outcome.error is None:
                        continue
                    if outcome.state == "done":
                        sql = (
                            "UPDATE invocations SET state = 'done', owner = NULL, lease_until = NULL,"
                            " updated_at = ?, last_error = coalesce(?, last_error)"
                        )
                        args: list[Any] = [now, outcome.error]
                    elif outcome.state == "retry":
                        sql = (
                            "UPDATE invocations SET state = 'pending', owner = NULL, lease_until = NULL,"
                            " updated_at = ?, due_at = ?, last_error = ?"
                        )
                        args = [now, outcome.due_at if outcome.due_at is not None else now, outcome.error]
                    else:
                        sql = (
                            "UPDATE invocations SET state = 'dead', owner = NULL, lease_until = NULL,"
                            " updated_at = ?, last_error = ?"
                        )
                        args = [now, outcome.error]
                    cursor = db.execute(
                        sql + " WHERE id = ? AND state = 'running' AND owner = ?",
                        (*args, outcome.invocation_id, owner),
                    )
                    applied += cursor.rowcount
            return applied

        return await self._run_execution(run)

    async def release(self, owner: str, *, now: float, ids: Collection[int] | None = None) -> int:
        def run(db: sqlite3.Connection) -> int:
            sql = (
                "UPDATE invocations SET state = 'pending', owner = NULL, lease_until = NULL, due_at = ?,"
                " updated_at = ?, attempt = max(attempt - 1, 0) WHERE state = 'running' AND owner = ?"
            )
            args: list[Any] = [now, now, owner]
            if ids is not None:
                marks, values = _in(ids)
                sql += f" AND id IN ({marks})"
                args.extend(values)
            with self._execution(db):
                released = db.execute(sql, args).rowcount
                if ids is None:
                    db.execute("DELETE FROM event_claims WHERE owner = ?", (owner,))
            return released

        return await self._run_execution(run)

    async def invocation(self, invocation_id: int) -> journal.Invocation | None:
        def run(db: sqlite3.Connection) -> journal.Invocation | None:
            row = db.execute(
                f"SELECT {_INVOCATION_COLUMNS} FROM invocations WHERE id = ?", (invocation_id,)
            ).fetchone()
            return _invocation(row) if row is not None else None

        return await self.read(run)

    async def invocations(
        self,
        *,
        state: journal.InvocationState | None = None,
        route: str | None = None,
        event_seq: int | None = None,
        since: float | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> builtins.list[journal.Invocation]:
        def run(db: sqlite3.Connection) -> list[journal.Invocation]:
            sql, args = _page(
                f"SELECT {_INVOCATION_COLUMNS} FROM invocations",
                "id",
                after,
                limit,
                {"state": state, "route": route, "event_seq": event_seq},
                since,
            )
            return [_invocation(row) for row in db.execute(sql, args)]

        return await self.read(run)

    async def redrive(self, ids: Collection[int], *, now: float) -> builtins.list[int]:
        def run(db: sqlite3.Connection) -> list[int]:
            marks, values = _in(ids)
            if not values:
                return []
            with transaction(db):
                rows = db.execute(
                    f"UPDATE invocations SET state = 'pending', attempt = 0, due_at = ?, updated_at = ?"
                    f" WHERE state = 'dead' AND id IN ({marks}) RETURNING id",
                    (now, now, *values),
                ).fetchall()
            return sorted(row[0] for row in rows)

        return await self.write(run)

    async def purge(self, ids: Collection[int]) -> builtins.list[int]:
        def run(db: sqlite3.Connection) -> list[int]:
            marks, values = _in(ids)
            if not values:
                return []
            with transaction(db):
                rows = db.execute(
                    f"DELETE FROM invocations WHERE state = 'dead' AND id IN ({marks}) RETURNING id", values
                ).fetchall()
            return sorted(row[0] for row in rows)

        return await self.write(run)

    async def oldest_pending(self) -> float | None:
        def run(db: sqlite3.Connection) -> float | None:
            value = db.execute(
                "SELECT min(created_at) FROM invocations WHERE state IN ('pending', 'running')"
            ).fetchone()[0]
            return float(value) if value is not None else None

        return await self.read(run)
