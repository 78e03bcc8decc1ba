"""Fixtures for the execution tests: a real journal per backend, events appended through its intake API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.v1.event import CloudEvent

from glue import events, journal, settings
from tests.journal import pgserver

#: Backends the contract tests run against.
BACKENDS = ["sqlite", "postgres"]

pg_database = pgserver.pg_database  # a throwaway PostgreSQL database per session


async def journal_settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> settings.Journal:
    if backend == "sqlite":
        return settings.Journal(backend="sqlite", path=tmp_path / "journal.db", group_commit_ms=0)
    if backend == "postgres":
        dsn = await pgserver.create_schema(request.getfixturevalue("pg_database"))
        return settings.Journal(backend="postgres", dsn=settings.SecretRef(value=dsn), group_commit_ms=0)
    raise NotImplementedError(backend)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[journal.Journal]:
    backend = journal.create(await journal_settings(request.param, tmp_path, request))
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def cloudevent(
    id: str, *, type: str = "com.example.test", source: str = "/test", data: Any = None, **extra: Any
) -> CloudEvent:
    attributes: dict[str, Any] = {"id": id, "source": source, "type": type, "specversion": "1.0", **extra}
    if data is not None:
        attributes.setdefault("datacontenttype", "application/json")
    return CloudEvent(attributes, data)


def delivery_of(event: CloudEvent) -> events.Delivery:
    return events.Delivery(
        transport="http",
        endpoint="test",
        format="cloudevents",
        headers={"content-type": "application/cloudevents+json"},
        body=events.to_json(event),
    )


Append = Callable[..., Awaitable[list[journal.Appended]]]


@pytest.fixture
def append(store: journal.Journal) -> Append:
    async def run(*batch: CloudEvent) -> list[journal.Appended]:
        result: list[journal.Appended] = []
        for event in batch:
            result.extend(await store.append(delivery_of(event), [event]))
        return result

    return run
