"""Events whose producer gave no id (Harbor's Default payload, a plain JSON body from an Argo trigger)
deduplicate on a digest of their payload only within the endpoint's ``dedupWindow``, on both journals.

Deliveries are decoded by the real decoders at the receive times the test gives them (a recorded
delivery keeps its own), so the window is crossed without waiting.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from glue import events, formats, journal, settings
from glue.journal import postgres
from glue.journal.sqlite import store as sqlite_store
from tests.journal.conftest import delivery
from tests.support import cloudevent

T0 = 1_764_288_000.0
WINDOW = 900.0
ARGO = formats.Options(type="org.example.argo.sensor", source="argo/sensor/models", dedup_window=WINDOW)


def argo(body: Any, received_at: float) -> tuple[events.Delivery, list[events.CloudEvent]]:
    """A plain JSON body from an Argo Sensor's HTTP trigger, as intake decodes it."""
    arrived = events.Delivery(
        transport="http",
        endpoint="argo",
        format="argo",
        headers={},
        body=orjson.dumps(body),
        received_at=received_at,
    )
    return arrived, formats.decode(arrived, ARGO)


async def post(store: journal.Journal, body: Any, received_at: float) -> journal.Appended:
    [appended] = await store.append(*argo(body, received_at))
    return appended


async def test_an_equal_body_within_the_window_is_the_same_event(store: journal.Journal) -> None:
    first = await post(store, {"repo": "models", "tag": "v1"}, T0)
    retry = await post(store, {"tag": "v1", "repo": "models"}, T0 + WINDOW - 1)  # same JSON, reordered
    assert first.new and not retry.new
    assert (retry.identity, retry.id, retry.first_at) == (first.identity, first.id, T0)
    assert [e.id for e in await store.list()] == [first.id]


async def test_append_many_deduplicates_by_digest_as_append_does(store: journal.Journal) -> None:
    first = await post(store, {"repo": "models", "tag": "v1"}, T0)
    arrivals = [
        argo({"repo": "models", "tag": "v1"}, T0 + 10),  # a retry of the journaled one
        argo({"repo": "models", "tag": "v2"}, T0 + 20),
        argo({"repo": "models", "tag": "v2"}, T0 + 30),  # a retry inside the batch
    ]

    outcomes = await store.append_many([(arrived, batch, None) for arrived, batch in arrivals])

    [[retry], [v2], [v2_retry]] = outcomes
    assert not retry.new and (retry.id, retry.first_at) == (first.id, T0)
    assert v2.new and not v2_retry.new and v2_retry.id == v2.id
    assert [e.id for e in await store.list()] == [first.id, v2.id]


async def test_an_equal_body_after_the_window_is_a_new_event(store: journal.Journal) -> None:
    first = await post(store, {"repo": "models", "tag": "v1"}, T0)
    later = await post(store, {"repo": "models", "tag": "v1"}, T0 + WINDOW + 1)
    again = await post(store, {"repo": "models", "tag": "v1"}, T0 + WINDOW + 2)  # a retry of the later one
    assert first.new and later.new and not again.new
    assert later.id != first.id and again.id == later.id
    assert [e.id for e in await store.list()] == [first.id, later.id]


async def test_a_replay_of_a_recording_older_than_the_window_adds_nothing(store: journal.Journal) -> None:
    recorded = argo({"repo": "models", "tag": "v1"}, T0)[0]
    await post(store, {"repo": "models", "tag": "v1"}, T0)
    await post(store, {"repo": "models", "tag": "v1"}, T0 + 3 * WINDOW)  # a later, new event
    replayed = events.Delivery.from_record(orjson.loads(orjson.dumps(recorded.to_record())))
    [appended] = await store.append(replayed, formats.decode(replayed, ARGO))
    assert not appended.new
    assert len(await store.list()) == 2


async def test_other_bodies_and_producer_ids_are_not_affected(store: journal.Journal) -> None:
    assert (await post(store, {"tag": "v1"}, T0)).new
    assert (await post(store, {"tag": "v2"}, T0 + 1)).new
    same_data = [cloudevent("a", data={"tag": "v1"}), cloudevent("b", data={"tag": "v1"})]
    assert [a.new for a in await store.append(delivery(), same_data)] == [True, True]
    assert [a.new for a in await store.append(delivery(), [cloudevent("a", data={"other": 1})])] == [False]


async def test_equal_bodies_committed_together_are_one_event(store: journal.Journal) -> None:
    """Appends made in one turn of the loop share a group commit (one statement on PostgreSQL)."""
    results = await asyncio.gather(*(post(store, {"tag": "v1"}, T0 + n) for n in range(3)))
    assert [a.new for a in results] == [True, False, False]
    assert {a.id for a in results} == {results[0].id}
    assert [a.first_at for a in results[1:]] == [T0, T0]
    assert len(await store.list()) == 1


