"""At least once over a real broker: offsets follow the journal, poison records are kept and skipped,
back-pressure holds offsets back, consumer groups split partitions without double handling."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path

import aiokafka
import orjson

from glue import app, events
from glue.sources import kafka
from tests.sources.kafka.conftest import StartDaemon
from tests.sources.kafka.support import (
    Broker,
    Record,
    committed,
    counted,
    create_topic,
    event_count,
    kafka_config,
    metric,
    produce,
    wait_for,
)


def binary_ce(n: int, source: str = "/orders") -> Record:
    """A binary-mode CloudEvents record (Kafka binding: ce_ headers, content-type = datacontenttype)."""
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(n).encode()),
        ("ce_source", source.encode()),
        ("ce_type", b"com.example.order.created"),
        ("content-type", b"application/json"),
    ]
    return (f"order-{n}".encode(), orjson.dumps({"n": n}), headers)


def source_of(daemon: app.Daemon) -> kafka.KafkaSource:
    assert daemon.pipeline is not None
    (source,) = [c for c in daemon.pipeline.sources if isinstance(c, kafka.KafkaSource)]
    return source


def assignment(daemon: app.Daemon) -> set[int]:
    consumer = source_of(daemon).consumer
    return {tp.partition for tp in consumer.assignment()} if consumer is not None else set()


async def test_poison_records_are_rejected_visibly_and_the_partition_keeps_flowing(
    broker: Broker, producer: aiokafka.AIOKafkaProducer, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    await create_topic(broker.bootstrap, "orders")
    before = metric("glue_kafka_records_total", topic="orders", outcome="rejected")
    poison: list[Record] = [
        (
            None,
            b'{"n": 1}',
            [("ce_specversion", b"1.0"), ("ce_id", b"x"), ("ce_source", b"/orders")],
        ),  # no type
        (None, b'{"specversion": "1.0", "id": ', [("content-type", b"application/cloudevents+json")]),
        (None, b'{"just": "json"}', [("content-type", b"application/json")]),  # not a CloudEvent at all
        (
            None,
            b"\xff\xfe binary",
            [("ce_specversion", b"0.3"), ("ce_id", b"y"), ("ce_source", b"/o"), ("ce_type", b"t")],
        ),
    ]
    await produce(producer, "orders", [binary_ce(1), *poison[:2], binary_ce(2), *poison[2:], binary_ce(3)])

    daemon = await start_daemon(kafka_config(broker.bootstrap, [{"name": "orders", "format": "cloudevents"}]))

    async def all_done() -> bool:
        return (await committed(broker.bootstrap, "glue-test", "orders"))[0] == 7

    await wait_for(all_done, what="offset 7 committed")
    assert sorted(e.id for e in await daemon.journal.list()) == ["1", "2", "3"]
    rejected = sorted(await daemon.journal.rejected(), key=lambda r: r.delivery_id)
    assert [r.delivery.body for r in rejected] == [value for _, value, _ in poison]  # raw bytes kept
    assert all(r.delivery.endpoint == "orders" and r.delivery.transport == "kafka" for r in rejected)
    reasons = [r.reason for r in rejected]
    assert "missing required attribute 'type'" in reasons[0]
    assert "JSON" in reasons[1]
    assert "no ce_ headers: not a CloudEvent" in reasons[2]
    assert "specversion" in reasons[3]
    assert metric("glue_kafka_records_total", topic="orders", outcome="rejected") - before == 4

    # The operator sees them with `glue dlq rejected` (JSON lines when not on a terminal).
    config = tmp_path / "glue.yaml"
    config.write_text(f"journal: {{path: {tmp_path / 'journal.db'}}}\n")
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("glue")),
        "dlq",
        "rejected",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert [row["reason"] for row in reversed(rows)] == reasons
    assert {(row["transport"], row["endpoint"]) for row in rows} == {("kafka", "orders")}
    assert events.Delivery.from_record(rows[-1]["record"]).body == poison[0][1]


async def test_offsets_wait_for_the_journal_under_backpressure(
    broker: Broker, producer: aiokafka.AIOKafkaProducer, start_daemon: StartDaemon
) -> None:
    """With the backlog bound reached, records are not journaled, so their offsets are not committed;
    once the backlog drains, consumption resumes where it stopped."""
    await create_topic(broker.bootstrap, "orders")
    await produce(producer, "orders", [binary_ce(n) for n in range(20)])
    retried = metric("glue_kafka_records_total", topic="orders", outcome="retried")
    daemon = await start_daemon(
        kafka_config(broker.bootstrap, [{"name": "orders", "format": "cloudevents"}], maxBatch=4),
        server={"host": "127.0.0.1", "port": 0, "maxBacklog": 8},
        execution={"enabled": False},  # this test is the router
    )

    async def held_back() -> bool:
        return metric("glue_kafka_records_total", topic="orders", outcome="retried") > retried

    await wait_for(held_back, what="records held back")
    await asyncio.sleep(0.5)
    journaled = await event_count(daemon.journal)
    assert 8 <= journaled < 20
    offset = (await committed(broker.bootstrap, "glue-test", "orders"))[0]
    assert offset is not None and offset <= journaled  # never past what is journaled

    async def route() -> None:
        """Act as the router: take every pending event (no route matches), which drains the backlog."""
        while True:
            claimed = await daemon.journal.claim_events("test-router", limit=100, lease=30, now=time.time())
            await daemon.journal.record_routing("test-router", {e.seq: [] for e in claimed}, now=time.time())
            await asyncio.sleep(0.05)

    async def all_done() -> bool:
        return (await committed(broker.bootstrap, "glue-test", "orders"))[0] == 20

    router = asyncio.create_task(route())
    try:
        await wait_for(all_done, what="offset 20 committed")
    finally:
        router.cancel()
    assert sorted(int(e.id) for e in await daemon.journal.list(limit=100)) == list(range(20))


async def test_restart_resumes_from_the_committed_offset_without_duplicates(
    broker: Broker, producer: aiokafka.AIOKafkaProducer, start_daemon: StartDaemon
) -> None:
    await create_topic(broker.bootstrap, "orders", partitions=2)
    config = kafka_config(broker.bootstrap, [{"name": "orders", "format": "cloudevents"}])
    duplicates = metric("glue_kafka_records_total", topic="orders", outcome="duplicate")
    await produce(producer, "orders", [binary_ce(n) for n in range(100)])
    first = await start_daemon(config)
    await wait_for(lambda: _count_is(first, 100), what="100 events")
    await first.stop()  # graceful: the batch in hand is committed before leaving the group

    await produce(producer, "orders", [binary_ce(n) for n in range(100, 150)])
    second = await start_daemon(config)
    await wait_for(lambda: _count_is(second, 150), what="150 events")
    offsets = await committed(broker.bootstrap, "glue-test", "orders", partitions=2)
    assert sum(o or 0 for o in offsets.values()) == 150
    assert metric("glue_kafka_records_total", topic="orders", outcome="duplicate") == duplicates


async def _count_is(daemon: app.Daemon, n: int) -> bool:
    return await event_count(daemon.journal) == n


async def _count_more(daemon: app.Daemon, n: int) -> bool:
    return await event_count(daemon.journal) > n


async def test_two_daemons_in_one_group_split_partitions_and_handle_each_record_once(
    broker: Broker, producer: aiokafka.AIOKafkaProducer, start_daemon: StartDaemon
) -> None:
    await create_topic(broker.bootstrap, "orders", partitions=4)
    config = kafka_config(broker.bootstrap, [{"name": "orders", "format": "cloudevents"}])
    journaled = metric("glue_kafka_records_total", topic="orders", outcome="journaled")
    duplicates = metric("glue_kafka_records_total", topic="orders", outcome="duplicate")
    a = await start_daemon(config)
    b = await start_daemon(config)

    async def split() -> bool:
        left, right = assignment(a), assignment(b)
        return bool(left) and bool(right) and not (left & right) and (left | right) == {0, 1, 2, 3}

    await wait_for(split, what="the partitions split between both daemons")
    await produce(producer, "orders", [binary_ce(n) for n in range(400)])
    await wait_for(lambda: _count_is(a, 400), what="400 events")
    await counted("glue_kafka_records_total", journaled, 400, topic="orders", outcome="journaled")
    assert metric("glue_kafka_records_total", topic="orders", outcome="journaled") - journaled == 400
    assert metric("glue_kafka_records_total", topic="orders", outcome="duplicate") == duplicates

    # A third daemon joins mid-stream: the busy members commit their batch in hand before giving up
    # partitions, so nothing is read twice.
    await produce(producer, "orders", [binary_ce(n) for n in range(400, 3400)])
    await wait_for(lambda: _count_more(a, 600), what="consumption under way")
    c = await start_daemon(config)
    await wait_for(lambda: _count_is(a, 3400), what="3400 events")

    async def three_way() -> bool:
        parts = [assignment(d) for d in (a, b, c)]
        return all(parts) and sum(len(p) for p in parts) == 4 and set().union(*parts) == {0, 1, 2, 3}

    await wait_for(three_way, what="the partitions split between three daemons")
    assert metric("glue_kafka_records_total", topic="orders", outcome="duplicate") == duplicates

    # Two daemons leave mid-stream: each commits what it journaled; the last one takes all partitions.
    sending = asyncio.create_task(stream(producer, 3400, 3800))
    await asyncio.sleep(0.1)
    await b.stop()
    await c.stop()
    await sending
    await wait_for(lambda: _count_is(a, 3800), what="3800 events")
    await wait_for(lambda: _committed_total(broker, 4, 3800), what="all 3800 offsets committed")
    assert assignment(a) == {0, 1, 2, 3}
    assert sorted(int(e.id) for e in await a.journal.list(limit=5000)) == list(range(3800))
    assert metric("glue_kafka_records_total", topic="orders", outcome="journaled") - journaled == 3800
    assert metric("glue_kafka_records_total", topic="orders", outcome="duplicate") == duplicates


async def stream(producer: aiokafka.AIOKafkaProducer, start: int, stop: int) -> None:
    """Produce records start..stop-1 over about half a second, as a live producer would."""
    for chunk in range(start, stop, 40):
        await produce(producer, "orders", [binary_ce(n) for n in range(chunk, min(stop, chunk + 40))])
        await asyncio.sleep(0.05)


async def _committed_total(broker: Broker, partitions: int, total: int) -> bool:
    offsets = await committed(broker.bootstrap, "glue-test", "orders", partitions=partitions)
    return sum(o or 0 for o in offsets.values()) == total


async def test_redelivered_records_are_recognised_and_not_journaled_again(
    broker: Broker, producer: aiokafka.AIOKafkaProducer, start_daemon: StartDaemon
) -> None:
    """A second consumer group reads the whole topic again (as after a lost commit): every record is
    recognised by its event identity; the journal gains nothing."""
    await create_topic(broker.bootstrap, "orders", partitions=2)
    await produce(producer, "orders", [binary_ce(n) for n in range(50)])
    # The producer retried one send: the same event twice on the topic.
    await produce(producer, "orders", [binary_ce(7)])
    topics = [{"name": "orders", "format": "cloudevents"}]
    duplicates = metric("glue_kafka_records_total", topic="orders", outcome="duplicate")
    first = await start_daemon(kafka_config(broker.bootstrap, topics))
    await wait_for(lambda: _committed_total(broker, 2, 51), what="51 offsets committed")
    assert await event_count(first.journal) == 50
    assert metric("glue_kafka_records_total", topic="orders", outcome="duplicate") - duplicates == 1
    await first.stop()

    second = await start_daemon(kafka_config(broker.bootstrap, topics, groupId="glue-replay"))

    async def replayed() -> bool:
        offsets = await committed(broker.bootstrap, "glue-replay", "orders", partitions=2)
        return sum(o or 0 for o in offsets.values()) == 51

    await wait_for(replayed, what="the second group at the end")
    assert await event_count(second.journal) == 50
    assert metric("glue_kafka_records_total", topic="orders", outcome="duplicate") - duplicates == 52


async def test_a_rebalance_waits_for_the_batch_in_hand(
    broker: Broker, producer: aiokafka.AIOKafkaProducer, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """A member joins while the others are stuck journaling a batch (another process holds the SQLite
    write lock). The rebalance completes only once that batch is journaled and committed, so the
    newcomer (journaling into its own file here) never reads a record the others journaled."""
    await create_topic(broker.bootstrap, "orders", partitions=4)
    config = kafka_config(broker.bootstrap, [{"name": "orders", "format": "cloudevents"}])
    a = await start_daemon(config)
    await produce(producer, "orders", [binary_ce(n) for n in range(100)])
    await wait_for(lambda: _count_is(a, 100), what="100 events")

    lock = sqlite3.connect(tmp_path / "journal.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # an operator's `sqlite3 journal.db` holding the write lock
    try:
        await produce(producer, "orders", [binary_ce(n) for n in range(100, 400)])
        await asyncio.sleep(0.5)  # a has fetched them and waits for the journal
        joining = asyncio.create_task(start_daemon(config, journal={"path": str(tmp_path / "other.db")}))
        await asyncio.sleep(3)  # Tansu completes a join in about a second
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    c = await joining
    await produce(producer, "orders", [binary_ce(n) for n in range(400, 600)])
    await wait_for(lambda: _committed_total(broker, 4, 600), within=30, what="all 600 offsets committed")
    mine = {e.id for e in await a.journal.list(limit=1000)}
    theirs = {e.id for e in await c.journal.list(limit=1000)}
    assert assignment(c), "the newcomer got partitions"
    assert mine & theirs == set()  # nobody journaled a record the other had
    assert mine | theirs == {str(n) for n in range(600)}


async def test_scale_out_on_a_postgresql_journal(
    broker: Broker, producer: aiokafka.AIOKafkaProducer, start_daemon: StartDaemon, pg_dsn: str
) -> None:
    """The documented scale-out: replicas in one consumer group sharing a PostgreSQL journal."""
    await create_topic(broker.bootstrap, "orders", partitions=4)
    config = kafka_config(broker.bootstrap, [{"name": "orders", "format": "cloudevents"}])
    store = {"backend": "postgres", "dsn": {"value": pg_dsn}}
    duplicates = metric("glue_kafka_records_total", topic="orders", outcome="duplicate")
    a = await start_daemon(config, journal=store)
    b = await start_daemon(config, journal=store)

    async def split() -> bool:
        left, right = assignment(a), assignment(b)
        return bool(left) and bool(right) and not (left & right) and (left | right) == {0, 1, 2, 3}

    await wait_for(split, what="the partitions split between both replicas")
    await produce(producer, "orders", [binary_ce(n) for n in range(1000)])
    await wait_for(lambda: _committed_total(broker, 4, 1000), what="all 1000 offsets committed")
    assert sorted(int(e.id) for e in await b.journal.list(limit=2000)) == list(range(1000))
    assert metric("glue_kafka_records_total", topic="orders", outcome="duplicate") == duplicates
