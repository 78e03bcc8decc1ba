"""The execution half of the Journal protocol (glue/journal/__init__.py), the same for every backend.

Each test drives a real journal (conftest.BACKENDS) through its public methods and asserts the rows it
hands back, at explicit ``now`` values, so leases and due times need no waiting.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from glue import events, journal
from tests.support import cloudevent

from .conftest import Append, delivery_of

T0 = 1_000_000.0


def new(
    route: str, identity: str, *, key: str | None = None, due: float = T0, **kw: object
) -> journal.NewInvocation:
    return journal.NewInvocation(
        route=route,
        handler="log",
        idempotency_key=journal.idempotency_key(identity, route),
        params={"message": identity},
        due_at=due,
        ordering_key=key,
        **kw,  # type: ignore[arg-type]
    )


async def route_all(
    store: journal.Journal, owner: str = "a", **keys: str | None
) -> list[journal.StoredEvent]:
    """Claim every pending event and give each one invocation of route r (ordering key by event id)."""
    claimed = await store.claim_events(owner, limit=1000, lease=30, now=T0)
    await store.record_routing(
        owner,
        {e.seq: [new("r", e.identity, key=keys.get(e.id))] for e in claimed},
        now=T0,
    )
    return claimed


async def test_claim_events_in_seq_order_and_leased(store: journal.Journal, append: Append) -> None:
    await append(*(cloudevent(str(i)) for i in range(5)))
    first = await store.claim_events("a", limit=3, lease=30, now=T0)
    assert [e.id for e in first] == ["0", "1", "2"]
    other = await store.claim_events("b", limit=10, lease=30, now=T0 + 1)
    assert [e.id for e in other] == ["3", "4"], "claims held by a live lease are skipped"
    again = await store.claim_events("b", limit=10, lease=30, now=T0 + 2)
    assert [e.id for e in again] == ["3", "4"], "an owner may renew its own claims"
    taken_over = await store.claim_events("b", limit=10, lease=30, now=T0 + 31)
    assert [e.id for e in taken_over][:3] == ["0", "1", "2"], "an expired lease is taken over"


async def test_record_routing_marks_events_and_dedups_invocations(
    store: journal.Journal, append: Append
) -> None:
    await append(cloudevent("matched"), cloudevent("ignored"))
    claimed = await store.claim_events("a", limit=10, lease=30, now=T0)
    matched, ignored = claimed
    decision = {matched.seq: [new("r1", matched.identity), new("r2", matched.identity)], ignored.seq: []}
    await store.record_routing("a", decision, now=T0)
    assert (await store.get(matched.seq)).status == "routed"  # type: ignore[union-attr]
    assert (await store.get(ignored.seq)).status == "unmatched"  # type: ignore[union-attr]
    assert await store.backlog() == 0
    rows = await store.invocations(event_seq=matched.seq)
    assert [(i.route, i.state, i.attempt, i.idempotency_key) for i in rows] == [
        ("r1", "pending", 0, f"r1 {matched.identity}"),
        ("r2", "pending", 0, f"r2 {matched.identity}"),
    ]
    assert rows[0].params == {"message": matched.identity}
    # a second routing of the same event (crash after commit, replay) adds nothing
    await store.record_routing("a", decision, now=T0)
    assert len(await store.invocations()) == 2


async def test_record_routing_by_a_stale_owner_is_ignored(store: journal.Journal, append: Append) -> None:
    await append(cloudevent("x"))
    (event,) = await store.claim_events("a", limit=1, lease=10, now=T0)
    (again,) = await store.claim_events("b", limit=1, lease=10, now=T0 + 11)
    await store.record_routing("a", {event.seq: [new("r", event.identity)]}, now=T0 + 12)
    assert await store.invocations() == []
    assert (await store.get(event.seq)).status == "pending"  # type: ignore[union-attr]
    await store.record_routing("b", {again.seq: [new("r", again.identity)]}, now=T0 + 12)
    assert len(await store.invocations()) == 1


async def test_dead_on_arrival_invocation_goes_to_the_dead_letter_queue(
    store: journal.Journal, append: Append
) -> None:
    await append(cloudevent("bad-params"))
    (event,) = await store.claim_events("a", limit=1, lease=10, now=T0)
    bad = new("r", event.identity, state="dead", error="params.url: Field required")
    await store.record_routing("a", {event.seq: [bad]}, now=T0)
    (dead,) = await store.invocations(state="dead")
    assert dead.last_error == "params.url: Field required"
    assert await store.claim_invocations("w", limit=10, lease=30, now=T0 + 100) == []


async def test_claim_invocations_respects_due_time_lease_and_route_limits(
    store: journal.Journal, append: Append
) -> None:
    await append(cloudevent("1"), cloudevent("2"))
    claimed = await store.claim_events("a", limit=10, lease=30, now=T0)
    await store.record_routing(
        "a",
        {
            claimed[0].seq: [new("fast", claimed[0].identity)],
            claimed[1].seq: [new("slow", claimed[1].identity, due=T0 + 60)],
        },
        now=T0,
    )
    assert [
        i.route
        for i in await store.claim_invocations("w", limit=10, lease=30, now=T0, exclude_routes=["fast"])
    ] == []
    (running,) = await store.claim_invocations("w", limit=10, lease=30, now=T0)
    assert (running.route, running.state, running.attempt, running.owner) == ("fast", "running", 1, "w")
    assert await store.claim_invocations("v", limit=10, lease=30, now=T0 + 29) == [], "leased and not yet due"
    stolen = await store.claim_invocations("v", limit=10, lease=30, now=T0 + 61)
    assert sorted((i.route, i.attempt) for i in stolen) == [("fast", 2), ("slow", 1)], (
        "expired lease: attempt 2"
    )
    # the first owner's late outcome no longer counts
    assert await store.settle("w", [journal.Outcome(running.id, "done")], now=T0 + 62) == 0
    assert (await store.invocation(running.id)).state == "running"  # type: ignore[union-attr]


async def test_settle_done_retry_dead(store: journal.Journal, append: Append) -> None:
    await append(cloudevent("1"), cloudevent("2"), cloudevent("3"))
    await route_all(store)
    a, b, c = await store.claim_invocations("w", limit=10, lease=30, now=T0)
    outcomes = [
        journal.Outcome(a.id, "done"),
        journal.Outcome(b.id, "retry", due_at=T0 + 5, error="HTTP 503"),
        journal.Outcome(c.id, "dead", error="HTTP 404"),
    ]
    assert await store.settle("w", outcomes, now=T0 + 1) == 3
    done, retry, dead = [await store.invocation(i.id) for i in (a, b, c)]
    assert done is not None and dead is not None and retry is not None
    assert (done.state, dead.state, dead.last_error) == ("done", "dead", "HTTP 404")
    assert (retry.state, retry.due_at, retry.last_error, retry.attempt) == ("pending", T0 + 5, "HTTP 503", 1)
    assert await store.claim_invocations("w", limit=10, lease=30, now=T0 + 4) == []
    (again,) = await store.claim_invocations("w", limit=10, lease=30, now=T0 + 5)
    assert (again.id, again.attempt) == (b.id, 2)
    assert await store.oldest_pending() == T0
    await store.settle("w", [journal.Outcome(again.id, "done")], now=T0 + 6)
    assert await store.oldest_pending() is None


async def test_ordering_key_runs_one_at_a_time_in_event_order(store: journal.Journal, append: Append) -> None:
    await append(*(cloudevent(str(i)) for i in range(4)))
    await route_all(store, **{"0": "k", "1": "k", "2": "other", "3": "k"})
    batch = await store.claim_invocations("w", limit=10, lease=30, now=T0)
    assert sorted(i.ordering_key or "" for i in batch) == ["k", "other"], "one per key, keys in parallel"
    head = next(i for i in batch if i.ordering_key == "k")
    # a retry of the head keeps the rest of its key waiting, even when they are due
    await store.settle("w", [journal.Outcome(head.id, "retry", due_at=T0 + 10, error="later")], now=T0)
    assert await store.claim_invocations("w", limit=10, lease=30, now=T0 + 1) == []
    (again,) = await store.claim_invocations("w", limit=10, lease=30, now=T0 + 10)
    assert again.id == head.id
    await store.settle("w", [journal.Outcome(again.id, "dead", error="gave up")], now=T0 + 10)
    (second,) = await store.claim_invocations("w", limit=10, lease=30, now=T0 + 10)
    assert second.event_seq > head.event_seq and second.ordering_key == "k"


async def test_ordered_invocations_wait_for_earlier_unrouted_events(
    store: journal.Journal, append: Append
) -> None:
    await append(cloudevent("early"), cloudevent("late"))
    early, late = await store.claim_events("a", limit=10, lease=30, now=T0)
    await store.record_routing("a", {late.seq: [new("r", late.identity, key="k")]}, now=T0)
    assert await store.claim_invocations("w", limit=10, lease=30, now=T0) == []
    await store.record_routing("a", {early.seq: []}, now=T0)
    assert len(await store.claim_invocations("w", limit=10, lease=30, now=T0)) == 1


async def test_release_returns_claims_without_counting_the_attempt(
    store: journal.Journal, append: Append
) -> None:
    await append(cloudevent("1"), cloudevent("2"), cloudevent("unrouted"))
    await store.claim_events("a", limit=2, lease=30, now=T0)  # claims 1 and 2 ...
    await store.release("a", now=T0)  # ... and gives them back
    assert len(await route_all(store, owner="b")) == 3
    a, b, _c = await store.claim_invocations("w", limit=10, lease=30, now=T0)
    assert await store.release("w", now=T0 + 1, ids=[a.id]) == 1
    released = await store.invocation(a.id)
    assert released is not None and (released.state, released.attempt, released.owner) == ("pending", 0, None)
    assert (await store.invocation(b.id)).state == "running"  # type: ignore[union-attr]
    assert await store.release("w", now=T0 + 1) == 2
    assert {i.state for i in await store.invocations()} == {"pending"}


async def test_dead_letter_queue_list_redrive_purge(store: journal.Journal, append: Append) -> None:
    await append(*(cloudevent(str(i)) for i in range(3)))
    await route_all(store)
    claimed = await store.claim_invocations("w", limit=10, lease=30, now=T0)
    await store.settle(
        "w",
        [journal.Outcome(claimed[0].id, "done")]
        + [journal.Outcome(i.id, "dead", error="boom") for i in claimed[1:]],
        now=T0 + 1,
    )
    dead = await store.invocations(state="dead")
    assert [i.id for i in dead] == [claimed[1].id, claimed[2].id]
    assert await store.invocations(state="dead", since=T0 + 2) == []
    assert await store.redrive([claimed[0].id, claimed[1].id], now=T0 + 3) == [claimed[1].id], (
        "done is skipped"
    )
    redriven = await store.invocation(claimed[1].id)
    assert redriven is not None and (redriven.state, redriven.attempt, redriven.idempotency_key) == (
        "pending",
        0,
        claimed[1].idempotency_key,
    )
    assert await store.purge([claimed[1].id, claimed[2].id]) == [claimed[2].id], "only dead rows are purged"
    assert await store.invocation(claimed[2].id) is None
    assert [i.id for i in await store.claim_invocations("w", limit=10, lease=30, now=T0 + 3)] == [
        claimed[1].id
    ]


async def test_identity_of_an_invocation_is_event_identity_and_route(append: Append) -> None:
    event = cloudevent("abc", source="/harbor")
    assert journal.idempotency_key(events.identity(event), "restart") == "restart /harbor abc"


async def test_an_unfinished_routing_keeps_the_event_pending_and_adds_to_it_later(
    store: journal.Journal, append: Append
) -> None:
    """Some routes decided (their invocations are in and may run), others could not yet (enrichment):
    the event stays pending and claimed; routing it again adds only what is new, then finishes it."""
    await append(cloudevent("e"))
    [claimed] = await store.claim_events("a", limit=10, lease=30, now=T0)
    early = new("plain", claimed.identity)
    await store.record_routing("a", {claimed.seq: [early]}, now=T0, unfinished=[claimed.seq])
    assert (await store.get(claimed.seq)).status == "pending"  # type: ignore[union-attr]
    assert [i.route for i in await store.invocations(event_seq=claimed.seq)] == ["plain"]
    assert await store.claim_events("b", limit=10, lease=30, now=T0 + 1) == [], "still claimed by a"
    [again] = await store.claim_events("a", limit=10, lease=30, now=T0 + 2)
    assert again.seq == claimed.seq
    await store.record_routing("a", {again.seq: [early, new("enriched", again.identity)]}, now=T0 + 2)
    assert (await store.get(again.seq)).status == "routed"  # type: ignore[union-attr]
    assert sorted(i.route for i in await store.invocations(event_seq=again.seq)) == ["enriched", "plain"]


# -- planned invocations and the history of attempts (issue 16, items 5 and 11) -------------------------


async def test_a_planned_outcome_ends_planned_with_its_plan(store: journal.Journal, append: Append) -> None:
    await append(cloudevent("dry"), cloudevent("live"))
    await route_all(store)
    dry, live = await store.claim_invocations("w", limit=10, lease=30, now=T0)
    call: dict[str, Any] = {"method": "PATCH", "path": "/apis/x\x00y", "body": {"n": 1}}
    plan: dict[str, Any] = {"summary": "restart", "calls": [call]}
    outcomes = [journal.Outcome(dry.id, "planned", plan=plan), journal.Outcome(live.id, "done")]
    assert await store.settle("w", outcomes, now=T0 + 1) == 2
    planned = await store.invocation(dry.id)
    assert planned is not None and planned.state == "planned"
    # a NUL from event data is kept out of the stored JSON (PostgreSQL's jsonb refuses it)
    assert planned.plan == {**plan, "calls": [{**call, "path": "/apis/x\ufffdy"}]}
    assert planned.summary()["plan"] == planned.plan
    done = await store.invocation(live.id)
    assert done is not None and (done.state, done.plan) == ("done", None)
    assert [i.id for i in await store.invocations(state="planned")] == [dry.id]
    assert await store.oldest_pending() is None, "a planned invocation is finished"
    assert await store.claim_invocations("w", limit=10, lease=30, now=T0 + 100) == []


async def test_every_attempt_is_kept_with_its_outcome_time_and_error(
    store: journal.Journal, append: Append
) -> None:
    await append(cloudevent("1"))
    await route_all(store)
    (first,) = await store.claim_invocations("w", limit=10, lease=30, now=T0)
    retry = journal.Outcome(first.id, "retry", due_at=T0 + 5, error="HTTP 503", started_at=T0, duration=0.25)
    await store.settle("w", [retry], now=T0 + 1)
    (second,) = await store.claim_invocations("w", limit=10, lease=30, now=T0 + 5)
    dead = journal.Outcome(second.id, "dead", error="HTTP 404", started_at=T0 + 5, duration=0.5)
    await store.settle("w", [dead], now=T0 + 6)
    history = await store.attempts(first.id)
    assert [(a.attempt, a.started_at, a.duration, a.outcome, a.error) for a in history] == [
        (1, T0, 0.25, "retry", "HTTP 503"),
        (2, T0 + 5, 0.5, "dead", "HTTP 404"),
    ]
    # retried by an operator: the attempts start over and the history keeps the earlier ones
    await store.redrive([first.id], now=T0 + 10)
    (third,) = await store.claim_invocations("w", limit=10, lease=30, now=T0 + 10)
    await store.settle(
        "w", [journal.Outcome(third.id, "done", started_at=T0 + 10, duration=0.1)], now=T0 + 11
    )
    assert [(a.attempt, a.outcome) for a in await store.attempts(first.id)] == [
        (1, "retry"),
        (2, "dead"),
        (1, "done"),
    ]


async def test_an_outcome_whose_claim_was_lost_adds_no_attempt(
    store: journal.Journal, append: Append
) -> None:
    await append(cloudevent("1"))
    await route_all(store)
    (mine,) = await store.claim_invocations("w", limit=10, lease=30, now=T0)
    (theirs,) = await store.claim_invocations("v", limit=10, lease=30, now=T0 + 31)
    assert await store.settle("w", [journal.Outcome(mine.id, "done", started_at=T0)], now=T0 + 32) == 0
    assert await store.attempts(mine.id) == []
    assert await store.settle("v", [journal.Outcome(theirs.id, "done", started_at=T0 + 31)], now=T0 + 33) == 1
    assert [(a.attempt, a.outcome, a.duration) for a in await store.attempts(mine.id)] == [(2, "done", None)]


async def test_a_dropped_invocation_and_a_purged_one(store: journal.Journal, append: Append) -> None:
    await append(cloudevent("1"), cloudevent("2"))
    await route_all(store)
    a, b = await store.claim_invocations("w", limit=10, lease=30, now=T0)
    await store.settle(
        "w",
        [journal.Outcome(a.id, "done", error="gave up"), journal.Outcome(b.id, "dead", error="boom")],
        now=T0 + 1,
    )
    assert [x.outcome for x in await store.attempts(a.id)] == ["dropped"], "done with an error: dropped"
    assert await store.purge([b.id]) == [b.id]
    assert await store.attempts(b.id) == [], "the history goes with its invocation"


async def test_browse_is_newest_first_filtered_and_paged(store: journal.Journal) -> None:
    """The console's listing: by type, source, subject, status and receive time, below a seq."""
    kinds = [("push", "/gitlab", "main"), ("push", "/gitlab", "dev"), ("pushed", "/harbor", None)] * 3
    for n, (type_, source, subject) in enumerate(kinds):
        event = cloudevent(str(n), type=type_, source=source, **({"subject": subject} if subject else {}))
        await store.append(dataclasses.replace(delivery_of(event), received_at=T0 + n), [event])
    first = await store.browse(limit=4)
    assert [e.id for e in first] == ["8", "7", "6", "5"]
    assert [e.id for e in await store.browse(before=first[-1].seq, limit=2)] == ["4", "3"]
    assert [e.id for e in await store.browse(type="push", subject="dev")] == ["7", "4", "1"]
    assert [e.id for e in await store.browse(source="/harbor", since=T0 + 3, until=T0 + 8)] == ["5"]
    assert await store.browse(status="routed") == []
    assert len(await store.browse(status="pending")) == 9


async def test_activity_counts_intake_and_attempt_outcomes_by_route_and_bucket(
    store: journal.Journal, append: Append
) -> None:
    await append(cloudevent("1"), cloudevent("2"))
    claimed = await store.claim_events("a", limit=10, lease=30, now=T0)
    await store.record_routing(
        "a", {e.seq: [new("r", e.identity), new("s", e.identity)] for e in claimed}, now=T0
    )
    running = await store.claim_invocations("w", limit=10, lease=30, now=T0)
    outcomes = [
        journal.Outcome(
            item.id, "done" if item.route == "r" else "dead", started_at=T0 + 10 * n, duration=0.1
        )
        for n, item in enumerate(running)
    ]
    await store.settle("w", outcomes, now=T0 + 40)
    found = await store.activity(since=T0, until=time.time() + 1, bucket_seconds=20)
    by = {(route, outcome, bucket): n for route, outcome, bucket, n in found.outcomes}
    expected: dict[tuple[str, str, int], int] = {}
    for n, item in enumerate(running):
        key = (item.route, "done" if item.route == "r" else "dead", (10 * n) // 20)
        expected[key] = expected.get(key, 0) + 1
    assert by == expected
    assert found.received == 2  # appended now, after T0
    assert (await store.activity(since=T0 + 1000, until=T0 + 2000, bucket_seconds=20)).outcomes == ()
    # an attempt counts in the window its start falls in: the first two of them end before T0 + 20
    early = await store.activity(since=T0, until=T0 + 20, bucket_seconds=20)
    assert sum(n for *_, n in early.outcomes) == 2 and early.received == 0
