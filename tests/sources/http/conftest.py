"""Fixtures: a real glue daemon (aiohttp server on a loopback port, SQLite journal in tmp_path)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import support


class Running(support.Client):
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


#: The ``start_daemon`` fixture: start a daemon with this configuration (camelCase groups).
StartDaemon = Callable[[dict[str, Any]], Awaitable[Running]]


@pytest.fixture
async def start_daemon(tmp_path: Path) -> AsyncIterator[StartDaemon]:
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def start(config: dict[str, Any]) -> Running:
            daemon = await stack.enter_async_context(
                support.running(support.daemon_settings(tmp_path, **config))
            )
            return Running(daemon, session)

        yield start
