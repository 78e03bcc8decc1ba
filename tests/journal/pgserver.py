"""A throwaway PostgreSQL database for the tests, on the server of this machine (127.0.0.1:5432, trust).

One database ``glue_test_<random>`` per test session, dropped at the end; each test gets its own schema
in it (the DSN sets ``search_path``), so tests never see each other's tables. Other test areas use it
by importing the fixtures: ``from tests.journal.pgserver import pg_database, pg_dsn  # noqa: F401``.
Set ``TEST_POSTGRES_URL`` to point at another server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import asyncpg
import pytest

T = TypeVar("T")

SERVER = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a private loop (session fixtures live outside test loops)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def create_database() -> str:
    name = f"glue_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(f"{SERVER}/postgres", timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{SERVER}/{name}"


async def drop_database(dsn: str) -> None:
    name = dsn.rsplit("/", 1)[1]
    conn = await asyncpg.connect(f"{SERVER}/postgres", timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def create_schema(database: str) -> str:
    """A fresh schema in ``database``; returns a DSN whose connections use it."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database, timeout=10)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return f"{database}?search_path={schema}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """DSN of this session's throwaway database."""
    dsn = _run(create_database())
    try:
        yield dsn
    finally:
        _run(drop_database(dsn))


@pytest.fixture
async def pg_dsn(pg_database: str) -> AsyncIterator[str]:
    """DSN of an empty schema of its own for one test."""
    yield await create_schema(pg_database)
