"""The executor over a real journal: per-key order, concurrency bounds, drain, routing outcomes, logs."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest
from structlog.testing import capture_logs

import glue
from glue import contract, events, execution, intake, journal, pipeline
from tests.support import cloudevent

from .conftest import Append, Harness, delivery_of, metric, wait_for


class Tracker:
    """Which events are inside the handler now, and the order they started and ended in."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.peak = 0
        self.started: list[tuple[str, int]] = []  # (key, n)
        self.overlap_across_keys = False
        self.overlap_within_key = False

    def enter(self, key: str, n: int) -> None:
        if any(r.startswith(key + "/") for r in self.running):
            self.overlap_within_key = True
        if self.running:
            self.overlap_across_keys = True
        self.running.add(f"{key}/{n}")
        self.peak = max(self.peak, len(self.running))
        self.started.append((key, n))

    def leave(self, key: str, n: int) -> None:
        self.running.discard(f"{key}/{n}")


def tracked(registry: contract.Registry, tracker: Tracker, *, pause: float = 0.01) -> None:
    class KeyParams(glue.Params):
        key: str
        n: int

    @glue.handler("tracked", params=KeyParams, registry=registry)
    async def run(*, params: KeyParams, **_: Any) -> None:
        tracker.enter(params.key, params.n)
        try:
            # later events of a key finish faster: only ordering keeps them in order
            await asyncio.sleep(pause * (1 + (20 - params.n) % 4))
        finally:
            tracker.leave(params.key, params.n)


async def all_claimed(store: journal.Journal, count: int) -> bool:
    rows = await store.invocations(limit=10_000)
    return len(rows) == count and all(row.state != "pending" for row in rows)


async def all_done(store: journal.Journal, count: int) -> bool:
    rows = await store.invocations(limit=10_000)
    return len(rows) == count and all(row.state == "done" for row in rows)


