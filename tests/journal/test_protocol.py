"""The journal protocol (glue.journal.Journal): the same behaviour from every backend.

Each test runs against SQLite and PostgreSQL (see conftest.BACKENDS); what it asserts is what a caller
of the protocol observes: appended flags, stored rows read back, errors raised.
"""

from __future__ import annotations

import asyncio

import pytest

from glue import events, journal
from tests.journal.conftest import Opener, delivery
from tests.support import cloudevent


async def test_append_stores_the_delivery_and_its_events(store: journal.Journal) -> None:
    raw = delivery(
        b'[{"id": "a"}]', headers={"content-type": "application/json", "x-trace": "t1"}, key=b"k\x00"
    )
    batch = [cloudevent("a", data={"n": 1}, subject="s1"), cloudevent("b", type="com.example.other")]

    appended = await store.append(raw, batch)

    stored = await store.list()
    assert appended == [
        journal.Appended(identity="/test a", id="a", new=True, seq=stored[0].seq),
        journal.Appended(identity="/test b", id="b", new=True, seq=stored[1].seq),
    ]
    assert [(e.seq, e.id, e.source, e.type, e.subject, e.status) for e in stored] == [
        (stored[0].seq, "a", "/test", "com.example.test", "s1", "pending"),
        (stored[0].seq + 1, "b", "/test", "com.example.other", None, "pending"),
    ]
    assert stored[0].event().get_data() == {"n": 1}
    assert events.identity(stored[1].event()) == "/test b"
    assert stored[0].delivery_id == stored[1].delivery_id
    again = await store.delivery(stored[0].delivery_id)
    assert again == raw
    assert await store.backlog() == 2


async def test_bytes_and_text_come_back_exactly(store: journal.Journal) -> None:
    raw = delivery(
        b"\x00\xff\xfe not UTF-8 \r\n",
        headers={"content-type": "application/octet-stream", "x-name": 'caf\u00e9 \u2603 "q" \\'},
        key=b"\xff",
        received_at=1_700_000_000.123456789,
    )
    event = cloudevent('\u00e9\u2603 "x"', subject="a\\b\nc", source="/caf\u00e9", data=b"\x00\xff")

    (appended,) = await store.append(raw, [event])

    (stored,) = await store.list()
    assert stored.event().get_data() == b"\x00\xff"
    assert (stored.id, stored.source, stored.subject) == ('\u00e9\u2603 "x"', "/caf\u00e9", "a\\b\nc")
    assert appended.identity == events.identity(stored.event())
    assert await store.delivery(stored.delivery_id) == raw


async def test_redelivery_is_recognised_by_identity(store: journal.Journal) -> None:
    await store.append(delivery(), [cloudevent("a"), cloudevent("b")])

    again = await store.append(delivery(b"second"), [cloudevent("b"), cloudevent("c"), cloudevent("a")])

    assert [(a.id, a.new) for a in again] == [("b", False), ("c", True), ("a", False)]
    assert [e.id for e in await store.list()] == ["a", "b", "c"]
    assert await store.backlog() == 3


def invocation_for(name: str, route: str = "r", **fields: object) -> journal.NewInvocation:
    values: dict[str, object] = {"params": {"n": 1}, "due_at": 100.0, **fields}
    return journal.NewInvocation(
        route=route,
        handler="log",
        idempotency_key=journal.idempotency_key(f"/test {name}", route),
        **values,  # type: ignore[arg-type]
    )


async def test_a_nul_in_event_data_or_a_kafka_header_is_stored_like_any_text(store: journal.Journal) -> None:
    """Data may hold "\\u0000" and a Kafka header any byte: both reach the journal (routed at intake
    and by the route loop) and come back exactly, and other deliveries are not held up by them."""
    raw = delivery(b"{}", transport="kafka", headers={"x-trace": "a\x00b"})
    event = cloudevent("a", data={"name": "x\x00y"})
    routed = invocation_for("a", params={"name": "x\x00y"}, ordering_key="k\x00")

    (appended,) = await store.append(raw, [event], [[routed]])

    (stored,) = await store.list()
    assert stored.event().get_data() == {"name": "x\x00y"}
    assert await store.delivery(stored.delivery_id) == raw
    (invocation,) = await store.invocations(event_seq=appended.seq)
    assert invocation.params == {"name": "x\x00y"}
    # PostgreSQL text holds no NUL: an ordering key keeps U+FFFD in its place there.
    assert invocation.ordering_key in ("k\x00", "k\ufffd")
    other = cloudevent("b")
    await store.append(delivery(), [other])
    (claimed,) = await store.claim_events("w", limit=10, lease=30, now=100.0)
    await store.record_routing("w", {claimed.seq: [invocation_for("b", params={"name": "\x00"})]}, now=100.0)
    assert [i.params for i in await store.invocations(event_seq=claimed.seq)] == [{"name": "\x00"}]


