"""The SQLite journal's safety-rail SQL: pauses and breakers (``rails``), the starts and failures they
count (``rail_marks``), invocations held or awaiting approval, and the audit trail.

What the dispatcher writes is execution state (see ``Store._run_execution``); what an operator changes
(pause, resume, approve, deny, the audit) commits durably on the writer thread.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from glue.journal import records
from glue.journal.sqlite import store

__all__ = ["Rails"]

_RAIL_COLUMNS = "route, paused, reason, until, by, at, breaker_open_until, breaker_probe, breaker_probe_until"
_AUDIT_COLUMNS = "id, at, who, action, route, target, reason, detail"


def _rail(row: Sequence[Any]) -> records.Rail:
    values = list(row)
    values[1] = bool(values[1])
    return records.Rail(*values)


def _audit(row: Sequence[Any]) -> records.AuditEntry:
    values = list(row)
    values[7] = orjson.loads(values[7])
    return records.AuditEntry(*values)


def _ensure(db: sqlite3.Connection, route: str) -> None:
    db.execute("INSERT OR IGNORE INTO rails (route) VALUES (?)", (route,))


def _release(db: sqlite3.Connection, route: str, reason: str, now: float) -> int:
    """Held invocations of ``route`` (``*``: every route) waiting for ``reason`` run now."""
    return int(
        db.execute(
            "UPDATE invocations SET state = 'pending', wait_reason = NULL, due_at = ?, updated_at = ?"
            " WHERE state = 'held' AND wait_reason = ? AND (? = '*' OR route = ?)",
            (now, now, reason, route, route),
        ).rowcount
    )


class Rails(store.Store):
    """The ``Rails`` role of :class:`glue.journal.Journal`."""

    async def rails(self) -> dict[str, records.Rail]:
        def run(db: sqlite3.Connection) -> dict[str, records.Rail]:
            found = db.execute(f"SELECT {_RAIL_COLUMNS} FROM rails").fetchall()
            return {row[0]: _rail(row) for row in found}

        return await self.read(run)

    async def set_pause(
        self, route: str, *, paused: bool, reason: str | None, until: float | None, by: str, now: float
    ) -> int:
        def run(db: sqlite3.Connection) -> int:
            with store.transaction(db):
                _ensure(db, route)
                db.execute(
                    "UPDATE rails SET paused = ?, reason = ?, until = ?, by = ?, at = ? WHERE route = ?",
                    (int(paused), reason, until, by, now, route),
                )
                return 0 if paused else _release(db, route, "paused", now)

        return await self.write(run)

    async def hold(self, owner: str, holds: Sequence[records.Hold], *, now: float) -> builtins.list[int]:
        def run(db: sqlite3.Connection) -> list[int]:
            held: list[int] = []
            with self._execution(db):
                for item in holds:
                    if db.execute(
                        "UPDATE invocations SET state = 'held', wait_reason = ?, due_at = ?, updated_at = ?,"
                        " owner = NULL, lease_until = NULL, attempt = max(attempt - 1, 0)"
                        " WHERE id = ? AND state = 'running' AND owner = ?"
                        " AND (? IS NULL OR EXISTS (SELECT 1 FROM rails WHERE route = ? AND paused))",
                        (item.reason, item.due_at, now, item.invocation_id, owner, item.rail, item.rail),
                    ).rowcount:
                        held.append(item.invocation_id)
            return held

        return await self._run_execution(run) if holds else []

    async def release_held(self, route: str, reason: str, *, now: float) -> int:
        def run(db: sqlite3.Connection) -> int:
            with self._execution(db):
                return _release(db, route, reason, now)

        return await self._run_execution(run)

    async def wake_held(self, *, now: float) -> int:
        if not self.peek("SELECT 1 FROM invocations WHERE state = 'held' AND due_at <= ? LIMIT 1", (now,)):
            return 0

        def run(db: sqlite3.Connection) -> int:
            with self._execution(db):
                return int(
                    db.execute(
                        "UPDATE invocations SET state = 'pending', wait_reason = NULL, updated_at = ?"
                        " WHERE state = 'held' AND due_at <= ?",
                        (now, now),
                    ).rowcount
                )

        return await self._run_execution(run)

    async def take_starts(
        self, route: str, budgets: Sequence[tuple[str, int, float]], *, now: float
    ) -> float | None:
        def run(db: sqlite3.Connection) -> float | None:
            with self._execution(db):
                free_at: float | None = None
                for key, most, per in budgets:
                    found = db.execute(
                        "SELECT at FROM rail_marks WHERE route = ? AND kind = 'start' AND key = ? AND at > ?"
                        " ORDER BY at",
                        (route, key, now - per),
                    ).fetchall()
                    if len(found) >= most:  # room again when the oldest that fills it leaves the window
                        room = found[len(found) - most][0] + per
                        free_at = room if free_at is None else max(free_at, room)
                if free_at is not None:
                    return free_at
                db.executemany(
                    "INSERT INTO rail_marks (route, kind, key, at) VALUES (?, 'start', ?, ?)",
                    [(route, key, now) for key, _, _ in budgets],
                )
                longest = max(per for _, _, per in budgets)
                db.execute(
                    "DELETE FROM rail_marks WHERE route = ? AND kind = 'start' AND at <= ?",
                    (route, now - longest),
                )
                return None

        return await self._run_execution(run)

    async def starts(self, route: str, *, since: float) -> dict[str, int]:
        def run(db: sqlite3.Connection) -> dict[str, int]:
            found = db.execute(
                "SELECT key, count(*) FROM rail_marks WHERE route = ? AND kind = 'start' AND at > ?"
                " GROUP BY key",
                (route, since),
            )
            return {key: int(n) for key, n in found}

        return await self.read(run)

    async def breaker_probe(self, route: str, invocation_id: int, *, now: float, lease: float) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            with self._execution(db):
                return bool(
                    db.execute(
                        "UPDATE rails SET breaker_probe = ?, breaker_probe_until = ?"
                        " WHERE route = ? AND breaker_open_until <= ?"
                        " AND (breaker_probe IS NULL OR breaker_probe = ? OR breaker_probe_until <= ?)",
                        (invocation_id, now + lease, route, now, invocation_id, now),
                    ).rowcount
                )

        return await self._run_execution(run)

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
        def run(db: sqlite3.Connection) -> str | None:
            with self._execution(db):
                _ensure(db, route)
                probe, open_until = db.execute(
                    "SELECT breaker_probe, breaker_open_until FROM rails WHERE route = ?", (route,)
                ).fetchone()
                if not failed:
                    if probe != invocation_id:
                        return None
                    db.execute(
                        "UPDATE rails SET breaker_open_until = NULL, breaker_probe = NULL,"
                        " breaker_probe_until = NULL WHERE route = ?",
                        (route,),
                    )
                    db.execute("DELETE FROM rail_marks WHERE route = ? AND kind = 'failure'", (route,))
                    _release(db, route, "breaker", now)
                    return "closed"
                db.execute(
                    "INSERT INTO rail_marks (route, kind, key, at) VALUES (?, 'failure', '', ?)", (route, now)
                )
                db.execute(
                    "DELETE FROM rail_marks WHERE route = ? AND kind = 'failure' AND at <= ?",
                    (route, now - within),
                )
                if probe != invocation_id:
                    if open_until is not None:
                        return None  # open already (a failure of an attempt started before it opened)
                    count = db.execute(
                        "SELECT count(*) FROM rail_marks WHERE route = ? AND kind = 'failure'", (route,)
                    ).fetchone()[0]
                    if count < failures:
                        return None
                db.execute(
                    "UPDATE rails SET breaker_open_until = ?, breaker_probe = NULL,"
                    " breaker_probe_until = NULL WHERE route = ?",
                    (now + cooldown, route),
                )
                return "opened"

        return await self._run_execution(run)

    async def await_approval(
        self, owner: str, invocation_id: int, plan: Mapping[str, Any], *, deadline: float, now: float
    ) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            with self._execution(db):
                return bool(
                    db.execute(
                        "UPDATE invocations SET state = 'awaiting-approval', plan = ?, due_at = ?,"
                        " wait_reason = 'approval', updated_at = ?, owner = NULL, lease_until = NULL,"
                        " attempt = max(attempt - 1, 0) WHERE id = ? AND state = 'running' AND owner = ?",
                        (orjson.dumps(dict(plan)), deadline, now, invocation_id, owner),
                    ).rowcount
                )

        return await self._run_execution(run)

    async def decide(self, invocation_id: int, *, approve: bool, by: str, now: float) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            with store.transaction(db):
                if approve:
                    sql = (
                        "UPDATE invocations SET state = 'pending', approved_by = ?, wait_reason = NULL,"
                        " due_at = ?, updated_at = ? WHERE id = ? AND state = 'awaiting-approval'"
                    )
                    args: tuple[Any, ...] = (by, now, now, invocation_id)
                else:
                    sql = (
                        "UPDATE invocations SET state = 'dead', wait_reason = NULL, last_error = ?,"
                        " updated_at = ? WHERE id = ? AND state = 'awaiting-approval'"
                    )
                    args = (f"approval denied by {by}", now, invocation_id)
                return bool(db.execute(sql, args).rowcount)

        return await self.write(run)

    async def expire_approvals(self, *, now: float) -> builtins.list[int]:
        if not self.peek(
            "SELECT 1 FROM invocations WHERE state = 'awaiting-approval' AND due_at <= ? LIMIT 1", (now,)
        ):
            return []

        def run(db: sqlite3.Connection) -> list[int]:
            with self._execution(db):
                found = db.execute(
                    "UPDATE invocations SET state = 'dead', wait_reason = NULL,"
                    " last_error = 'approval expired', updated_at = ?"
                    " WHERE state = 'awaiting-approval' AND due_at <= ? RETURNING id",
                    (now, now),
                ).fetchall()
            return sorted(row[0] for row in found)

        return await self._run_execution(run)

    async def waiting(self) -> dict[tuple[str, str, str | None], int]:
        def run(db: sqlite3.Connection) -> dict[tuple[str, str, str | None], int]:
            found = db.execute(
                "SELECT route, state, wait_reason, count(*) FROM invocations"
                " WHERE state IN ('pending', 'running', 'held', 'awaiting-approval')"
                " GROUP BY route, state, wait_reason"
            )
            return {(route, state, reason): int(n) for route, state, reason, n in found}

        return await self.read(run)

    async def approvals_past_half(self, *, now: float) -> int:
        def run(db: sqlite3.Connection) -> int:
            return int(
                db.execute(
                    "SELECT count(*) FROM invocations WHERE state = 'awaiting-approval'"
                    " AND (updated_at + due_at) / 2 < ?",
                    (now,),
                ).fetchone()[0]
            )

        return await self.read(run)

    async def route_states(self) -> dict[str, dict[str, int]]:
        def run(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
            result: dict[str, dict[str, int]] = {}
            for route, state, n in db.execute(
                "SELECT route, state, count(*) FROM invocations GROUP BY route, state"
            ):
                result.setdefault(route, {})[state] = int(n)
            return result

        return await self.read(run)

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
        def run(db: sqlite3.Connection) -> int:
            with store.transaction(db):
                cursor = db.execute(
                    "INSERT INTO audit (at, who, action, route, target, reason, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (now, who, action, route, target, reason, orjson.dumps(dict(detail or {}))),
                )
                return int(cursor.lastrowid or 0)

        return await self.write(run)

    async def take_unarchived_audit(self, *, limit: int = 500) -> builtins.list[records.AuditEntry]:
        def run(db: sqlite3.Connection) -> list[records.AuditEntry]:
            with store.transaction(db):
                found = db.execute(
                    "UPDATE audit SET archived = 1 WHERE id IN"
                    " (SELECT id FROM audit WHERE NOT archived ORDER BY id LIMIT ?)"
                    f" RETURNING {_AUDIT_COLUMNS}",
                    (limit,),
                ).fetchall()
            return sorted((_audit(row) for row in found), key=lambda entry: entry.id)

        return await self.write(run)

    async def audit(
        self, *, since: float | None = None, route: str | None = None, after: int = 0, limit: int = 1000
    ) -> builtins.list[records.AuditEntry]:
        def run(db: sqlite3.Connection) -> list[records.AuditEntry]:
            found = db.execute(
                f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE id > ? AND (? IS NULL OR at >= ?)"
                " AND (? IS NULL OR route = ? OR route = '*') ORDER BY id LIMIT ?",
                (after, since, since, route, route, limit),
            ).fetchall()
            return [_audit(row) for row in found]

        return await self.read(run)