async def test_per_key_order_holds_and_keys_interleave(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    tracker = Tracker()
    tracked(registry, tracker)
    await harness.start(
        concurrency=8,
        batch=16,
        pollSeconds=0.02,
        routes=[
            {
                "name": "ordered",
                "handler": "tracked",
                "params": {"key": "{{ data.key }}", "n": "{{ data.n }}"},
                "orderingKey": "{{ data.key }}",
            }
        ],
    )
    await append(
        *(cloudevent(f"{key}-{n}", data={"key": key, "n": n}) for n in range(20) for key in ("a", "b"))
    )
    await wait_for(lambda: all_done(store, 40), seconds=60, step=0.05)
    for key in ("a", "b"):
        assert [n for k, n in tracker.started if k == key] == list(range(20)), f"order of key {key}"
    assert not tracker.overlap_within_key, "one invocation per key at a time"
    assert tracker.overlap_across_keys and tracker.peak == 2, "the two keys ran in parallel"


async def test_without_ordering_key_the_global_bound_holds(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    tracker = Tracker()
    tracked(registry, tracker, pause=0.05)
    routes = [{"name": "free", "handler": "tracked", "params": {"key": "{{ id }}", "n": "{{ data.n }}"}}]
    await harness.start(concurrency=3, pollSeconds=0.02, routes=routes)
    await append(*(cloudevent(f"e{n}", data={"n": n}) for n in range(12)))
    await wait_for(lambda: all_done(store, 12), seconds=60, step=0.05)
    assert tracker.peak == 3


async def test_route_concurrency_bounds_one_route_only(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    tracker = Tracker()
    tracked(registry, tracker, pause=0.05)
    routes = [
        {
            "name": "narrow",
            "handler": "tracked",
            "concurrency": 2,
            "params": {"key": "{{ id }}", "n": "{{ data.n }}"},
        },
    ]
    await harness.start(concurrency=10, pollSeconds=0.02, routes=routes)
    await append(*(cloudevent(f"e{n}", data={"n": n}) for n in range(10)))
    await wait_for(lambda: all_done(store, 10), seconds=60, step=0.05)
    assert tracker.peak == 2


async def test_drain_finishes_quick_work_and_releases_the_rest(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    class Pause(glue.Params):
        seconds: float

    @glue.handler("pause", params=Pause, registry=registry)
    async def pause(*, params: Pause, **_: Any) -> None:
        await asyncio.sleep(params.seconds)

    routes = [{"name": "p", "handler": "pause", "params": {"seconds": "{{ data.s }}"}}]
    executor = await harness.start(drainSeconds=0.5, pollSeconds=0.02, routes=routes)
    await append(cloudevent("quick", data={"s": 0.2}), cloudevent("stuck", data={"s": 3600}))
    await wait_for(lambda: _running(store, 2), seconds=10, step=0.02)
    await executor.stop()
    harness.executors.remove(executor)
    quick, stuck = await store.invocations()
    assert (quick.state, quick.attempt) == ("done", 1)
    assert (stuck.state, stuck.attempt, stuck.owner) == ("pending", 0, None), "released, attempt not counted"


async def test_params_that_do_not_render_are_dead_on_arrival_not_a_crash(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    class UrlParams(glue.Params):
        url: str

    calls: list[str] = []

    @glue.handler("needs-url", params=UrlParams, registry=registry)
    async def needs_url(*, params: UrlParams, **_: Any) -> None:
        calls.append(params.url)

    routes = [
        {"name": "hook", "handler": "needs-url", "params": {"url": "https://x/{{ data.repository.name }}"}}
    ]
    before = metric("glue_dead_lettered_total", route="hook")
    await harness.start(pollSeconds=0.02, routes=routes)
    await append(cloudevent("ok", data={"repository": {"name": "a"}}), cloudevent("bad", data={"other": 1}))
    await wait_for(lambda: _states(store, {"done", "dead"}, 2), seconds=10, step=0.02)
    done, dead = await store.invocations()
    assert (done.state, dead.state) == ("done", "dead")
    assert dead.last_error == "params.url: template: 'dict object' has no attribute 'repository'"
    assert calls == ["https://x/a"]
    assert metric("glue_dead_lettered_total", route="hook") == before + 1


async def test_events_no_route_matches_are_marked_unmatched(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    @glue.handler("noop", registry=registry)
    async def noop(**_: Any) -> None:
        return None

    routes = [{"name": "pushes", "handler": "noop", "match": 'type == "push"'}]
    await harness.start(pollSeconds=0.02, routes=routes)
    await append(cloudevent("1", type="push"), cloudevent("2", type="pull"))
    await wait_for(lambda: _states(store, {"done"}), seconds=10, step=0.02)
    statuses = {e.id: e.status for e in await store.list()}
    assert statuses == {"1": "routed", "2": "unmatched"}


async def test_handler_context_and_one_summary_line_per_dispatch(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    seen: list[glue.Context] = []

    @glue.handler("inspect", registry=registry)
    async def inspect(*, ctx: glue.Context, **_: Any) -> None:
        seen.append(ctx)
        ctx.log.info("inside")

    with capture_logs() as logs:
        await harness.start(pollSeconds=0.02, routes=[{"name": "look", "handler": "inspect"}])
        (appended,) = await append(cloudevent("abc", source="/registry"))
        await wait_for(lambda: _states(store, {"done"}), seconds=10, step=0.02)
    (ctx,) = seen
    assert (ctx.route, ctx.handler, ctx.attempt, ctx.dry_run) == ("look", "inspect", 1, False)
    assert ctx.idempotency_key == "look /registry abc" == journal.idempotency_key(appended.identity, "look")
    inside = next(e for e in logs if e["event"] == "inside")
    assert (inside["route"], inside["event_id"], inside["attempt"]) == ("look", "abc", 1)
    (summary,) = [e for e in logs if e["event"] == "dispatched"]
    assert {k: summary[k] for k in ("route", "handler", "outcome", "attempt")} == {
        "route": "look",
        "handler": "inspect",
        "outcome": "done",
        "attempt": 1,
    }
    assert summary["duration_ms"] >= 0


async def test_dry_run_route_logs_the_plan_and_acts_not(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    acted: list[str] = []

    @glue.handler("careful", registry=registry)
    async def careful(*, event: Any, ctx: glue.Context, **_: Any) -> glue.Plan | None:
        if ctx.dry_run:
            return glue.Plan([glue.Call("DELETE", f"/things/{event.get_id()}")], summary="delete")
        acted.append(event.get_id())
        return None

    before = metric("glue_invocations_total", route="shadow", handler="careful", outcome="planned")
    with capture_logs() as logs:
        await harness.start(
            pollSeconds=0.02, routes=[{"name": "shadow", "handler": "careful", "dryRun": True}]
        )
        await append(cloudevent("t1"))
        await wait_for(lambda: _states(store, {"planned"}), seconds=10, step=0.02)
    assert acted == []
    (summary,) = [e for e in logs if e["event"] == "dispatched"]
    assert summary["outcome"] == "planned"
    plan = {"summary": "delete", "calls": [{"method": "DELETE", "target": "/things/t1"}]}
    assert summary["plan"] == plan
    (stored,) = await store.invocations()
    assert (stored.state, stored.plan) == ("planned", plan), "a plan is not done: nothing was acted on"
    (attempt,) = await store.attempts(stored.id)
    assert (attempt.attempt, attempt.outcome, attempt.error) == (1, "planned", None)
    assert attempt.duration is not None and attempt.duration >= 0
    assert (
        metric("glue_invocations_total", route="shadow", handler="careful", outcome="planned") == before + 1
    )


@pytest.mark.parametrize("raised", [KeyError("x"), ZeroDivisionError("y"), RuntimeError("")])
async def test_no_handler_exception_escapes(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal, raised: Exception
) -> None:
    @glue.handler("broken", registry=registry)
    async def broken(**_: Any) -> None:
        raise raised

    executor = await harness.start(
        pollSeconds=0.02, routes=[{"name": "b", "handler": "broken", "delivery": {"attempts": 1}}]
    )
    await append(cloudevent("1"), cloudevent("2"))
    await wait_for(lambda: _states(store, {"dead"}, 2), seconds=10, step=0.02)
    assert all(not task.done() for task in executor._loops), "the loops are still running"
    (first, _) = await store.invocations()
    assert first.last_error is not None and first.last_error.startswith(type(raised).__name__)


async def _running(store: journal.Journal, n: int) -> bool:
    return len(await store.invocations(state="running")) == n


async def _states(store: journal.Journal, states: set[str], count: int = 1) -> bool:
    """Every event routed, at least ``count`` invocations, all in ``states``."""
    rows = await store.invocations()
    return await store.backlog() == 0 and len(rows) >= count and {row.state for row in rows} == states


async def test_a_backlog_larger_than_the_kept_events_runs_each_invocation_once(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    """Routing runs ahead of dispatch only as far as the parsed events it keeps (4 batches and the
    concurrency, here 44); the rest of a backlog waits its turn and nothing is lost or run twice."""
    calls: list[int] = []

    class Numbered(glue.Params):
        n: int

    @glue.handler("count", params=Numbered, registry=registry)
    async def count(*, params: Numbered, **_: Any) -> None:
        calls.append(params.n)
        await asyncio.sleep(0)

    await append(*(cloudevent(f"e{n}", data={"n": n}) for n in range(200)))
    await harness.start(
        batch=10,
        concurrency=4,
        pollSeconds=0.02,
        routes=[{"name": "c", "handler": "count", "params": {"n": "{{ data.n }}"}}],
    )
    await wait_for(lambda: all_done(store, 200), seconds=60, step=0.05)
    assert sorted(calls) == list(range(200))


async def test_routing_goes_on_while_dispatch_is_stuck(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    """Kept events whose invocations cannot start (their route is at its limit) make room after
    keep_seconds: routing is slowed by backpressure, never stopped."""
    gate = asyncio.Event()

    @glue.handler("gated", registry=registry)
    async def gated(**_: Any) -> None:
        await gate.wait()

    await harness.start(
        batch=5,
        concurrency=2,
        pollSeconds=0.02,
        routes=[{"name": "g", "handler": "gated", "concurrency": 1}],
        keep_seconds=0.1,
    )
    await append(*(cloudevent(f"e{n}") for n in range(60)))
    await wait_for(lambda: _routed(store, 60), seconds=20, step=0.05)
    assert len(await store.invocations(state="running")) == 1, "the route's limit still holds"
    gate.set()
    await wait_for(lambda: all_done(store, 60), seconds=30, step=0.05)


async def _routed(store: journal.Journal, count: int) -> bool:
    return await store.backlog() == 0 and len(await store.invocations(limit=1000)) == count


def wired_intake(store: journal.Journal, executor: execution.Executor) -> intake.Intake:
    """Intake in front of the executor, built as the daemon builds it (glue.pipeline)."""
    return pipeline.make_intake(store, max_backlog=10_000, executor=executor)


async def test_events_are_journaled_with_their_routing_and_run_at_once(
    harness: Harness, registry: contract.Registry, store: journal.Journal
) -> None:
    calls: list[str] = []

    @glue.handler("note", registry=registry)
    async def note(*, event: Any, **_: Any) -> None:
        calls.append(event.get_id())

    executor = await harness.start(
        pollSeconds=30,  # no routing pass runs on its own during the test
        routes=[{"name": "n", "handler": "note", "match": 'type == "com.example.test"'}],
    )
    entry = wired_intake(store, executor)
    await entry.accept(delivery_of(cloudevent("hit")))
    await entry.accept(delivery_of(cloudevent("miss", type="com.example.other")))
    assert [(e.id, e.status) for e in await store.list()] == [("hit", "routed"), ("miss", "unmatched")]
    assert entry.backlog == 0
    await wait_for(lambda: all_done(store, 1), seconds=5, step=0.02)
    again = await entry.accept(delivery_of(cloudevent("hit")))  # a redelivery: nothing new to run
    assert not again[0].new
    await asyncio.sleep(0.1)
    assert calls == ["hit"]
    assert metric("glue_events_routed_total", outcome="matched") >= 1


async def test_intake_leaves_events_pending_while_dispatch_is_behind(
    harness: Harness, registry: contract.Registry, store: journal.Journal
) -> None:
    """Routing at intake stops while the parsed events kept for dispatch are full: later events wait
    pending, count in the backlog that bounds intake, and still run once each."""
    gate = asyncio.Event()
    calls: list[str] = []

    @glue.handler("gated", registry=registry)
    async def gated(*, event: Any, **_: Any) -> None:
        await gate.wait()
        calls.append(event.get_id())

    executor = await harness.start(
        batch=5, concurrency=2, pollSeconds=0.02, routes=[{"name": "g", "handler": "gated"}]
    )
    entry = wired_intake(store, executor)
    for n in range(60):
        await entry.accept(delivery_of(cloudevent(f"e{n}")))
    counted = entry.backlog
    statuses = [e.status for e in await store.list(limit=100)]
    assert statuses[0] == "routed"
    assert "pending" in statuses, "intake routed past what dispatch keeps"
    # Intake counted what it left pending; the route loop may have taken one batch since.
    assert 0 <= counted - statuses.count("pending") <= 5
    gate.set()
    await wait_for(lambda: all_done(store, 60), seconds=30, step=0.05)
    assert sorted(calls) == sorted(f"e{n}" for n in range(60))


async def test_an_invocation_started_before_intake_kept_its_event_is_not_kept_after(
    harness: Harness, registry: contract.Registry, store: journal.Journal
) -> None:
    """Dispatch may claim an invocation routed at intake before the intake code that committed it
    runs again: its event is then read from the journal, and must not stay counted as kept, or
    intake would soon stop routing as if dispatch were behind."""
    calls: list[str] = []

    @glue.handler("fast", registry=registry)
    async def fast(*, event: Any, **_: Any) -> None:
        calls.append(event.get_id())

    executor = await harness.start(
        batch=1, concurrency=1, pollSeconds=30, routes=[{"name": "f", "handler": "fast"}]
    )
    for n in range(10):  # more than the events it keeps (4 batches + the concurrency)
        event = cloudevent(f"e{n}")
        routing = [executor.routing_loop.route_at_intake(events.identity(event), event)]
        assert routing[0] is not None, f"intake stopped routing at event {n}"
        appended = await store.append(delivery_of(event), [event], routing)
        await executor.dispatcher.dispatch_once()  # dispatch (this call or its own loop) claims it ...
        await wait_for(functools.partial(all_claimed, store, n + 1), seconds=5, step=0.01)
        executor.routing_loop.journaled(appended, [event], routing)  # ... then intake learns its seq
        await wait_for(functools.partial(all_done, store, n + 1), seconds=5, step=0.01)
    assert calls == [f"e{n}" for n in range(10)]
