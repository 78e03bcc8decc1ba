"""Flow shaping in the journal, on both backends: what ``record_routing`` decides for invocations of
routes that coalesce or supersede, between replicas recording at the same moment and for events
routed out of order (a routing pass that took an earlier event late)."""

from __future__ import annotations

import asyncio

from glue import journal
from tests.support import cloudevent

from .conftest import Opener, delivery_of

T0 = 1_700_000_000.0


def invocation(
    seq: int, *, coalesce: journal.Coalesce | None = None, conflict: journal.Conflict | None = None
) -> journal.NewInvocation:
    return journal.NewInvocation(
        route="r",
        handler="log",
        idempotency_key=f"r event-{seq}",
        params={"n": seq},
        due_at=T0,
        ordering_key="r shop" if conflict is not None else None,
        conflict=conflict,
        coalesce=coalesce,
    )


WINDOW = journal.Coalesce(key="r llama", window=30.0, max_wait=300.0)


async def pending_events(store: journal.Journal, count: int) -> list[int]:
    for n in range(count):
        await store.append(delivery_of(cloudevent(f"e{n}")), [cloudevent(f"e{n}")])
    return [e.seq for e in await store.list(status="pending")]


async def states(store: journal.Journal) -> list[tuple[int, str, int | None, float]]:
    """(event seq, state, the event seq of what took its place, due time) per invocation."""
    rows = await store.invocations(limit=100)
    seq_of = {row.id: row.event_seq for row in rows}
    return [(r.event_seq, r.state, seq_of.get(r.taken_by) if r.taken_by else None, r.due_at) for r in rows]


async def test_two_replicas_recording_one_key_at_once_leave_one_open_invocation(
    store: journal.Journal, open_journal: Opener
) -> None:
    other = await open_journal()
    first, second = await pending_events(store, 2)
    assert [e.seq for e in await store.claim_events("a", limit=1, lease=60, now=T0)] == [first]
    assert [e.seq for e in await other.claim_events("b", limit=1, lease=60, now=T0)] == [second]
    shaped = await asyncio.gather(
        store.record_routing("a", {first: [invocation(first, coalesce=WINDOW)]}, now=T0),
        other.record_routing("b", {second: [invocation(second, coalesce=WINDOW)]}, now=T0 + 1),
    )
    assert sorted(s for found in shaped for s in found) == [("r", "coalesced")]
    found = await states(store)
    assert sorted(state for _, state, _, _ in found) == ["coalesced", "pending"], found
    [(open_seq, _, _, due)] = [row for row in found if row[1] == "pending"]
    assert [taker for _, state, taker, _ in found if state == "coalesced"] == [open_seq]
    assert due in (T0 + 30, T0 + 31), "the window runs from the last event recorded"


async def test_an_event_routed_after_a_later_one_joins_it(store: journal.Journal) -> None:
    earlier, later = await pending_events(store, 2)
    await store.claim_events("a", limit=2, lease=60, now=T0)
    await store.record_routing(
        "a", {later: [invocation(later, coalesce=WINDOW)]}, now=T0, unfinished=[earlier]
    )
    await store.record_routing("a", {earlier: [invocation(earlier, coalesce=WINDOW)]}, now=T0 + 5)
    assert sorted(await states(store)) == [
        (earlier, "coalesced", later, T0),
        (later, "pending", None, T0 + 30),
    ]


async def test_an_older_invocation_routed_late_is_superseded_by_the_newer_one(store: journal.Journal) -> None:
    earlier, later = await pending_events(store, 2)
    await store.claim_events("a", limit=2, lease=60, now=T0)
    await store.record_routing(
        "a", {later: [invocation(later, conflict="supersede")]}, now=T0, unfinished=[earlier]
    )
    shaped = await store.record_routing("a", {earlier: [invocation(earlier, conflict="supersede")]}, now=T0)
    assert shaped == [("r", "superseded")]
    assert sorted((s, state, taker) for s, state, taker, _ in await states(store)) == [
        (earlier, "superseded", later),
        (later, "pending", None),
    ]


async def test_supersede_ends_every_waiting_one_and_keeps_the_running_one(store: journal.Journal) -> None:
    seqs = await pending_events(store, 4)
    await store.claim_events("a", limit=4, lease=60, now=T0)
    await store.record_routing("a", {seqs[0]: [invocation(seqs[0], conflict="supersede")]}, now=T0)
    [running] = await store.claim_invocations("a", limit=10, lease=60, now=T0)
    await store.record_routing("a", {s: [invocation(s, conflict="supersede")] for s in seqs[1:]}, now=T0 + 1)
    assert sorted((s, state, taker) for s, state, taker, _ in await states(store)) == [
        (seqs[0], "running", None),
        (seqs[1], "superseded", seqs[3]),
        (seqs[2], "superseded", seqs[3]),
        (seqs[3], "pending", None),
    ]
    assert await store.cancel_requested("a") == {}, "supersede leaves the running one alone"
    assert running.event_seq == seqs[0]


async def test_cancel_marks_the_running_one_for_its_owner(
    store: journal.Journal, open_journal: Opener
) -> None:
    other = await open_journal()
    first, second = await pending_events(store, 2)
    await store.claim_events("a", limit=1, lease=60, now=T0)
    await store.record_routing("a", {first: [invocation(first, conflict="cancel")]}, now=T0)
    [running] = await store.claim_invocations("a", limit=10, lease=60, now=T0)
    await other.claim_events("b", limit=1, lease=60, now=T0)  # another replica routes the newer one
    await other.record_routing("b", {second: [invocation(second, conflict="cancel")]}, now=T0 + 1)
    newer = next(i.id for i in await store.invocations() if i.event_seq == second)
    assert await store.cancel_requested("a") == {running.id: newer}
    assert await store.cancel_requested("b") == {}
    assert await other.claim_invocations("b", limit=10, lease=60, now=T0 + 2) == [], "it waits its turn"
