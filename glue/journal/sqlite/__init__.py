"""SQLite journal: the embedded default. One file in WAL mode, zero setup.

Appends made in the same turn of the event loop are committed together on the loop's own connection and
acknowledged after one fsync of the WAL (:mod:`.writer`). Execution state commits on the same
connection without an fsync (:mod:`.workqueue`). The writer thread's own connection takes over while
another process holds the write lock, and checkpoints the WAL; reads use a third connection on a reader
thread, so a slow ``glue events list`` never delays intake (:mod:`.store`, :mod:`.admin`).

:class:`SQLiteJournal` combines those parts; each keeps only its SQL, and what both backends share
(rows -> records, status rules, listing filters) is :mod:`glue.journal.rows`.
"""

from __future__ import annotations

from glue.journal.sqlite import admin, intake, rails, store, workqueue, writer

__all__ = ["SCHEMA_VERSION", "SQLiteJournal", "transaction"]

SCHEMA_VERSION = store.SCHEMA_VERSION
transaction = store.transaction


class SQLiteJournal(writer.GroupCommit, intake.Intake, workqueue.WorkQueue, admin.Admin, rails.Rails):
    """The :class:`glue.journal.Journal` protocol on one SQLite file."""

    async def open(self) -> None:
        await self._open_connections()
        self._closing = False

    async def close(self) -> None:
        await self._drain()  # the last groups are answered before closing
        await self._close_connections()
