"""Retry, backoff and dead letters, on a virtual clock (looptime): what the journal and metrics show.

The executor's wall clock is the loop clock (conftest.Harness.clock), so due times persisted in the
journal, the loop's timers and the test's assertions all read one virtual time.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from structlog.testing import capture_logs

import glue
from glue import contract, execution, journal
from tests.support import cloudevent

from .conftest import Append, Harness, Recorder, metric, wait_for

pytestmark = [pytest.mark.looptime, pytest.mark.usefixtures("virtual_clock")]

POLL = 0.1


def flaky(
    registry: contract.Registry, recorder: Recorder, *, succeed_on: int | None = None, error: Any = None
) -> None:
    """Register handler ``flaky``: fails (``error``, default TemporaryError) until attempt ``succeed_on``."""

    @glue.handler("flaky", registry=registry)
    async def run(*, event: Any, params: glue.Params, ctx: glue.Context, **_: Any) -> None:
        import asyncio

        recorder.calls.append((asyncio.get_running_loop().time(), event.get_id(), ctx.attempt, {}))
        if succeed_on is not None and ctx.attempt >= succeed_on:
            return
        raise (error or glue.TemporaryError("not yet"))


def route(**delivery: Any) -> dict[str, Any]:
    return {"name": "r", "handler": "flaky", "delivery": delivery}


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_backoff_schedule_is_exponential_and_capped(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    recorder = Recorder()
    flaky(registry, recorder, succeed_on=6)
    backoff = {"initial": 1, "multiplier": 2, "max": 5, "jitter": 0}
    await harness.start(pollSeconds=POLL, routes=[route(attempts=6, backoff=backoff)])
    await append(cloudevent("e1"))
    await wait_for(lambda: _state(store, "done"))
    assert [attempt for _, _, attempt, _ in recorder.calls] == [1, 2, 3, 4, 5, 6]
    # 1, 2, 4, then capped at 5; each attempt starts at the first poll after it is due
    for gap, expected in zip(gaps(recorder.times()), [1, 2, 4, 5, 5], strict=True):
        assert expected - 1e-6 <= gap <= expected + 2 * POLL + 0.01, (gap, expected)


async def test_retry_after_from_the_handler_overrides_the_backoff(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    recorder = Recorder()
    flaky(registry, recorder, succeed_on=2, error=glue.TemporaryError("busy", delay=30))
    await harness.start(
        pollSeconds=POLL, routes=[route(attempts=3, backoff={"initial": 1, "max": 100, "jitter": 0})]
    )
    await append(cloudevent("e1"))
    await wait_for(lambda: _state(store, "done"))
    (gap,) = gaps(recorder.times())
    assert 30 - 1e-6 <= gap <= 30 + 2 * POLL + 0.01


async def test_poison_event_dead_letters_after_its_attempts(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    recorder = Recorder()
    flaky(registry, recorder, error=ValueError("cannot parse the tag"))
    before = metric("glue_dead_lettered_total", route="r")
    retries = metric("glue_invocation_retries_total", route="r", handler="flaky")
    with capture_logs() as logs:
        await harness.start(pollSeconds=POLL, routes=[route(attempts=3, backoff={"initial": 1, "jitter": 0})])
        await append(cloudevent("poison"))
        await wait_for(lambda: _state(store, "dead"))
    assert len(recorder.calls) == 3
    (dead,) = await store.invocations(state="dead")
    assert dead.attempt == 3
    assert dead.last_error == "ValueError: cannot parse the tag (after 3 attempts)"
    assert metric("glue_dead_lettered_total", route="r") == before + 1
    assert metric("glue_invocation_retries_total", route="r", handler="flaky") == retries + 2
    summaries = [entry for entry in logs if entry["event"] == "dispatched"]
    assert [(s["outcome"], s["attempt"]) for s in summaries] == [("retry", 1), ("retry", 2), ("dead", 3)]
    assert all({"route", "handler", "duration_ms"} <= set(s) for s in summaries)


async def test_permanent_error_dead_letters_at_once(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    recorder = Recorder()
    flaky(registry, recorder, error=glue.PermanentError("HTTP 404 Not Found"))
    await harness.start(pollSeconds=POLL, routes=[route(attempts=10)])
    await append(cloudevent("gone"))
    await wait_for(lambda: _state(store, "dead"))
    (dead,) = await store.invocations(state="dead")
    assert (len(recorder.calls), dead.attempt, dead.last_error) == (
        1,
        1,
        "PermanentError: HTTP 404 Not Found",
    )


async def test_route_without_dead_letters_drops_after_its_attempts(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    flaky(registry, Recorder(), error=RuntimeError("boom"))
    await harness.start(
        pollSeconds=POLL, routes=[route(attempts=2, deadLetter=False, backoff={"initial": 1})]
    )
    await append(cloudevent("x"))
    await wait_for(lambda: _state(store, "done"))
    (row,) = await store.invocations()
    assert row.state == "done" and row.last_error == "RuntimeError: boom (after 2 attempts)"
    assert await store.invocations(state="dead") == []


async def test_timeout_counts_as_a_failed_attempt(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    @glue.handler("slow", registry=registry)
    async def slow(**_: Any) -> None:
        import asyncio

        await asyncio.sleep(3600)

    await harness.start(
        pollSeconds=POLL, routes=[{"name": "r", "handler": "slow", "delivery": {"attempts": 1, "timeout": 2}}]
    )
    await append(cloudevent("x"))
    await wait_for(lambda: _state(store, "dead"))
    (dead,) = await store.invocations(state="dead")
    assert dead.last_error == "timed out after 2 s (after 1 attempts)"


async def test_restart_in_the_middle_of_a_backoff_resumes_it(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal, reopen: Any
) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    recorder = Recorder()
    flaky(registry, recorder, succeed_on=2)
    policy = route(attempts=3, backoff={"initial": 100, "jitter": 0})
    first = await harness.start(pollSeconds=POLL, routes=[policy])
    await append(cloudevent("e1"))
    await wait_for(lambda: _count(recorder, 1))
    await wait_for(lambda: _state(store, "pending"))
    failed_at = recorder.times()[0]
    (waiting,) = await store.invocations()
    assert waiting.due_at == pytest.approx(harness.clock() - loop.time() + failed_at + 100, abs=0.2)

    # the daemon goes away 40 s into the backoff; a new one opens the journal 10 s later
    await asyncio.sleep(40)
    await first.stop()
    harness.executors.remove(first)
    await store.close()
    await asyncio.sleep(10)
    reopened = await reopen()
    await harness.start(pollSeconds=POLL, routes=[policy], store=reopened)
    await asyncio.sleep(20)
    assert len(recorder.calls) == 1, "the schedule survived: no early attempt after the restart"
    await wait_for(lambda: _state(reopened, "done"))
    assert [attempt for _, _, attempt, _ in recorder.calls] == [1, 2]
    assert 100 - 1e-6 <= recorder.times()[1] - failed_at <= 100 + 2 * POLL + 0.01


async def _state(store: journal.Journal, state: str) -> bool:
    rows = await store.invocations()
    return bool(rows) and all(row.state == state for row in rows)


async def _count(recorder: Recorder, n: int) -> bool:
    return len(recorder.calls) >= n


async def test_age_of_the_oldest_pending_invocation_is_exported(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    import asyncio

    recorder = Recorder()
    flaky(registry, recorder, succeed_on=2, error=glue.TemporaryError("wait", delay=120))
    await harness.start(pollSeconds=POLL, routes=[route(attempts=2, backoff={"max": 300})])
    await append(cloudevent("slow"))
    await wait_for(lambda: _count(recorder, 1))
    await asyncio.sleep(60)
    age = metric("glue_oldest_pending_invocation_age_seconds")
    assert 60 - execution.GAUGE_SECONDS - 1 <= age <= 61, age
    await wait_for(lambda: _state(store, "done"))
    await asyncio.sleep(execution.GAUGE_SECONDS + 1)
    assert metric("glue_oldest_pending_invocation_age_seconds") == 0
