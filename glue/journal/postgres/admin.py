"""The PostgreSQL journal's operator SQL: events, deliveries and invocations read back, dead letters
redriven and purged, and retention (what is finished and old deleted in chunks)."""

from __future__ import annotations

import builtins
from collections.abc import Collection

import asyncpg

from glue import events
from glue.journal import records, rows
from glue.journal.postgres import store

__all__ = ["Admin"]

#: Retention, in dependency order; each statement deletes at most $2 rows older than $1.
_PRUNE = {
    "invocations": "DELETE FROM invocations WHERE id IN (SELECT id FROM invocations"
    " WHERE state IN ('done', 'planned', 'coalesced', 'superseded', 'cancelled')"
    " AND updated_at < $1 LIMIT $2)",
    "events": "DELETE FROM events WHERE seq IN (SELECT e.seq FROM events e"
    " WHERE e.status IN ('routed', 'unmatched') AND e.updated_at < $1"
    " AND NOT EXISTS (SELECT 1 FROM invocations i WHERE i.event_seq = e.seq) LIMIT $2)",
    "deliveries": "DELETE FROM deliveries WHERE id IN (SELECT d.id FROM deliveries d"
    " WHERE d.rejected IS NULL AND d.received_at < $1"
    " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id) LIMIT $2)",
}


def _mark(n: int) -> str:
    return f"${n}"


_RECEIVED = "SELECT count(*) FROM events WHERE received_at >= $1 AND received_at < $2"
_ACTIVITY = rows.activity_query(_mark, "floor({})::integer")


class Admin(store.Store):
    """The ``Admin`` role (``get`` is also the work queue's), and retention."""

    async def get(self, key: int | str) -> records.StoredEvent | None:
        seq = rows.seq_of(key)

        async def run(conn: asyncpg.Connection) -> records.StoredEvent | None:
            if seq is not None:
                row = await conn.fetchrow(f"SELECT {rows.EVENT_COLUMNS} FROM events WHERE seq = $1", seq)
                if row is not None:
                    return rows.stored(row)
            row = await conn.fetchrow(
                f"SELECT {rows.EVENT_COLUMNS} FROM events WHERE identity = $1 OR id = $1"
                " ORDER BY seq LIMIT 1",
                str(key),
            )
            return rows.stored(row) if row is not None else None

        return await self.run(run)

    async def list(
        self, *, limit: int = 100, after: int = 0, status: str | None = None, type: str | None = None
    ) -> builtins.list[records.StoredEvent]:
        page = rows.events_page(after=after, limit=limit, status=status, type=type)
        sql, args = page.query(f"SELECT {rows.EVENT_COLUMNS} FROM events", _mark)

        async def run(conn: asyncpg.Connection) -> builtins.list[records.StoredEvent]:
            return [rows.stored(row) for row in await conn.fetch(sql, *args)]

        return await self.run(run)

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

        async def run(conn: asyncpg.Connection) -> builtins.list[records.StoredEvent]:
            return [rows.stored(row) for row in await conn.fetch(sql, *args)]

        return await self.run(run)

    async def activity(self, *, since: float, until: float, bucket_seconds: float) -> records.Activity:
        async def run(conn: asyncpg.Connection) -> records.Activity:
            received = await conn.fetchval(_RECEIVED, since, until)
            found = await conn.fetch(_ACTIVITY, since, bucket_seconds, since, until)
            outcomes = tuple((row[0], row[1], row[2], row[3]) for row in found)
            return records.Activity(since, until, bucket_seconds, int(received), outcomes)

        return await self.run(run)

    async def delivery(self, delivery_id: int) -> events.Delivery | None:
        async def run(conn: asyncpg.Connection) -> events.Delivery | None:
            row = await conn.fetchrow(
                f"SELECT {rows.DELIVERY_COLUMNS} FROM deliveries WHERE id = $1", delivery_id
            )
            return rows.delivery(row) if row is not None else None

        return await self.run(run)

    async def rejected(self, *, limit: int = 100) -> builtins.list[records.Rejected]:
        async def run(conn: asyncpg.Connection) -> builtins.list[records.Rejected]:
            found = await conn.fetch(
                f"SELECT {rows.REJECTED_COLUMNS} FROM deliveries"
                " WHERE rejected IS NOT NULL ORDER BY id DESC LIMIT $1",
                limit,
            )
            return [rows.rejected(row) for row in found]

        return await self.run(run)

    async def invocation(self, invocation_id: int) -> records.Invocation | None:
        async def run(conn: asyncpg.Connection) -> records.Invocation | None:
            row = await conn.fetchrow(
                f"SELECT {rows.INVOCATION_COLUMNS} FROM invocations WHERE id = $1", invocation_id
            )
            return rows.invocation(row) if row is not None else None

        return await self.run(run)

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

        async def run(conn: asyncpg.Connection) -> builtins.list[records.Invocation]:
            return [rows.invocation(row) for row in await conn.fetch(sql, *args)]

        return await self.run(run)

    async def attempts(self, invocation_id: int) -> builtins.list[records.AttemptRecord]:
        async def run(conn: asyncpg.Connection) -> builtins.list[records.AttemptRecord]:
            found = await conn.fetch(
                f"SELECT {rows.ATTEMPT_COLUMNS} FROM attempts WHERE invocation_id = $1"
                " ORDER BY started_at, id",
                invocation_id,
            )
            return [rows.attempt(row) for row in found]

        return await self.run(run)

    async def redrive(self, ids: Collection[int], *, now: float) -> builtins.list[int]:
        async def run(conn: asyncpg.Connection) -> builtins.list[int]:
            found = await conn.fetch(
                "UPDATE invocations SET state = 'pending', attempt = 0, due_at = $2, updated_at = $2"
                " WHERE state = 'dead' AND id = ANY($1::int8[]) RETURNING id",
                [int(i) for i in ids],
                now,
            )
            return sorted(row["id"] for row in found)

        return await self.run(run)

    async def purge(self, ids: Collection[int]) -> builtins.list[int]:
        async def run(conn: asyncpg.Connection) -> builtins.list[int]:
            found = await conn.fetch(
                "DELETE FROM invocations WHERE state = 'dead' AND id = ANY($1::int8[]) RETURNING id",
                [int(i) for i in ids],
            )
            return sorted(row["id"] for row in found)

        return await self.run(run)

    # -- retention --------------------------------------------------------------------------------

    async def prune(self, *, before: float, chunk: int = 5000) -> dict[str, int]:
        """Delete what is finished and older than ``before`` (epoch seconds): done invocations, events
        whose routing is over and that have no invocation left (dead letters keep theirs), and
        deliveries no event needs any more. Rejected deliveries stay until purged by hand.

        Deletes ``chunk`` rows per statement, each its own transaction, so a first prune of a large
        journal never holds locks or bloats one transaction. Returns the rows deleted per table."""
        counts: dict[str, int] = {}
        for table, sql in _PRUNE.items():
            counts[table] = 0
            while True:
                status = await self.run(lambda conn, sql=sql: conn.execute(sql, before, chunk))  # type: ignore[misc]
                deleted = store.count(status)
                counts[table] += deleted
                if deleted < chunk:
                    break
        return counts
