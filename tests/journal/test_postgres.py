"""What only the PostgreSQL journal promises: migrations, several replicas on one database, retention.

Runs against the PostgreSQL server of this machine (a throwaway database, see pgserver.py). "Replicas"
here are separate PostgresJournal instances, each with its own connection pool, as separate processes
would have.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from glue import journal, settings
from glue.journal import postgres
from glue.journal.postgres import intake as postgres_intake
from tests.journal.conftest import delivery
from tests.support import cloudevent


def pg_config(dsn: str, **changes: object) -> settings.Journal:
    return settings.Journal.model_validate(
        {"backend": "postgres", "dsn": {"value": dsn}, "groupCommitMs": 0, **changes}
    )


@pytest.fixture
async def replicas(pg_dsn: str):  # type: ignore[no-untyped-def]
    opened: list[postgres.PostgresJournal] = []

    async def start(count: int, **changes: object) -> list[postgres.PostgresJournal]:
        stores = [postgres.PostgresJournal(pg_config(pg_dsn, **changes)) for _ in range(count)]
        await asyncio.gather(*(store.open() for store in stores))
        opened.extend(stores)
        return stores

    yield start
    for store in opened:
        await store.close()


async def migrations(dsn: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version, name FROM glue_schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [(row["version"], row["name"]) for row in rows]


# -- migrations ---------------------------------------------------------------------------------------


async def test_replicas_starting_together_migrate_once(replicas, pg_dsn: str) -> None:  # type: ignore[no-untyped-def]
    stores = await replicas(5)

    assert await migrations(pg_dsn) == [(v, name) for v, name, _ in postgres.MIGRATIONS]
    assert [await store.schema_version() for store in stores] == [postgres.SCHEMA_VERSION] * 5
    assert await stores[0].migrate() == []  # idempotent: nothing left to apply
    await stores[0].append(delivery(), [cloudevent("a")])
    assert [e.id for e in await stores[4].list()] == ["a"]


async def test_a_journal_of_schema_2_is_migrated_with_its_rows(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "CREATE TABLE glue_schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in postgres.MIGRATIONS[:2]:
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO glue_schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
        delivery_id = await conn.fetchval(
            "INSERT INTO deliveries (received_at, transport, endpoint, format, headers, body)"
            " VALUES (1.5, 'http', 'e', 'cloudevents', '{\"x-a\": \"1\"}', '\\x7b7d') RETURNING id"
        )
        seq = await conn.fetchval(
            "INSERT INTO events (identity, id, source, type, received_at, status, updated_at, delivery_id,"
            " cloudevent) VALUES ('/s a', 'a', '/s', 't', 1.5, 'routed', 1.5, $1, '\\x7b7d') RETURNING seq",
            delivery_id,
        )
        await conn.execute(
            "INSERT INTO invocations (event_seq, route, handler, idempotency_key, params, state, due_at,"
            " created_at, updated_at)"
            " VALUES ($1, 'r', 'log', 'r /s a', '{\"n\": 1}', 'pending', 1.5, 1.5, 1.5)",
            seq,
        )
    finally:
        await conn.close()
    store = postgres.PostgresJournal(pg_config(pg_dsn))
    await store.open()
    try:
        assert store.applied == [v for v, _, _ in postgres.MIGRATIONS[2:]]
        assert (await store.delivery(delivery_id)).headers == {"x-a": "1"}  # type: ignore[union-attr]
        assert [i.params for i in await store.invocations()] == [{"n": 1}]
        await store.append(delivery(headers={"x-b": "\x00"}), [cloudevent("b")])
        assert [e.id for e in await store.list()] == ["a", "b"]
    finally:
        await store.close()


async def test_a_newer_schema_is_refused(pg_dsn: str) -> None:
    first = postgres.PostgresJournal(pg_config(pg_dsn))
    await first.open()
    await first.close()
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute("INSERT INTO glue_schema_migrations (version, name) VALUES (999, 'from the future')")
    await conn.close()

    store = postgres.PostgresJournal(pg_config(pg_dsn))
    with pytest.raises(journal.JournalUnavailable, match="schema version 999, newer than this glue"):
        await store.open()


async def test_a_database_not_in_utf8_is_refused(pg_dsn: str) -> None:
    server, _, _ = pg_dsn.partition("?")[0].rpartition("/")
    name = f"glue_latin1_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{server}/postgres")
    try:
        await admin.execute(
            f"CREATE DATABASE {name} ENCODING 'LATIN1' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
        )
        store = postgres.PostgresJournal(pg_config(f"{server}/{name}"))
        with pytest.raises(
            journal.JournalUnavailable, match="needs a database with UTF8 encoding, not LATIN1"
        ):
            await store.open()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_an_unreachable_database_is_unavailable_and_the_password_stays_secret() -> None:
    store = postgres.PostgresJournal(pg_config("postgresql://glue:s3cr3t-pw@127.0.0.1:1/glue"))
    with pytest.raises(journal.JournalUnavailable) as raised:
        await store.open()
    assert "s3cr3t-pw" not in str(raised.value)
    assert raised.value.__cause__ is None or "s3cr3t-pw" not in str(raised.value.__cause__)


async def test_the_dsn_can_come_from_a_file(pg_dsn: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "dsn").write_text(pg_dsn + "\n")
    store = postgres.PostgresJournal(
        settings.Journal.model_validate({"backend": "postgres", "dsn": {"file": str(tmp_path / "dsn")}})
    )
    await store.open()
    try:
        await store.ping()
        assert (await store.append(delivery(), [cloudevent("f")]))[0].new
    finally:
        await store.close()


async def test_a_new_journals_appends_probe_the_identity_index(pg_dsn: str) -> None:
    """The duplicate check of an append looks each identity up in its unique index, whatever the
    planner knows of the table. On a new journal PostgreSQL has no statistics yet (autovacuum analyses
    a minute later at the earliest), and a plan cached then that scans the whole events table for every
    group made a new journal three times slower, and slower as it grew (bench/scaleout.py)."""
    store = postgres.PostgresJournal(pg_config(pg_dsn))
    await store.open()
    try:
        await store.append(delivery(), [cloudevent("first")])  # the tables exist and are nearly empty
        loop = asyncio.get_running_loop()
        group = [
            postgres_intake.Pending(delivery(), [cloudevent(f"e{n}")], None, loop.create_future())
            for n in range(8)
        ]
        arguments, _, _ = postgres_intake.arguments(group)
        conn = await asyncpg.connect(pg_dsn)
        try:
            # What the journal's connections cache after a few executions of the statement.
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            plan = await (await conn.prepare(postgres_intake.APPEND)).explain(*arguments)
        finally:
            await conn.close()
    finally:
        await store.close()

    def scans(node: dict[str, object]) -> list[tuple[object, object]]:
        found = [(node["Node Type"], node.get("Relation Name"))]
        for child in node.get("Plans", []):  # type: ignore[attr-defined]
            found += scans(child)
        return found

    on_events = [kind for kind, relation in scans(plan[0]["Plan"]) if relation == "events"]
    assert on_events, "the plan does not read the events table"
    assert "Seq Scan" not in on_events, f"the events table is scanned whole: {on_events}"


# -- several replicas -----------------------------------------------------------------------------------


async def test_replicas_appending_the_same_events_store_each_once(replicas) -> None:  # type: ignore[no-untyped-def]
    stores = await replicas(3, groupCommitMs=1)
    ids = [f"e{i}" for i in range(60)]

    async def feed(store: postgres.PostgresJournal) -> list[journal.Appended]:
        results = await asyncio.gather(*(store.append(delivery(), [cloudevent(i)]) for i in ids))
        return [a for result in results for a in result]

    outcomes = await asyncio.gather(*(feed(store) for store in stores))

    new = [a.id for appended in outcomes for a in appended if a.new]
    assert sorted(new) == sorted(ids)  # each identity was new for exactly one replica
    stored = await stores[0].list(limit=1000)
    assert sorted(e.id for e in stored) == sorted(ids)
    # No delivery row was left behind without events by the replicas that lost a race.
    conn = await stores[0].pool.acquire()
    try:
        orphans = await conn.fetchval(
            "SELECT count(*) FROM deliveries d"
            " WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id)"
        )
    finally:
        await stores[0].pool.release(conn)
    assert orphans == 0


async def route_all(store: postgres.PostgresJournal, owner: str, now: float, key: str | None = None) -> None:
    claimed = await store.claim_events(owner, limit=1000, lease=30, now=now)
    await store.record_routing(
        owner,
        {
            e.seq: [
                journal.NewInvocation(
                    route="r",
                    handler="h",
                    idempotency_key=journal.idempotency_key(e.identity, "r"),
                    params={"id": e.id},
                    due_at=now,
                    ordering_key=key,
                )
            ]
            for e in claimed
        },
        now=now,
    )


async def test_replicas_claiming_at_once_never_share_an_invocation(replicas) -> None:  # type: ignore[no-untyped-def]
    stores = await replicas(3)
    await stores[0].append(delivery(), [cloudevent(str(i)) for i in range(200)])
    now = time.time()
    await route_all(stores[0], "router", now)

    async def drain(store: postgres.PostgresJournal, owner: str) -> list[int]:
        taken: list[int] = []
        while claimed := await store.claim_invocations(owner, limit=7, lease=30, now=now):
            taken.extend(item.id for item in claimed)
            await store.settle(owner, [journal.Outcome(item.id, "done") for item in claimed], now=now)
        return taken

    shares = await asyncio.gather(*(drain(store, f"replica-{n}") for n, store in enumerate(stores)))

    everything = [i for share in shares for i in share]
    assert len(everything) == len(set(everything)) == 200
    assert all(shares), "every replica got some of the work"
    assert len(await stores[0].invocations(state="done", limit=1000)) == 200


async def test_replicas_routing_at_once_never_share_an_event(replicas) -> None:  # type: ignore[no-untyped-def]
    stores = await replicas(3)
    await stores[0].append(delivery(), [cloudevent(str(i)) for i in range(90)])
    now = time.time()

    claims = await asyncio.gather(
        *(store.claim_events(f"router-{n}", limit=40, lease=30, now=now) for n, store in enumerate(stores))
    )

    seqs = [e.seq for claim in claims for e in claim]
    assert len(seqs) == len(set(seqs)) == 90


async def test_a_dead_replicas_lease_is_taken_over_after_it_expires(replicas) -> None:  # type: ignore[no-untyped-def]
    alive, dying = await replicas(2)
    await alive.append(delivery(), [cloudevent("a"), cloudevent("b")])
    now = time.time()
    await route_all(alive, "router", now)
    held = await dying.claim_invocations("dying", limit=10, lease=5, now=now)
    assert len(held) == 2
    await dying.close()  # it never settles: as if killed

    assert await alive.claim_invocations("alive", limit=10, lease=5, now=now + 4.9) == []
    taken = await alive.claim_invocations("alive", limit=10, lease=5, now=now + 5)
    assert sorted(i.id for i in taken) == sorted(i.id for i in held)
    assert [i.attempt for i in taken] == [2, 2]
    # The dead replica's late outcome no longer counts; the new owner's does.
    assert await alive.settle("dying", [journal.Outcome(taken[0].id, "done")], now=now + 6) == 0
    assert await alive.settle("alive", [journal.Outcome(i.id, "done") for i in taken], now=now + 6) == 2


async def test_a_dead_routers_events_are_routed_by_another_after_the_lease(replicas) -> None:  # type: ignore[no-untyped-def]
    alive, dying = await replicas(2)
    await alive.append(delivery(), [cloudevent("a")])
    now = time.time()
    assert len(await dying.claim_events("dying", limit=10, lease=5, now=now)) == 1

    assert await alive.claim_events("alive", limit=10, lease=5, now=now + 1) == []
    taken = await alive.claim_events("alive", limit=10, lease=5, now=now + 5)
    assert [e.id for e in taken] == ["a"]
    await dying.record_routing("dying", {taken[0].seq: []}, now=now + 6)  # too late: ignored
    assert (await alive.get("a")).status == "pending"


async def test_ordering_key_holds_across_replicas(replicas) -> None:  # type: ignore[no-untyped-def]
    one, two = await replicas(2)
    await one.append(delivery(), [cloudevent("first"), cloudevent("second")])
    now = time.time()
    await route_all(one, "router", now, key="model-a")

    first = await one.claim_invocations("one", limit=10, lease=30, now=now)
    assert [i.params["id"] for i in first] == ["first"]
    assert await two.claim_invocations("two", limit=10, lease=30, now=now) == []
    await one.settle("one", [journal.Outcome(first[0].id, "done")], now=now)
    second = await two.claim_invocations("two", limit=10, lease=30, now=now)
    assert [i.params["id"] for i in second] == ["second"]


async def test_the_journal_recovers_when_its_connections_are_killed(replicas, pg_dsn: str) -> None:  # type: ignore[no-untyped-def]
    (store,) = await replicas(1)
    await store.append(delivery(), [cloudevent("before")])
    admin = await asyncpg.connect(pg_dsn)
    try:
        # What a database restart or failover does to open connections.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'runtime-glue' AND datname = current_database()"
        )
    finally:
        await admin.close()

    # The write racing the loss may fail (unavailable: the caller answers 503), never silently.
    expected = ["before"]
    try:
        await store.append(delivery(), [cloudevent("during")])
        expected.append("during")
    except journal.JournalUnavailable:
        pass
    appended = await store.append(delivery(), [cloudevent("after")])  # the pool has reconnected

    assert appended[0].new
    assert [e.id for e in await store.list()] == [*expected, "after"]
    assert await store.backlog() == len(expected) + 1


async def test_a_role_that_may_not_create_tables_gets_a_clear_error(pg_dsn: str) -> None:
    role = f"glue_ro_{uuid.uuid4().hex[:8]}"
    schema = pg_dsn.rsplit("search_path=", 1)[1]
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN; GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        dsn = pg_dsn.replace("postgres@", f"{role}@", 1)
        store = postgres.PostgresJournal(pg_config(dsn))
        with pytest.raises(journal.JournalUnavailable, match="permission denied"):
            await store.open()
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')
        await admin.close()


@pytest.mark.parametrize(("durable", "execution_setting"), [(False, "off"), (True, "on")])
async def test_intake_always_waits_for_the_flush_execution_only_when_asked(
    pg_dsn: str, durable: bool, execution_setting: str
) -> None:
    store = postgres.PostgresJournal(pg_config(pg_dsn, durableExecutionCommits=durable))
    await store.open()
    try:

        async def setting(conn: asyncpg.Connection) -> str:
            return str(await conn.fetchval("SHOW synchronous_commit"))

        assert await store.run(setting) == "on"  # appends, rejects, operator actions
        assert await store.run(setting, execution=True) == execution_setting  # claims, routing, outcomes
    finally:
        await store.close()


async def test_a_group_the_database_refuses_fails_together_and_the_next_one_commits(  # type: ignore[no-untyped-def]
    replicas, pg_dsn: str
) -> None:
    """Every append of a group that fails gets JournalUnavailable (503) and nothing of it is stored;
    the writer goes on with the next group."""
    (store,) = await replicas(1)
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.id = 'poison' THEN RAISE EXCEPTION 'poison refused'; END IF; RETURN NEW; END $$;"
            " CREATE TRIGGER refuse_poison BEFORE INSERT ON events"
            " FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
        )
    finally:
        await admin.close()

    # Appends made in one turn of the loop share one group commit.
    outcomes = await asyncio.gather(
        store.append(delivery(), [cloudevent("good")]),
        store.append(delivery(), [cloudevent("poison")]),
        return_exceptions=True,
    )

    assert [type(outcome) for outcome in outcomes] == [journal.JournalUnavailable] * 2
    assert "poison refused" in str(outcomes[0])
    assert await store.list() == []
    (after,) = await asyncio.wait_for(store.append(delivery(), [cloudevent("after")]), 10)  # writer alive
    assert after.new
    assert [e.id for e in await store.list()] == ["after"]
    admin = await asyncpg.connect(pg_dsn)
    try:  # the failed group's deliveries went with it
        assert await admin.fetchval("SELECT count(*) FROM deliveries") == 1
    finally:
        await admin.close()
