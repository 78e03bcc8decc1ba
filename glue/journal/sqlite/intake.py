"""The SQLite journal's intake SQL: deliveries and their events (with their routing) inserted,
undecodable deliveries kept, the write path probed, the backlog counted."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from glue import events
from glue.journal import records, rows
from glue.journal.sqlite import store

__all__ = [
    "FIND_DIGEST",
    "INSERT_INVOCATION",
    "Intake",
    "Row",
    "insert",
    "insert_delivery",
    "insert_many",
    "invocation_row",
]

#: One event as intake inserts it: identity, id, source, type, subject, structured JSON, and for an
#: event identified by a digest its key and window (see :func:`glue.journal.rows.dedup_window`).
Row = tuple[str, str, str, str, str | None, bytes, tuple[str, float, float] | None]

#: The journaled event an event identified by a digest repeats: the first with its key in its window.
FIND_DIGEST = (
    "SELECT identity, id, received_at FROM events WHERE digest = ? AND received_at BETWEEN ? AND ?"
    " ORDER BY received_at LIMIT 1"
)

INSERT_INVOCATION = (
    "INSERT OR IGNORE INTO invocations (event_seq, route, handler, idempotency_key, ordering_key, params,"
    " state, attempt, due_at, created_at, updated_at, last_error, rate_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)"
)


#: An invocation inserted claimed by routing at intake (see :attr:`records.NewInvocation.owner`).
INSERT_CLAIMED = (
    "INSERT OR IGNORE INTO invocations (event_seq, route, handler, idempotency_key, params, state,"
    " attempt, due_at, created_at, updated_at, owner, lease_until)"
    " VALUES (?, ?, ?, ?, ?, 'running', 1, ?, ?, ?, ?, ?)"
)


def invocation_row(seq: int, item: records.NewInvocation, now: float) -> tuple[Any, ...]:
    """The values of :data:`INSERT_INVOCATION` for one routing decision."""
    return (
        seq,
        item.route,
        item.handler,
        item.idempotency_key,
        item.ordering_key,
        orjson.dumps(dict(item.params)),
        item.state,
        item.due_at,
        now,
        now,
        item.error,
        item.rate_key,
    )


def insert_delivery(db: sqlite3.Connection, delivery: events.Delivery, rejected: str | None = None) -> int:
    """Insert a delivery (``rejected``: why it could not be decoded); returns its id."""
    cursor = db.execute(
        "INSERT INTO deliveries (received_at, transport, endpoint, format, headers, body, key, rejected)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        _delivery_values(delivery, rejected),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _delivery_values(delivery: events.Delivery, rejected: str | None = None) -> tuple[Any, ...]:
    """A delivery's columns from ``received_at`` to ``rejected``."""
    return (
        delivery.received_at,
        delivery.transport,
        delivery.endpoint,
        delivery.format,
        orjson.dumps(dict(delivery.headers)),
        delivery.body,
        delivery.key,
        rejected,
    )


def insert(
    db: sqlite3.Connection, delivery: events.Delivery, batch: list[Row], routing: records.Routing, now: float
) -> list[records.Appended]:
    """Insert the delivery, its new events and their routing; the unique identity makes
    redeliveries no-ops, and an event identified by a digest is also a duplicate of one with its
    key journaled within its window (looked up for those events only)."""
    delivery_id = insert_delivery(db, delivery)
    appended: list[records.Appended] = []
    invocations: list[tuple[Any, ...]] = []
    for index, (identity, event_id, source, type_, subject, document, window) in enumerate(batch):
        decided = routing[index] if routing is not None else None
        key = None
        if window is not None:
            key = window[0]
            first = db.execute(FIND_DIGEST, window).fetchone()
            if first is not None:
                appended.append(records.Appended(first[0], first[1], False, None, first[2]))
                continue
        cursor = db.execute(
            "INSERT INTO events (identity, id, source, type, subject, received_at, updated_at,"
            " delivery_id, cloudevent, status, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (identity) DO NOTHING",
            (
                identity,
                event_id,
                source,
                type_,
                subject,
                delivery.received_at,
                now,
                delivery_id,
                document,
                rows.appended_status(decided),
                key,
            ),
        )
        if cursor.rowcount == 1:
            seq = cursor.lastrowid
            assert seq is not None
            if not decided:
                appended.append(records.Appended(identity, event_id, True, seq))
                continue
            claimed = tuple(_insert_claimed(db, seq, new, now) for new in decided if new.owner is not None)
            invocations.extend(invocation_row(seq, new, now) for new in decided if new.owner is None)
            appended.append(records.Appended(identity, event_id, True, seq, None, claimed))
        else:
            appended.append(records.Appended(identity, event_id, False))
    if invocations:
        db.executemany(INSERT_INVOCATION, invocations)
    elif not any(item.new for item in appended):  # a pure redelivery keeps no second copy
        db.execute("DELETE FROM deliveries WHERE id = ?", (delivery_id,))
    return appended


