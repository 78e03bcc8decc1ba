"""One object event seen through MinIO's webhook target, its Kafka target and the listen stream is one
journaled event: a real daemon (HTTP intake on loopback, SQLite journal, the Kafka source consuming from
a Tansu broker, the listen source against the ListenBucketNotification double). The Kafka record is what
MinIO's Kafka target sends (key ``bucket/object``, no headers, the webhook envelope as value,
formats.md section 3)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import aiohttp
import aiokafka
import orjson

from tests.minio_access import connection
from tests.sources.kafka import support as kafka_support
from tests.sources.minio_listen.listen_double import ListenDouble, record
from tests.support import base_url, daemon_settings, eventually, json_data, running


async def test_webhook_kafka_and_listen_yield_one_event(
    listen_double: ListenDouble,
    credential_files: dict[str, Path],
    tmp_path: Path,
    broker: kafka_support.Broker,
) -> None:
    bucket = "models-" + secrets.token_hex(4)
    key = "llm/llama 3+/weights 100%.safetensors"  # space, plus and percent: escaped differently per path
    escaped = record(bucket, key, escaped=True)
    target_body = orjson.dumps(
        {"EventName": "s3:ObjectCreated:Put", "Key": f"{bucket}/{key}", "Records": [escaped]}
    )
    release = asyncio.Event()
    listen_double.scripts.append([("status", 503, "SlowDown")])
    listen_double.scripts.append(
        [("wait", release), ("line", orjson.dumps({"Records": [record(bucket, key)]})), ("hold",)]
    )
    await kafka_support.create_topic(broker.bootstrap, "minio-events")

    def duplicates() -> float:
        return kafka_support.metric("glue_kafka_records_total", topic="minio-events", outcome="duplicate")

    duplicates_before = duplicates()
    config = daemon_settings(
        tmp_path,
        endpoints=[{"name": "minio", "path": "/minio", "format": "minio"}],
        sources={
            "kafka": kafka_support.kafka_config(
                broker.bootstrap, [{"name": "minio-events", "format": "minio"}]
            ),
            "minio": connection(
                listen_double.endpoint,
                credential_files,
                pingSeconds=1,
                reconnectInitial=0.05,
                reconnectMax=0.1,
                buckets=[{"name": bucket, "events": ["s3:ObjectCreated:*"]}],
            ),
        },
    )
    async with running(config) as daemon:
        base = base_url(daemon)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 503
                assert f"minio listen stream down: {bucket}" in await response.text()

            async with http.post(
                f"{base}/minio", data=target_body, headers={"Content-Type": "application/json"}
            ) as response:
                assert response.status == 202

            producer = aiokafka.AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
            await producer.start()
            try:
                await kafka_support.produce(
                    producer, "minio-events", [(f"{bucket}/{key}".encode(), target_body, [])]
                )
            finally:
                await producer.stop()

            async def consumed() -> bool:
                return duplicates() > duplicates_before

            await eventually(consumed)

            async def ready() -> bool:
                async with http.get(f"{base}/readyz") as response:
                    return response.status == 200

            await eventually(ready)
            release.set()

            async def listened() -> bool:
                async with http.get(f"{base}/metrics") as response:
                    text = await response.text()
                return f'glue_minio_listen_lines_total{{bucket="{bucket}",outcome="duplicate"}} 1.0' in text

            await eventually(listened)
        stored = await daemon.journal.list()
        assert len(stored) == 1
        assert stored[0].event().get_subject() == key


async def test_two_tag_changes_on_one_version_are_two_events_once_each_across_paths(
    listen_double: ListenDouble, credential_files: dict[str, Path], tmp_path: Path
) -> None:
    """Two PutTagging requests on one object version, each seen on the webhook target and the listen
    stream. MinIO gives both the object's ModTime as sequencer (cmd/event-notification.go ToEvent) and
    builds each path's record with its own eventTime; each request has its own x-amz-request-id. The
    user sees two journaled events, and the listen copies counted as duplicates."""
    bucket = "models-" + secrets.token_hex(4)
    key = "llm/llama 3/weights.safetensors"
    name = "s3:ObjectCreated:PutTagging"
    requests = [
        ("187C3D4A5B6C7D90", "2025-11-28T00:01:03.100Z"),
        ("187C3D4E0A1B2C3D", "2025-11-28T00:01:09.700Z"),
    ]
    release = asyncio.Event()
    listen_double.scripts.append(
        [("wait", release)]
        + [
            (
                "line",
                orjson.dumps(
                    {"Records": [record(bucket, key, event_name=name, request_id=rid, event_time=at)]}
                ),
            )
            for rid, at in requests
        ]
        + [("hold",)]
    )
    config = daemon_settings(
        tmp_path,
        endpoints=[{"name": "minio", "path": "/minio", "format": "minio"}],
        sources={
            "minio": connection(
                listen_double.endpoint,
                credential_files,
                pingSeconds=1,
                reconnectInitial=0.05,
                reconnectMax=0.1,
                buckets=[{"name": bucket, "events": ["s3:ObjectCreated:*"]}],
            ),
        },
    )
    async with running(config) as daemon:
        base = base_url(daemon)
        async with aiohttp.ClientSession() as http:
            for rid, at in requests:
                target_time = at.replace("00Z", "01Z")  # the targets' record: another clock reading
                escaped = record(
                    bucket, key, event_name=name, escaped=True, request_id=rid, event_time=target_time
                )
                body = orjson.dumps({"EventName": name, "Key": f"{bucket}/{key}", "Records": [escaped]})
                async with http.post(
                    f"{base}/minio", data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    assert response.status == 202
            release.set()

            async def listened() -> bool:
                async with http.get(f"{base}/metrics") as response:
                    text = await response.text()
                return f'glue_minio_listen_lines_total{{bucket="{bucket}",outcome="duplicate"}} 2.0' in text

            await eventually(listened)
        stored = await daemon.journal.list()
        assert len(stored) == 2
        assert sorted(json_data(item.event())["requestId"] for item in stored) == [rid for rid, _ in requests]
