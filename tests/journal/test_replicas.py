"""Three ``glue run`` processes on one PostgreSQL journal under load; one is killed with SIGKILL.

What an operator would check afterwards: every event that was acknowledged (HTTP 202) was handled; the
work the dead replica had leased was taken over by the others once the lease ran out; and each
handler effect happened once. The handler is tests/journal/effects_plugin.py, which counts its calls
and its effects in tables next to the journal.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.journal import effects_plugin, pgserver

pytestmark = pytest.mark.slow

pg_database = pgserver.pg_database
ROOT = Path(__file__).resolve().parents[2]
EVENTS = 450
LEASE = 11.0  # the executor's minimum: the route's timeout (1 s) + 10 s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    def __init__(self, index: int, config: Path, port: int, log: Path) -> None:
        self.index = index
        self.port = port
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "glue.cli", "run", "--config", str(config)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "GLUE_SERVER__PORT": str(port),
                    "GLUE_EXECUTION__OWNER": f"replica-{index}",
                },
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"replica {self.index} exited:\n{self.log.read_text()[-3000:]}")
            try:
                async with session.get(self.url + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"replica {self.index} not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
async def replicas(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[list[Replica]]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(effects_plugin.TABLES)
    finally:
        await conn.close()
    config = tmp_path / "glue.yaml"
    config.write_text(
        f"""
server: {{host: 127.0.0.1}}
journal: {{backend: postgres, dsn: {{env: GLUE_TEST_DSN}}, poolSize: 6}}
execution: {{concurrency: 8, leaseSeconds: 1, pollSeconds: 0.2}}
logging: {{level: warning, format: json}}
plugins: [tests.journal.effects_plugin]
clients:
  effects: {{dsn: "{pg_dsn}"}}
endpoints: [{{name: events, path: /events, format: cloudevents}}]
routes:
  - name: count
    handler: test.count
    params: {{id: "{{{{ id }}}}", waitMs: 100}}
    delivery: {{timeout: 1, attempts: 5}}
"""
    )
    monkeypatch.setenv("GLUE_TEST_DSN", pg_dsn)
    started = [Replica(i, config, free_port(), tmp_path / f"replica-{i}.log") for i in range(3)]
    try:
        yield started
    finally:
        for replica in started:
            replica.stop()


async def post(session: aiohttp.ClientSession, replica: Replica, event_id: str) -> bool:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": "/load",
        "ce-type": "com.example.load",
    }
    try:
        async with session.post(
            replica.url + "/events", data=b"{}", headers={**headers, "content-type": "application/json"}
        ) as response:
            return response.status == 202
    except aiohttp.ClientError:
        return False


async def test_a_killed_replicas_work_is_taken_over_and_every_effect_happens_once(
    replicas: list[Replica], pg_dsn: str
) -> None:
    db = await asyncpg.connect(pg_dsn)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(replica.ready(session) for replica in replicas))
        victim = replicas[0]
        acknowledged: set[str] = set()
        ids = [f"e{i}" for i in range(EVENTS)]

        async def load(chunk: list[str]) -> None:
            for n, event_id in enumerate(chunk):
                alive = [r for r in replicas if r.process.poll() is None]
                if await post(session, alive[n % len(alive)], event_id):
                    acknowledged.add(event_id)

        # Load from 8 clients; kill the victim while it is in the middle of handler calls.
        loading = asyncio.gather(*(load(ids[i::8]) for i in range(8)))
        deadline = time.monotonic() + 60
        while not await db.fetchval(
            "SELECT count(*) FROM calls c"
            " WHERE c.pid = $1 AND NOT EXISTS (SELECT 1 FROM effects e WHERE e.key = c.key)",
            victim.process.pid,
        ):
            assert time.monotonic() < deadline, "the victim never ran a handler"
            await asyncio.sleep(0.01)
        victim.process.send_signal(signal.SIGKILL)
        killed_at = await db.fetchval("SELECT clock_timestamp()")
        victim.process.wait()
        await loading

    # Every acknowledged event gets its effect, some after the dead replica's lease expires.
    wanted = {f"count /load {event_id}" for event_id in acknowledged}
    deadline = time.monotonic() + 90
    while await db.fetchval("SELECT count(*) FROM effects WHERE key = ANY($1::text[])", list(wanted)) < len(
        wanted
    ):
        assert time.monotonic() < deadline, "acknowledged events were not handled"
        await asyncio.sleep(0.2)
    while await db.fetchval("SELECT count(*) FROM invocations WHERE state <> 'done'"):
        assert time.monotonic() < deadline, "invocations were not settled"
        await asyncio.sleep(0.1)

    effects = {row["key"]: row["pid"] for row in await db.fetch("SELECT key, pid FROM effects")}
    calls = await db.fetch("SELECT key, pid, attempt, at FROM calls")
    invocations = await db.fetch("SELECT idempotency_key, state, owner FROM invocations")
    await db.close()

    victim_pid = victim.process.pid
    assert len(acknowledged) >= EVENTS * 0.9
    assert wanted <= set(effects), "an acknowledged event was not handled"
    assert set(effects) <= {row["idempotency_key"] for row in invocations}
    assert {row["state"] for row in invocations} == {"done"}
    # Taken over: the victim had these claimed when it died; after its lease another replica ran them
    # again (attempt 2). Nothing else ran twice, and each key has one effect (the table's key).
    by_key: dict[str, list[tuple[int, int, float]]] = {}
    for row in calls:
        since_kill = (row["at"] - killed_at).total_seconds()
        by_key.setdefault(row["key"], []).append((row["attempt"], row["pid"], since_kill))
    retried = {key: sorted(runs) for key, runs in by_key.items() if len(runs) > 1}
    assert retried, "the victim held no leased work when it died"
    for key, runs in retried.items():
        assert [attempt for attempt, _, _ in runs] == [1, 2], key
        assert runs[0][1] == victim_pid and runs[1][1] != victim_pid, key
        # The victim claimed it at most a second or two before it died.
        assert runs[1][2] >= LEASE - 2, f"{key} taken over {runs[1][2]:.1f} s after the kill"
    assert set(effects) == set(by_key)
