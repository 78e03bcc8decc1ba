"""Fixtures: a real glue daemon (aiohttp server on a loopback port, SQLite journal in tmp_path)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from glue import app, settings


class Running:
    def __init__(self, daemon: app.Daemon, session: aiohttp.ClientSession) -> None:
        self.daemon = daemon
        self.session = session
        assert daemon.http is not None and daemon.http.port is not None
        self.base = f"http://127.0.0.1:{daemon.http.port}"

    async def post(
        self, path: str, body: bytes | str, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = body.encode() if isinstance(body, str) else body
        async with self.session.post(self.base + path, data=data, headers=headers or {}) as response:
            payload = (
                await response.json(content_type=None)
                if response.content_type == "application/json"
                else await response.text()
            )
            return response.status, payload

    async def events(self) -> list[Any]:
        return await self.daemon.journal.list(limit=10_000)


@pytest.fixture
async def start_daemon(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    started: list[Running] = []
    session = aiohttp.ClientSession()

    async def start(config: dict[str, Any]) -> Running:
        config = {
            "server": {"host": "127.0.0.1", "port": 0},
            "journal": {"path": str(tmp_path / "journal.db")},
            **config,
        }
        daemon = app.Daemon(settings.from_mapping(config, "test"))
        await daemon.start()
        running = Running(daemon, session)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.daemon.stop()
    await session.close()
