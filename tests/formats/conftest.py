"""Fixtures: the real daemon (aiohttp intake on a loopback port, SQLite journal in tmp_path) with one
webhook endpoint per inbound format, for the tests that post payloads over a socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from glue import journal
from tests import support

ENDPOINTS = [
    {"name": "harbor", "path": "/hooks/harbor", "format": "harbor"},
    {"name": "gitlab", "path": "/hooks/gitlab", "format": "gitlab"},
    {"name": "minio", "path": "/hooks/minio", "format": "minio"},
    {
        "name": "argo",
        "path": "/hooks/argo",
        "format": "argo",
        "type": "org.example.argo.sensor",
        "source": "argo/sensor/models",
        "idHeader": "X-Event-Id",
    },
    {"name": "cloudevents", "path": "/events", "format": "cloudevents"},
    # Argo triggers that send no id (digest identities), one with a window a test can outlast
    {"name": "argo-digest", "path": "/hooks/argo-digest", "format": "argo", "type": "t", "source": "s"},
    {
        "name": "argo-short",
        "path": "/hooks/argo-short",
        "format": "argo",
        "type": "t",
        "source": "s",
        "dedupWindow": 0.05,
    },
    # an Argo Kafka-style payload carrying the event's context.id at dest "event.id"
    {
        "name": "argo-field",
        "path": "/hooks/argo-field",
        "format": "argo",
        "type": "t",
        "source": "s",
        "idField": "event.id",
    },
]


class Glue(support.Client):
    """The running daemon as a sender sees it (HTTP answers) and as an operator sees it (journal)."""

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        # Like Go's client (Argo's HTTP trigger), send no Content-Type unless one is given.
        skip = () if any(name.lower() == "content-type" for name in headers) else ("Content-Type",)
        async with self.session.post(
            self.base + path, data=body, headers=headers, skip_auto_headers=skip
        ) as response:
            return response.status, await response.json(content_type=None)

    async def journaled(self) -> list[journal.StoredEvent]:
        return list(await self.daemon.journal.list(limit=1000))


@pytest.fixture
async def glue(tmp_path: Path) -> AsyncIterator[Glue]:
    async with (
        support.running(support.daemon_settings(tmp_path, endpoints=ENDPOINTS)) as daemon,
        aiohttp.ClientSession() as session,
    ):
        yield Glue(daemon, session)
