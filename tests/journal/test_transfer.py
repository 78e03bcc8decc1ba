"""Export a journal and import it into the other backend: what a user moving from SQLite to
PostgreSQL (or back) sees afterwards is the same journal."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from glue import events, formats, journal, settings
from glue.journal import transfer
from tests.journal import pgserver
from tests.journal.conftest import delivery
from tests.support import cloudevent


async def populate(store: journal.Journal) -> None:
    """Events in every state: done, retrying, dead, running (claimed), awaiting approval (with its
    plan), unmatched, pending; a rejection; the attempts that ended; a paused route and the audit
    trail of that pause."""
    await store.append(delivery(b"one", key=b"\x00k"), [cloudevent(n, data={"n": n}) for n in "abcdex"])
    await store.reject(delivery(b"\xff"), "not JSON")
    now = time.time()
    claimed = await store.claim_events("r", limit=10, lease=30, now=now)
    decisions = {
        e.seq: [
            journal.NewInvocation(
                route="route-1",
                handler="h",
                idempotency_key=journal.idempotency_key(e.identity, "route-1"),
                params={"id": e.id, "nested": {"x": [1, 2]}},
                due_at=now,
                ordering_key="k" if e.id == "a" else None,
            )
        ]
        for e in claimed
        if e.id != "e"
    }
    decisions.update({e.seq: [] for e in claimed if e.id == "e"})
    await store.record_routing("r", decisions, now=now)
    running = {i.params["id"]: i for i in await store.claim_invocations("w", limit=10, lease=30, now=now)}
    await store.settle(
        "w",
        [
            journal.Outcome(running["a"].id, "done"),
            journal.Outcome(running["b"].id, "retry", due_at=now + 60, error="503 from upstream"),
            journal.Outcome(running["c"].id, "dead", error="forbidden"),
        ],
        now=now,
    )
    plan = {"summary": "rotate d", "calls": [{"method": "POST", "target": "/v1/x"}]}
    assert await store.await_approval("w", running["x"].id, plan, deadline=now + 3600, now=now)
    await store.append(delivery(b"two"), [cloudevent("f")])
    await store.set_pause("route-1", paused=True, reason="bad rule", until=now + 600, by="ops", now=now)
    await store.record_audit(
        "ops", "pause", route="route-1", target=None, reason="bad rule", detail={"for": 600}, now=now
    )


async def snapshot(store: journal.Journal) -> dict[str, object]:
    stored = await store.list(limit=1000)
    return {
        "events": stored,
        "deliveries": [await store.delivery(e.delivery_id) for e in stored],
        "rejected": await store.rejected(),
        "invocations": [i.summary() | {"params": i.params} for i in await store.invocations(limit=1000)],
        "backlog": await store.backlog(),
        "attempts": {i.id: await store.attempts(i.id) for i in await store.invocations(limit=1000)},
        "audit": await store.audit(),
        "rails": await store.rails(),
    }


@pytest.fixture
async def both(tmp_path: Path, pg_dsn: str):  # type: ignore[no-untyped-def]
    lite = journal.create(settings.Journal(backend="sqlite", path=tmp_path / "j.db"))
    pg = journal.create(settings.Journal(backend="postgres", dsn=settings.SecretRef(value=SecretStr(pg_dsn))))
    await lite.open()
    await pg.open()
    yield lite, pg
    await lite.close()
    await pg.close()


async def lines(store: journal.Journal) -> list[bytes]:
    return [line async for line in transfer.export(store)]


async def test_sqlite_to_postgres_and_back_keeps_the_journal(both, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lite, pg = both
    await populate(lite)
    before = await snapshot(lite)
    exported = await lines(lite)

    counts = await transfer.load(pg, transfer.parse(exported))

    assert counts == {
        **{"deliveries": 3, "events": 7, "invocations": 5},
        **{"attempts": 3, "audit": 1, "rails": 1},
    }
    after = await snapshot(pg)
    [waiting] = [i for i in after["invocations"] if i["state"] == "awaiting-approval"]  # type: ignore[attr-defined]
    assert waiting["waitReason"] == "approval" and waiting["plan"]["summary"] == "rotate d"
    # The running invocation came over released (pending, its interrupted attempt not counted).
    running = [i for i in before["invocations"] if i["state"] == "running"]  # type: ignore[attr-defined]
    assert len(running) == 1
    moved = {i["id"]: i for i in after["invocations"]}  # type: ignore[attr-defined]
    assert moved[running[0]["id"]]["state"] == "pending"
    assert moved[running[0]["id"]]["attempt"] == 0
    for item in before["invocations"]:  # type: ignore[attr-defined]
        if item["state"] != "running":
            assert moved[item["id"]] == item
    assert after["events"] == before["events"]
    assert after["deliveries"] == before["deliveries"]
    assert after["rejected"] == before["rejected"]
    # The attempts' history, the audit trail and the pause came along.
    history: dict[int, list[journal.AttemptRecord]] = after["attempts"]  # type: ignore[assignment]
    assert after["attempts"] == before["attempts"] and sum(len(rows) for rows in history.values()) == 3
    assert after["audit"] == before["audit"] and after["rails"] == before["rails"]
    assert after["rails"]["route-1"].paused_at(time.time())  # type: ignore[index]
    # Dedup and ids carry on where the source left off.
    assert (await pg.append(delivery(), [cloudevent("a")]))[0].new is False
    await pg.append(delivery(), [cloudevent("g")])
    assert (await pg.get("g")).seq == max(e.seq for e in before["events"]) + 1  # type: ignore[attr-defined]
    assert await pg.reject(delivery(b"?"), "x") > max(r.delivery_id for r in before["rejected"])  # type: ignore[attr-defined]

    # And back: a fresh SQLite journal gets the same rows from PostgreSQL.
    back = journal.create(settings.Journal(backend="sqlite", path=tmp_path / "back.db"))
    await back.open()
    try:
        await transfer.load(back, transfer.parse(await lines(pg)))
        assert await snapshot(back) == await snapshot(pg)
    finally:
        await back.close()


async def test_import_refuses_a_journal_that_is_not_empty(both) -> None:  # type: ignore[no-untyped-def]
    lite, pg = both
    await populate(lite)
    await pg.append(delivery(), [cloudevent("already-here")])
    with pytest.raises(transfer.TransferError, match="not empty"):
        await transfer.load(pg, transfer.parse(await lines(lite)))
    assert [e.id for e in await pg.list()] == ["already-here"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", "empty"),
        (b'{"kind": "something"}\n', "line 1: not a glue journal export"),
        (b'{"kind": "glue-journal", "version": 1}\nnot json\n', "line 2: not JSON"),
        (
            b'{"kind": "glue-journal", "version": 1}\n{"kind": "event", "row": {"seq": 1}}\n',
            "line 2: event lacks",
        ),
        (b'{"kind": "glue-journal", "version": 9}\n', "format 9 is not supported"),
    ],
)
def test_a_broken_export_is_refused_with_the_line(text: bytes, message: str) -> None:
    with pytest.raises(transfer.TransferError, match=message):
        list(transfer.parse(text.splitlines()))


@pytest.mark.parametrize(("left_out", "referrer"), [("delivery", "event"), ("event", "invocation")])
async def test_an_export_that_breaks_references_changes_nothing(  # type: ignore[no-untyped-def]
    both, tmp_path: Path, left_out: str, referrer: str
) -> None:
    lite, pg = both
    await populate(lite)
    exported = [line for line in await lines(lite) if f'"kind":"{left_out}"'.encode() not in line]
    other = journal.create(settings.Journal(backend="sqlite", path=tmp_path / "other.db"))
    await other.open()
    try:
        for target in (pg, other):
            with pytest.raises(
                transfer.TransferError, match=rf"inconsistent: {referrer} \d+ refers to {left_out} \d+"
            ):
                await transfer.load(target, transfer.parse(exported))
            assert await target.list() == []
            assert await target.invocations() == []
    finally:
        await other.close()


pg_database = pgserver.pg_database


async def test_events_identified_by_a_digest_keep_their_window_across_backends(both) -> None:  # type: ignore[no-untyped-def]
    """A retry of an event without a producer id, arriving after the move, is still recognised; an
    export written before the digest column existed imports as events whose producer gave their id."""
    lite, pg = both
    options = formats.Options(type="t", source="s")

    def arrived(at: float) -> tuple[events.Delivery, list[events.CloudEvent]]:
        sent = events.Delivery("http", "argo", "argo", {}, b'{"tag": "v1"}', received_at=at)
        return sent, formats.decode(sent, options)

    [first] = await lite.append(*arrived(1000.0))
    exported = await lines(lite)
    await transfer.load(pg, transfer.parse(exported))
    [retry] = await pg.append(*arrived(1060.0))
    assert (retry.new, retry.id) == (False, first.id)

    older = [re.sub(rb',"digest":("[^"]*"|null)', b"", line) for line in exported]
    assert older != exported
    fresh = journal.create(settings.Journal(backend="sqlite", path=Path(str(lite.path) + ".old")))
    await fresh.open()
    try:
        assert (await transfer.load(fresh, transfer.parse(older)))["events"] == 1
        assert [e.id for e in await fresh.list()] == [first.id]
    finally:
        await fresh.close()
