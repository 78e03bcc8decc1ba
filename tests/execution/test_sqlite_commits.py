"""SQLite journal: how execution state and intake commit (glue/journal/sqlite.py, ``_execution``).

Execution state (claims, routing, outcomes) commits without waiting for the disk unless
``journal.durableExecutionCommits``, as the PostgreSQL journal does; intake commits keep
``journal.synchronous``. What the writer connection runs is observed with sqlite3's own statement trace
(``Connection.set_trace_callback``), and its setting with ``PRAGMA synchronous`` (SQLite's pragma
documentation: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from glue import journal, settings
from glue.journal import sqlite

from .conftest import cloudevent, delivery_of

T0 = 1_000_000.0


async def open_store(tmp_path: Path, **config: object) -> tuple[sqlite.SQLiteJournal, list[str]]:
    store = sqlite.SQLiteJournal(settings.Journal(path=tmp_path / "j.db", group_commit_ms=0, **config))  # type: ignore[arg-type]
    await store.open()
    statements: list[str] = []
    await store.write(lambda db: db.set_trace_callback(statements.append))
    return store, statements


async def one_event_through_execution(store: sqlite.SQLiteJournal, name: str) -> None:
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


def synchronous_of_transactions(statements: list[str]) -> list[tuple[str, str]]:
    """(first statement, synchronous setting) of every transaction the writer ran."""
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
        await one_event_through_execution(store, "a")
        await one_event_through_execution(store, "b")
        transactions = synchronous_of_transactions(statements)
        intake = [mode for first, mode in transactions if first == "INSERT"]
        execution = [mode for first, mode in transactions if first != "INSERT"]
        assert intake == ["FULL", "FULL"], transactions
        assert len(execution) == 8 and set(execution) == {"NORMAL"}, transactions
        assert await store.write(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2
    finally:
        await store.close()


@pytest.mark.parametrize("config", [{"durable_execution_commits": True}, {"synchronous": "normal"}])
async def test_durable_execution_commits_or_a_normal_journal_change_nothing(
    tmp_path: Path, config: dict[str, object]
) -> None:
    store, statements = await open_store(tmp_path, **config)
    try:
        await one_event_through_execution(store, "a")
        assert not any(sql.upper().startswith("PRAGMA SYNCHRONOUS") for sql in statements), statements
    finally:
        await store.close()


async def test_a_failed_execution_transaction_rolls_back_and_restores_the_setting(tmp_path: Path) -> None:
    store, _ = await open_store(tmp_path, synchronous="full")
    try:
        event = cloudevent("a")
        await store.append(delivery_of(event), [event])
        await store.write(lambda db: db.execute("DROP TABLE event_claims"))
        with pytest.raises(journal.JournalUnavailable, match="no such table"):
            await store.claim_events("w", limit=10, lease=30, now=T0)
        assert await store.write(lambda db: db.in_transaction) is False
        assert await store.write(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2
    finally:
        await store.close()
