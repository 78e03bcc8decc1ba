"""The PostgreSQL journal's safety-rail SQL: pauses and breakers (``rails``), the starts and failures they
count (``rail_marks``), invocations held or awaiting approval, and the audit trail.

Replicas share every rail through these rows. A budget's check and its recorded start are one
transaction under an advisory lock per route, so two replicas never both take the last start; a
breaker's state changes under the lock of its ``rails`` row.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from glue.journal import records
from glue.journal.postgres import store

__all__ = ["Rails"]

_RAIL_COLUMNS = "route, paused, reason, until, by, at, breaker_open_until, breaker_probe, breaker_probe_until"
_AUDIT_COLUMNS = "id, at, who, action, route, target, reason, detail"
#: The advisory locks of budgets: this key's class, the route's hash the other half.
_BUDGET_LOCK = 0x676C7566


def _audit(row: asyncpg.Record) -> records.AuditEntry:
    values = list(row)
    values[7] = orjson.loads(values[7])
    return records.AuditEntry(*values)


async def _release(conn: asyncpg.Connection, route: str, reason: str, now: float) -> int:
    """Held invocations of ``route`` (``*``: every route) waiting for ``reason`` run now."""
    status = await conn.execute(
        "UPDATE invocations SET state = 'pending', wait_reason = NULL, due_at = $1, updated_at = $1"
        " WHERE state = 'held' AND wait_reason = $2 AND ($3 = '*' OR route = $3)",
        now,
        reason,
        route,
    )
    return store.count(status)


class Rails(store.Store):
    """The ``Rails`` role of :class:`glue.journal.Journal`."""

    async def rails(self) -> dict[str, records.Rail]:
        async def run(conn: asyncpg.Connection) -> dict[str, records.Rail]:
            found = await conn.fetch(f"SELECT {_RAIL_COLUMNS} FROM rails")
            return {row["route"]: records.Rail(*row) for row in found}

        return await self.run(run)

    async def set_pause(
        self, route: str, *, paused: bool, reason: str | None, until: float | None, by: str, now: float
    ) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO rails (route, paused, reason, until, by, at)"
                    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (route)"
                    " DO UPDATE SET paused = $2, reason = $3, until = $4, by = $5, at = $6",
                    route,
                    paused,
                    store.text(reason),
                    until,
                    store.text(by),
                    now,
                )
                return 0 if paused else await _release(conn, route, "paused", now)

        return await self.run(run)

    async def hold(self, owner: str, holds: Sequence[records.Hold], *, now: float) -> builtins.list[int]:
        if not holds:
            return []
        rails = sorted({h.rail for h in holds if h.rail is not None})

        async def run(conn: asyncpg.Connection) -> builtins.list[int]:
            async with conn.transaction():
                # A resume changes its rails row first: holding its share lock, this hold either
                # commits before the resume releases what it held or sees the rail resumed.
                paused = {
                    row["route"]
                    for row in await conn.fetch(
                        "SELECT route FROM rails WHERE route = ANY($1::text[]) AND paused FOR SHARE", rails
                    )
                }
                chosen = [h for h in holds if h.rail is None or h.rail in paused]
                found = await conn.fetch(
                    "UPDATE invocations i SET state = 'held', wait_reason = h.reason, due_at = h.due_at,"
                    " updated_at = $4, owner = NULL, lease_until = NULL, attempt = greatest(i.attempt - 1, 0)"
                    " FROM unnest($1::int8[], $2::text[], $3::float8[]) AS h(id, reason, due_at)"
                    " WHERE i.id = h.id AND i.state = 'running' AND i.owner = $5 RETURNING i.id",
                    [h.invocation_id for h in chosen],
                    [h.reason for h in chosen],
                    [h.due_at for h in chosen],
                    now,
                    owner,
                )
            return sorted(row["id"] for row in found)

        return await self.run(run, execution=True)

    async def release_held(self, route: str, reason: str, *, now: float) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            return await _release(conn, route, reason, now)

        return await self.run(run, execution=True)

    async def wake_held(self, *, now: float) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            status = await conn.execute(
                "UPDATE invocations SET state = 'pending', wait_reason = NULL, updated_at = $1"
                " WHERE state = 'held' AND due_at <= $1",
                now,
            )
            return store.count(status)

        return await self.run(run, execution=True)

    async def take_starts(
        self, route: str, budgets: Sequence[tuple[str, int, float]], *, now: float
    ) -> float | None:
        async def run(conn: asyncpg.Connection) -> float | None:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _BUDGET_LOCK, route)
                free_at: float | None = None
                for key, most, per in budgets:
                    found = await conn.fetch(
                        "SELECT at FROM rail_marks WHERE route = $1 AND kind = 'start' AND key = $2"
                        " AND at > $3 ORDER BY at",
                        route,
                        store.text(key),
                        now - per,
                    )
                    if len(found) >= most:
                        room = float(found[len(found) - most]["at"]) + per
                        free_at = room if free_at is None else max(free_at, room)
                if free_at is not None:
                    return free_at
                await conn.executemany(
                    "INSERT INTO rail_marks (route, kind, key, at) VALUES ($1, 'start', $2, $3)",
                    [(route, store.text(key), now) for key, _, _ in budgets],
                )
                longest = max(per for _, _, per in budgets)
                await conn.execute(
                    "DELETE FROM rail_marks WHERE route = $1 AND kind = 'start' AND at <= $2",
                    route,
                    now - longest,
                )
                return None

        return await self.run(run, execution=True)

    async def starts(self, route: str, *, since: float) -> dict[str, int]:
        async def run(conn: asyncpg.Connection) -> dict[str, int]:
            found = await conn.fetch(
                "SELECT key, count(*) AS n FROM rail_marks WHERE route = $1 AND kind = 'start' AND at > $2"
                " GROUP BY key",
                route,
                since,
            )
            return {row["key"]: int(row["n"]) for row in found}

        return await self.run(run)

    async def breaker_probe(self, route: str, invocation_id: int, *, now: float, lease: float) -> bool:
        async def run(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(
                "UPDATE rails SET breaker_probe = $1, breaker_probe_until = $2"
                " WHERE route = $3 AND breaker_open_until <= $4"
                " AND (breaker_probe IS NULL OR breaker_probe = $1 OR breaker_probe_until <= $4)",
                invocation_id,
                now + lease,
                route,
                now,
            )
            return store.count(status) > 0

        return await self.run(run, execution=True)

    async def breaker_ended(
        self,
        route: str,
        invocation_id: int,
        *,
        failed: bool,
        failures: int,
        within: float,
        cooldown: float,
        now: float,
    ) -> str | None:
        async def run(conn: asyncpg.Connection) -> str | None:
            async with conn.transaction():
                await conn.execute("INSERT INTO rails (route) VALUES ($1) ON CONFLICT DO NOTHING", route)
                row = await conn.fetchrow(
                    "SELECT breaker_probe, breaker_open_until FROM rails WHERE route = $1 FOR UPDATE", route
                )
                probe, open_until = row["breaker_probe"], row["breaker_open_until"]
                if not failed:
                    if probe != invocation_id:
                        return None
                    await conn.execute(
                        "UPDATE rails SET breaker_open_until = NULL, breaker_probe = NULL,"
                        " breaker_probe_until = NULL WHERE route = $1",
                        route,
                    )
                    await conn.execute("DELETE FROM rail_marks WHERE route = $1 AND kind = 'failure'", route)
                    await _release(conn, route, "breaker", now)
                    return "closed"
                await conn.execute(
                    "INSERT INTO rail_marks (route, kind, key, at) VALUES ($1, 'failure', '', $2)", route, now
                )
                await conn.execute(
                    "DELETE FROM rail_marks WHERE route = $1 AND kind = 'failure' AND at <= $2",
                    route,
                    now - within,
                )
                if probe != invocation_id:
                    if open_until is not None:
                        return None
                    count = await conn.fetchval(
                        "SELECT count(*) FROM rail_marks WHERE route = $1 AND kind = 'failure'", route
                    )
                    if count < failures:
                        return None
                await conn.execute(
                    "UPDATE rails SET breaker_open_until = $1, breaker_probe = NULL,"
                    " breaker_probe_until = NULL WHERE route = $2",
                    now + cooldown,
                    route,
                )
                return "opened"

        return await self.run(run, execution=True)

    async def await_approval(
        self, owner: str, invocation_id: int, plan: Mapping[str, Any], *, deadline: float, now: float
    ) -> bool:
        async def run(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(
                "UPDATE invocations SET state = 'awaiting-approval', plan = $1::jsonb, due_at = $2,"
                " wait_reason = 'approval', updated_at = $3, owner = NULL, lease_until = NULL,"
                " attempt = greatest(attempt - 1, 0) WHERE id = $4 AND state = 'running' AND owner = $5",
                orjson.dumps(dict(plan)).decode(),
                deadline,
                now,
                invocation_id,
                owner,
            )
            return store.count(status) > 0

        return await self.run(run, execution=True)

    async def decide(self, invocation_id: int, *, approve: bool, by: str, now: float) -> bool:
        async def run(conn: asyncpg.Connection) -> bool:
            if approve:
                status = await conn.execute(
                    "UPDATE invocations SET state = 'pending', approved_by = $1, wait_reason = NULL,"
                    " due_at = $2, updated_at = $2 WHERE id = $3 AND state = 'awaiting-approval'",
                    store.text(by),
                    now,
                    invocation_id,
                )
            else:
                status = await conn.execute(
                    "UPDATE invocations SET state = 'dead', wait_reason = NULL, last_error = $1,"
                    " updated_at = $2 WHERE id = $3 AND state = 'awaiting-approval'",
                    store.text(f"approval denied by {by}"),
                    now,
                    invocation_id,
                )
            return store.count(status) > 0

        return await self.run(run)

    async def expire_approvals(self, *, now: float) -> builtins.list[int]:
        async def run(conn: asyncpg.Connection) -> builtins.list[int]:
            found = await conn.fetch(
                "UPDATE invocations SET state = 'dead', wait_reason = NULL,"
                " last_error = 'approval expired', updated_at = $1"
                " WHERE state = 'awaiting-approval' AND due_at <= $1 RETURNING id",
                now,
            )
            return sorted(row["id"] for row in found)

        return await self.run(run, execution=True)

    async def waiting(self) -> dict[tuple[str, str, str | None], int]:
        async def run(conn: asyncpg.Connection) -> dict[tuple[str, str, str | None], int]:
            found = await conn.fetch(
                "SELECT route, state, wait_reason, count(*) AS n FROM invocations"
                " WHERE state IN ('pending', 'running', 'held', 'awaiting-approval')"
                " GROUP BY route, state, wait_reason"
            )
            return {(row["route"], row["state"], row["wait_reason"]): int(row["n"]) for row in found}

        return await self.run(run)

    async def approvals_past_half(self, *, now: float) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM invocations WHERE state = 'awaiting-approval'"
                    " AND (updated_at + due_at) / 2 < $1",
                    now,
                )
            )

        return await self.run(run)

    async def route_states(self) -> dict[str, dict[str, int]]:
        async def run(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
            result: dict[str, dict[str, int]] = {}
            for row in await conn.fetch(
                "SELECT route, state, count(*) AS n FROM invocations GROUP BY route, state"
            ):
                result.setdefault(row["route"], {})[row["state"]] = int(row["n"])
            return result

        return await self.run(run)

    async def record_audit(
        self,
        who: str,
        action: str,
        *,
        route: str | None = None,
        target: str | None = None,
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
        now: float,
    ) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            return int(
                await conn.fetchval(
                    "INSERT INTO audit (at, who, action, route, target, reason, detail)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) RETURNING id",
                    now,
                    store.text(who),
                    action,
                    store.text(route),
                    store.text(target),
                    store.text(reason),
                    orjson.dumps(dict(detail or {})).decode(),
                )
            )

        return await self.run(run)

    async def take_unarchived_audit(self, *, limit: int = 500) -> builtins.list[records.AuditEntry]:
        async def run(conn: asyncpg.Connection) -> builtins.list[records.AuditEntry]:
            found = await conn.fetch(
                "UPDATE audit SET archived = true WHERE id IN (SELECT id FROM audit WHERE NOT archived"
                f" ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING {_AUDIT_COLUMNS}",
                limit,
            )
            return sorted((_audit(row) for row in found), key=lambda entry: entry.id)

        return await self.run(run)

    async def audit(
        self, *, since: float | None = None, route: str | None = None, after: int = 0, limit: int = 1000
    ) -> builtins.list[records.AuditEntry]:
        async def run(conn: asyncpg.Connection) -> builtins.list[records.AuditEntry]:
            found = await conn.fetch(
                f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE id > $1 AND ($2::float8 IS NULL OR at >= $2)"
                " AND ($3::text IS NULL OR route = $3 OR route = '*') ORDER BY id LIMIT $4",
                after,
                since,
                route,
                limit,
            )
            return [_audit(row) for row in found]

        return await self.run(run)
