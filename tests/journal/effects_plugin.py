"""A test handler plugin that counts: every call, and every effect, in PostgreSQL tables.

Loaded by ``glue run`` through ``plugins: [tests.journal.effects_plugin]``. ``test.count`` records a
row in ``calls`` when it starts (who called, which attempt), waits ``waitMs`` like an API call would,
then applies its effect idempotently: one row per idempotency key in ``effects`` (a second attempt of
the same invocation finds the row and changes nothing, as a real handler's check-and-set would). The
tables live in the schema of the client's DSN; :data:`TABLES` creates them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pydantic

import glue

TABLES = """
CREATE TABLE calls (
    key text NOT NULL, pid integer NOT NULL, attempt integer NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE effects (key text PRIMARY KEY, pid integer NOT NULL);
"""


class EffectsConfig(pydantic.BaseModel):
    dsn: str


@glue.client("effects", config=EffectsConfig)
@contextlib.asynccontextmanager
async def effects_pool(config: EffectsConfig) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(config.dsn, min_size=1, max_size=8)
    try:
        yield pool
    finally:
        await pool.close()


class CountParams(glue.Params):
    id: str
    wait_ms: float = pydantic.Field(default=20, alias="waitMs")


@glue.handler("test.count", params=CountParams, clients=["effects"])
async def count(*, event: Any, params: CountParams, ctx: glue.Context, **kwargs: Any) -> glue.Plan | None:
    """Record the call, wait, apply the effect once per idempotency key."""
    if ctx.dry_run:
        return glue.Plan([glue.Call("INSERT", "effects", body={"key": ctx.idempotency_key})], summary="count")
    pool: asyncpg.Pool = await ctx.clients.get("effects")
    await pool.execute(
        "INSERT INTO calls (key, pid, attempt) VALUES ($1, $2, $3)",
        ctx.idempotency_key,
        os.getpid(),
        ctx.attempt,
    )
    await asyncio.sleep(params.wait_ms / 1000)
    await pool.execute(
        "INSERT INTO effects (key, pid) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        ctx.idempotency_key,
        os.getpid(),
    )
    return None
