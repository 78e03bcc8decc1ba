"""Fixtures for the execution tests: a real journal per backend, events appended through its intake API."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from cloudevents.core.v1.event import CloudEvent
from pydantic import SecretStr

from glue import contract, events, execution, journal, routing, settings
from tests.journal import pgserver

#: Backends the contract tests run against.
BACKENDS = ["sqlite", "postgres"]

pg_database = pgserver.pg_database  # a throwaway PostgreSQL database per session


async def journal_settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> settings.Journal:
    if backend == "sqlite":
        return settings.Journal(backend="sqlite", path=tmp_path / "journal.db", group_commit_ms=0)
    if backend == "postgres":
        dsn = await pgserver.create_schema(request.getfixturevalue("pg_database"))
        return settings.Journal(
            backend="postgres", dsn=settings.SecretRef(value=SecretStr(dsn)), group_commit_ms=0
        )
    raise NotImplementedError(backend)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def reopen(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[], Awaitable[journal.Journal]]]:
    """Open (another) journal on the same storage: what a restarted daemon sees."""
    opened: list[journal.Journal] = []
    config = await journal_settings(backend, tmp_path, request)

    async def open_() -> journal.Journal:
        store = journal.create(config)
        await store.open()
        opened.append(store)
        return store

    yield open_
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def store(reopen: Callable[[], Awaitable[journal.Journal]]) -> journal.Journal:
    return await reopen()


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


# -- executor harness ------------------------------------------------------------------------------


class Recorder:
    """A test handler's log of calls: (loop time, event id, attempt, params) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, int, dict[str, Any]]] = []

    def times(self, event_id: str | None = None) -> list[float]:
        return [t for t, e, _, _ in self.calls if event_id is None or e == event_id]


class Harness:
    """An executor over the ``store`` journal with routes over a private handler registry.

    ``clock`` follows the event loop's clock (virtual under looptime) from T0, so due times persisted
    in the journal and the loop's sleeps agree."""

    T0 = 1_700_000_000.0

    def __init__(self, store: journal.Journal, registry: contract.Registry) -> None:
        self.store = store
        self.registry = registry
        self.executors: list[execution.Executor] = []
        self.clients = contract.Clients(registry, {})

    def clock(self) -> float:
        return self.T0 + asyncio.get_running_loop().time()

    def router(self, routes: list[dict[str, Any]]) -> routing.Router:
        return routing.load(routes, self.registry, source="test")

    async def start(
        self,
        routes: list[dict[str, Any]],
        *,
        store: journal.Journal | None = None,
        keep_seconds: float = execution.KEEP_SECONDS,
        client_down: Callable[[str], str | None] | None = None,
        **config: Any,
    ) -> execution.Executor:
        config.setdefault("pollSeconds", 0.05)
        config.setdefault("owner", "test")
        executor = execution.Executor(
            store or self.store,
            self.router(routes),
            self.clients,
            settings.Execution.model_validate(config),
            clock=self.clock,
            rng=random.Random(7),
            keep_seconds=keep_seconds,
            client_down=client_down,
        )
        await executor.start()
        self.executors.append(executor)
        return executor

    async def stop(self) -> None:
        while self.executors:
            await self.executors.pop().stop()
        await self.clients.aclose()


@pytest.fixture
def registry() -> contract.Registry:
    return contract.Registry()


@pytest.fixture
async def harness(store: journal.Journal, registry: contract.Registry) -> AsyncIterator[Harness]:
    h = Harness(store, registry)
    try:
        yield h
    finally:
        await h.stop()


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], *, seconds: float = 600, step: float = 0.2
) -> None:
    """Poll ``predicate`` on the loop clock (virtual under looptime) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {seconds} s of loop time")
        await asyncio.sleep(step)


def metric(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def virtual_clock(backend: str) -> None:
    """For tests on looptime's virtual clock: only journals whose I/O runs in threads (SQLite).

    looptime waits for thread-pool futures before it moves the clock, but not for sockets: with asyncpg
    the clock jumps to the next timer while a query is on the wire and its timeouts fire. The journal
    contract tests cover the PostgreSQL side of what these tests rely on (due times, leases, order)."""
    if backend != "sqlite":
        pytest.skip("virtual-clock test: the journal's I/O must run in threads (SQLite)")