async def test_routing_that_does_not_fit_the_batch_is_refused_before_anything_is_written(
    store: journal.Journal,
) -> None:
    with pytest.raises(ValueError, match="routing has 1 entries for a batch of 2 events"):
        await store.append(delivery(), [cloudevent("a"), cloudevent("b")], [[]])
    assert await store.list() == []
    (appended,) = await store.append(delivery(), [cloudevent("c")], [[]])
    assert appended.new


async def test_append_with_routing_stores_the_decision_in_the_same_transaction(
    store: journal.Journal,
) -> None:
    batch = [cloudevent("a"), cloudevent("b"), cloudevent("c"), cloudevent("d")]
    routing = [
        [invocation_for("a"), invocation_for("a", route="r2", ordering_key="r2 k")],
        [],
        None,
        [invocation_for("d", state="dead", error="params.n: not an integer")],
    ]

    appended = await store.append(delivery(), batch, routing)

    stored = await store.list()
    assert [(e.id, e.status) for e in stored] == [
        ("a", "routed"),
        ("b", "unmatched"),
        ("c", "pending"),
        ("d", "routed"),
    ]
    assert [a.seq for a in appended] == [e.seq for e in stored]
    assert await store.backlog() == 1  # only the event left for the executor
    made = await store.invocations(limit=10)
    assert [(i.event_seq, i.route, i.state, i.ordering_key, dict(i.params)) for i in made] == [
        (stored[0].seq, "r", "pending", None, {"n": 1}),
        (stored[0].seq, "r2", "pending", "r2 k", {"n": 1}),
        (stored[3].seq, "r", "dead", None, {"n": 1}),
    ]
    assert made[2].last_error == "params.n: not an integer"
    claimed = await store.claim_invocations("w", limit=10, lease=30, now=100.0)
    assert [i.route for i in claimed] == ["r", "r2"]  # runnable at once, no routing pass


async def test_a_redelivery_with_routing_adds_no_invocation(store: journal.Journal) -> None:
    await store.append(delivery(), [cloudevent("a")], [[invocation_for("a")]])
    again = await store.append(
        delivery(b"again"), [cloudevent("a"), cloudevent("a")], [[invocation_for("a")], None]
    )
    assert [a.new for a in again] == [False, False]
    assert [a.seq for a in again] == [None, None]
    assert len(await store.invocations(limit=10)) == 1
    assert [(e.id, e.status) for e in await store.list()] == [("a", "routed")]


async def test_same_id_from_another_source_is_another_event(store: journal.Journal) -> None:
    await store.append(delivery(), [cloudevent("a", source="/one")])
    appended = await store.append(delivery(), [cloudevent("a", source="/two")])
    assert appended[0].new is True
    assert [e.identity for e in await store.list()] == ["/one a", "/two a"]


async def test_a_delivery_of_only_known_events_stores_nothing(store: journal.Journal) -> None:
    first = await store.append(delivery(b"one"), [cloudevent("a")])
    await store.append(delivery(b"two"), [cloudevent("a")])
    stored = await store.list()
    assert len(stored) == 1
    assert (await store.delivery(stored[0].delivery_id)) is not None
    assert first[0].new
    # The second delivery was not kept: the next delivery id was never used by an event.
    assert await store.delivery(stored[0].delivery_id + 1) is None


async def test_duplicates_inside_one_batch_count_once(store: journal.Journal) -> None:
    appended = await store.append(delivery(), [cloudevent("a"), cloudevent("a")])
    assert [a.new for a in appended] == [True, False]
    assert len(await store.list()) == 1


async def test_concurrent_appends_of_one_identity_make_one_event(store: journal.Journal) -> None:
    results = await asyncio.gather(*(store.append(delivery(), [cloudevent("same")]) for _ in range(20)))
    assert sum(r[0].new for r in results) == 1
    assert len(await store.list()) == 1


async def test_concurrent_appends_all_land_in_order_of_their_batches(store: journal.Journal) -> None:
    batches = [[cloudevent(f"{i}-{j}") for j in range(3)] for i in range(50)]
    results = await asyncio.gather(*(store.append(delivery(), batch) for batch in batches))
    assert all(a.new for result in results for a in result)
    stored = await store.list(limit=1000)
    assert len(stored) == 150
    assert len({e.seq for e in stored}) == 150
    position = {e.id: e.seq for e in stored}
    for batch in batches:  # the events of one delivery keep their order
        seqs = [position[e.get_id()] for e in batch]
        assert seqs == sorted(seqs)


