"""The SQLite journal's operator SQL: events, deliveries and invocations read back, dead letters
redriven and purged. Reads run on the reader thread, so a slow listing never delays intake."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Collection

from glue import events
from glue.journal import records, rows
from glue.journal.sqlite import store

__all__ = ["Admin"]


def _mark(_: int) -> str:
    return "?"


_RECEIVED = "SELECT count(*) FROM events WHERE received_at >= ? AND received_at < ?"
_ACTIVITY = rows.activity_query(_mark, "CAST({} AS INTEGER)")


class Admin(store.Store):
    """The ``Admin`` role (``get`` is also the work queue's)."""

    async def get(self, key: int | str) -> records.StoredEvent | None:
        seq = rows.seq_of(key)

        def run(db: sqlite3.Connection) -> records.StoredEvent | None:
            if seq is not None:
                row = db.execute(f"SELECT {rows.EVENT_COLUMNS} FROM events WHERE seq = ?", (seq,)).fetchone()
                if row is not None:
                    return rows.stored(row)
            text = str(key)
            row = db.execute(
                f"SELECT {rows.EVENT_COLUMNS} FROM events WHERE identity = ? OR id = ? ORDER BY seq LIMIT 1",
                (text, text),
            ).fetchone()
            return rows.stored(row) if row is not None else None

        return await self.read(run)

    async def list(
        self, *, limit: int = 100, after: int = 0, status: str | None = None, type: str | None = None
    ) -> builtins.list[records.StoredEvent]:
        page = rows.events_page(after=after, limit=limit, status=status, type=type)
        sql, args = page.query(f"SELECT {rows.EVENT_COLUMNS} FROM events", _mark)

        def run(db: sqlite3.Connection) -> list[records.StoredEvent]:
            return [rows.stored(row) for row in db.execute(sql, args)]

        return await self.read(run)

    async def browse(
        self,
        *,
        before: int | None = None,
        limit: int = 50,
        status: str | None = None,
        type: str | None = None,
        source: str | None = None,
        subject: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> builtins.list[records.StoredEvent]:
        equal = {"status": status, "type": type, "source": source, "subject": subject}
        sql, args = rows.browse_query(
            _mark, before=before, limit=limit, equal=equal, since=since, until=until
        )

        def run(db: sqlite3.Connection) -> list[records.StoredEvent]:
            return [rows.stored(row) for row in db.execute(sql, args)]

        return await self.read(run)

    async def activity(self, *, since: float, until: float, bucket_seconds: float) -> records.Activity:
        def run(db: sqlite3.Connection) -> records.Activity:
            received = db.execute(_RECEIVED, (since, until)).fetchone()[0]
            found = db.execute(_ACTIVITY, (since, bucket_seconds, since, until)).fetchall()
            outcomes = tuple(map(tuple, found))
            return records.Activity(since, until, bucket_seconds, int(received), outcomes)

        return await self.read(run)

    async def delivery(self, delivery_id: int) -> events.Delivery | None:
        def run(db: sqlite3.Connection) -> events.Delivery | None:
            row = db.execute(
                f"SELECT {rows.DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
            return rows.delivery(row) if row is not None else None

        return await self.read(run)

    async def rejected(self, *, limit: int = 100) -> builtins.list[records.Rejected]:
        def run(db: sqlite3.Connection) -> list[records.Rejected]:
            found = db.execute(
                f"SELECT {rows.REJECTED_COLUMNS} FROM deliveries"
                " WHERE rejected IS NOT NULL ORDER BY id DESC LIMIT ?",
                (limit,),
            )
            return [rows.rejected(row) for row in found]

        return await self.read(run)

    async def invocation(self, invocation_id: int) -> records.Invocation | None:
        def run(db: sqlite3.Connection) -> records.Invocation | None:
            row = db.execute(
                f"SELECT {rows.INVOCATION_COLUMNS} FROM invocations WHERE id = ?", (invocation_id,)
            ).fetchone()
            return rows.invocation(row) if row is not None else None

        return await self.read(run)

    async def invocations(
        self,
        *,
        state: records.InvocationState | None = None,
        route: str | None = None,
        event_seq: int | None = None,
        since: float | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> builtins.list[records.Invocation]:
        page = rows.invocations_page(
            after=after, limit=limit, state=state, route=route, event_seq=event_seq, since=since
        )
        sql, args = page.query(f"SELECT {rows.INVOCATION_COLUMNS} FROM invocations", _mark)

        def run(db: sqlite3.Connection) -> list[records.Invocation]:
            return [rows.invocation(row) for row in db.execute(sql, args)]

        return await self.read(run)

    async def attempts(self, invocation_id: int) -> builtins.list[records.AttemptRecord]:
        def run(db: sqlite3.Connection) -> list[records.AttemptRecord]:
            found = db.execute(
                f"SELECT {rows.ATTEMPT_COLUMNS} FROM attempts WHERE invocation_id = ?"
                " ORDER BY started_at, rowid",
                (invocation_id,),
            )
            return [rows.attempt(row) for row in found]

        return await self.read(run)

    async def redrive(self, ids: Collection[int], *, now: float) -> builtins.list[int]:
        def run(db: sqlite3.Connection) -> list[int]:
            marks, values = store.marks(ids)
            if not values:
                return []
            with store.transaction(db):
                found = db.execute(
                    f"UPDATE invocations SET state = 'pending', attempt = 0, due_at = ?, updated_at = ?"
                    f" WHERE state = 'dead' AND id IN ({marks}) RETURNING id",
                    (now, now, *values),
                ).fetchall()
            return sorted(row[0] for row in found)

        return await self.write(run)

    async def purge(self, ids: Collection[int]) -> builtins.list[int]:
        def run(db: sqlite3.Connection) -> list[int]:
            marks, values = store.marks(ids)
            if not values:
                return []
            with store.transaction(db):
                found = db.execute(
                    f"DELETE FROM invocations WHERE state = 'dead' AND id IN ({marks}) RETURNING id", values
                ).fetchall()
            return sorted(row[0] for row in found)

        return await self.write(run)
