"""SQLite journal: where and how execution state commits (glue/journal/sqlite.py, ``_run_execution``).

Execution state (claims, routing, outcomes) commits without waiting for the disk unless
``journal.durableExecutionCommits``, as the PostgreSQL journal does, and then runs on the event loop's
own connection rather than through the writer thread; intake commits keep ``journal.synchronous``.
What the writer connection runs is observed with sqlite3's statement trace
(``Connection.set_trace_callback``) through the journal's ``write`` helper, and its setting with
``PRAGMA synchronous`` (SQLite's pragma documentation: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from glue import journal, settings
from glue.journal import sqlite

from .conftest import cloudevent, delivery_of

T0 = 1_000_000.0


async def open_store(tmp_path: Path, **config: object) -> tuple[sqlite.SQLiteJournal, list[str]]:
    path = tmp_path / "j.db"
    store = sqlite.SQLiteJournal(settings.Journal(path=path, group_commit_ms=0, **config))  # type: ignore[arg-type]
    await store.open()
    statements: list[str] = []
    await store.write(lambda db: db.set_trace_callback(statements.append))
    return store, statements


async def one_event_through_execution(store: sqlite.SQLiteJournal, name: str) -> int:
    event = cloudevent(name)
    await store.append(delivery_of(event), [event])
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


async def test_execution_commits_do_not_wait_for_the_disk_intake_commits_do(tmp_path: Path) -> None:
    store, statements = await open_store(tmp_path, synchronous="full")
    try:
        first = await one_event_through_execution(store, "a")
        second = await one_event_through_execution(store, "b")
        seen = transactions(statements)
        assert [mode for first_sql, mode in seen if first_sql == "INSERT"] == ["FULL", "FULL"], seen
        assert [mode for first_sql, mode in seen if first_sql != "INSERT"] == [], (
            "execution ran on the event loop's connection, not through the writer thread"
        )
        for invocation_id in (first, second):  # committed and visible to the other connections
            assert (await store.invocation(invocation_id)).state == "done"  # type: ignore[union-attr]
        assert (await store.get(1)).status == "routed"  # type: ignore[union-attr]
        assert await store.write(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2
    finally:
        await store.close()


async def test_durable_execution_commits_go_through_the_writer_at_full(tmp_path: Path) -> None:
    store, statements = await open_store(tmp_path, synchronous="full", durable_execution_commits=True)
    try:
        await one_event_through_execution(store, "a")
        seen = transactions(statements)
        expected = ["INSERT", "SELECT", "SELECT", "SELECT", "UPDATE"]  # append, claim, route, claim, settle
        assert seen == [(first, "FULL") for first in expected], seen
    finally:
        await store.close()


async def test_a_busy_journal_sends_execution_to_the_writer_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    store, statements = await open_store(tmp_path, synchronous="full")
    try:
        event = cloudevent("a")
        await store.append(delivery_of(event), [event])

        def hold_the_write_lock(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            time.sleep(0.5)
            db.execute("COMMIT")

        holder = asyncio.create_task(store.write(hold_the_write_lock))
        await asyncio.sleep(0.1)  # the writer thread holds the lock now
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        claimed = await store.claim_events("w", limit=10, lease=30, now=T0)
        ticker.cancel()
        await holder
        assert [e.id for e in claimed] == ["a"]
        assert ticks >= 10, "the loop kept running while the claim waited for the lock"
        assert ("SELECT", "NORMAL") in transactions(statements), "the claim ran on the writer, relaxed"
        assert await store.write(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2
    finally:
        await store.close()


async def test_a_failed_execution_transaction_rolls_back(tmp_path: Path) -> None:
    store, _ = await open_store(tmp_path, synchronous="full")
    try:
        event = cloudevent("a")
        await store.append(delivery_of(event), [event])
        await store.write(lambda db: db.execute("DROP TABLE event_claims"))
        with pytest.raises(journal.JournalUnavailable, match="no such table"):
            await store.claim_events("w", limit=10, lease=30, now=T0)
        assert [e.status for e in await store.list()] == ["pending"]
    finally:
        await store.close()
