"""Safety rails over a real journal (both backends; a virtual clock where time matters): pause and the
kill switch, budgets, the breaker, change windows, approvals, the client-down gate, and two replicas
on PostgreSQL obeying a pause set through either.

At every step the invocations add up: events x matched routes = pending + running + held + awaiting
+ done + dead (nothing lost), and the handler ran once per done invocation (nothing run twice).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import glue
from glue import contract, journal, operations, rails, routing, settings
from tests.support import cloudevent

from .conftest import Append, Harness, Recorder, metric, wait_for

POLL = 0.05
CACHE = 1.2  # a little more than gates.CACHE_SECONDS
STATES = {"pending", "running", "held", "awaiting-approval", "done", "planned", "dead"}


class Act:
    """Handler ``act``: records each call; fails while ``failing``; plans in dry-run."""

    def __init__(self, registry: contract.Registry) -> None:
        self.recorder = Recorder()
        self.failing = False
        self.succeeded: list[str] = []  # event ids whose attempt succeeded

        class Params(glue.Params):
            ns: str = "default"

        @glue.handler("act", params=Params, registry=registry)
        async def run(*, event: Any, params: Params, ctx: glue.Context, **_: Any) -> Any:
            if ctx.dry_run:
                return glue.Plan(summary=f"restart everything in {params.ns}")
            self.recorder.calls.append((asyncio.get_running_loop().time(), event.get_id(), ctx.attempt, {}))
            if self.failing:
                raise glue.TemporaryError("cluster says no")
            self.succeeded.append(event.get_id())
            return None

    def ran(self) -> list[str]:
        return [event_id for _, event_id, _, _ in self.recorder.calls]


def route(name: str = "act", **rails_: Any) -> dict[str, Any]:
    return {"name": name, "handler": "act", "params": {"ns": "{{ data.ns }}"}, **rails_}


async def tally(store: journal.Journal, expected: int, act: Act | None = None) -> collections.Counter[str]:
    """The invocations by state, after checking that none is lost or run twice."""
    rows = await store.invocations(limit=10_000)
    states: collections.Counter[str] = collections.Counter(row.state for row in rows)
    assert set(states) <= STATES, states
    assert sum(states.values()) == expected, states
    if act is not None:
        assert len(set(act.succeeded)) == len(act.succeeded), f"run twice: {act.succeeded}"
        assert len(act.succeeded) == states["done"], (act.succeeded, states)
    return states


def held(store: journal.Journal, count: int, reason: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        rows = await store.invocations(state="held", limit=10_000)
        return len(rows) == count and all(row.wait_reason == reason for row in rows)

    return check


def in_state(
    store: journal.Journal, count: int, state: journal.InvocationState
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(await store.invocations(state=state, limit=10_000)) == count

    return check


def actor(harness: Harness, who: str = "alice") -> operations.Actor:
    """An operator on the executor's clock (the wall clock of a daemon; here the loop's, from T0)."""
    return operations.Actor(who, harness.clock)


# -- pause and the kill switch ---------------------------------------------------------------------


async def test_a_paused_route_journals_and_holds_and_resume_runs_at_once(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    act = Act(registry)
    executor = await harness.start(pollSeconds=POLL, routes=[route()])
    router = executor.dispatcher.router
    await operations.pause(store, router, "act", actor(harness), reason="bad rule", seconds=None)
    await asyncio.sleep(CACHE)  # a replica obeys within its rails cache
    await append(*(cloudevent(f"e{n}", data={"ns": "a"}) for n in range(3)))
    await wait_for(held(store, 3, "paused"), seconds=10, step=0.05)
    assert await tally(store, 3, act) == {"held": 3}
    assert act.ran() == []
    rows = await store.invocations(limit=10)
    assert all(row.attempt == 0 for row in rows), "a held invocation has used no attempt"

    async def gauges() -> bool:  # read from the journal every few seconds
        held_ = metric("glue_invocations_held", route="act", reason="paused")
        return held_ == 3 and metric("glue_route_paused", route="act") == 1

    await wait_for(gauges, seconds=10, step=0.1)
    assert all(row.due_at == rails.FOREVER for row in rows)
    started = time.monotonic()
    result = await operations.resume(store, executor.dispatcher.router, "act", actor(harness, "bob"))
    assert result["released"] == 3
    await wait_for(in_state(store, 3, "done"), seconds=10, step=0.02)
    assert time.monotonic() - started < 2 * CACHE
    assert await tally(store, 3, act) == {"done": 3}
    assert sorted(act.ran()) == ["e0", "e1", "e2"]

    async def cleared() -> bool:
        held_ = metric("glue_invocations_held", route="act", reason="paused")
        return held_ == 0 and metric("glue_route_paused", route="act") == 0

    await wait_for(cleared, seconds=10, step=0.1)
    trail = [(e.who, e.action, e.route, e.reason) for e in await store.audit()]
    assert trail == [("alice", "pause", "act", "bad rule"), ("bob", "resume", "act", None)]


async def test_the_kill_switch_holds_every_route_and_a_config_pause_holds_its_own(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    act = Act(registry)
    executor = await harness.start(pollSeconds=POLL, routes=[route("one"), route("two", paused=True)])
    router = executor.dispatcher.router
    await operations.pause(store, router, rails.GLOBAL, actor(harness), reason="incident 42", seconds=None)
    await asyncio.sleep(CACHE)
    await append(cloudevent("e1", data={"ns": "a"}))
    await wait_for(held(store, 2, "paused"), seconds=10, step=0.05)
    assert await tally(store, 2, act) == {"held": 2}
    await operations.resume(store, router, rails.GLOBAL, actor(harness))
    await wait_for(in_state(store, 1, "done"), seconds=10, step=0.02)
    await asyncio.sleep(0.5)
    rows = {row.route: row for row in await store.invocations()}
    assert rows["one"].state == "done"
    assert (rows["two"].state, rows["two"].wait_reason) == ("held", "paused"), "paused by its config"
    assert await tally(store, 2, act) == {"done": 1, "held": 1}
    with pytest.raises(operations.OperationError, match="paused by its config"):
        await operations.resume(store, router, "two", actor(harness))
    with pytest.raises(operations.OperationError, match="no route 'three'"):
        await operations.pause(store, router, "three", actor(harness), reason=None, seconds=None)


async def test_a_pause_for_a_while_lifts_by_itself(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    act = Act(registry)
    executor = await harness.start(pollSeconds=POLL, routes=[route()])
    router = executor.dispatcher.router
    await operations.pause(store, router, "act", actor(harness), reason="deploy", seconds=2.5)
    await asyncio.sleep(CACHE)
    await append(cloudevent("e1", data={"ns": "a"}))
    await wait_for(held(store, 1, "paused"), seconds=10, step=0.05)
    await wait_for(in_state(store, 1, "done"), seconds=10, step=0.05)
    assert act.ran() == ["e1"]


async def test_a_resume_that_overtakes_a_hold_wins(store: journal.Journal, append: Append) -> None:
    """A replica that read the rails before a resume must not hold what the resume released."""
    await append(cloudevent("e1"))
    now = time.time()
    [event] = await store.claim_events("r1", limit=1, lease=60, now=now)
    item = journal.NewInvocation("act", "act", journal.idempotency_key(event.identity, "act"), {}, now)
    await store.record_routing("r1", {event.seq: [item]}, now=now)
    await store.set_pause("act", paused=True, reason=None, until=None, by="alice", now=now)
    await store.set_pause("act", paused=False, reason=None, until=None, by="bob", now=now)
    [claimed] = await store.claim_invocations("r1", limit=1, lease=60, now=now)
    # the replica still believes the route paused: its hold names the rail, which is no longer paused
    assert await store.hold("r1", [journal.Hold(claimed.id, "paused", rails.FOREVER, "act")], now=now) == []
    assert (await store.invocation(claimed.id)).state == "running"  # type: ignore[union-attr]
    await store.set_pause("act", paused=True, reason=None, until=None, by="alice", now=now)
    assert await store.hold("r1", [journal.Hold(claimed.id, "paused", rails.FOREVER, "act")], now=now) == [
        claimed.id
    ]
    stored = await store.invocation(claimed.id)
    assert stored is not None and (stored.state, stored.wait_reason, stored.attempt) == ("held", "paused", 0)
    assert await store.set_pause("act", paused=False, reason=None, until=None, by="bob", now=now) == 1
    assert (await store.invocation(claimed.id)).state == "pending"  # type: ignore[union-attr]


# -- budgets ---------------------------------------------------------------------------------------


async def test_budget_start_window_slides_per_key_and_overall(store: journal.Journal) -> None:
    budgets = [("0 a", 2, 3600.0), ("1 ", 3, 3600.0)]
    t = 1_700_000_000.0
    assert await store.take_starts("r", budgets, now=t) is None
    assert await store.take_starts("r", budgets, now=t + 10) is None
    assert await store.take_starts("r", budgets, now=t + 20) == t + 3600  # key a is full
    assert await store.take_starts("r", [("0 b", 2, 3600.0), ("1 ", 3, 3600.0)], now=t + 30) is None
    assert await store.take_starts("r", [("0 c", 2, 3600.0), ("1 ", 3, 3600.0)], now=t + 40) == t + 3600
    # the first start leaves the window: room for one more of key a (and overall)
    assert await store.take_starts("r", budgets, now=t + 3600.5) is None
    assert await store.take_starts("r", budgets, now=t + 3601) == t + 3610
    assert await store.starts("r", since=t + 3601 - 3600) == {"0 a": 2, "0 b": 1, "1 ": 3}


@pytest.mark.looptime
@pytest.mark.usefixtures("virtual_clock")
async def test_budget_holds_beyond_max_and_runs_when_the_window_frees(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    act = Act(registry)
    budget = [{"max": 2, "per": "1h", "key": "{{ data.ns }}"}, {"max": 3, "per": "1h"}]
    await harness.start(pollSeconds=5, routes=[route(budget=budget)])
    await append(*(cloudevent(f"a{n}", data={"ns": "a"}) for n in range(3)))
    await append(*(cloudevent(f"b{n}", data={"ns": "b"}) for n in range(2)))
    await wait_for(in_state(store, 3, "done"), seconds=60, step=1)
    await wait_for(held(store, 2, "budget"), seconds=60, step=1)
    assert await tally(store, 5, act) == {"done": 3, "held": 2}
    assert sorted(act.ran()) == ["a0", "a1", "b0"]  # two of a (its key), three overall
    first = harness.clock()
    await wait_for(in_state(store, 5, "done"), seconds=3 * 3600, step=30)
    assert await tally(store, 5, act) == {"done": 5}
    assert sorted(act.ran()) == ["a0", "a1", "a2", "b0", "b1"]
    last = max(t for t, _, _, _ in act.recorder.calls)
    assert last + harness.T0 - first >= 3600 - 60, "the rest ran only once the hour had passed"


# -- the breaker -----------------------------------------------------------------------------------


@pytest.mark.looptime
@pytest.mark.usefixtures("virtual_clock")
async def test_breaker_opens_after_failures_probes_after_cooldown_and_closes(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    act = Act(registry)
    act.failing = True
    breaker = {"failures": 2, "within": "10m", "cooldown": "15m"}
    delivery = {"attempts": 10, "backoff": {"initial": 1, "max": 5, "jitter": 0}}
    await harness.start(pollSeconds=1, routes=[route(breaker=breaker, delivery=delivery)])
    await append(*(cloudevent(f"e{n}", data={"ns": "a"}) for n in range(3)))
    await wait_for(held(store, 3, "breaker"), seconds=600, step=1)
    assert await tally(store, 3, act) == {"held": 3}
    opened_after = len(act.ran())
    assert 2 <= opened_after <= 3, act.ran()  # the attempts in flight when it opened may end too
    rail = (await store.rails())["act"]
    assert rail.breaker_open_until is not None
    await wait_for(_gauge("glue_route_breaker_open", 1, route="act"), seconds=60, step=1)
    # the cooldown passes with the cluster still failing: one probe, which opens it again
    await wait_for(lambda: _calls(act, opened_after + 1), seconds=1200, step=5)
    await asyncio.sleep(5)
    assert len(act.ran()) == opened_after + 1, "one probe only"
    assert await tally(store, 3, act) == {"held": 3}
    # the cluster recovers: the next probe succeeds, the breaker closes, the rest run
    act.failing = False
    await wait_for(in_state(store, 3, "done"), seconds=1200, step=5)
    assert await tally(store, 3, act) == {"done": 3}
    assert (await store.rails())["act"].breaker_open_until is None


def _gauge(name: str, value: float, **labels: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return metric(name, **labels) == value

    return check


async def _calls(act: Act, count: int) -> bool:
    return len(act.ran()) >= count


async def test_breaker_in_the_journal_opens_reopens_on_a_failed_probe_and_closes(
    store: journal.Journal,
) -> None:
    t = 1_700_000_000.0
    spec: dict[str, Any] = {"failures": 2, "within": 600.0, "cooldown": 900.0}
    assert await store.breaker_ended("r", 1, failed=True, now=t, **spec) is None
    assert await store.breaker_ended("r", 2, failed=True, now=t + 700, **spec) is None  # first one left
    assert await store.breaker_ended("r", 3, failed=True, now=t + 710, **spec) == "opened"
    assert (await store.rails())["r"].breaker_open_until == t + 710 + 900
    assert not await store.breaker_probe("r", 4, now=t + 800, lease=60)  # still cooling down
    assert await store.breaker_probe("r", 4, now=t + 1610, lease=60)
    assert not await store.breaker_probe("r", 5, now=t + 1611, lease=60)  # one probe at a time
    assert await store.breaker_ended("r", 4, failed=True, now=t + 1620, **spec) == "opened"
    assert await store.breaker_probe("r", 5, now=t + 2520, lease=60)
    assert await store.breaker_ended("r", 5, failed=False, now=t + 2521, **spec) == "closed"
    assert (await store.rails())["r"].breaker_open_until is None


# -- change windows --------------------------------------------------------------------------------

# Harness.T0 is 2023-11-14 22:13:20 UTC.


@pytest.mark.looptime
@pytest.mark.usefixtures("virtual_clock")
async def test_outside_its_window_an_invocation_waits_for_the_next_one(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    act = Act(registry)
    window = {"cron": "0 * * * *", "duration": "10m", "timezone": "Europe/Berlin"}
    await harness.start(pollSeconds=5, routes=[route(window=window)])
    await append(cloudevent("e1", data={"ns": "a"}))
    await wait_for(held(store, 1, "window"), seconds=60, step=1)
    [row] = await store.invocations()
    assert row.due_at == 1_700_002_800.0  # 23:00 UTC, the next full hour (Berlin keeps whole hours)
    assert await tally(store, 1, act) == {"held": 1}
    await wait_for(in_state(store, 1, "done"), seconds=3600, step=10)
    assert harness.T0 + act.recorder.calls[0][0] >= 1_700_002_800.0


@pytest.mark.looptime
@pytest.mark.usefixtures("virtual_clock")
async def test_a_blackout_holds_until_it_ends(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    act = Act(registry)
    blackout = {"cron": "0 22 * * *", "duration": "1h"}  # UTC: 22:00-23:00, and T0 is 22:13
    await harness.start(pollSeconds=5, routes=[route(blackout=blackout)])
    await append(cloudevent("e1", data={"ns": "a"}))
    await wait_for(held(store, 1, "window"), seconds=60, step=1)
    [row] = await store.invocations()
    assert row.due_at == 1_700_002_800.0
    await wait_for(in_state(store, 1, "done"), seconds=3600, step=10)
    assert await tally(store, 1, act) == {"done": 1}


def test_window_arithmetic_follows_the_time_zone() -> None:
    window = rails.Window(cron="0 9-17 * * 1-5", duration=3600, timezone="Europe/Berlin")
    tuesday_2213_utc = 1_700_000_000.0
    assert window.open_at(tuesday_2213_utc) is None
    assert window.next_open(tuesday_2213_utc) == 1_700_035_200.0  # Wednesday 09:00 Berlin = 08:00 UTC
    assert window.open_at(1_700_035_200.0 + 600) == 1_700_035_200.0 + 3600
    with pytest.raises(ValueError, match="unknown time zone"):
        rails.Window(cron="0 9 * * *", duration=60, timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="not a cron expression"):
        rails.Window(cron="61 * * * *", duration=60)


# -- approvals -------------------------------------------------------------------------------------


async def test_approval_waits_with_its_plan_approve_runs_deny_dead_letters(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    act = Act(registry)
    approval = {"when": "data.ns == 'prod'", "ttl": "1h"}
    await harness.start(pollSeconds=POLL, routes=[route(approval=approval)])
    await append(cloudevent("dev", data={"ns": "dev"}))
    await append(*(cloudevent(f"prod{n}", data={"ns": "prod"}) for n in range(2)))
    await wait_for(in_state(store, 2, "awaiting-approval"), seconds=10, step=0.05)
    await wait_for(in_state(store, 1, "done"), seconds=10, step=0.05)
    assert act.ran() == ["dev"], "approval only where `when` holds"
    assert await tally(store, 3, act) == {"awaiting-approval": 2, "done": 1}
    await wait_for(_gauge("glue_invocations_awaiting_approval", 2), seconds=10, step=0.1)
    first, second = await store.invocations(state="awaiting-approval")
    assert first.plan == {"summary": "restart everything in prod", "calls": []}
    assert (first.wait_reason, first.attempt) == ("approval", 0)
    await operations.approve(store, first.id, actor(harness), yes=True, note="change 1234")
    await operations.approve(store, second.id, actor(harness, "bob"), yes=False, note="not today")
    await wait_for(in_state(store, 2, "done"), seconds=10, step=0.05)
    assert await tally(store, 3, act) == {"done": 2, "dead": 1}
    assert sorted(act.ran()) == ["dev", "prod0"]
    approved = await store.invocation(first.id)
    denied = await store.invocation(second.id)
    assert approved is not None and approved.approved_by == "alice: change 1234"
    assert denied is not None and denied.last_error == "approval denied by bob: not today"
    with pytest.raises(operations.OperationError, match="not awaiting approval"):
        await operations.approve(store, first.id, actor(harness), yes=True, note=None)
    trail = [(e.action, e.target, e.reason) for e in await store.audit(route="act")]
    assert trail == [("approve", str(first.id), "change 1234"), ("deny", str(second.id), "not today")]


async def test_an_approval_past_its_ttl_is_dead_with_the_reason(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    act = Act(registry)
    await harness.start(pollSeconds=POLL, routes=[route(approval={"ttl": 1})])
    await append(cloudevent("e1", data={"ns": "prod"}))
    await wait_for(in_state(store, 1, "awaiting-approval"), seconds=10, step=0.05)
    await wait_for(in_state(store, 1, "dead"), seconds=10, step=0.1)
    [row] = await store.invocations()
    assert row.last_error == "approval expired"
    assert act.ran() == []
    assert await tally(store, 1, act) == {"dead": 1}


# -- the client-down gate (its health checks are built elsewhere: here a callable) ------------------


async def test_client_down_holds_until_the_client_is_up(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    act = Act(registry)
    down = {"act": "cluster"}
    await harness.start(pollSeconds=POLL, routes=[route()], client_down=down.get)
    await append(cloudevent("e1", data={"ns": "a"}), cloudevent("e2", data={"ns": "a"}))
    await wait_for(held(store, 2, "client-down"), seconds=10, step=0.05)
    await asyncio.sleep(2.5)  # checked again, still down: still held, never dead
    assert await tally(store, 2, act) == {"held": 2}
    assert all(row.attempt == 0 for row in await store.invocations())
    down.clear()
    await wait_for(in_state(store, 2, "done"), seconds=10, step=0.05)
    assert sorted(act.ran()) == ["e1", "e2"]


# -- replicas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres"])
async def test_two_replicas_obey_a_pause_set_through_either(
    harness: Harness,
    registry: contract.Registry,
    append: Append,
    store: journal.Journal,
    reopen: Callable[[], Awaitable[journal.Journal]],
) -> None:
    act = Act(registry)
    other = await reopen()
    one = await harness.start(pollSeconds=POLL, owner="replica-1", routes=[route()])
    await harness.start(pollSeconds=POLL, owner="replica-2", store=other, routes=[route()])
    router = one.dispatcher.router
    await operations.pause(store, router, "act", actor(harness), reason="via replica 1", seconds=None)
    await asyncio.sleep(2.0)  # every replica obeys within two seconds
    await append(*(cloudevent(f"a{n}", data={"ns": "a"}) for n in range(10)))
    await wait_for(held(store, 10, "paused"), seconds=10, step=0.05)
    assert act.ran() == []
    owners = {row.owner for row in await store.invocations(limit=100)}
    assert owners == {None}
    await operations.resume(other, router, "act", actor(harness))
    await wait_for(in_state(store, 10, "done"), seconds=10, step=0.05)
    assert await tally(store, 10, act) == {"done": 10}
    # and the other way round: paused through replica 2's journal
    await operations.pause(other, router, "act", actor(harness), reason="through replica 2", seconds=None)
    await asyncio.sleep(2.0)
    await append(*(cloudevent(f"b{n}", data={"ns": "b"}) for n in range(10)))
    await wait_for(held(store, 10, "paused"), seconds=10, step=0.05)
    assert await tally(store, 20, act) == {"done": 10, "held": 10}
    assert len(act.ran()) == 10
    await operations.resume(store, router, "act", actor(harness))
    await wait_for(in_state(store, 20, "done"), seconds=10, step=0.05)
    assert sorted(act.ran()) == sorted([f"a{n}" for n in range(10)] + [f"b{n}" for n in range(10)])


# -- order and replicas -----------------------------------------------------------------------------


async def test_a_waiting_invocation_keeps_its_ordering_keys_place(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    act = Act(registry)
    ordered = route(approval={"when": "data.n == 1"}, orderingKey="{{ data.ns }}")
    await harness.start(pollSeconds=POLL, routes=[ordered])
    await append(cloudevent("e1", data={"ns": "k", "n": 1}), cloudevent("e2", data={"ns": "k", "n": 2}))
    await wait_for(in_state(store, 1, "awaiting-approval"), seconds=10, step=0.05)
    await asyncio.sleep(1.0)
    assert act.ran() == [], "e2 needs no approval, but waits behind e1 on its key"
    assert await tally(store, 2, act) == {"awaiting-approval": 1, "pending": 1}
    [first] = await store.invocations(state="awaiting-approval")
    await operations.approve(store, first.id, actor(harness), yes=True, note=None)
    await wait_for(in_state(store, 2, "done"), seconds=10, step=0.05)
    assert act.ran() == ["e1", "e2"]


async def test_replicas_never_both_take_a_budgets_last_start(
    store: journal.Journal, reopen: Callable[[], Awaitable[journal.Journal]]
) -> None:
    other = await reopen()
    t = 1_700_000_000.0
    budgets = [("0 shop", 3, 3600.0)]
    results = await asyncio.gather(
        *(
            journal_.take_starts("r", budgets, now=t + n / 100)
            for n in range(10)
            for journal_ in (store, other)
        )
    )
    assert sum(1 for free_at in results if free_at is None) == 3
    assert await store.starts("r", since=t - 1) == {"0 shop": 3}


@pytest.mark.parametrize(
    ("rails_", "field", "message"),
    [
        ({"budget": {"max": 0, "per": "1h"}}, "budget.0.max", "greater than or equal to 1"),
        ({"budget": {"max": 1, "per": "soon"}}, "budget.0.per", "not a duration"),
        ({"window": {"cron": "0 25 * * *", "duration": "1h"}}, "window.cron", "not a cron expression"),
        (
            {"blackout": {"cron": "0 1 * * *", "duration": "1h", "timezone": "Nowhere"}},
            "blackout.timezone",
            "unknown time zone",
        ),
        ({"approval": {"when": "data.x ==", "ttl": "1h"}}, "approval.when", "not valid CEL"),
        ({"budget": {"max": 1, "per": "1h", "key": "{{ data.x"}}, "budget.0.key", "template syntax"),
    ],
)
def test_a_bad_rail_is_refused_naming_its_field(rails_: dict[str, Any], field: str, message: str) -> None:
    registry = contract.Registry()
    Act(registry)
    with pytest.raises(settings.ConfigError) as caught:
        routing.load([route(**rails_)], registry, source="glue.yaml")
    text = str(caught.value)
    assert "glue.yaml" in text and field in text and message in text, text
