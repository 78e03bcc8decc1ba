"""Fixtures for the Kafka source: a producer on the test's broker (tests/sources/conftest.py), in-process
glue daemons."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiokafka
import pytest

import glue
from glue import app, settings
from tests.journal.pgserver import pg_database, pg_dsn  # noqa: F401 (fixtures)
from tests.sources.kafka.support import Broker


@pytest.fixture
async def producer(broker: Broker) -> AsyncIterator[aiokafka.AIOKafkaProducer]:
    # Tansu's memory storage does not take idempotent producers.
    client = aiokafka.AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, enable_idempotence=False, linger_ms=2
    )
    await client.start()
    yield client
    await client.stop()


#: The ``start_daemon`` fixture: start a daemon with this ``sources.kafka`` group, an optional handler
#: registry and other settings groups.
StartDaemon = Callable[..., Coroutine[Any, Any, app.Daemon]]


@pytest.fixture
async def start_daemon(tmp_path: Path) -> AsyncIterator[StartDaemon]:
    """Start in-process daemons (HTTP on port 0, SQLite journal shared by all daemons of the test)."""
    started: list[app.Daemon] = []

    async def start(
        kafka: dict[str, Any], registry: glue.Registry | None = None, **config: Any
    ) -> app.Daemon:
        merged = {
            "server": {"host": "127.0.0.1", "port": 0},
            "journal": {"path": str(tmp_path / "journal.db"), "groupCommitMs": 1},
            "sources": {"kafka": kafka},
            **config,
        }
        daemon = app.Daemon(settings.from_mapping(merged, "test"), registry=registry)
        await daemon.start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in reversed(started):
        with contextlib.suppress(Exception):
            await daemon.stop()
