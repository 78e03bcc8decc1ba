"""SQLite journal: where and how intake and execution state commit (glue/journal/sqlite/).

Intake groups and execution state (claims, routing, outcomes) commit on the event loop's own
connection without waiting for the disk; an intake group is acknowledged only after an fsync of the
WAL that started after its commit. With ``journal.durableExecutionCommits``, or while another process
holds the write lock, transactions go through the writer thread at ``journal.synchronous``.
What the writer connection runs is observed with sqlite3's statement trace
(``Connection.set_trace_callback``) through the journal's ``write`` helper, its setting with
``PRAGMA synchronous`` (SQLite's pragma documentation: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA), and the
fsyncs through ``os.fsync``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import pytest

from glue import journal, settings
from glue.journal import sqlite
from glue.journal.sqlite import store as sqlite_store
from glue.journal.sqlite import writer as sqlite_writer
from tests.support import cloudevent

from .conftest import delivery_of

T0 = 1_000_000.0


async def open_store(tmp_path: Path, **config: object) -> tuple[sqlite.SQLiteJournal, list[str]]:
    path = tmp_path / "j.db"
    store = sqlite.SQLiteJournal(settings.Journal(path=path, group_commit_ms=0, **config))  # type: ignore[arg-type]
    await store.open()
    statements: list[str] = []
    await store.write(lambda db: db.set_trace_callback(statements.append))
    return store, statements


async def append_one(store: sqlite.SQLiteJournal, name: str, **data: object) -> journal.Appended:
    """Journal one delivery of one event ``name`` (``data``: its data, if any)."""
    event = cloudevent(name, data=data or None)
    (appended,) = await store.append(delivery_of(event), [event])
    return appended


async def one_event_through_execution(store: sqlite.SQLiteJournal, name: str) -> int:
    await append_one(store, name)
    (claimed,) = await store.claim_events("w", limit=10, lease=30, now=T0)
    invocation = journal.NewInvocation(
        route="r",
        handler="log",
        idempotency_key=journal.idempotency_key(claimed.identity, "r"),
        params={},
        due_at=T0,
    )
    await store.record_routing("w", {claimed.seq: [invocation]}, now=T0)
    (running,) = await store.claim_invocations("w", limit=10, lease=30, now=T0)
    assert await store.settle("w", [journal.Outcome(running.id, "done")], now=T0) == 1
    return running.id


def transactions(statements: list[str]) -> list[tuple[str, str]]:
    """(first statement, synchronous setting) of every transaction run on the traced connection."""
    current, seen = "FULL", []
    for index, sql in enumerate(statements):
        upper = sql.upper()
        if upper.startswith("PRAGMA SYNCHRONOUS="):
            current = upper.split("=", 1)[1]
        elif upper.startswith("BEGIN"):
            seen.append((statements[index + 1].split()[0].upper(), current))
    return seen


def record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every file fsync'd from now on (the call still reaches the disk)."""
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


