"""The PostgreSQL journal's connections: two pools (intake's and execution's), and how a statement runs
on them with connection trouble reported as :class:`~glue.journal.records.JournalUnavailable`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from glue import settings as settings_mod
from glue.journal import records

__all__ = ["UNAVAILABLE", "Store", "count", "text", "unavailable"]

T = TypeVar("T")

#: Errors that mean the database cannot take the statement now (intake answers 503 and retries).
UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TransactionRollbackError,  # a deadlock or serialization failure: try again
    # A connection whose server went away mid-statement can be left between protocol states ("cannot
    # switch to state 12; another operation is in progress"): it is dropped and the next one is fresh.
    asyncpg.InternalClientError,
)


def unavailable(exc: BaseException) -> records.JournalUnavailable:
    """Connection trouble (one of UNAVAILABLE) as the error intake answers 503 with."""
    return records.JournalUnavailable(f"postgres journal: {exc or type(exc).__name__}")


def count(status: str) -> int:
    """Rows affected, from a command status such as ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])


def text(value: str | None) -> str | None:
    """A text column's value: PostgreSQL text holds no NUL, so one (from event data, through an ordering
    key or an error message) becomes U+FFFD."""
    return value.replace("\x00", "\ufffd") if value is not None and "\x00" in value else value


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to undo. The journal never changes session state (no SET, LISTEN,
    cursors or session advisory locks), so the default reset query would be a wasted round trip on
    every release; an open transaction is still rolled back by the pool itself."""


class Store:
    """The pools of one PostgreSQL journal, shared by its parts."""

    #: Seconds a statement may take before the journal counts as unavailable.
    command_timeout = 30.0

    def __init__(self, config: settings_mod.Journal) -> None:
        if config.dsn is None:
            raise ValueError("the postgres journal needs journal.dsn")
        self.config = config
        self._dsn = config.dsn
        self._pool: asyncpg.Pool | None = None
        self._exec_pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        """The connection pool (for layers that extend the schema); raises unless open.

        Connections are not reset when released: leave no session state behind (SET LOCAL in a
        transaction is fine)."""
        if self._pool is None:
            raise records.JournalUnavailable("journal is not open")
        return self._pool

    async def _open_pools(self) -> None:
        try:
            dsn = self._dsn.resolve()[0].decode()
        except ValueError as exc:
            raise records.JournalUnavailable(f"journal.dsn: {exc}") from None
        try:
            self._pool = await self._create_pool(dsn, self.config.pool_size, durable=True)
            # Execution state (claims, routing, outcomes) may skip the WAL flush wait: what a database
            # crash loses of it is run again, as after a replica crash. Intake never does.
            self._exec_pool = (
                self._pool
                if self.config.durable_execution_commits
                else await self._create_pool(dsn, max(2, self.config.pool_size // 2), durable=False)
            )
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            await self._close_pools()
            # asyncpg's messages name host, port, user and database, never the password.
            raise records.JournalUnavailable(f"cannot connect to the postgres journal: {exc}") from None

    async def _create_pool(self, dsn: str, size: int, *, durable: bool) -> asyncpg.Pool:
        settings = {"application_name": "runtime-glue"}
        if not durable:
            settings["synchronous_commit"] = "off"
        return await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            command_timeout=self.command_timeout,
            server_settings=settings,
            reset=_keep_session,
        )

    async def _close_pools(self) -> None:
        pools = {id(p): p for p in (self._pool, self._exec_pool) if p is not None}
        self._pool = self._exec_pool = None
        for pool in pools.values():
            try:
                await asyncio.wait_for(pool.close(), timeout=self.command_timeout)
            except TimeoutError:
                pool.terminate()

    async def run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], *, execution: bool = False) -> T:
        """Run ``fn(connection)`` on a pooled connection; connection trouble is JournalUnavailable.

        ``execution``: on the execution pool, whose commits need not wait for the WAL flush (see
        ``journal.durableExecutionCommits``); only for state that is safe to redo."""
        pool = self.pool if not execution else self._exec_pool
        if pool is None:
            raise records.JournalUnavailable("journal is not open")
        try:
            async with pool.acquire(timeout=self.command_timeout) as conn:
                try:
                    return await fn(conn)
                except asyncpg.InternalClientError:
                    conn.terminate()  # never handed out again in that state
                    raise
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc
