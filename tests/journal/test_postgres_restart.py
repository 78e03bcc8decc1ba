"""PostgreSQL restarts under load (``pg_ctl stop -m fast`` and ``-m immediate``, then start), on a server of
the test's own (own_postgres.py), while senders post over HTTP and a handler runs.

What a sender sees: 202, or 503 with ``Retry-After`` during the outage, each within Harbor's 3 s
timeout; never a 500. The pool reconnects by itself (202 again without a restart of glue). Afterwards
every acknowledged event is in the journal, and every one was handled exactly once (invocations leased
when the server went away resume). asyncpg's pool warnings come as one line each, without a trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import MutableMapping
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from structlog.testing import capture_logs

import glue
from glue import app, events, observability, settings
from tests import support
from tests.journal.own_postgres import OwnPostgres, own_postgres  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

#: Harbor gives up on a delivery after about 3 s (shared/reference/formats.md).
SENDER_TIMEOUT = 3.0

registry = glue.Registry()
handled: list[str] = []


@glue.handler("test.slow-count", registry=registry)
async def slow_count(*, event: events.CloudEvent, ctx: glue.Context, **kwargs: Any) -> glue.Plan | None:
    """Counts the events it is called with, taking a moment each, so some run while the server stops."""
    if ctx.dry_run:
        return glue.Plan(summary="count")
    await asyncio.sleep(0.05)
    handled.append(event.get_id())
    return None


class Senders:
    """Posters that send numbered events like a webhook producer and keep what each answer was."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.acknowledged: set[str] = set()
        self.statuses: dict[int, int] = {}
        self.last_202 = 0.0
        self.slowest = 0.0
        self.stop = asyncio.Event()
        self.problems: list[str] = []

    async def post(self, worker: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            event_id = f"w{worker}-{n}"
            headers = {
                "ce-specversion": "1.0",
                "ce-id": event_id,
                "ce-source": "/restart",
                "ce-type": "com.example.restart",
                "content-type": "application/json",
            }
            started = time.monotonic()
            try:
                async with self.session.post(
                    f"{self.base}/events",
                    data=orjson.dumps({"n": n}),
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=SENDER_TIMEOUT + 2),
                ) as response:
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
                    await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.problems.append(f"{event_id}: {exc!r}")
                continue
            took = time.monotonic() - started
            self.slowest = max(self.slowest, took)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 202:
                self.acknowledged.add(event_id)
                self.last_202 = time.monotonic()
            elif status == 503 and retry_after:
                await asyncio.sleep(0.05)  # a sender retries later; here: another event
            else:
                self.problems.append(f"{event_id}: {status} (Retry-After {retry_after})")

    async def taken_since(self, moment: float) -> bool:
        return self.last_202 > moment


@pytest.mark.parametrize(
    ("mode", "durable_execution"),
    [
        ("fast", False),
        # An immediate stop is a database crash: execution state committed without waiting for the WAL
        # flush (the default, journal.durableExecutionCommits: false) may be lost with its last moments
        # and those invocations run again (handlers are idempotent). Run nothing twice: durable commits.
        ("immediate", True),
    ],
)
async def test_postgres_restarting_under_load_loses_nothing_and_runs_nothing_twice(
    own_postgres: OwnPostgres,  # noqa: F811
    mode: str,
    durable_execution: bool,
) -> None:
    handled.clear()
    loaded = settings.from_mapping(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "journal": {
                "backend": "postgres",
                "dsn": {"value": own_postgres.dsn},
                "poolSize": 4,
                "durableExecutionCommits": durable_execution,
            },
            "endpoints": [{"name": "ce", "path": "/events", "format": "cloudevents"}],
            "routes": [{"name": "count", "handler": "test.slow-count"}],
            "execution": {"pollSeconds": 0.05, "concurrency": 8},
        },
        "test",
    )
    # Library records reach structlog as in the daemon (configure_logging's bridge), captured here:
    # configuring the daemon's own output would leave cached loggers behind for later tests.
    bridge = observability._ToStructlog()
    logging.getLogger("asyncpg").addHandler(bridge)
    daemon = app.Daemon(loaded, registry=registry)
    with capture_logs() as logs:
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                senders = Senders(session, support.base_url(daemon))
                posters = [asyncio.create_task(senders.post(i)) for i in range(8)]
                await support.eventually(lambda: len(senders.acknowledged) >= 100, within=20)

                await asyncio.to_thread(own_postgres.stop, mode)
                stopped = time.monotonic()
                await asyncio.sleep(2)  # the outage: intake refuses, execution waits
                refused_during_outage = senders.statuses.get(503, 0)
                await asyncio.to_thread(own_postgres.start)
                restarted = time.monotonic()
                # The pools reconnect by themselves: deliveries are taken again.
                await support.eventually(lambda: senders.taken_since(restarted), within=15)
                recovered = time.monotonic() - restarted
                await asyncio.sleep(0.5)
                senders.stop.set()
                await asyncio.gather(*posters)
            try:
                await support.eventually(lambda: set(handled) >= senders.acknowledged, within=60)
            except AssertionError:
                raise AssertionError(
                    await _unfinished(own_postgres.dsn, senders.acknowledged - set(handled), logs)
                ) from None
        finally:
            await daemon.stop()
            logging.getLogger("asyncpg").removeHandler(bridge)

    assert not senders.problems, senders.problems[:5]
    assert refused_during_outage > 0, senders.statuses
    assert set(senders.statuses) <= {202, 503}, senders.statuses
    assert senders.slowest < SENDER_TIMEOUT, f"an answer took {senders.slowest:.2f} s"
    assert recovered < 10, f"202 again {recovered:.1f} s after the server was back ({stopped=})"

    conn = await asyncpg.connect(own_postgres.dsn)
    try:
        stored = {row["id"] for row in await conn.fetch("SELECT id FROM events")}
        states = {
            row["state"]: row["n"]
            for row in await conn.fetch("SELECT state, count(*) AS n FROM invocations GROUP BY state")
        }
    finally:
        await conn.close()
    missing = senders.acknowledged - stored
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
    twice = sorted(e for e in set(handled) if handled.count(e) > 1)
    assert not twice, f"{len(twice)} events handled twice, e.g. {twice[:5]}"
    assert set(handled) == stored
    assert set(states) <= {"done"}, (states, _warnings(logs))

    pool = [line for line in logs if line.get("logger") == "asyncpg.pool"]
    assert pool, "the pool never logged while the server was down"
    for line in pool:
        assert line["log_level"] == "warning" and "exc_info" not in line, line
        assert line["error"] and "\n" not in line["error"] and "Traceback" not in line["error"], line


async def _unfinished(dsn: str, ids: set[str], logs: list[MutableMapping[str, Any]]) -> str:
    """What the journal says of acknowledged events never handled, and what glue logged (for a failure)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT e.id, e.status, i.state, i.attempt, i.owner, i.lease_until, i.last_error"
            " FROM events e LEFT JOIN invocations i ON i.event_seq = e.seq WHERE e.id = ANY($1::text[])",
            sorted(ids),
        )
    finally:
        await conn.close()
    return f"{len(ids)} not handled: {[dict(r) for r in rows[:5]]}; log: {_warnings(logs)}"


def _warnings(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line.get("log_level") != "info"][-40:]
