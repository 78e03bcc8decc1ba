"""The SQLite journal's connections and transactions, which every part of the journal runs on.

Three connections to one file in WAL mode: the event loop's own (intake groups and execution state,
commits that never wait for the disk), the writer thread's (fsyncs, checkpoints, commands, and what
cannot take the write lock at once) and the reader thread's (operators' reads, which never delay
intake). A threading lock is held around every write transaction of this process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, TypeVar

from glue import settings as settings_mod
from glue.journal import records

__all__ = [
    "ADDED_COLUMNS",
    "CHECKPOINT_BYTES",
    "LOCK_RETRY",
    "NO_SEQ",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Store",
    "add_columns",
    "busy",
    "disk_refused",
    "marks",
    "transaction",
]

T = TypeVar("T")

SCHEMA_VERSION = 5

#: WAL size past which the writer thread checkpoints it into the database file (after an fsync). A
#: checkpoint copies each page once however often the WAL holds it, and each commit writes the same
#: last pages of its tables and indexes: a longer WAL leaves fewer copies per event.
CHECKPOINT_BYTES = 8 << 20
#: What a WAL that starts over is cut back to (SQLite's ``journal_size_limit``): its size then says how
#: much it holds, and a WAL that has started over is not checkpointed again at once.
_WAL_KEEP_BYTES = CHECKPOINT_BYTES // 2
#: Above every seq (no event is waiting for its fsync).
NO_SEQ = 1 << 62
#: How soon a transaction of the event loop retries the write lock held by the writer thread (seconds).
LOCK_RETRY = 0.0005
#: What readiness writes beside the journal (and removes) to learn whether a disk that refused a write
#: takes one again: about a group commit's WAL pages.
_PROBE_BYTES = 256 << 10

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
    cloudevent  BLOB NOT NULL,
    digest      TEXT  -- events identified by a digest: the key equal payloads share (events.Digested)
);
-- only events still to be routed: most are journaled routed already and never enter this index
DROP INDEX IF EXISTS events_status;
CREATE INDEX IF NOT EXISTS events_pending ON events (seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS events_id ON events (id);
CREATE INDEX IF NOT EXISTS events_digest ON events (digest, received_at) WHERE digest IS NOT NULL;
-- retention removes a delivery once no event refers to it: without this index each candidate delivery
-- scanned the whole events table, a cost growing with the square of the journal (bench/soak.py);
-- created on open for journals made before it (PostgreSQL has had events_delivery from its start)
CREATE INDEX IF NOT EXISTS events_delivery ON events (delivery_id);

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
    lease_until     REAL,
    wait_reason     TEXT,     -- why it waits: held by a rail (glue.execution.gates), or a rate limit
    plan            BLOB,     -- JSON: the dry-run plan of a planned invocation or of one awaiting approval
    approved_by     TEXT,
    taken_by        INTEGER,  -- flow shaping: the invocation that took its place or cancels it
    rate_key        TEXT,     -- the token bucket it takes a token from (routes with rateLimit)
    coalesce_key    TEXT,     -- routes with coalesce: the key whose events become one invocation
    window_until    REAL,     -- ... when its window closes (trailing: when it runs)
    opened_at       REAL      -- ... when the window opened (the first event: maxWait counts from it)
);
-- claims read pending invocations in due order and stop at the limit (no sort of the whole queue)
DROP INDEX IF EXISTS invocations_runnable;
CREATE INDEX IF NOT EXISTS invocations_due ON invocations (due_at) WHERE state = 'pending';
-- an invocation waiting for a rail keeps its key's place: held and awaiting ones block the key too
DROP INDEX IF EXISTS invocations_ordering;
CREATE INDEX IF NOT EXISTS invocations_ordering_open ON invocations (ordering_key, event_seq, id)
    WHERE ordering_key IS NOT NULL AND state IN ('pending', 'running', 'held', 'awaiting-approval');
CREATE INDEX IF NOT EXISTS invocations_held ON invocations (due_at) WHERE state = 'held';
CREATE INDEX IF NOT EXISTS invocations_awaiting ON invocations (due_at) WHERE state = 'awaiting-approval';

-- safety rails: per route (and '*' for every route) its pause and its breaker; the starts and
-- failures budgets and breakers count; and every operator action
CREATE TABLE IF NOT EXISTS rails (
    route               TEXT PRIMARY KEY,
    paused              INTEGER NOT NULL DEFAULT 0,
    reason              TEXT,
    until               REAL,
    by                  TEXT,
    at                  REAL,
    breaker_open_until  REAL,
    breaker_probe       INTEGER,
    breaker_probe_until REAL
);
CREATE TABLE IF NOT EXISTS rail_marks (
    route TEXT NOT NULL,
    kind  TEXT NOT NULL,  -- start (a budget's key) | failure (the breaker)
    key   TEXT NOT NULL,
    at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rail_marks_window ON rail_marks (route, kind, key, at);
CREATE TABLE IF NOT EXISTS audit (
    id     INTEGER PRIMARY KEY,
    at     REAL NOT NULL,
    who    TEXT NOT NULL,
    action TEXT NOT NULL,
    route  TEXT,
    target TEXT,
    reason TEXT,
    detail BLOB NOT NULL,
    archived INTEGER NOT NULL DEFAULT 0  -- copied to the bucket archive (archive.audit)
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE INDEX IF NOT EXISTS audit_unarchived ON audit (id) WHERE NOT archived;
CREATE INDEX IF NOT EXISTS invocations_event ON invocations (event_seq);
CREATE INDEX IF NOT EXISTS invocations_state ON invocations (state, id);

-- every attempt that ended, written with the outcome that ended it; gone with its invocation
CREATE TABLE IF NOT EXISTS attempts (
    invocation_id INTEGER NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
    attempt       INTEGER NOT NULL,
    started_at    REAL NOT NULL,
    duration      REAL,
    outcome       TEXT NOT NULL,
    error         TEXT
);
CREATE INDEX IF NOT EXISTS attempts_invocation ON attempts (invocation_id, started_at);
CREATE INDEX IF NOT EXISTS invocations_coalesce ON invocations (coalesce_key, event_seq)
    WHERE coalesce_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS invocations_taken_by ON invocations (taken_by) WHERE taken_by IS NOT NULL;

-- rate limits: one token bucket per rendered key, shared by every daemon on the journal
CREATE TABLE IF NOT EXISTS rate_buckets (
    key         TEXT PRIMARY KEY,
    tokens      REAL NOT NULL,
    updated_at  REAL NOT NULL
);

-- the console: events newest first by type or source, received in a time range; attempts of the last
-- hour; invocations counted by route and state (the routes page, glue routes list)
CREATE INDEX IF NOT EXISTS invocations_route_state ON invocations (route, state);
CREATE INDEX IF NOT EXISTS events_type ON events (type, seq);
CREATE INDEX IF NOT EXISTS events_source ON events (source, seq);
CREATE INDEX IF NOT EXISTS events_received ON events (received_at);
CREATE INDEX IF NOT EXISTS attempts_started ON attempts (started_at, outcome, invocation_id);
"""

