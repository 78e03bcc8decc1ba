"""`glue run` killed with SIGKILL mid-stream, then restarted: every record journaled, none twice.

The daemon is a real subprocess (``glue run --config F``) consuming from a real broker; the test reads
the journal file and the daemon's /metrics endpoint, as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import aiokafka
import pytest
import yaml

from glue import journal, settings
from tests import support
from tests.sources.kafka.support import Broker, committed, create_topic, free_port, produce, wait_for
from tests.sources.kafka.test_delivery import binary_ce

pytestmark = pytest.mark.slow

TOTAL = 3000
PARTITIONS = 3


def write_config(path: Path, broker: Broker, port: int) -> Path:
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "journal": {"path": str(path.parent / "journal.db")},
        "logging": {"level": "warning", "format": "json"},
        "sources": {
            "kafka": {
                "bootstrapServers": broker.bootstrap,
                "groupId": "glue-crash",
                "topics": [{"name": "orders", "format": "cloudevents"}],
                "sessionTimeoutMs": 2000,
                "maxBatch": 200,
            }
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def test_sigkill_mid_stream_then_restart_journals_every_record_once(
    broker: Broker, producer: aiokafka.AIOKafkaProducer, tmp_path: Path
) -> None:
    await create_topic(broker.bootstrap, "orders", partitions=PARTITIONS)
    port = free_port()
    config = write_config(tmp_path / "glue.yaml", broker, port)
    log = tmp_path / "glue.log"
    store = journal.create(settings.Journal(path=tmp_path / "journal.db"))
    await store.open()

    async def journaled() -> int:
        return len(await store.list(limit=TOTAL * 2))

    async def stream() -> None:
        for start in range(0, TOTAL, 100):
            await produce(producer, "orders", [binary_ce(n) for n in range(start, start + 100)])
            await asyncio.sleep(0.05)

    first = await support.spawn_glue(config, log)
    sending = asyncio.create_task(asyncio.sleep(0))
    try:
        await wait_for(lambda: _up(port), within=30, what="the first daemon up")  # it has joined the group
        sending = asyncio.create_task(stream())
        await wait_for(lambda: _more_than(journaled, 300), within=30, what="the first daemon journaling")
        os.kill(first.pid, signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        at_kill = await journaled()
        assert not sending.done(), "the kill must land mid-stream"
        assert at_kill < TOTAL

        second = await support.spawn_glue(config, log)
        try:
            await sending

            async def all_committed() -> bool:
                offsets = await committed(broker.bootstrap, "glue-crash", "orders", PARTITIONS)
                return sum(o or 0 for o in offsets.values()) == TOTAL

            await wait_for(all_committed, within=60, what=f"{TOTAL} offsets committed")
            events = await store.list(limit=TOTAL * 2)
            assert sorted(int(e.id) for e in events) == list(range(TOTAL))  # all there, none twice

            metrics = await support.scrape(port)
            new = metrics['glue_kafka_records_total{outcome="journaled",topic="orders"}']
            again = metrics.get('glue_kafka_records_total{outcome="duplicate",topic="orders"}', 0.0)
            # The restarted daemon took as new exactly what the killed one had not journaled; the rest
            # of what it read again (uncommitted when the first died) it recognised as duplicates.
            assert new == TOTAL - at_kill
            assert new + again >= TOTAL - at_kill
            lags = [v for k, v in metrics.items() if k.startswith("glue_kafka_consumer_lag{")]
            assert len(lags) == PARTITIONS
            await wait_for(lambda: _lag_zero(port), within=10, what="consumer lag 0")
            assert metrics["glue_kafka_commit_seconds_count"] > 0
        finally:
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 30) == 0
    finally:
        sending.cancel()
        if first.returncode is None:
            first.kill()
            await first.wait()
        await store.close()
    assert "Traceback" not in log.read_text()


async def _more_than(count: object, n: int) -> bool:
    assert callable(count)
    value = await count()
    assert isinstance(value, int)
    return value > n


async def _up(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def _lag_zero(port: int) -> bool:
    metrics = await support.scrape(port)
    lags = [v for k, v in metrics.items() if k.startswith("glue_kafka_consumer_lag{")]
    return bool(lags) and all(v == 0 for v in lags)
