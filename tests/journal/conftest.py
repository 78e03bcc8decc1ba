"""Fixtures for the journal protocol suite: each test runs against every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from glue import events, journal, settings
from tests.execution import conftest as execution_fixtures
from tests.journal import pgserver

pg_database = pgserver.pg_database
pg_dsn = pgserver.pg_dsn

# Events appended one delivery each through the intake API, as the execution tests append them (the
# journal contract and commit tests came from there and keep their helpers).
append = execution_fixtures.append
Append = execution_fixtures.Append
delivery_of = execution_fixtures.delivery_of

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def config(backend: str, tmp_path: Path, pg_database: str) -> settings.Journal:
    if backend == "sqlite":
        return settings.Journal(backend="sqlite", path=tmp_path / "journal.db", group_commit_ms=0)
    dsn = await pgserver.create_schema(pg_database)
    return settings.Journal(
        backend="postgres", dsn=settings.SecretRef(value=SecretStr(dsn)), group_commit_ms=0
    )


Opener = Callable[[], Awaitable[journal.Journal]]


@pytest.fixture
async def open_journal(config: settings.Journal) -> AsyncIterator[Opener]:
    """Open (another) journal on the same store; all are closed after the test."""
    opened: list[journal.Journal] = []

    async def run() -> journal.Journal:
        store = journal.create(config)
        await store.open()
        opened.append(store)
        return store

    yield run
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_journal: Opener) -> journal.Journal:
    return await open_journal()


def delivery(body: bytes = b"{}", **changes: Any) -> events.Delivery:
    fields: dict[str, Any] = {
        "transport": "http",
        "endpoint": "test",
        "format": "cloudevents",
        "headers": {"content-type": "application/cloudevents-batch+json"},
        "body": body,
    }
    fields.update(changes)
    return events.Delivery(**fields)
