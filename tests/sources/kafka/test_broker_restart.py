"""The Kafka broker restarts mid-stream: Tansu stopped while glue is consuming a topic, started again on
the same port a moment later, with its log kept in a bucket (Tansu's S3 storage on moto's S3 server:
the memory storage would lose the topic with the process).

What an operator sees: ``glue_source_up{source="kafka"}`` drops to 0 during the gap and comes back
to 1, with one log line each way. What happens to the records: consumption resumes by itself, every
record the broker acknowledged is journaled, and the handler runs once per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiokafka
import boto3
import pytest
from moto.server import ThreadedMotoServer
from structlog.testing import capture_logs

from tests import support
from tests.sources.kafka.conftest import StartDaemon
from tests.sources.kafka.support import (
    Broker,
    create_topic,
    kafka_config,
    metric,
    produce,
    start_broker,
    stop_broker,
    wait_for,
)
from tests.sources.kafka.test_delivery import binary_ce

pytestmark = pytest.mark.slow

counting = support.Counting()
registry, handled = counting.registry, counting.handled


@pytest.fixture
def bucket_env() -> Iterator[dict[str, str]]:
    """moto's S3 server with a ``tansu`` bucket, and the environment Tansu's S3 storage reads."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    keys = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    boto3.client("s3", endpoint_url=endpoint, **keys).create_bucket(Bucket="tansu")
    try:
        yield {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
        }
    finally:
        server.stop()


@pytest.fixture
def durable_broker(tmp_path: Path, bucket_env: dict[str, str]) -> Iterator[list[Broker]]:
    """A Tansu broker on S3 storage; the list holds the running one (the test restarts it)."""
    running = [start_broker(tmp_path, storage="s3://tansu/", env_extra=bucket_env)]
    yield running
    stop_broker(running[-1])


def up() -> float:
    return metric("glue_source_up", source="kafka")


async def test_a_broker_restart_mid_stream_loses_nothing_and_handles_each_record_once(
    tmp_path: Path, durable_broker: list[Broker], bucket_env: dict[str, str], start_daemon: StartDaemon
) -> None:
    handled.clear()
    broker = durable_broker[0]
    await create_topic(broker.bootstrap, "orders", partitions=2)
    producer = aiokafka.AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, enable_idempotence=False, linger_ms=2
    )
    await producer.start()
    try:
        await produce(producer, "orders", [binary_ce(n) for n in range(600)])
    finally:
        await producer.stop()

    with capture_logs() as logs:
        daemon = await start_daemon(
            kafka_config(broker.bootstrap, [{"name": "orders", "format": "cloudevents"}], maxBatch=20),
            registry=registry,
            routes=[{"name": "count", "handler": "test.count"}],
            execution={"pollSeconds": 0.05},
        )
        await wait_for(lambda: _more_than(20), what="consumption under way")
        assert up() == 1

        # Mid-stream: the broker goes away and comes back on the same address with the same log.
        stop_broker(broker)
        at_stop = len(handled)
        await wait_for(lambda: _is_down(), within=30, what="glue_source_up 0")
        await asyncio.sleep(1)
        port = int(broker.bootstrap.rsplit(":", 1)[1])
        broker = start_broker(tmp_path, port=port, storage="s3://tansu/", env_extra=bucket_env)
        durable_broker.append(broker)
        await wait_for(lambda: _is_up(), within=30, what="glue_source_up 1 again")

        producer = aiokafka.AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, enable_idempotence=False, linger_ms=2
        )
        await producer.start()
        try:
            await produce(producer, "orders", [binary_ce(n) for n in range(600, 800)])
        finally:
            await producer.stop()
        await wait_for(lambda: _handled_all(800), within=60, what="every record handled")
        stored = {row.id for row in await daemon.journal.list(limit=10_000)}
        await daemon.stop()

    assert at_stop < 600, "the broker stopped after the stream was consumed: not mid-stream"
    assert sorted(handled, key=int) == [str(n) for n in range(800)], "a record lost or handled twice"
    assert stored == {str(n) for n in range(800)}
    events_logged = [line["event"] for line in logs]
    assert "kafka broker unreachable; reconnecting" in events_logged
    assert "kafka broker reachable again" in events_logged
    assert up() == 0  # stopped


async def _more_than(n: int) -> bool:
    return len(handled) > n


async def _is_down() -> bool:
    return up() == 0


async def _is_up() -> bool:
    return up() == 1


async def _handled_all(n: int) -> bool:
    return len(set(handled)) >= n
