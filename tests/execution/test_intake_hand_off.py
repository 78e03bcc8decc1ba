"""The sole daemon on a SQLite journal takes invocations at intake: inserted claimed in the event's own
commit, started from memory once it is durable. Seen from outside: the invocation is ``running`` under
the daemon's owner while its handler runs, the concurrency bound holds, each event runs once, and its
outcome lands in the journal with traffic and without."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import glue
from glue import app, events, journal
from tests import support

pytestmark = pytest.mark.slow

CONCURRENCY = 4


class Gate:
    """A handler, ``test.gate``, that waits until released and records how many run at once."""

    def __init__(self) -> None:
        self.registry = glue.Registry()
        self.release = asyncio.Event()
        self.running = 0
        self.most = 0
        self.handled: list[str] = []

        @glue.handler("test.gate", registry=self.registry)
        async def gate(*, event: events.CloudEvent, **_: Any) -> None:
            """Waits for the test to release it."""
            self.running += 1
            self.most = max(self.most, self.running)
            try:
                await self.release.wait()
            finally:
                self.running -= 1
            self.handled.append(event.get_id())


async def post(session: aiohttp.ClientSession, daemon: app.Daemon, event_id: str) -> int:
    body = events.to_json(support.cloudevent(event_id, data={"n": 1}))
    headers = {"Content-Type": "application/cloudevents+json"}
    async with session.post(f"{support.base_url(daemon)}/events", data=body, headers=headers) as response:
        return response.status


def config(tmp_path: Path) -> Any:
    return support.daemon_settings(
        tmp_path,
        endpoints=[{"name": "ce", "path": "/events", "format": "cloudevents"}],
        routes=[{"name": "r", "match": "true", "handler": "test.gate"}],
        execution={"concurrency": CONCURRENCY, "owner": "me", "pollSeconds": 0.2},
    )


async def test_a_running_invocation_is_claimed_and_the_bound_holds(tmp_path: Path) -> None:
    gate = Gate()
    daemon = app.Daemon(config(tmp_path), registry=gate.registry)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            sent = [f"e{i}" for i in range(3 * CONCURRENCY)]
            assert await asyncio.gather(*(post(session, daemon, i) for i in sent)) == [202] * len(sent)
            await support.eventually(lambda: gate.running == CONCURRENCY)
            running = await daemon.journal.invocations(state="running", limit=100)
            assert len(running) == CONCURRENCY
            assert {(item.owner, item.attempt) for item in running} == {("me", 1)}
            pending = await daemon.journal.invocations(state="pending", limit=100)
            assert len(pending) == len(sent) - CONCURRENCY  # they wait for a claim, in the journal
            gate.release.set()
            await support.eventually(lambda: len(gate.handled) == len(sent))
            done: list[journal.Invocation] = await support.eventually(
                lambda: _all_done(daemon, len(sent)), within=5
            )
            for item in done:
                attempts = await daemon.journal.attempts(item.id)
                assert [(a.attempt, a.outcome) for a in attempts] == [(1, "done")], attempts
    finally:
        await daemon.stop()
    assert gate.most == CONCURRENCY
    assert sorted(gate.handled) == sorted(sent), "each event ran once"


async def test_an_outcome_lands_with_no_more_traffic(tmp_path: Path) -> None:
    gate = Gate()
    gate.release.set()
    daemon = app.Daemon(config(tmp_path), registry=gate.registry)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            assert await post(session, daemon, "alone") == 202
            [done] = await support.eventually(lambda: _all_done(daemon, 1), within=2)
            assert done.owner is None and done.attempt == 1
            for index in range(20):  # and with traffic, outcomes ride the intake commits
                assert await post(session, daemon, f"busy{index}") == 202
            await support.eventually(lambda: _all_done(daemon, 21), within=5)
    finally:
        await daemon.stop()


async def _all_done(daemon: app.Daemon, count: int) -> list[journal.Invocation] | None:
    done = await daemon.journal.invocations(state="done", limit=count + 1)
    return done if len(done) == count else None
