"""Kafka output: settled invocations published as CloudEvents (Kafka binding, binary mode) to a topic,
read back by a plain consumer and decoded with the binding, as a downstream system would."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiokafka
import orjson

import glue
from glue import events, formats, journal, settings
from glue.sources import kafka
from tests import support
from tests.journal.test_journal_contract import new
from tests.sources.kafka.conftest import StartDaemon
from tests.sources.kafka.support import Broker, create_topic, kafka_config, metric, produce
from tests.sources.kafka.test_delivery import binary_ce

registry = glue.Registry()


@glue.handler("test.ship", registry=registry)
async def ship(*, event: events.CloudEvent, ctx: glue.Context, **kwargs: Any) -> glue.Plan | None:
    """Ships even orders; odd ones cannot be shipped."""
    if ctx.dry_run:
        return glue.Plan(summary="ship")
    if orjson.loads(orjson.dumps(event.get_data()))["n"] % 2:
        raise glue.PermanentError("odd orders cannot ship")
    return None


async def read(broker: Broker, topic: str, count: int) -> list[events.CloudEvent]:
    consumer = aiokafka.AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id="downstream",
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=400,
    )
    await consumer.start()
    received: list[events.CloudEvent] = []
    try:
        while len(received) < count:
            for records in (await consumer.getmany(timeout_ms=20_000)).values():
                for record in records:
                    headers = {name: value.decode() for name, value in record.headers}
                    delivery = events.Delivery(
                        "kafka", topic, "cloudevents", headers, record.value, key=record.key
                    )
                    received.extend(formats.decode(delivery))
    finally:
        await consumer.stop()
    return received


async def test_dead_letters_and_outcomes_are_published_as_cloudevents(
    broker: Broker, producer: aiokafka.AIOKafkaProducer, start_daemon: StartDaemon
) -> None:
    await create_topic(broker.bootstrap, "orders")
    await create_topic(broker.bootstrap, "glue-outcomes")
    dead = metric("glue_kafka_published_total", state="dead")
    await produce(producer, "orders", [binary_ce(n) for n in range(6)])
    await start_daemon(
        kafka_config(
            broker.bootstrap,
            [{"name": "orders", "format": "cloudevents"}],
            output={"topic": "glue-outcomes", "outcomes": True, "pollSeconds": 0.1},
        ),
        registry=registry,
        routes=[
            {"name": "ship", "handler": "test.ship"},
            {"name": "shadow", "handler": "test.ship", "dryRun": True},
        ],
        execution={"pollSeconds": 0.05},
    )
    published = await read(broker, "glue-outcomes", 12)

    planned = [e for e in published if e.get_source() == "runtime-glue/routes/shadow"]
    assert len(planned) == 6, "a dry-run route's invocations end planned, and are published"
    for event in planned:
        assert event.get_type() == "io.runtime-glue.invocation.planned"
        assert support.json_data(event)["plan"] == {"summary": "ship", "calls": []}
    published = [e for e in published if e not in planned]
    by_subject = {str(e.get_subject()): e for e in published}
    assert sorted(by_subject) == sorted(f"/orders {n}" for n in range(6))
    for n in range(6):
        event = by_subject[f"/orders {n}"]
        data = support.json_data(event)
        assert event.get_source() == "runtime-glue/routes/ship"
        assert event.get_extension("partitionkey") == f"/orders {n}"
        assert data["route"] == "ship" and data["handler"] == "test.ship"
        assert data["event"]["id"] == str(n)
        if n % 2:
            assert event.get_type() == "io.runtime-glue.invocation.dead"
            assert "odd orders cannot ship" in data["error"]
        else:
            assert event.get_type() == "io.runtime-glue.invocation.done"
            assert data["error"] is None
    assert len({e.get_id() for e in published + planned}) == 12
    assert metric("glue_kafka_published_total", state="dead") - dead == 3


async def test_an_outcome_committed_after_a_sweep_read_is_still_published(
    broker: Broker, tmp_path: Path
) -> None:
    """A settle is stamped when it is handed to the journal and seen when its commit lands (SQLite
    settles ride the next intake group). One stamped before a sweep began and committed after that
    sweep read is published by a later sweep, once."""
    await create_topic(broker.bootstrap, "late-outcomes")
    store = journal.create(settings.Journal(backend="sqlite", path=tmp_path / "journal.db"))
    await store.open()
    config = settings.Kafka.model_validate(
        kafka_config(
            broker.bootstrap,
            [{"name": "unused", "format": "cloudevents"}],
            output={"topic": "late-outcomes", "outcomes": True, "pollSeconds": 0.05},
        )
    )
    output = kafka.KafkaOutput(config, store)
    try:
        event = events.CloudEvent(
            {"id": "7", "source": "/orders", "type": "com.example.order.created"}, {"n": 7}
        )
        await store.append(events.Delivery("kafka", "orders", "cloudevents", {}, b"{}"), [event])
        (claimed,) = await store.claim_events("w", limit=1, lease=30, now=time.time())
        await store.record_routing("w", {claimed.seq: [new("ship", claimed.identity)]}, now=time.time())
        (running,) = await store.claim_invocations("w", limit=1, lease=30, now=time.time())
        await output.start()
        await asyncio.sleep(0.5)  # sweeps run every 50 ms and find nothing settled
        stamped = time.time() - 1.0  # stamped a second before its commit landed
        await store.settle("w", [journal.Outcome(running.id, "done")], now=stamped)
        async with asyncio.timeout(15):
            (published,) = await read(broker, "late-outcomes", 1)
        assert published.get_type() == "io.runtime-glue.invocation.done"
        assert await output.sweep() == 0, "published once"
    finally:
        await output.stop()
        await store.close()