#: Columns of ``invocations`` that files written before lack (the safety rails' and flow shaping's), added by
#: :func:`add_columns` whatever version the file has, so the upgrade is idempotent.
ADDED_COLUMNS = (
    ("wait_reason", "TEXT"),
    ("plan", "BLOB"),
    ("approved_by", "TEXT"),
    ("taken_by", "INTEGER"),
    ("rate_key", "TEXT"),
    ("coalesce_key", "TEXT"),
    ("window_until", "REAL"),
    ("opened_at", "REAL"),
)


def add_columns(db: sqlite3.Connection, table: str, columns: Collection[tuple[str, str]]) -> None:
    """Add the ``(name, type)`` columns ``table`` lacks (an older file); none if it does not exist."""
    have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    if not have:
        return
    for name, type_ in columns:
        if name not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {type_}")


#: Version 1 -> 2: events identified by a digest keep their key (``digest``). Those journaled before
#: had the bare digest (64 hex digits) as id and deduplicated forever; they keep their identity and
#: become the first of their key, so a retry of one still arriving is recognised.
_UPGRADE_1 = """
BEGIN IMMEDIATE;
ALTER TABLE events ADD COLUMN digest TEXT;
UPDATE events SET digest = identity
    WHERE length(id) = 64 AND id NOT GLOB '*[^0-9a-f]*';
COMMIT;
"""


