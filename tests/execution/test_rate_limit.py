"""Rate limits through the executor: a token bucket per rendered key, kept in the journal and shared
by replicas; an invocation over the limit waits pending (never dropped) with a later due time and the
reason ``rate-limit``. Minutes run on a virtual clock (SQLite); the sharing between replicas and the
bucket itself run on both journals."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import glue
from glue import contract, journal
from tests.support import cloudevent

from .conftest import Append, Harness, metric, wait_for


class Target(glue.Params):
    deployment: str


class Restarts:
    """A test handler standing for ``kubernetes.restart``: (loop time, deployment) per call."""

    def __init__(self, registry: contract.Registry) -> None:
        self.calls: list[tuple[float, str]] = []

        @glue.handler("restart", params=Target, registry=registry)
        async def restart(*, params: Target, **_: Any) -> None:
            self.calls.append((asyncio.get_running_loop().time(), params.deployment))


def route(rate: float = 1, per: str = "1m", burst: int = 3) -> dict[str, Any]:
    return {
        "name": "restart-on-rotation",
        "handler": "restart",
        "params": {"deployment": "{{ data.deployment }}"},
        "rateLimit": {"rate": rate, "per": per, "burst": burst, "key": "{{ data.deployment }}"},
    }


def rotation(n: int, deployment: str = "api") -> Any:
    return cloudevent(f"rotation-{deployment}-{n}", type="secret.rotated", data={"deployment": deployment})


async def done(store: journal.Journal, count: int) -> bool:
    rows = await store.invocations(limit=1000)
    return len(rows) == count and all(row.state == "done" for row in rows)


@pytest.mark.looptime
@pytest.mark.usefixtures("virtual_clock")
async def test_a_storm_of_rotations_restarts_at_the_rate_the_limit_allows(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    restarts = Restarts(registry)
    waits = metric("glue_rate_limit_wait_seconds_count", route="restart-on-rotation")
    await harness.start(pollSeconds=0.5, routes=[route(rate=1, per="1m", burst=3)])
    start = asyncio.get_running_loop().time()
    await append(*(rotation(n) for n in range(1, 21)), rotation(1, deployment="web"))
    await asyncio.sleep(90)

    pending = [i for i in await store.invocations(limit=100) if i.state == "pending"]
    assert len(pending) == 20 - 3 - 1, "3 at once (burst), 1 a minute after: the rest wait"
    assert {i.wait_reason for i in pending} == {"rate-limit"}
    assert all(i.due_at > harness.clock() for i in pending), "each due when a token will be there"

    await wait_for(lambda: done(store, 21), seconds=30 * 60, step=5)
    api = [round(at - start) for at, deployment in restarts.calls if deployment == "api"]
    assert api[:3] == [0, 0, 0] and len(api) == 20
    gaps = [b - a for a, b in itertools.pairwise(api[2:])]
    assert all(59 <= gap <= 61 for gap in gaps), gaps
    assert [d for _, d in restarts.calls].count("web") == 1, "another key has its own bucket"
    assert [round(at - start) for at, d in restarts.calls if d == "web"] == [0]
    assert metric("glue_rate_limit_wait_seconds_count", route="restart-on-rotation") == waits + 21
    assert metric("glue_rate_limit_wait_seconds_bucket", route="restart-on-rotation", le="0.0") >= 4


async def test_replicas_share_one_bucket_through_the_journal(
    harness: Harness,
    registry: contract.Registry,
    append: Append,
    store: journal.Journal,
    reopen: Callable[[], Awaitable[journal.Journal]],
    backend: str,
) -> None:
    restarts = Restarts(registry)
    other = await reopen() if backend == "postgres" else store
    await harness.start(pollSeconds=0.02, owner="replica-a", routes=[route(rate=1, per="1h", burst=2)])
    await harness.start(store=other, pollSeconds=0.02, owner="replica-b", routes=[route(1, "1h", 2)])
    await append(*(rotation(n) for n in range(1, 9)))

    async def waiting() -> bool:
        rows = await store.invocations(limit=100)
        return (
            len(rows) == 8
            and sum(r.state == "done" for r in rows) == 2
            and all(r.state == "done" or r.wait_reason == "rate-limit" for r in rows)
        )

    await wait_for(waiting, seconds=10, step=0.05)
    await asyncio.sleep(0.5)  # both replicas keep claiming: nothing more runs within the hour
    assert len(restarts.calls) == 2
    rows = await store.invocations(limit=100)
    assert sorted(r.state for r in rows) == ["done"] * 2 + ["pending"] * 6, "waiting, never dropped"
    assert all(r.attempt == 0 for r in rows if r.state == "pending"), "a wait is not an attempt"


async def test_the_bucket_starts_full_refills_at_its_rate_and_is_shared(
    store: journal.Journal, reopen: Callable[[], Awaitable[journal.Journal]]
) -> None:
    other = await reopen()
    rate = 1 / 60  # one a minute
    t0 = 1_700_000_000.0
    taken = [await s.take_token("r k", rate=rate, burst=2, now=t0) for s in (store, other, store)]
    assert taken[:2] == [0.0, 0.0] and taken[2] == pytest.approx(60.0)
    assert await other.take_token("r k", rate=rate, burst=2, now=t0 + 30) == pytest.approx(30.0)
    assert await store.take_token("r k", rate=rate, burst=2, now=t0 + 60) == 0.0
    assert await store.take_token("r other", rate=rate, burst=2, now=t0 + 60) == 0.0, "keys apart"
    # a long quiet refills to the burst, no more
    assert [await other.take_token("r k", rate=rate, burst=2, now=t0 + 3600) for _ in range(3)][2] > 0
