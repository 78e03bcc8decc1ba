"""The PostgreSQL journal's intake SQL: a group of appends inserted by one statement, undecodable
deliveries kept, the write path probed, the backlog counted.

Dedup is the unique constraint on ``events.identity`` (``ON CONFLICT DO NOTHING``), which also holds
between replicas. An event identified by a digest is also looked up by its key within its window, in
the same statement; that look-up has no constraint behind it, so two replicas appending equal payloads
at the same moment may both journal one (a sender's retries come seconds to minutes apart). Events
routed at intake are stored ``routed`` with their invocations by that same statement. Statements are
prepared once per pooled connection (asyncpg's statement cache).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from glue import events
from glue.journal import records, rows
from glue.journal.postgres import store

__all__ = ["APPEND", "DROP_ORPHANS", "First", "Intake", "Pending", "arguments", "insert"]


class Pending:
    """One append waiting for its group's commit: what it stores, and its caller's future."""

    __slots__ = ("batch", "delivery", "future", "routing")

    def __init__(
        self,
        delivery: events.Delivery,
        batch: Sequence[events.CloudEvent],
        routing: records.Routing,
        future: rows.Answer,
    ) -> None:
        self.delivery = delivery
        self.batch = batch
        self.routing = routing
        self.future = future


# One statement per group commit. Its rows come as JSON documents (json_to_recordset): one parameter
# per table instead of an array per column, which asyncpg encodes element by element at a far greater
# client CPU cost per event. A body travels as base64; the CloudEvent, headers and params as JSON text
# in a string (json_to_recordset unescapes nested strings too, and a NUL cannot become text).
# Deliveries get their ids from the sequence up front so the events can reference them in the same
# statement; a delivery whose events all exist already is not stored.
# ``ON CONFLICT`` covers the race where another replica inserts the same identity meanwhile. An event
# routed at intake comes with its status and its invocations, which are inserted for the events this
# statement really inserted (joined on identity), so a duplicate's routing is dropped with it; the
# invocations' ``ON CONFLICT`` is record_routing's (an existing idempotency key is skipped).
APPEND = """
WITH ev AS (
    SELECT t.item, t.n, t.identity, t.id, t.source, t.type, t.subject, t.status,
           convert_to(t.cloudevent, 'UTF8') AS cloudevent, t.digest, t.lo, t.hi
    FROM json_to_recordset($1::json) AS t(item int4, n int4, identity text, id text, source text,
                                          type text, subject text, status text, cloudevent text,
                                          digest text, lo float8, hi float8)
),
-- A subquery per row, not NOT EXISTS: the planner turns the latter into an anti-join, and with no
-- statistics yet (a new journal) caches a plan that scans the whole events table for every group.
-- An event identified by a digest is also a duplicate of one with its key received within its
-- window [lo, hi]; the look-up runs for those events only (OR evaluates its arms in order).
fresh AS (
    SELECT * FROM ev WHERE (SELECT e.seq FROM events e WHERE e.identity = ev.identity) IS NULL
    AND (ev.digest IS NULL OR (SELECT e.seq FROM events e WHERE e.digest = ev.digest
                               AND e.received_at BETWEEN ev.lo AND ev.hi LIMIT 1) IS NULL)
),
dl AS (
    SELECT t.item, t.received_at, t.transport, t.endpoint, t.format, t.headers::json AS headers,
           decode(t.body, 'base64') AS body, decode(t.key, 'base64') AS key,
           nextval('deliveries_id_seq') AS delivery_id
    FROM json_to_recordset($2::json) AS t(item int4, received_at float8, transport text, endpoint text,
                                          format text, headers text, body text, key text)
    WHERE t.item IN (SELECT item FROM fresh)
),
stored AS (
    INSERT INTO deliveries (id, received_at, transport, endpoint, format, headers, body, key)
    SELECT delivery_id, received_at, transport, endpoint, format, headers, body, key FROM dl
    RETURNING id
),
inserted AS (
    INSERT INTO events (identity, id, source, type, subject, received_at, status, updated_at, delivery_id,
                        cloudevent, digest)
    SELECT fresh.identity, fresh.id, fresh.source, fresh.type, fresh.subject, dl.received_at, fresh.status,
           $3, dl.delivery_id, fresh.cloudevent, fresh.digest
    FROM fresh JOIN dl USING (item)
    ORDER BY fresh.item, fresh.n
    ON CONFLICT (identity) DO NOTHING
    RETURNING seq, identity, delivery_id
),
invoked AS (
    INSERT INTO invocations (event_seq, route, handler, idempotency_key, ordering_key, params, state,
                             attempt, due_at, created_at, updated_at, last_error, rate_key)
    SELECT inserted.seq, t.route, t.handler, t.key, t.ordering_key, t.params::json, t.state, 0, t.due_at,
           $3, $3, t.error, t.rate_key
    FROM ROWS FROM (json_to_recordset($4::json) AS (identity text, route text, handler text, key text,
                                                   ordering_key text, params text, state text,
                                                   due_at float8, error text, rate_key text))
        WITH ORDINALITY
        AS t(identity, route, handler, key, ordering_key, params, state, due_at, error, rate_key, k)
    JOIN inserted USING (identity)
    ORDER BY t.k
    ON CONFLICT (idempotency_key) DO NOTHING
)
SELECT identity, delivery_id, seq, NULL AS first, NULL AS first_id, NULL::float8 AS first_at FROM inserted
UNION ALL
SELECT NULL, id, NULL, NULL, NULL, NULL FROM stored WHERE id NOT IN (SELECT delivery_id FROM inserted)
UNION ALL
-- the journaled event each duplicate identified by a digest repeats (none for a new one: the
-- statement's snapshot does not hold what it inserts)
SELECT ev.identity, NULL, NULL, f.identity, f.id, f.received_at
FROM ev CROSS JOIN LATERAL (
    SELECT e.identity, e.id, e.received_at FROM events e
    WHERE e.digest = ev.digest AND e.received_at BETWEEN ev.lo AND ev.hi ORDER BY e.received_at LIMIT 1
) AS f
WHERE ev.digest IS NOT NULL
"""

# Deliveries left without events because another replica won every identity race (committed after
# the group: a crash in between leaves a harmless delivery row that retention removes).
DROP_ORPHANS = """
DELETE FROM deliveries d WHERE d.id = ANY($1::int8[]) AND d.rejected IS NULL
AND NOT EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id)
"""


def _json(values: list[dict[str, Any]]) -> str:
    """Rows for ``json_to_recordset`` (see :data:`APPEND`)."""
    return orjson.dumps(values).decode()


def _headers(delivery: events.Delivery) -> str:
    return orjson.dumps(dict(delivery.headers)).decode()


#: A journaled (or candidate) event a duplicate identified by a digest repeats: identity, id, and when
#: it arrived.
First = tuple[str, str, float]


def arguments(
    pending: list[Pending],
) -> tuple[list[Any], list[list[str]], dict[tuple[int, int], First]]:
    """The parameters of :data:`APPEND` for a group (empty if it holds no new event), each
    delivery's identities, and the events identified by a digest that repeat an earlier candidate of
    the group (by item and position)."""
    ev: list[dict[str, Any]] = []
    dl: list[dict[str, Any]] = []
    inv: list[dict[str, Any]] = []  # invocations of the candidates routed at intake
    identities: list[list[str]] = []
    first: set[str] = set()  # an identity's first occurrence in this group is the candidate
    digests: dict[str, list[First]] = {}  # candidates identified by a digest, by key
    repeats: dict[tuple[int, int], First] = {}
    for item_no, item in enumerate(pending):
        names = [events.identity(event) for event in item.batch]
        identities.append(names)
        candidate = False
        for n, (event, identity) in enumerate(zip(item.batch, names, strict=True)):
            if identity in first:
                continue  # a later copy is a duplicate: its routing goes with it
            window = rows.dedup_window(event)
            if window is not None:
                key, lo, hi = window
                earlier = digests.setdefault(key, [])
                repeated = next((c for c in earlier if lo <= c[2] <= hi), None)
                if repeated is not None:
                    repeats[item_no, n] = repeated
                    continue
                earlier.append((identity, event.get_id(), item.delivery.received_at))
            first.add(identity)
            candidate = True
            decided = item.routing[n] if item.routing is not None else None
            if decided:
                inv.extend(
                    {
                        "identity": identity,
                        "route": invocation.route,
                        "handler": invocation.handler,
                        "key": invocation.idempotency_key,
                        "ordering_key": store.text(invocation.ordering_key),
                        "params": orjson.dumps(dict(invocation.params)).decode(),
                        "state": invocation.state,
                        "due_at": invocation.due_at,
                        "error": store.text(invocation.error),
                        "rate_key": store.text(invocation.rate_key),
                    }
                    for invocation in decided
                )
            attributes = event.get_attributes()
            row = {
                "item": item_no,
                "n": n,
                "identity": identity,
                "id": attributes["id"],
                "source": attributes["source"],
                "type": attributes["type"],
                "subject": attributes.get("subject"),
                "status": rows.appended_status(decided),
                "cloudevent": events.to_json(event).decode(),
            }
            if window is not None:
                row["digest"], row["lo"], row["hi"] = window
            ev.append(row)
        if candidate:
            d = item.delivery
            dl.append(
                {
                    "item": item_no,
                    "received_at": d.received_at,
                    "transport": d.transport,
                    "endpoint": d.endpoint,
                    "format": d.format,
                    "headers": _headers(d),
                    "body": base64.b64encode(d.body).decode(),
                    "key": base64.b64encode(d.key).decode() if d.key is not None else None,
                }
            )
    if not ev:
        return [], identities, repeats
    return [_json(ev), _json(dl), time.time(), _json(inv)], identities, repeats


async def insert(conn: asyncpg.Connection, pending: list[Pending]) -> list[list[records.Appended]]:
    """Insert one group with :data:`APPEND`; returns what each of its appends appended."""
    values, identities, repeats = arguments(pending)
    new: dict[str, int] = {}
    firsts: dict[str, First] = {}  # duplicates identified by a digest -> the journaled event
    if values:
        found = await conn.fetch(APPEND, *values)
        orphans = []
        for row in found:
            if row["identity"] is None:
                orphans.append(row["delivery_id"])
            elif row["first"] is not None:
                firsts[row["identity"]] = (row["first"], row["first_id"], row["first_at"])
            else:
                new[row["identity"]] = row["seq"]
        if orphans:
            await conn.execute(DROP_ORPHANS, orphans)
    results: list[list[records.Appended]] = []
    claimed: set[str] = set()
    for item_no, (item, names) in enumerate(zip(pending, identities, strict=True)):
        appended = []
        for n, (event, identity) in enumerate(zip(item.batch, names, strict=True)):
            repeated = (firsts.get(identity) if firsts else None) or (
                repeats.get((item_no, n)) if repeats else None
            )
            if repeated is not None:
                # a repeat of a candidate that was itself a duplicate repeats what that one did
                origin = firsts.get(repeated[0], repeated)
                appended.append(records.Appended(origin[0], origin[1], False, None, origin[2]))
                continue
            seq = new.get(identity) if identity not in claimed else None
            if seq is not None:
                claimed.add(identity)
            appended.append(
                records.Appended(identity=identity, id=event.get_id(), new=seq is not None, seq=seq)
            )
        results.append(appended)
    return results


class Intake(store.Store):
    """The intake part of the journal besides ``append`` (the group writer's): rejects, ping, backlog."""

    async def reject(self, delivery: events.Delivery, reason: str) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            return int(
                await conn.fetchval(
                    "INSERT INTO deliveries (received_at, transport, endpoint, format, headers, body, key,"
                    " rejected) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                    delivery.received_at,
                    delivery.transport,
                    delivery.endpoint,
                    delivery.format,
                    _headers(delivery),
                    delivery.body,
                    delivery.key,
                    store.text(reason),
                )
            )

        return await self.run(run)

    async def ping(self) -> None:
        async def run(conn: asyncpg.Connection) -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'",
                    timeout=5,
                )
            )

        if not await self.run(run):
            raise records.JournalUnavailable(
                "the postgres journal is read-only (a standby or read-only mode)"
            )

    async def backlog(self) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            return int(await conn.fetchval("SELECT count(*) FROM events WHERE status = 'pending'"))

        return await self.run(run)
