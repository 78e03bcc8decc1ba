"""`glue run` killed with SIGKILL while it reads the EventBus, then restarted: every event journaled once,
on either journal (SQLite, PostgreSQL).

Messages the killed daemon had journaled but not yet acknowledged come back to the restarted one after
the ack wait (same durable consumer) and are recognised by their identity; the test reads the journal
file, the consumer's state on the server and the daemon's /metrics, as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import yaml

from glue import journal, settings
from tests import support
from tests.journal import pgserver
from tests.sources.argo_events import bus
from tests.sources.kafka.support import free_port, wait_for

pytestmark = pytest.mark.slow

pg_database = pgserver.pg_database

TOTAL = 3000


@pytest.fixture(params=["sqlite", "postgres"])
async def journal_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    """The daemon's journal settings: a SQLite file, or a schema of its own in the test database."""
    if request.param == "sqlite":
        return {"path": str(tmp_path / "journal.db")}
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(await pgserver.create_schema(request.getfixturevalue("pg_database")))
    return {"backend": "postgres", "dsn": {"file": str(dsn_file)}}


def write_config(path: Path, server: bus.Server, port: int, journal_config: dict[str, object]) -> Path:
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "journal": journal_config,
        "logging": {"level": "warning", "format": "json"},
        "sources": {"argoEvents": {"url": server.url, "durable": "glue-crash", "ackWait": 2}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def _ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def test_sigkill_between_commit_and_ack_then_restart_journals_every_event_once(
    nats_server: bus.Server, tmp_path: Path, journal_config: dict[str, object]
) -> None:
    port = free_port()
    config = write_config(tmp_path / "glue.yaml", nats_server, port, journal_config)
    log = tmp_path / "glue.log"
    store = journal.create(settings.Journal.model_validate(journal_config))
    messages = [bus.message("calendar", "tick", "calendar", {"n": n}) for n in range(TOTAL)]

    async with bus.Publisher(nats_server.url) as publisher:

        async def stream() -> None:
            for start in range(0, TOTAL, 100):
                for msg in messages[start : start + 100]:
                    await publisher.publish(msg)
                await asyncio.sleep(0.05)

        first = await support.spawn_glue(config, log)
        sending = asyncio.create_task(asyncio.sleep(0))
        try:
            await wait_for(lambda: _ready(port), within=30, what="the first daemon reading the bus")
            await store.open()

            async def journaled() -> int:
                return len(await store.list(limit=TOTAL * 2))

            sending = asyncio.create_task(stream())
            await wait_for(lambda: _more_than(journaled, 300), within=30, what="the first daemon journaling")
            os.kill(first.pid, signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
            at_kill = await _settled(journaled)
            unacknowledged = (await publisher.consumer("glue-crash")).num_ack_pending
            assert not sending.done(), "the kill must land mid-stream"

            second = await support.spawn_glue(config, log)
            try:
                await sending

                async def all_acknowledged() -> bool:
                    info = await publisher.consumer("glue-crash")
                    return bool(info.num_pending == 0 and info.num_ack_pending == 0)

                await wait_for(all_acknowledged, within=60, what=f"{TOTAL} messages acknowledged")
                stored = await store.list(limit=TOTAL * 2)
                assert sorted(row.event().get_id() for row in stored) == sorted(m.event_id for m in messages)
                metrics = await support.scrape(port)
                new = metrics['glue_eventbus_messages_total{outcome="journaled",source="argo-events"}']
                again = metrics.get(
                    'glue_eventbus_messages_total{outcome="duplicate",source="argo-events"}', 0.0
                )
                # The restarted daemon journaled exactly what the killed one had not; what the killed one
                # journaled without acknowledging came back and was recognised.
                assert new == TOTAL - at_kill
                assert new + again >= unacknowledged  # each one left unacknowledged was delivered again
            finally:
                second.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(second.wait(), 30) == 0
        finally:
            sending.cancel()
            if first.returncode is None:
                first.kill()
                await first.wait()
            await store.close()
    assert "Traceback" not in log.read_text()


async def _settled(count: Callable[[], Awaitable[int]]) -> int:
    """The count once it holds still: PostgreSQL finishes a commit the killed daemon had sent."""
    last = await count()
    while True:
        await asyncio.sleep(0.5)
        now = await count()
        if now == last:
            return now
        last = now


async def _more_than(count: object, n: int) -> bool:
    assert callable(count)
    value = await count()
    assert isinstance(value, int)
    return value > n
