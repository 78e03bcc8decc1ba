"""The PostgreSQL journal's execution SQL: routing claims, invocation claims under leases, outcomes.

Every claim is one statement: pick rows with FOR UPDATE SKIP LOCKED (replicas never wait for each other
and never pick the same row), then mark them with owner and lease in the same statement. A replica that
dies keeps its rows until ``lease_until`` passes; then they are claimable again by anyone. Execution
state commits on the execution pool (see ``Store.run``).
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from glue.journal import records, rows, shaping
from glue.journal.postgres import store

__all__ = ["WorkQueue"]

# Runnable: pending and due, or running under an expired lease; its route not excluded; and, with an
# ordering key, nothing unfinished before it on that key and no earlier event still waiting for routing.
# SKIP LOCKED: rows another replica is claiming right now are left to it. The scan walks the partial
# index invocations_runnable in (due_at, id) order and stops at the limit, whatever the backlog.
_CLAIM_INVOCATIONS = f"""
UPDATE invocations SET state = 'running', owner = $1, lease_until = $2, attempt = attempt + 1, updated_at = $3
WHERE id IN (
    SELECT i.id FROM invocations i
    WHERE i.state IN ('pending', 'running') AND i.due_at <= $3  -- a running one was due when claimed
      AND (i.state = 'pending' OR i.lease_until <= $3)
      AND NOT (i.route = ANY($5::text[]))
      AND (i.ordering_key IS NULL OR (
            NOT EXISTS (SELECT 1 FROM events e WHERE e.status = 'pending' AND e.seq < i.event_seq)
            AND NOT EXISTS (
                SELECT 1 FROM invocations j WHERE j.ordering_key = i.ordering_key
                AND j.state IN ('pending', 'running', 'held', 'awaiting-approval')
                AND (j.event_seq < i.event_seq OR (j.event_seq = i.event_seq AND j.id < i.id)))))
    ORDER BY i.due_at, i.id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
RETURNING {rows.INVOCATION_COLUMNS}
"""


# Outcomes applied to the invocations still running under their owner, and each applied one's attempt
# added to the history, in one statement (so one commit). An outcome whose claim was lost updates
# nothing and adds no attempt (the owner that took the claim over writes its own).
_SETTLE = """
WITH o AS (
    SELECT DISTINCT ON (id) * FROM
    unnest($1::int8[], $2::text[], $3::float8[], $4::text[], $5::bool[], $6::jsonb[], $7::text[],
           $8::float8[], $9::float8[])
    WITH ORDINALITY AS u(id, state, due_at, error, keep_error, plan, outcome, started_at, duration, n)
    ORDER BY id, n
), settled AS (
    UPDATE invocations i SET state = o.state, owner = NULL, lease_until = NULL, updated_at = $10,
        due_at = coalesce(o.due_at, i.due_at),
        last_error = CASE WHEN o.keep_error THEN coalesce(o.error, i.last_error) ELSE o.error END,
        plan = coalesce(o.plan, i.plan)
    FROM o WHERE i.id = o.id AND i.state = 'running' AND i.owner = $11
    RETURNING i.id, i.attempt
)
INSERT INTO attempts (invocation_id, attempt, started_at, duration, outcome, error)
SELECT s.id, s.attempt, o.started_at, o.duration, o.outcome, o.error FROM settled s JOIN o ON o.id = s.id
"""


async def _run(conn: asyncpg.Connection, statements: shaping.Shaping) -> records.Shaped:
    """Run a shaping's statements on ``conn`` (in the caller's transaction); returns what it shaped."""
    result: Any = None
    while True:
        try:
            query = statements.send(result)
        except StopIteration as stop:
            shaped: records.Shaped = stop.value
            return shaped
        sql = shaping.postgres_sql(query.sql)
        if query.want == "row":
            result = await conn.fetchrow(sql, *query.args)
        else:
            result = store.count(await conn.execute(sql, *query.args))


class WorkQueue(store.Store):
    """The ``WorkQueue`` role."""

    async def claim_events(
        self, owner: str, *, limit: int, lease: float, now: float
    ) -> builtins.list[records.StoredEvent]:
        async def run(conn: asyncpg.Connection) -> builtins.list[records.StoredEvent]:
            found = await conn.fetch(
                f"UPDATE events SET owner = $1, lease_until = $2 WHERE seq IN ("
                "  SELECT seq FROM events WHERE status = 'pending'"
                "  AND (owner IS NULL OR owner = $1 OR lease_until <= $3)"
                "  ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED)"
                f" RETURNING {rows.EVENT_COLUMNS}",
                owner,
                now + lease,
                now,
                limit,
            )
            return sorted((rows.stored(row) for row in found), key=lambda event: event.seq)

        return await self.run(run, execution=True)

    async def record_routing(
        self,
        owner: str,
        decisions: Mapping[int, Sequence[records.NewInvocation]],
        *,
        now: float,
        unfinished: Collection[int] = (),
    ) -> records.Shaped:
        if not decisions:
            return []
        seqs = builtins.list(decisions)
        waiting = set(unfinished)
        columns: tuple[builtins.list[Any], ...] = ([], [], [], [], [], [], [], [], [], [])
        for seq, invocations in decisions.items():
            for item in invocations:
                for column, value in zip(
                    columns,
                    (
                        seq,
                        item.route,
                        item.handler,
                        item.idempotency_key,
                        store.text(item.ordering_key),
                        orjson.dumps(dict(item.params)).decode(),
                        item.state,
                        item.due_at,
                        store.text(item.error),
                        store.text(item.rate_key),
                    ),
                    strict=True,
                ):
                    column.append(value)

        shaped_items = [item for seq in sorted(decisions) for item in decisions[seq] if item.shaped]
        locks = shaping.locks(shaped_items)

        async def run(conn: asyncpg.Connection) -> records.Shaped:
            shaped: records.Shaped = []
            async with conn.transaction():
                for key in locks:  # replicas shaping the same key take turns
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
                # an unfinished event keeps its status and claim: a later pass routes it again
                held = await conn.fetch(
                    "UPDATE events e SET status = CASE WHEN d.unfinished THEN e.status"
                    "  WHEN d.routed THEN 'routed' ELSE 'unmatched' END,"
                    " updated_at = $3,"
                    " owner = CASE WHEN d.unfinished THEN e.owner END,"
                    " lease_until = CASE WHEN d.unfinished THEN e.lease_until END"
                    " FROM unnest($1::int8[], $2::bool[], $5::bool[]) AS d(seq, routed, unfinished)"
                    " WHERE e.seq = d.seq AND e.status = 'pending' AND e.owner = $4 RETURNING e.seq",
                    seqs,
                    [bool(decisions[seq]) for seq in seqs],
                    now,
                    owner,
                    [seq in waiting for seq in seqs],
                )
                if columns[0] and held:
                    await conn.execute(
                        "INSERT INTO invocations (event_seq, route, handler, idempotency_key, ordering_key,"
                        " params, state, attempt, due_at, created_at, updated_at, last_error, rate_key)"
                        " SELECT t.seq, t.route, t.handler, t.key, t.ordering_key, t.params, t.state, 0,"
                        "  t.due_at, $11, $11, t.error, t.rate_key"
                        " FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[],"
                        "  $6::json[], $7::text[], $8::float8[], $9::text[], $10::text[]) WITH ORDINALITY"
                        "  AS t(seq, route, handler, key, ordering_key, params, state, due_at, error,"
                        "  rate_key, n)"
                        " WHERE t.seq = ANY($12::int8[]) ORDER BY t.n"
                        " ON CONFLICT (idempotency_key) DO NOTHING",
                        *columns,
                        now,
                        [row["seq"] for row in held],
                    )
                    recorded = {row["seq"] for row in held}
                    for seq in sorted(recorded):  # in event order: a later event's invocation wins
                        for item in decisions[seq]:
                            shaped.extend(await _run(conn, shaping.shape(item, now)))
            return shaped

        return await self.run(run, execution=True)

    async def claim_invocations(
        self,
        owner: str,
        *,
        limit: int,
        lease: float,
        now: float,
        exclude_routes: Collection[str] = (),
    ) -> builtins.list[records.Invocation]:
        async def run(conn: asyncpg.Connection) -> builtins.list[records.Invocation]:
            found = await conn.fetch(
                _CLAIM_INVOCATIONS, owner, now + lease, now, limit, builtins.list(exclude_routes)
            )
            return sorted((rows.invocation(row) for row in found), key=lambda item: (item.due_at, item.id))

        return await self.run(run, execution=True)

    async def settle(
        self, owner: str, outcomes: Sequence[records.Outcome], *, now: float, prompt: bool = True
    ) -> int:
        if not outcomes:
            return 0
        settlements = [rows.settlement(outcome, now) for outcome in outcomes]

        undo = [outcome.invocation_id for outcome in outcomes if outcome.undo and outcome.state == "done"]

        async def run(conn: asyncpg.Connection) -> int:
            if not undo:
                return await settle(conn)
            async with conn.transaction():
                applied = await settle(conn)
                for invocation_id in undo:
                    await conn.execute(shaping.postgres_sql(rows.UNDO), now, invocation_id)
                return applied

        async def settle(conn: asyncpg.Connection) -> int:
            status = await conn.execute(
                _SETTLE,
                [s.invocation_id for s in settlements],
                [s.state for s in settlements],
                [s.due_at for s in settlements],
                [store.text(s.error) for s in settlements],
                [s.keep_error for s in settlements],
                [s.plan.decode() if s.plan is not None else None for s in settlements],
                [s.outcome for s in settlements],
                [s.started_at for s in settlements],
                [s.duration for s in settlements],
                now,
                owner,
            )
            return store.count(status)

        return await self.run(run, execution=True)

    async def release(self, owner: str | None, *, now: float, ids: Collection[int] | None = None) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                status = await conn.execute(
                    "UPDATE invocations SET state = 'pending', owner = NULL, lease_until = NULL, due_at = $1,"
                    " updated_at = $1, attempt = greatest(attempt - 1, 0)"
                    " WHERE state = 'running' AND ($2::text IS NULL OR owner = $2)"
                    " AND ($3::int8[] IS NULL OR id = ANY($3::int8[]))",
                    now,
                    owner,
                    [int(i) for i in ids] if ids is not None else None,
                )
                if ids is None:
                    await conn.execute(
                        "UPDATE events SET owner = NULL, lease_until = NULL"
                        " WHERE ($1::text IS NULL OR owner = $1) AND status = 'pending'",
                        owner,
                    )
                return store.count(status)

        return await self.run(run, execution=True)

    async def cancel_requested(self, owner: str) -> dict[int, int]:
        async def run(conn: asyncpg.Connection) -> dict[int, int]:
            found = await conn.fetch(
                "SELECT id, taken_by FROM invocations"
                " WHERE state = 'running' AND owner = $1 AND taken_by IS NOT NULL",
                owner,
            )
            return {int(row["id"]): int(row["taken_by"]) for row in found}

        return await self.run(run, execution=True)

    async def absorbed(self, invocation_id: int) -> builtins.list[str]:
        async def run(conn: asyncpg.Connection) -> builtins.list[str]:
            found = await conn.fetch(
                "SELECT e.id FROM invocations i JOIN events e ON e.seq = i.event_seq"
                " WHERE i.taken_by = $1 AND i.state = 'coalesced' ORDER BY i.event_seq",
                invocation_id,
            )
            return [str(row["id"]) for row in found]

        return await self.run(run)

    async def defer(self, owner: str, due: Mapping[int, float], *, reason: str, now: float) -> int:
        if not due:
            return 0

        async def run(conn: asyncpg.Connection) -> int:
            status = await conn.execute(
                "UPDATE invocations i SET state = 'pending', owner = NULL, lease_until = NULL,"
                " due_at = d.due_at, wait_reason = $3, updated_at = $4, attempt = greatest(attempt - 1, 0)"
                " FROM unnest($1::int8[], $2::float8[]) AS d(id, due_at)"
                " WHERE i.id = d.id AND i.state = 'running' AND i.owner = $5",
                builtins.list(due),
                builtins.list(due.values()),
                reason,
                now,
                owner,
            )
            return store.count(status)

        return await self.run(run, execution=True)

    async def take_token(self, key: str, *, rate: float, burst: int, now: float) -> float:
        async def run(conn: asyncpg.Connection) -> float:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO rate_buckets (key, tokens, updated_at) VALUES ($1, $2, $3)"
                    " ON CONFLICT (key) DO NOTHING",
                    key,
                    float(burst),
                    now,
                )
                row = await conn.fetchrow(  # the row lock: replicas take tokens one at a time
                    "SELECT tokens, updated_at FROM rate_buckets WHERE key = $1 FOR UPDATE", key
                )
                tokens, wait = rows.bucket(row["tokens"], row["updated_at"], now=now, rate=rate, burst=burst)
                await conn.execute(
                    "UPDATE rate_buckets SET tokens = $2, updated_at = $3 WHERE key = $1", key, tokens, now
                )
            return wait

        return await self.run(run, execution=True)

    async def dead_letters(self) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            return int(await conn.fetchval("SELECT count(*) FROM invocations WHERE state = 'dead'"))

        return await self.run(run)

    async def oldest_pending(self) -> float | None:
        async def run(conn: asyncpg.Connection) -> float | None:
            value = await conn.fetchval(
                "SELECT min(created_at) FROM invocations WHERE state IN ('pending', 'running')"
            )
            return float(value) if value is not None else None

        return await self.run(run)
