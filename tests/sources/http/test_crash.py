"""Crash safety: `glue run` as a subprocess under concurrent load, SIGKILL mid-flight, restart.

Every delivery that was answered 202 must be in the journal, whole, after the restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml

from glue import journal, settings

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_glue(config: Path, port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "glue.cli",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return process
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    process.kill()
    raise AssertionError("glue run did not become ready")


async def test_sigkill_under_load_loses_no_acknowledged_delivery(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "glue.yaml"
    db = tmp_path / "journal.db"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": port},
                "journal": {"path": str(db)},
                "endpoints": [{"name": "ce", "path": "/events", "format": "cloudevents"}],
            }
        )
    )
    process = await start_glue(config, port)
    acknowledged: dict[str, int] = {}
    stop = asyncio.Event()
    enough = asyncio.Event()  # set once 300 deliveries are acknowledged: then kill mid-flight

    async def poster(worker: int, session: aiohttp.ClientSession) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            event_id = f"w{worker}-{n}"
            headers = {
                "ce-specversion": "1.0",
                "ce-id": event_id,
                "ce-source": "/crash",
                "ce-type": "com.example.load",
                "content-type": "application/json",
            }
            try:
                async with session.post(
                    f"http://127.0.0.1:{port}/events", data=orjson.dumps({"n": n}), headers=headers
                ) as response:
                    if response.status == 202:
                        acknowledged[event_id] = n
                        if len(acknowledged) >= 300:
                            enough.set()
            except aiohttp.ClientError:
                return  # the daemon died under us: this delivery was never acknowledged

    async with aiohttp.ClientSession() as session:
        posters = [asyncio.create_task(poster(i, session)) for i in range(16)]
        await asyncio.wait_for(enough.wait(), 60)
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
        stop.set()
        await asyncio.gather(*posters)

    # Restart the daemon on the same journal: it opens cleanly (WAL recovery) and serves.
    process = await start_glue(config, port)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 20) == 0

    store = journal.create(settings.Journal(path=db))
    await store.open()
    try:
        stored = {row.id: row for row in await store.list(limit=1_000_000)}
    finally:
        await store.close()
    missing = sorted(set(acknowledged) - set(stored))
    assert not missing, f"{len(missing)} acknowledged deliveries lost, e.g. {missing[:5]}"
    for event_id, n in acknowledged.items():
        assert orjson.loads(stored[event_id].cloudevent)["data"] == {"n": n}
