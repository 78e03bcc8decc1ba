"""Coalescing through the executor: a burst of events with one key becomes one invocation, run with
the last event after the window's quiet (trailing) or with the first (leading), never later than
maxWait; the absorbed ones end ``coalesced`` and say which invocation took them; a restart keeps the
window. Minutes-long windows run on a virtual clock (SQLite); the PostgreSQL journal runs the same
rules with a short window in real time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import glue
from glue import contract, journal
from tests.support import cloudevent

from .conftest import Append, Harness, metric, wait_for


class Shard(glue.Params):
    model: str
    shard: int


class Reloads:
    """A test handler standing for ``kubeai.reload``: each call's loop time, params and event ids."""

    def __init__(self, registry: contract.Registry) -> None:
        self.calls: list[tuple[float, dict[str, Any], tuple[str, ...]]] = []

        @glue.handler("reload", params=Shard, registry=registry)
        async def reload(*, params: Shard, ctx: glue.Context, **_: Any) -> None:
            self.calls.append((asyncio.get_running_loop().time(), params.model_dump(), ctx.event_ids))


def route(window: str, max_wait: str | None = None, edge: str = "trailing") -> dict[str, Any]:
    coalesce: dict[str, Any] = {"key": "{{ data.model }}", "window": window, "edge": edge}
    if max_wait is not None:
        coalesce["maxWait"] = max_wait
    return {
        "name": "reload-model",
        "handler": "reload",
        "params": {"model": "{{ data.model }}", "shard": "{{ data.shard }}"},
        "coalesce": coalesce,
    }


def shard(n: int, model: str = "llama-70b") -> Any:
    return cloudevent(f"{model}-shard-{n}", type="object.created", data={"model": model, "shard": n})


async def by_state(store: journal.Journal) -> dict[str, list[journal.Invocation]]:
    found: dict[str, list[journal.Invocation]] = {}
    for item in await store.invocations(limit=1000):
        found.setdefault(item.state, []).append(item)
    return found


async def settled(store: journal.Journal, count: int) -> bool:
    rows = await store.invocations(limit=1000)
    return len(rows) == count and all(row.state in ("done", "coalesced") for row in rows)


@pytest.mark.looptime
@pytest.mark.usefixtures("virtual_clock")
async def test_trailing_runs_once_with_the_last_event_after_the_quiet(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    reloads = Reloads(registry)
    before = metric("glue_invocations_coalesced_total", route="reload-model")
    await harness.start(routes=[route("30s", "5m")])
    loop = asyncio.get_running_loop()
    for n in range(1, 31):  # 30 shards, one a second
        await append(shard(n))
        await asyncio.sleep(1)
    last_at = loop.time() - 1
    await wait_for(lambda: settled(store, 30), seconds=120)

    [(at, params, event_ids)] = reloads.calls
    assert params == {"model": "llama-70b", "shard": 30}, "with the last shard's event"
    assert last_at + 30 <= at < last_at + 31, "after 30 s of quiet"
    assert event_ids == tuple(f"llama-70b-shard-{n}" for n in range(1, 31))
    states = await by_state(store)
    [ran] = states["done"]
    assert len(states["coalesced"]) == 29 and {i.taken_by for i in states["coalesced"]} == {ran.id}
    assert metric("glue_invocations_coalesced_total", route="reload-model") == before + 29


@pytest.mark.looptime
@pytest.mark.usefixtures("virtual_clock")
async def test_trailing_never_runs_later_than_max_wait_after_the_first(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    reloads = Reloads(registry)
    await harness.start(pollSeconds=0.5, routes=[route("30s", "2m")])
    loop = asyncio.get_running_loop()
    first_at = loop.time()
    for n in range(1, 16):  # one every 20 s for 5 minutes: never 30 s of quiet
        await append(shard(n))
        await asyncio.sleep(20)
    await wait_for(lambda: settled(store, 15), seconds=300, step=2)

    times = [at - first_at for at, _, _ in reloads.calls]
    assert 120 <= times[0] < 121, "the first window closes at maxWait"
    assert len(reloads.calls) == 3 and reloads.calls[-1][1]["shard"] == 15
    stood_for = [len(ids) for _, _, ids in reloads.calls]
    assert sum(stood_for) == 15, "every event is stood for once"


@pytest.mark.looptime
@pytest.mark.usefixtures("virtual_clock")
async def test_leading_runs_with_the_first_and_absorbs_the_rest_of_the_window(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    reloads = Reloads(registry)
    await harness.start(routes=[route("30s", "5m", edge="leading")])
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(1, 6):
        await append(shard(n))
        await asyncio.sleep(5)
    await asyncio.sleep(60)
    await append(shard(6))  # the key has been quiet for longer than the window: a new one
    await wait_for(lambda: settled(store, 6), seconds=60)

    assert [(params["shard"], round(at - start)) for at, params, _ in reloads.calls] == [(1, 0), (6, 85)]
    states = await by_state(store)
    first = next(i for i in states["done"] if i.params["shard"] == 1)
    assert sorted(i.params["shard"] for i in states["coalesced"]) == [2, 3, 4, 5]
    assert {i.taken_by for i in states["coalesced"]} == {first.id}


@pytest.mark.looptime
@pytest.mark.usefixtures("virtual_clock")
async def test_a_restart_mid_window_keeps_the_window_loses_nothing_and_runs_once(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal, reopen: Any
) -> None:
    reloads = Reloads(registry)
    executor = await harness.start(routes=[route("30s", "5m")])
    loop = asyncio.get_running_loop()
    for n in range(1, 11):
        await append(shard(n))
        await asyncio.sleep(1)
    last_at = loop.time() - 1
    await asyncio.sleep(5)  # mid-window: the daemon stops (drains), another starts on the same file
    await executor.stop()
    harness.executors.remove(executor)
    assert reloads.calls == []
    restarted = await reopen()
    await harness.start(store=restarted, routes=[route("30s", "5m")])
    await wait_for(lambda: settled(restarted, 10), seconds=120)

    [(at, params, event_ids)] = reloads.calls
    assert last_at + 30 <= at < last_at + 31, "the window persisted across the restart"
    assert params["shard"] == 10 and len(event_ids) == 10


async def test_a_burst_becomes_one_invocation_on_both_journals(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    reloads = Reloads(registry)
    await harness.start(pollSeconds=0.02, routes=[route("300ms", "5s")])
    await append(*(shard(n) for n in range(1, 11)), shard(1, model="mistral"))
    await wait_for(lambda: settled(store, 11), seconds=20, step=0.05)

    ran = sorted((params["model"], params["shard"], len(ids)) for _, params, ids in reloads.calls)
    assert ran == [("llama-70b", 10, 10), ("mistral", 1, 1)], "one per key, with its last event"
