"""SIGKILL while invocations are held: `glue run` as a subprocess, the route paused with the CLI (another
process, as an operator would), events posted over HTTP, the daemon killed. After a restart they are
still held, and they run once after `glue routes resume`."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml

from glue import journal, settings
from tests import support
from tests.sources.http.test_crash import free_port, start_glue

pytestmark = pytest.mark.slow

EVENTS = 5


async def cli(config: Path, *args: str) -> str:
    """``glue ARGS --config CONFIG`` in its own process; its standard output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "glue.cli",
        *args,
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def states(db: Path) -> collections.Counter[str]:
    """Invocations by state (``held`` as ``held/reason``), read from the journal file."""
    store = journal.create(settings.Journal(path=db))
    await store.open()
    try:
        rows = await store.invocations(limit=1000)
    finally:
        await store.close()
    found: collections.Counter[str] = collections.Counter(
        f"held/{row.wait_reason}" if row.state == "held" else row.state for row in rows
    )
    assert sum(found.values()) in (0, EVENTS), found  # nothing lost
    return found


async def until(db: Path, expected: dict[str, int], seconds: float = 20) -> None:
    async def reached() -> bool:
        return await states(db) == expected

    await support.eventually(reached, within=seconds)


async def test_held_invocations_survive_sigkill_and_run_after_resume(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "glue.yaml"
    db = tmp_path / "journal.db"
    ran = tmp_path / "ran.log"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": port},
                "journal": {"path": str(db)},
                "logging": {"format": "json"},
                "execution": {"pollSeconds": 0.05},
                "endpoints": [{"name": "ce", "path": "/events", "format": "cloudevents"}],
                "routes": [{"name": "restart", "handler": "log", "params": {"message": "restart {{ id }}"}}],
            }
        )
    )
    process = await start_glue(config, port)
    try:
        assert "paused route restart" in await cli(
            config, "routes", "pause", "restart", "--reason", "crash test"
        )
        await asyncio.sleep(1.5)  # the daemon reads the rails at most a second old
        async with aiohttp.ClientSession() as session:
            for n in range(EVENTS):
                headers = {
                    "ce-specversion": "1.0",
                    "ce-id": f"e{n}",
                    "ce-source": "/crash",
                    "ce-type": "com.example.restart",
                    "content-type": "application/json",
                }
                async with session.post(
                    f"http://127.0.0.1:{port}/events", data=orjson.dumps({"n": n}), headers=headers
                ) as response:
                    assert response.status == 202
        await until(db, {"held/paused": EVENTS})
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
        assert await states(db) == {"held/paused": EVENTS}

        with ran.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "glue.cli", "run", "--config", str(config), stdout=log, stderr=log
            )
        await asyncio.sleep(3)  # restarted: it reads the pause from the journal and keeps holding
        assert await states(db) == {"held/paused": EVENTS}
        assert "5 held invocations released" in await cli(config, "routes", "resume", "restart")
        await until(db, {"done": EVENTS})
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)
    dispatched = [
        line
        for line in ran.read_bytes().splitlines()
        if line.startswith(b"{") and orjson.loads(line).get("event") == "dispatched"
    ]
    assert len(dispatched) == EVENTS, "each held invocation ran once, after the resume"
    audit = [orjson.loads(line) for line in (await cli(config, "audit")).splitlines()]
    assert [entry["action"] for entry in audit] == ["start", "pause", "start", "resume"]
    starts = [entry["detail"]["configHash"] for entry in audit if entry["action"] == "start"]
    assert len(starts) == 2 and starts[0] == starts[1], "the same config, the same hash"