async def test_a_zero_window_still_recognises_a_replay(store: journal.Journal) -> None:
    options = formats.Options(type="t", source="s", dedup_window=0)
    arrived = events.Delivery(
        transport="http", endpoint="argo", format="argo", headers={}, body=b'{"a": 1}', received_at=T0
    )
    assert (await store.append(arrived, formats.decode(arrived, options)))[0].new
    assert not (await store.append(arrived, formats.decode(arrived, options)))[0].new
    later = events.Delivery(
        transport="http", endpoint="argo", format="argo", headers={}, body=b'{"a": 1}', received_at=T0 + 0.001
    )
    assert (await store.append(later, formats.decode(later, options)))[0].new


# -- upgrades -------------------------------------------------------------------------------------------

#: The events table of SQLite schema version 1 (before ``digest``), with the rest of that schema.
_SQLITE_V1_EVENTS = """
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY, received_at REAL NOT NULL, transport TEXT NOT NULL, endpoint TEXT NOT NULL,
    format TEXT NOT NULL, headers BLOB NOT NULL, body BLOB NOT NULL, key BLOB, rejected TEXT
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, identity TEXT NOT NULL UNIQUE, id TEXT NOT NULL, source TEXT NOT NULL,
    type TEXT NOT NULL, subject TEXT, received_at REAL NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
    updated_at REAL NOT NULL, delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
    cloudevent BLOB NOT NULL
);
"""


async def test_a_sqlite_journal_of_schema_1_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    old_id = events.digest({"repo": "models", "tag": "v1"})
    db = sqlite3.connect(path)
    db.executescript(_SQLITE_V1_EVENTS)
    db.execute("INSERT INTO deliveries VALUES (1, ?, 'http', 'argo', 'argo', '{}', '{}', NULL, NULL)", (T0,))
    db.execute(
        "INSERT INTO events (identity, id, source, type, received_at, status, updated_at, delivery_id,"
        " cloudevent) VALUES (?, ?, 'argo/sensor/models', 't', ?, 'routed', ?, 1, '{}'),"
        " ('/s a', 'a', '/s', 't', ?, 'routed', ?, 1, '{}')",
        (f"argo/sensor/models {old_id}", old_id, T0, T0, T0, T0),
    )
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()

    store = journal.create(settings.Journal(backend="sqlite", path=path, group_commit_ms=0))
    await store.open()
    try:
        retry = await post(store, {"repo": "models", "tag": "v1"}, T0 + 60)
        assert (retry.new, retry.id) == (False, old_id)  # a retry of an event journaled before
        assert (await post(store, {"repo": "models", "tag": "v1"}, T0 + 2 * WINDOW)).new
        assert [e.id for e in await store.list()][:2] == [old_id, "a"]
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == sqlite_store.SCHEMA_VERSION
    db.close()


async def test_a_postgres_journal_of_schema_4_is_upgraded(pg_dsn: str) -> None:
    old_id = events.digest({"repo": "models", "tag": "v1"})
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "CREATE TABLE glue_schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in postgres.MIGRATIONS[:4]:
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO glue_schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
        delivery_id = await conn.fetchval(
            "INSERT INTO deliveries (received_at, transport, endpoint, format, headers, body)"
            " VALUES ($1, 'http', 'argo', 'argo', '{}', '\\x7b7d') RETURNING id",
            T0,
        )
        await conn.execute(
            "INSERT INTO events (identity, id, source, type, received_at, status, updated_at, delivery_id,"
            " cloudevent) VALUES ($1, $2, 'argo/sensor/models', 't', $3, 'routed', $3, $4, '\\x7b7d'),"
            " ('/s a', 'a', '/s', 't', $3, 'routed', $3, $4, '\\x7b7d')",
            f"argo/sensor/models {old_id}",
            old_id,
            T0,
            delivery_id,
        )
    finally:
        await conn.close()
    store = postgres.PostgresJournal(
        settings.Journal.model_validate({"backend": "postgres", "dsn": {"value": pg_dsn}, "groupCommitMs": 0})
    )
    await store.open()
    try:
        assert store.applied[0] == 5  # and the later ones
        retry = await post(store, {"repo": "models", "tag": "v1"}, T0 + 60)
        assert (retry.new, retry.id) == (False, old_id)  # a retry of an event journaled before
        assert (await post(store, {"repo": "models", "tag": "v1"}, T0 + 2 * WINDOW)).new
        assert [e.id for e in await store.list()][:2] == [old_id, "a"]
    finally:
        await store.close()