#: Version 2 -> 3: invocations wait for safety rails (``held``, ``awaiting-approval``) with a reason,
#: a plan and who approved them (added where missing, after SCHEMA created the rails tables).
@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (the write lock at once) ... ``COMMIT``, or ``ROLLBACK`` on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR, ...): a ROLLBACK then fails
        # with "no transaction is active" and would hide the cause, which is what the caller must see.
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def marks(ids: Collection[int]) -> tuple[str, list[int]]:
    """The placeholders of an ``IN (...)`` list of ids, and its values."""
    values = [int(i) for i in ids]
    return ",".join("?" * len(values)), values


def disk_refused(exc: BaseException) -> bool:
    """Whether a write failed because the disk refused it (full, over quota, an I/O error), not the
    statement: the journal cannot write until the disk takes writes again."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO)


def busy(exc: sqlite3.OperationalError) -> bool:
    """Whether the write lock is held by another connection (another process: a `glue` command)."""
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class Store:
    """The connections, threads and write lock of one journal file, and how transactions run on them."""

    def __init__(self, config: settings_mod.Journal) -> None:
        self.path = Path(config.path)
        self.synchronous = config.synchronous.upper()
        #: Execution state commits without waiting for the disk (see :meth:`_execution`).
        self.relaxed = not config.durable_execution_commits and self.synchronous in ("FULL", "EXTRA")
        #: ... and then runs on the event loop's own connection (see :meth:`_run_execution`).
        self.direct = self.relaxed or self.synchronous in ("NORMAL", "OFF")
        #: Intake commits wait for an fsync of the WAL before they are acknowledged.
        self.durable = self.synchronous in ("FULL", "EXTRA")
        self._loop_db: sqlite3.Connection | None = None
        #: The event loop the journal was opened on, which its appends and commits run on: kept, since
        #: asking for the running loop costs a system call each time in Python 3.11 (``getpid``).
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Held around every write transaction of this process. The writer thread waits on it (and wakes
        #: the moment it is free) instead of meeting SQLite's busy handler, which sleeps for milliseconds
        #: at a time; the event loop only ever tries it.
        self._write_lock = threading.Lock()
        self._writer_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal-write")
        self._reader_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal-read")
        self._write_db: sqlite3.Connection | None = None
        self._read_db: sqlite3.Connection | None = None
        #: Why the disk last refused a write, until it takes one again (readiness reports it).
        self.refused: str | None = None

    # -- connections ------------------------------------------------------------------------------

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
            raise records.JournalUnavailable(
                f"{self.path} has schema version {version}, newer than this glue ({SCHEMA_VERSION})"
            )
        if version == 1:
            db.executescript(_UPGRADE_1)
        add_columns(db, "invocations", ADDED_COLUMNS)
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return db

    def _connect_loop(self) -> sqlite3.Connection:
        """The event loop's connection for intake and execution state: its commits never wait for the
        disk (intake waits for a separate fsync), never checkpoint (the writer thread does) and never
        wait for the write lock (``timeout=0``: a journal busy in another process sends the
        transaction to the writer thread instead)."""
        db = sqlite3.connect(self.path, isolation_level=None, timeout=0)
        db.execute(f"PRAGMA synchronous={'OFF' if self.synchronous == 'OFF' else 'NORMAL'}")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute(f"PRAGMA journal_size_limit={_WAL_KEEP_BYTES}")
        return db

    async def _open_connections(self) -> None:
        """Migrate the file and open the three connections."""
        loop = self._loop = asyncio.get_running_loop()
        try:
            self._write_db = await loop.run_in_executor(self._writer_pool, self._migrate)
            self._read_db = await loop.run_in_executor(self._reader_pool, self._connect)
            self._loop_db = self._connect_loop()
        except sqlite3.Error as exc:
            raise records.JournalUnavailable(f"cannot open {self.path}: {exc}") from exc

    async def _close_connections(self) -> None:
        """Close the connections, each on its own thread, then the threads."""
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

    # -- transactions -----------------------------------------------------------------------------

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer thread (for layers that extend the schema)."""
        if self._write_db is None:
            raise records.JournalUnavailable("journal is not open")
        db = self._write_db
        try:
            return await asyncio.get_running_loop().run_in_executor(self._writer_pool, self._locked, fn, db)
        except sqlite3.OperationalError as exc:
            self.note_failure(exc)
            raise records.JournalUnavailable(str(exc)) from exc

    def _locked(self, fn: Callable[[Any], T], arg: Any) -> T:
        with self._write_lock:
            return fn(arg)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the reader thread."""
        if self._read_db is None:
            raise records.JournalUnavailable("journal is not open")
        db = self._read_db
        return await asyncio.get_running_loop().run_in_executor(self._reader_pool, fn, db)

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
        a hand-off to the writer thread and back costs more CPU than such a transaction itself. While
        the writer thread holds the write lock (a checkpoint) it waits; when another process holds it,
        it goes to the writer thread (which waits for the lock) instead."""
        db = self._loop_db if self.direct else None
        if db is not None:
            # A threading lock, released by the writer thread: polled, for as long as a checkpoint.
            while not self._write_lock.acquire(blocking=False):  # noqa: ASYNC110
                await asyncio.sleep(LOCK_RETRY)
            try:
                return fn(db)
            except sqlite3.OperationalError as exc:
                if not busy(exc):
                    self.note_failure(exc)
                    raise records.JournalUnavailable(str(exc)) from exc
            finally:
                self._write_lock.release()
        return await self.write(fn)

    async def ride(self, body: Callable[[sqlite3.Connection], T]) -> T | None:
        """Run ``body`` in another transaction about to commit, or None: then commit it alone (the
        group writer has such transactions; see ``GroupCommit.ride``)."""
        return None

    def peek(self, sql: str, args: tuple[Any, ...]) -> bool:
        """Whether the read ``sql`` finds a row, on the event loop's connection: a few index pages,
        cheaper than a thread hand-off. Loops that write only when there is something to write (the
        rails' once-a-second wake and expiry, the claims of each poll) look first, so an idle daemon
        opens no transaction. Closed: True (the write then says so)."""
        try:
            return self._loop_db is None or self._loop_db.execute(sql, args).fetchone() is not None
        except sqlite3.Error:
            return True  # the write says why

    # -- a disk that refuses writes ---------------------------------------------------------------

    def note_failure(self, exc: BaseException) -> None:
        """Remember a write the disk refused: readiness fails until the disk takes a write again."""
        if disk_refused(exc):
            self.refused = str(exc) or type(exc).__name__

    def note_written(self) -> None:
        """An intake group is durable: the disk takes writes."""
        self.refused = None

    async def check_disk(self) -> None:
        """Raise JournalUnavailable while the disk refuses writes.

        Only after a write was refused: then a file of about a group commit's size is written and
        synced beside the journal, and removed. A rolled-back transaction would prove nothing (in WAL
        mode pages reach the disk at commit), and a committed one would grow the journal per probe."""
        reason = self.refused
        if reason is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._writer_pool, self._probe_disk)
        except OSError as exc:
            raise records.JournalUnavailable(
                f"cannot write: {reason} ({self.path.parent}: {exc.strerror or exc})"
            ) from None
        if self.refused == reason:
            self.refused = None

    def _probe_disk(self) -> None:
        probe = self.path.with_name(f"{self.path.name}-probe")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, bytes(_PROBE_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(probe)

    def _undurable_from(self) -> int:
        """The first seq committed but not yet made durable: invocations of events from there on are
        not claimed yet (nothing acts on an event before its delivery is acknowledged). The group
        writer, which knows which commits await their fsync, tells; here every commit is durable."""
        return NO_SEQ
