"""PostgreSQL journal: the scale-out backend, shared by several active replicas.

- Schema: versioned migrations (:mod:`.migrations`), applied at :meth:`PostgresJournal.open` in one
  transaction under an advisory lock, so replicas that start together migrate once.
- Intake: appends that arrive together are committed by one multi-row statement (group commit,
  :mod:`.writer` and :mod:`.intake`); dedup is the unique constraint on ``events.identity``, which
  also holds between replicas.
- Coordination between replicas is PostgreSQL's own: row locks (``FOR UPDATE SKIP LOCKED``) and
  leases with an expiry, no home-made consensus (:mod:`.workqueue`).

:class:`PostgresJournal` combines those parts with :mod:`.admin`; each keeps only its SQL, and what both
backends share (rows -> records, status rules, listing filters) is :mod:`glue.journal.rows`.
"""

from __future__ import annotations

from glue import settings as settings_mod
from glue.journal.postgres import admin, intake, migrations, rails, store, workqueue, writer

__all__ = ["MIGRATIONS", "MIGRATION_LOCK", "SCHEMA_VERSION", "PostgresJournal"]

MIGRATIONS = migrations.MIGRATIONS
MIGRATION_LOCK = migrations.MIGRATION_LOCK
SCHEMA_VERSION = migrations.SCHEMA_VERSION


class PostgresJournal(writer.GroupCommit, intake.Intake, workqueue.WorkQueue, admin.Admin, rails.Rails):
    """The :class:`glue.journal.Journal` protocol on a PostgreSQL database shared by replicas."""

    def __init__(self, config: settings_mod.Journal) -> None:
        super().__init__(config)
        self.applied: list[int] = []  # migrations applied by the last open()

    async def open(self) -> None:
        await self._open_pools()
        try:
            self.applied = await self.migrate()
        except store.UNAVAILABLE as exc:
            await self._close_pools()
            raise store.unavailable(exc) from None
        except BaseException:
            await self._close_pools()
            raise
        self._start_writer()

    async def close(self) -> None:
        await self._stop_writer()
        await self._close_pools()

    async def migrate(self) -> list[int]:
        """Apply the migrations this database lacks, once even if replicas start together.

        Returns the versions applied now. All or nothing: one transaction."""
        return await migrations.apply(self.pool)

    async def schema_version(self) -> int:
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM glue_schema_migrations"))