async def test_append_many_journals_each_delivery_as_append_does(store: journal.Journal) -> None:
    # Already journaled before the batch, then a batch whose second delivery repeats the first's event
    # and whose third repeats that earlier one and brings a new one (routed at intake).
    await store.append(delivery(b"earlier"), [cloudevent("old")])
    items: list[journal.Append] = [
        (delivery(b"one"), [cloudevent("a")], None),
        (delivery(b"two"), [cloudevent("a")], None),
        (delivery(b"three"), [cloudevent("old"), cloudevent("b")], [None, [invocation_for("b")]]),
        (delivery(b"empty"), [], None),
    ]

    outcomes = await store.append_many(items)

    stored = await store.list()
    by_id = {e.id: e for e in stored}
    assert [e.id for e in stored] == ["old", "a", "b"]
    assert outcomes == [
        [journal.Appended(identity="/test a", id="a", new=True, seq=by_id["a"].seq)],
        [journal.Appended(identity="/test a", id="a", new=False)],
        [
            journal.Appended(identity="/test old", id="old", new=False),
            journal.Appended(identity="/test b", id="b", new=True, seq=by_id["b"].seq),
        ],
        [],
    ]
    # Each new event keeps its own delivery; the pure repeat and the empty delivery kept none.
    assert await store.delivery(by_id["a"].delivery_id) == items[0][0]
    assert await store.delivery(by_id["b"].delivery_id) == items[2][0]
    kept = [await store.delivery(n) for n in range(1, 20)]
    assert sorted(d.body for d in kept if d is not None) == [b"earlier", b"one", b"three"]
    assert [(e.id, e.status) for e in stored] == [("old", "pending"), ("a", "pending"), ("b", "routed")]
    assert [i.event_seq for i in await store.invocations(limit=10)] == [by_id["b"].seq]
    assert await store.append_many([]) == []


async def test_append_many_on_a_closed_journal_journals_nothing(store: journal.Journal) -> None:
    await store.close()
    with pytest.raises(journal.JournalUnavailable):
        await store.append_many([(delivery(), [cloudevent("late")], None)])


async def test_get_by_seq_identity_or_id(store: journal.Journal) -> None:
    await store.append(delivery(), [cloudevent("x1"), cloudevent("42", source="/numbers")])
    first, second = await store.list()

    assert await store.get(first.seq) == first
    assert await store.get(str(first.seq)) == first
    assert await store.get("/test x1") == first
    assert await store.get("x1") == first
    assert await store.get("/numbers 42") == second
    assert await store.get("nope") is None
    assert await store.get(10**6) is None


async def test_list_filters_and_pages(store: journal.Journal) -> None:
    await store.append(delivery(), [cloudevent(str(i), type=f"t{i % 2}") for i in range(10)])

    everything = await store.list()
    assert [e.id for e in everything] == [str(i) for i in range(10)]
    page = await store.list(limit=3, after=everything[2].seq)
    assert [e.id for e in page] == ["3", "4", "5"]
    assert [e.id for e in await store.list(type="t1")] == ["1", "3", "5", "7", "9"]
    assert [e.id for e in await store.list(status="pending", type="t0", limit=2)] == ["0", "2"]
    assert await store.list(status="routed") == []


async def test_reject_keeps_the_undecodable_delivery(store: journal.Journal) -> None:
    poison = delivery(b"\xff\xfenot json", transport="kafka", endpoint="topic-a", key=b"partition-key")

    delivery_id = await store.reject(poison, "not JSON: invalid start byte")
    second = await store.reject(delivery(b"{"), "truncated")

    rejected = await store.rejected()
    assert [(r.delivery_id, r.reason) for r in rejected] == [
        (second, "truncated"),
        (delivery_id, "not JSON: invalid start byte"),
    ]
    assert rejected[1].delivery == poison
    assert await store.delivery(delivery_id) == poison
    assert [r.delivery_id for r in await store.rejected(limit=1)] == [second]
    assert await store.list() == []
    assert await store.backlog() == 0


async def test_ping_succeeds_on_an_open_journal(store: journal.Journal) -> None:
    await store.ping()


async def test_events_survive_a_reopen(open_journal: Opener) -> None:
    raw = delivery(b"kept")
    first = await open_journal()
    await first.append(raw, [cloudevent("durable")])
    await first.close()

    second = await open_journal()
    stored = await second.get("/test durable")
    assert stored is not None
    assert await second.delivery(stored.delivery_id) == raw
    appended = await second.append(delivery(), [cloudevent("durable")])
    assert appended[0].new is False


async def test_a_closed_journal_refuses_appends(store: journal.Journal) -> None:
    await store.close()
    with pytest.raises(journal.JournalUnavailable):
        await store.append(delivery(), [cloudevent("late")])