def _insert_claimed(db: sqlite3.Connection, seq: int, item: records.NewInvocation, now: float) -> int | None:
    """Insert an invocation claimed at intake (unordered, unshaped, due now); returns its id, None
    when its idempotency key is journaled already."""
    cursor = db.execute(
        INSERT_CLAIMED,
        (
            seq,
            item.route,
            item.handler,
            item.idempotency_key,
            orjson.dumps(dict(item.params)),
            item.due_at,
            now,
            now,
            item.owner,
            item.lease_until,
        ),
    )
    return cursor.lastrowid if cursor.rowcount == 1 else None


#: Rows of one multi-row INSERT: SQLite binds at most 32,766 parameters to a statement.
_ROWS_PER_INSERT = 2000


def _insert_rows(db: sqlite3.Connection, head: str, width: int, values: list[tuple[Any, ...]]) -> None:
    """``head VALUES (...), (...), ...``: one statement per chunk of rows, so SQLite does the work of
    a whole batch in one step (Python's lock released throughout), not one step per row."""
    marks = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(values), _ROWS_PER_INSERT):
        chunk = values[start : start + _ROWS_PER_INSERT]
        db.execute(f"{head} VALUES {','.join([marks] * len(chunk))}", [v for row in chunk for v in row])


def insert_many(
    db: sqlite3.Connection,
    items: list[tuple[events.Delivery, list[Row], records.Routing]],
    now: float,
) -> list[list[records.Appended]]:
    """:func:`insert` for a batch of deliveries, in a transaction that holds the write lock: the
    identities already journaled are looked up together, the new events and the deliveries they
    came in are inserted by one statement per table with their sequence numbers and ids given (the
    next free ones, as SQLite would choose them), and a delivery without a new event is not stored.
    An event repeated inside the batch is new only where it comes first. A batch with an event
    identified by a digest (its window look-ups) or an invocation taken at intake (inserted claimed)
    takes :func:`insert` for each delivery."""
    if any(row[6] is not None for _, inserted, _ in items for row in inserted) or any(
        new.owner is not None for _, _, routing in items for decided in routing or () for new in decided or ()
    ):
        return [insert(db, delivery, inserted, routing, now) for delivery, inserted, routing in items]
    identities = list({row[0]: None for _, inserted, _ in items for row in inserted})
    known: set[str] = set()
    for start in range(0, len(identities), _ROWS_PER_INSERT):
        chunk = identities[start : start + _ROWS_PER_INSERT]
        found = db.execute(
            f"SELECT identity FROM events WHERE identity IN ({','.join('?' * len(chunk))})", chunk
        )
        known.update(identity for (identity,) in found)
    delivery_id = db.execute("SELECT coalesce(max(id), 0) FROM deliveries").fetchone()[0]
    seq = db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    deliveries: list[tuple[Any, ...]] = []
    new_events: list[tuple[Any, ...]] = []
    invocations: list[tuple[Any, ...]] = []
    results: list[list[records.Appended]] = []
    for delivery, inserted, routing in items:
        appended: list[records.Appended] = []
        stored_as = None  # the delivery's id, once one of its events is new
        for index, (identity, event_id, source, type_, subject, document, _) in enumerate(inserted):
            if identity in known:
                appended.append(records.Appended(identity, event_id, False))
                continue
            known.add(identity)
            if stored_as is None:
                delivery_id += 1
                stored_as = delivery_id
                deliveries.append((stored_as, *_delivery_values(delivery)))
            seq += 1
            decided = routing[index] if routing is not None else None
            new_events.append(
                (
                    seq,
                    identity,
                    event_id,
                    source,
                    type_,
                    subject,
                    delivery.received_at,
                    now,
                    stored_as,
                    document,
                    rows.appended_status(decided),
                )
            )
            if decided:
                invocations.extend(invocation_row(seq, new, now) for new in decided)
            appended.append(records.Appended(identity, event_id, True, seq))
        results.append(appended)
    if deliveries:
        _insert_rows(
            db,
            "INSERT INTO deliveries (id, received_at, transport, endpoint, format, headers, body, key,"
            " rejected)",
            9,
            deliveries,
        )
        _insert_rows(
            db,
            "INSERT INTO events (seq, identity, id, source, type, subject, received_at, updated_at,"
            " delivery_id, cloudevent, status)",
            11,
            new_events,
        )
    if invocations:
        db.executemany(INSERT_INVOCATION, invocations)
    return results


class Intake(store.Store):
    """The intake part of the journal besides ``append`` (the group writer's): rejects, ping, backlog."""

    async def reject(self, delivery: events.Delivery, reason: str) -> int:
        def run(db: sqlite3.Connection) -> int:
            with store.transaction(db):
                return insert_delivery(db, delivery, rejected=reason)

        return await self.write(run)

    async def ping(self) -> None:
        """The write lock can be taken, and a disk that refused a write takes one again."""

        def run(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")

        await self.write(run)
        await self.check_disk()

    async def backlog(self) -> int:
        def run(db: sqlite3.Connection) -> int:
            return int(db.execute("SELECT count(*) FROM events WHERE status = 'pending'").fetchone()[0])

        return await self.read(run)