async def test_execution_commits_do_not_wait_for_the_disk_intake_commits_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, statements = await open_store(tmp_path, synchronous="full")
    synced = record_fsyncs(monkeypatch)
    try:
        for name in ("a", "b"):
            before = len(synced)
            await append_one(store, name)
            assert synced[before:] == [f"{tmp_path / 'j.db'}-wal"], "acknowledged after an fsync of the WAL"
        before = len(synced)
        (claimed, _) = await store.claim_events("w", limit=10, lease=30, now=T0)
        await store.record_routing(
            "w",
            {
                claimed.seq: [
                    journal.NewInvocation("r", "log", journal.idempotency_key(claimed.identity, "r"), {}, T0)
                ]
            },
            now=T0,
        )
        (running,) = await store.claim_invocations("w", limit=10, lease=30, now=T0)
        assert await store.settle("w", [journal.Outcome(running.id, "done")], now=T0) == 1
        assert synced[before:] == [], "execution state waited for the disk"
        assert transactions(statements) == [], (
            "ran through the writer thread, not the event loop's connection"
        )
        assert (await store.invocation(running.id)).state == "done"  # type: ignore[union-attr]
        assert (await store.get(1)).status == "routed"  # type: ignore[union-attr]
        assert await store.write(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2
    finally:
        await store.close()


async def test_an_intake_group_waits_for_a_journal_busy_in_another_process(tmp_path: Path) -> None:
    store, statements = await open_store(tmp_path, synchronous="full")
    other = sqlite3.connect(tmp_path / "j.db", isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process writing (a `glue` command, say)
        append = asyncio.create_task(append_one(store, "a"))
        await asyncio.sleep(0.3)
        assert not append.done(), "acknowledged while another process held the write lock"
        other.execute("COMMIT")
        assert (await append).new
        assert ("INSERT", "FULL") in transactions(statements), "the group went to the writer thread"
        assert [e.id for e in await store.list()] == ["a"]
    finally:
        other.close()
        await store.close()


async def test_durable_execution_commits_go_through_the_writer_at_full(tmp_path: Path) -> None:
    store, statements = await open_store(tmp_path, synchronous="full", durable_execution_commits=True)
    try:
        await one_event_through_execution(store, "a")
        seen = transactions(statements)
        expected = ["SELECT", "SELECT", "SELECT", "UPDATE"]  # claim, route, claim, settle (append: loop)
        assert seen == [(first, "FULL") for first in expected], seen
    finally:
        await store.close()


async def test_a_journal_busy_in_another_process_sends_execution_to_the_writer_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    store, statements = await open_store(tmp_path, synchronous="full")
    other = sqlite3.connect(tmp_path / "j.db", isolation_level=None, check_same_thread=False)
    try:
        await append_one(store, "a")
        other.execute("BEGIN IMMEDIATE")  # another process writing (a `glue` command, say)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        claim = asyncio.create_task(store.claim_events("w", limit=10, lease=30, now=T0))
        await asyncio.sleep(0.3)
        other.execute("COMMIT")
        claimed = await claim
        ticker.cancel()
        assert [e.id for e in claimed] == ["a"]
        assert ticks >= 10, "the loop kept running while the claim waited for the lock"
        assert ("SELECT", "NORMAL") in transactions(statements), "the claim ran on the writer, relaxed"
        assert await store.write(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2
    finally:
        other.close()
        await store.close()


async def test_execution_waits_for_the_writer_threads_lock_on_the_loops_connection(tmp_path: Path) -> None:
    store, statements = await open_store(tmp_path, synchronous="full")
    try:
        await append_one(store, "a")
        holder = asyncio.create_task(store.write(lambda db: time.sleep(0.3)))
        await asyncio.sleep(0.05)
        claimed = await store.claim_events("w", limit=10, lease=30, now=T0)
        await holder
        assert [e.id for e in claimed] == ["a"]
        assert transactions(statements) == [], "the claim went through the writer thread"
    finally:
        await store.close()


async def test_a_failed_execution_transaction_rolls_back(tmp_path: Path) -> None:
    store, _ = await open_store(tmp_path, synchronous="full")
    try:
        await append_one(store, "a")
        await store.write(lambda db: db.execute("DROP TABLE event_claims"))
        with pytest.raises(journal.JournalUnavailable, match="no such table"):
            await store.claim_events("w", limit=10, lease=30, now=T0)
        assert [e.status for e in await store.list()] == ["pending"]
    finally:
        await store.close()


@pytest.mark.parametrize("synchronous", ["full", "normal"])
async def test_the_wal_is_checkpointed_and_stays_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synchronous: str
) -> None:
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_BYTES", 256 << 10)
    monkeypatch.setattr(sqlite_store, "_WAL_KEEP_BYTES", 128 << 10)  # what a WAL starting over is cut to
    monkeypatch.setattr(sqlite_writer, "CHECKPOINT_EVERY", 4)
    store, _ = await open_store(tmp_path, synchronous=synchronous)
    try:
        database = tmp_path / "j.db"
        before = database.stat().st_size
        for n in range(300):  # one transaction each: several MB of WAL frames without checkpoints
            await append_one(store, f"e{n}", padding="x" * 2000)
        assert database.stat().st_size > before + (300 * 2000), "nothing was copied into the database"
        assert (tmp_path / "j.db-wal").stat().st_size < (2 << 20), "the WAL grew without bound"
        assert len(await store.list(limit=1000)) == 300
    finally:
        await store.close()


async def test_appends_wait_for_the_writer_threads_lock_and_stay_on_the_loops_connection(
    tmp_path: Path,
) -> None:
    """A checkpoint (or any job of the writer thread) holds the write lock for a moment: appends made
    meanwhile commit after it on the loop's connection, not one by one through the writer thread."""
    store, statements = await open_store(tmp_path, synchronous="full")
    try:

        def hold_the_write_lock(db: sqlite3.Connection) -> None:
            time.sleep(0.3)

        holder = asyncio.create_task(store.write(hold_the_write_lock))
        await asyncio.sleep(0.05)
        batch = [cloudevent(f"e{n}") for n in range(20)]
        appended = await asyncio.gather(*(store.append(delivery_of(e), [e]) for e in batch))
        await holder
        assert all(result[0].new for result in appended)
        assert transactions(statements) == [], "appends went through the writer thread"
        assert len(await store.list(limit=100)) == 20
    finally:
        await store.close()


async def test_nothing_claims_an_invocation_before_its_event_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Routed at intake, an invocation is committed with its event before the WAL's fsync; it is not
    claimed (so no handler acts on the event) until that fsync has made the delivery durable."""
    store, _ = await open_store(tmp_path, synchronous="full")
    real = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.3)
        real(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    try:
        event = cloudevent("a")
        invocation = journal.NewInvocation("r", "log", journal.idempotency_key("/test a", "r"), {}, T0)
        append = asyncio.create_task(store.append(delivery_of(event), [event], [[invocation]]))
        await asyncio.sleep(0.1)  # committed, its fsync running
        assert not append.done()
        assert [e.status for e in await store.list()] == ["routed"], "not committed yet"
        assert await store.claim_invocations("w", limit=10, lease=30, now=T0) == []
        await append
        (claimed,) = await store.claim_invocations("w", limit=10, lease=30, now=T0)
        assert claimed.route == "r"
    finally:
        await store.close()


async def test_appends_during_an_fsync_share_the_next_commit_and_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one group's fsync runs, later appends wait for it, then commit and sync as one group:
    each is acknowledged only after an fsync that started after its own commit."""
    store, _ = await open_store(tmp_path, synchronous="full")
    real = os.fsync
    synced: list[float] = []

    def slow_fsync(fd: int) -> None:
        time.sleep(0.2)
        real(fd)
        synced.append(time.monotonic())

    monkeypatch.setattr(os, "fsync", slow_fsync)
    try:
        first = asyncio.create_task(append_one(store, "a"))
        await asyncio.sleep(0.05)  # a committed, its fsync running
        later = []
        for name in ("b", "c"):  # in different turns of the loop
            later.append(asyncio.create_task(append_one(store, name)))
            await asyncio.sleep(0.02)
        assert [e.id for e in await store.list()] == ["a"], "b and c committed before a's fsync ended"
        await first
        assert not any(task.done() for task in later)
        results = await asyncio.gather(*later)
        assert all(appended.new for appended in results)
        assert sorted(e.id for e in await store.list()) == ["a", "b", "c"]
        assert len(synced) == 2, "b and c did not share one fsync"
    finally:
        await store.close()


async def test_a_journal_of_schema_2_gets_plans_and_the_attempts_history(tmp_path: Path) -> None:
    store, _ = await open_store(tmp_path)
    await store.close()
    db = sqlite3.connect(tmp_path / "j.db")
    db.executescript(
        "DROP TABLE attempts; ALTER TABLE invocations DROP COLUMN plan; PRAGMA user_version = 2;"
    )
    db.close()
    store, _ = await open_store(tmp_path)
    try:
        invocation_id = await one_event_through_execution(store, "old")
        assert [a.outcome for a in await store.attempts(invocation_id)] == ["done"]
        plan = {"summary": "s", "calls": []}
        await store.write(
            lambda db: db.execute(
                "UPDATE invocations SET state = 'running', owner = 'w' WHERE id = ?", (invocation_id,)
            )
        )
        assert await store.settle("w", [journal.Outcome(invocation_id, "planned", plan=plan)], now=T0) == 1
        assert (await store.invocation(invocation_id)).plan == plan  # type: ignore[union-attr]
    finally:
        await store.close()
    assert (
        sqlite3.connect(tmp_path / "j.db").execute("PRAGMA user_version").fetchone()[0]
        == sqlite_store.SCHEMA_VERSION
    )
