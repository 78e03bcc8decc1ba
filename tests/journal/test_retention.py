"""Retention on both backends: finished work older than the cutoff goes, everything else stays."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from glue import journal, settings
from glue.journal import retention
from tests.journal.conftest import delivery
from tests.support import cloudevent


async def test_prune_removes_only_finished_work_older_than_the_cutoff(store: journal.Journal) -> None:
    await store.append(delivery(b"old"), [cloudevent(n) for n in ("done", "dead", "running", "unmatched")])
    await store.append(delivery(b"all done"), [cloudevent("done-2")])
    await store.reject(delivery(b"??"), "undecodable")
    now = time.time()
    claimed = await store.claim_events("r", limit=10, lease=30, now=now)
    decisions = {
        e.seq: [
            journal.NewInvocation(
                route="r", handler="h", idempotency_key=f"r {e.identity}", params={"id": e.id}, due_at=now
            )
        ]
        for e in claimed
        if e.id != "unmatched"
    }
    decisions.update({e.seq: [] for e in claimed if e.id == "unmatched"})
    await store.record_routing("r", decisions, now=now)
    running = {i.params["id"]: i for i in await store.claim_invocations("w", limit=10, lease=30, now=now)}
    await store.settle(
        "w",
        [
            journal.Outcome(running["done"].id, "done"),
            journal.Outcome(running["done-2"].id, "planned", plan={"summary": "dry run", "calls": []}),
            journal.Outcome(running["dead"].id, "dead", error="no"),
        ],
        now=now,
    )
    await store.append(delivery(b"new"), [cloudevent("fresh")])

    assert await retention.prune(store, before=now - 1) == {"invocations": 0, "events": 0, "deliveries": 0}
    assert [a.outcome for a in await store.attempts(running["done-2"].id)] == ["planned"]
    pruned = await retention.prune(store, before=time.time() + 1, chunk=1)  # one row per transaction

    assert pruned == {"invocations": 2, "events": 3, "deliveries": 1}
    assert sorted(e.id for e in await store.list()) == ["dead", "fresh", "running"]
    assert sorted(i.params["id"] for i in await store.invocations()) == ["dead", "running"]
    assert await store.attempts(running["done-2"].id) == [], "a planned invocation is finished: pruned"
    assert [a.outcome for a in await store.attempts(running["dead"].id)] == ["dead"]
    assert len(await store.rejected()) == 1
    assert await retention.prune(store, before=time.time() + 1) == {
        "invocations": 0,
        "events": 0,
        "deliveries": 0,
    }


async def test_the_component_prunes_at_start(store: journal.Journal) -> None:
    await store.append(delivery(), [cloudevent("x")])
    (event,) = await store.claim_events("r", limit=1, lease=30, now=time.time())
    await store.record_routing("r", {event.seq: []}, now=time.time() - 10 * 86400)
    component = retention.Retention(store, days=7)
    await component.start()
    try:
        for _ in range(2000):  # up to 20 s: generous, the machine may be busy
            if not await store.list():
                break
            await asyncio.sleep(0.01)
    finally:
        await component.stop()
    assert await store.list() == []


async def test_pruning_deliveries_looks_their_events_up_by_index(tmp_path: Path) -> None:
    """Retention finds whether an event still refers to a delivery through an index, also in a journal
    made before the index existed (it is created on open): scanning the events table for each delivery
    made pruning cost grow with the square of the journal (bench/soak.py)."""
    path = tmp_path / "old.db"
    store = journal.create(settings.Journal(path=path))
    await store.open()
    await store.close()
    db = sqlite3.connect(path)
    db.execute("DROP INDEX events_delivery")  # as a journal of an earlier release
    db.close()

    store = journal.create(settings.Journal(path=path))
    await store.open()
    await store.close()
    db = sqlite3.connect(path)
    try:
        plan = " ".join(
            str(row[3])
            for row in db.execute("EXPLAIN QUERY PLAN " + retention._SQLITE_PRUNE["deliveries"], (0, 1))
        )
    finally:
        db.close()
    assert "USING COVERING INDEX events_delivery" in plan, plan
    assert "SCAN e" not in plan, plan
