"""The SQLite journal's execution SQL: routing claims, invocation claims under leases, outcomes."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import orjson

from glue.journal import records, rows, shaping
from glue.journal.sqlite import intake, store

__all__ = ["WorkQueue"]

# One statement for each way an outcome leaves a claimed invocation (see rows.settlement).
_SETTLE = (
    "UPDATE invocations SET state = ?, owner = NULL, lease_until = NULL, updated_at = ?,"
    " due_at = coalesce(?, due_at), last_error = CASE WHEN ? THEN coalesce(?, last_error) ELSE ? END,"
    " plan = coalesce(?, plan)"
    " WHERE id = ? AND state = 'running' AND owner = ? RETURNING id, attempt"
)
#: Whether any invocation may be claimable (due and pending, or running past its lease): a poll that
#: finds none opens no transaction.
_CLAIMABLE = (
    "SELECT 1 WHERE EXISTS (SELECT 1 FROM invocations WHERE state = 'pending' AND due_at <= ?)"
    " OR EXISTS (SELECT 1 FROM invocations WHERE state = 'running' AND lease_until <= ?)"
)
_INSERT_ATTEMPT = f"INSERT INTO attempts ({rows.ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"


def _run(db: sqlite3.Connection, statements: shaping.Shaping) -> records.Shaped:
    """Run a shaping's statements on ``db`` (in the caller's transaction); returns what it shaped."""
    result: Any = None
    while True:
        try:
            query = statements.send(result)
        except StopIteration as stop:
            shaped: records.Shaped = stop.value
            return shaped
        cursor = db.execute(query.sql, query.args)
        result = cursor.fetchone() if query.want == "row" else cursor.rowcount


class WorkQueue(store.Store):
    """The ``WorkQueue`` role: every transaction is execution state (see ``Store._run_execution``)."""

    async def claim_events(
        self, owner: str, *, limit: int, lease: float, now: float
    ) -> builtins.list[records.StoredEvent]:
        if not self.peek("SELECT 1 FROM events WHERE status = 'pending' LIMIT 1", ()):
            return []

        def run(db: sqlite3.Connection) -> list[records.StoredEvent]:
            with self._execution(db):
                found = db.execute(
                    f"SELECT {rows.EVENT_COLUMNS} FROM events e WHERE status = 'pending' AND NOT EXISTS"
                    " (SELECT 1 FROM event_claims c"
                    "  WHERE c.seq = e.seq AND c.lease_until > ? AND c.owner != ?)"
                    " ORDER BY seq LIMIT ?",
                    (now, owner, limit),
                ).fetchall()
                db.executemany(
                    "INSERT OR REPLACE INTO event_claims (seq, owner, lease_until) VALUES (?, ?, ?)",
                    [(row[0], owner, now + lease) for row in found],
                )
            return [rows.stored(row) for row in found]

        return await self._run_execution(run)

    async def record_routing(
        self,
        owner: str,
        decisions: Mapping[int, Sequence[records.NewInvocation]],
        *,
        now: float,
        unfinished: Collection[int] = (),
    ) -> records.Shaped:
        def run(db: sqlite3.Connection) -> records.Shaped:
            shaped: records.Shaped = []
            with self._execution(db):
                marks, seqs = store.marks(decisions)
                held = {
                    row[0]
                    for row in db.execute(
                        f"SELECT e.seq FROM events e JOIN event_claims c ON c.seq = e.seq"
                        f" WHERE e.seq IN ({marks}) AND e.status = 'pending' AND c.owner = ?",
                        (*seqs, owner),
                    )
                }
                db.executemany(
                    intake.INSERT_INVOCATION,
                    [
                        intake.invocation_row(seq, item, now)
                        for seq, invocations in decisions.items()
                        if seq in held
                        for item in invocations
                    ],
                )
                for seq in sorted(held):  # in event order: a later event's invocation wins
                    for item in decisions[seq]:
                        shaped.extend(_run(db, shaping.shape(item, now)))
                held -= set(unfinished)  # invocations in; the event stays pending and claimed
                for status, chosen in (
                    ("routed", [seq for seq in held if decisions[seq]]),
                    ("unmatched", [seq for seq in held if not decisions[seq]]),
                ):
                    if chosen:
                        marks, values = store.marks(chosen)
                        db.execute(
                            f"UPDATE events SET status = ?, updated_at = ? WHERE seq IN ({marks})",
                            (status, now, *values),
                        )
                if held:
                    marks, values = store.marks(held)
                    db.execute(f"DELETE FROM event_claims WHERE seq IN ({marks})", values)
            return shaped

        return await self._run_execution(run)

    async def claim_invocations(
        self,
        owner: str,
        *,
        limit: int,
        lease: float,
        now: float,
        exclude_routes: Collection[str] = (),
    ) -> builtins.list[records.Invocation]:
        if not self.peek(_CLAIMABLE, (now, now)):
            return []

        def run(db: sqlite3.Connection) -> list[records.Invocation]:
            marks, routes = ",".join("?" * len(exclude_routes)), list(exclude_routes)
            with self._execution(db):
                unrouted = db.execute("SELECT min(seq) FROM events WHERE status = 'pending'").fetchone()[0]
                runnable = (
                    (f" AND i.route NOT IN ({marks})" if routes else "")
                    + " AND (i.ordering_key IS NULL OR ((? IS NULL OR i.event_seq < ?) AND NOT EXISTS ("
                    "   SELECT 1 FROM invocations j WHERE j.ordering_key = i.ordering_key"
                    "   AND j.state IN ('pending', 'running', 'held', 'awaiting-approval')"
                    "   AND (j.event_seq < i.event_seq OR (j.event_seq = i.event_seq AND j.id < i.id)))))"
                    " ORDER BY i.due_at, i.id LIMIT ?"
                )
                args = (*routes, unrouted, unrouted, limit)
                # Two queries, each walking an index in due order and stopping at the limit: due
                # pending invocations (of acknowledged events), and running ones whose owner's lease
                # expired (few).
                found = db.execute(
                    f"SELECT {rows.INVOCATION_COLUMNS} FROM invocations i"
                    " WHERE i.state = 'pending' AND i.due_at <= ? AND i.event_seq < ?" + runnable,
                    (now, self._undurable_from(), *args),
                ).fetchall()
                found += db.execute(
                    f"SELECT {rows.INVOCATION_COLUMNS} FROM invocations i"
                    " WHERE i.state = 'running' AND i.lease_until <= ?" + runnable,
                    (now, *args),
                ).fetchall()
                found = sorted(found, key=lambda row: (row[9], row[0]))[:limit]
                claimed: list[records.Invocation] = []
                if found:
                    marks, ids = store.marks([row[0] for row in found])
                    db.execute(
                        f"UPDATE invocations SET state = 'running', owner = ?, lease_until = ?,"
                        f" attempt = attempt + 1, updated_at = ? WHERE id IN ({marks})",
                        (owner, now + lease, now, *ids),
                    )
                for row in found:  # as the UPDATE left them
                    values = list(row)
                    values[rows.PARAMS] = orjson.loads(values[rows.PARAMS])
                    if values[rows.PLAN] is not None:
                        values[rows.PLAN] = orjson.loads(values[rows.PLAN])
                    values[7], values[8], values[11] = "running", values[8] + 1, now
                    values[13], values[14] = owner, now + lease
                    claimed.append(records.Invocation(*values))
            return claimed

        return await self._run_execution(run)

    async def settle(
        self, owner: str, outcomes: Sequence[records.Outcome], *, now: float, prompt: bool = True
    ) -> int:
        settlements = [rows.settlement(outcome, now) for outcome in outcomes]
        undo = [outcome for outcome in outcomes if outcome.undo and outcome.state == "done"]

        def apply(db: sqlite3.Connection) -> int:
            applied: list[tuple[rows.Settlement, int]] = []  # and the attempt it ends
            done = {s.invocation_id: s for s in settlements if s.plain}
            if done:  # the common case, in one statement
                marks, ids = store.marks(done)
                found = db.execute(
                    f"UPDATE invocations SET state = 'done', owner = NULL, lease_until = NULL,"
                    f" updated_at = ? WHERE id IN ({marks}) AND state = 'running' AND owner = ?"
                    " RETURNING id, attempt",
                    (now, *ids, owner),
                ).fetchall()
                applied.extend((done[id_], attempt) for id_, attempt in found)
            for s in settlements:
                if not s.plain:
                    args: tuple[Any, ...] = (s.state, now, s.due_at, s.keep_error, s.error, s.error, s.plan)
                    for _, attempt in db.execute(_SETTLE, (*args, s.invocation_id, owner)).fetchall():
                        applied.append((s, attempt))
            for outcome in undo:
                db.execute(rows.UNDO, (now, outcome.invocation_id))
            # The history, in the same commit: an outcome that was not applied (its claim was
            # lost) leaves none, as the owner that took the claim over writes its own.
            db.executemany(
                _INSERT_ATTEMPT,
                [(s.invocation_id, n, s.started_at, s.duration, s.outcome, s.error) for s, n in applied],
            )
            return len(applied)

        def run(db: sqlite3.Connection) -> int:
            with self._execution(db):
                return apply(db)

        if not prompt:
            ridden = await self.ride(apply)
            if ridden is not None:
                return ridden
        return await self._run_execution(run)

    async def release(self, owner: str | None, *, now: float, ids: Collection[int] | None = None) -> int:
        def run(db: sqlite3.Connection) -> int:
            sql = (
                "UPDATE invocations SET state = 'pending', owner = NULL, lease_until = NULL, due_at = ?,"
                " updated_at = ?, attempt = max(attempt - 1, 0)"
                " WHERE state = 'running' AND (? IS NULL OR owner = ?)"
            )
            args: list[Any] = [now, now, owner, owner]
            if ids is not None:
                marks, values = store.marks(ids)
                sql += f" AND id IN ({marks})"
                args.extend(values)
            with self._execution(db):
                released = db.execute(sql, args).rowcount
                if ids is None:
                    db.execute("DELETE FROM event_claims WHERE ? IS NULL OR owner = ?", (owner, owner))
            return released

        return await self._run_execution(run)

    async def cancel_requested(self, owner: str) -> dict[int, int]:
        def run(db: sqlite3.Connection) -> dict[int, int]:
            return {
                int(row[0]): int(row[1])
                for row in db.execute(
                    "SELECT id, taken_by FROM invocations"
                    " WHERE state = 'running' AND owner = ? AND taken_by IS NOT NULL",
                    (owner,),
                )
            }

        return await self.read(run)

    async def absorbed(self, invocation_id: int) -> builtins.list[str]:
        def run(db: sqlite3.Connection) -> list[str]:
            return [
                str(row[0])
                for row in db.execute(
                    "SELECT e.id FROM invocations i JOIN events e ON e.seq = i.event_seq"
                    " WHERE i.taken_by = ? AND i.state = 'coalesced' ORDER BY i.event_seq",
                    (invocation_id,),
                )
            ]

        return await self.read(run)

    async def defer(self, owner: str, due: Mapping[int, float], *, reason: str, now: float) -> int:
        def run(db: sqlite3.Connection) -> int:
            with self._execution(db):
                return sum(
                    db.execute(
                        "UPDATE invocations SET state = 'pending', owner = NULL, lease_until = NULL,"
                        " due_at = ?, wait_reason = ?, updated_at = ?, attempt = max(attempt - 1, 0)"
                        " WHERE id = ? AND state = 'running' AND owner = ?",
                        (due_at, reason, now, invocation_id, owner),
                    ).rowcount
                    for invocation_id, due_at in due.items()
                )

        return await self._run_execution(run)

    async def take_token(self, key: str, *, rate: float, burst: int, now: float) -> float:
        def run(db: sqlite3.Connection) -> float:
            with self._execution(db):
                row = db.execute(
                    "SELECT tokens, updated_at FROM rate_buckets WHERE key = ?", (key,)
                ).fetchone()
                tokens, wait = rows.bucket(
                    row[0] if row else None, row[1] if row else None, now=now, rate=rate, burst=burst
                )
                db.execute(
                    "INSERT INTO rate_buckets (key, tokens, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE"
                    " SET tokens = excluded.tokens, updated_at = excluded.updated_at",
                    (key, tokens, now),
                )
            return wait

        return await self._run_execution(run)

    async def dead_letters(self) -> int:
        def run(db: sqlite3.Connection) -> int:
            return int(db.execute("SELECT count(*) FROM invocations WHERE state = 'dead'").fetchone()[0])

        return await self.read(run)

    async def oldest_pending(self) -> float | None:
        def run(db: sqlite3.Connection) -> float | None:
            value = db.execute(
                "SELECT min(created_at) FROM invocations WHERE state IN ('pending', 'running')"
            ).fetchone()[0]
            return float(value) if value is not None else None

        return await self.read(run)
