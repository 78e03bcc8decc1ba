"""Each topic format over a real broker: the events reach the journal with their documented identity.

Record shapes follow the upstream formats: the CloudEvents Kafka binding (binary
``ce_`` headers and structured ``application/cloudevents+json``, key <-> ``partitionkey``), MinIO's
Kafka target (internal/event/target/kafka.go: key ``bucket/object``, value ``{EventName, Key,
Records}``, no headers) and Argo Events' Kafka trigger (pkg/sensors/triggers/kafka: the payload JSON,
configured headers only, no ``ce_`` headers).
"""

from __future__ import annotations

import json

import aiokafka
import orjson

from glue import app, events
from tests.sources.kafka.conftest import StartDaemon
from tests.sources.kafka.support import (
    Broker,
    Record,
    counted,
    create_topic,
    event_count,
    kafka_config,
    metric,
    produce,
    wait_for,
)

CE_STRUCTURED = {
    "specversion": "1.0",
    "id": "c0ffee-1",
    "source": "https://registry.example.com/projects/library",
    "type": "com.example.artifact.pushed",
    "subject": "library/nginx:1.27",
    "time": "2026-11-27T10:00:00Z",
    "datacontenttype": "application/json",
    "data": {"repository": "library/nginx", "tag": "1.27"},
}


def minio_record(bucket: str, name: str, event: str, sequencer: str) -> dict[str, object]:
    """MinIO's Kafka target value: the webhook envelope; the record's key is query-escaped."""
    escaped = name.replace("/", "%2F").replace(" ", "+")
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": "2026-11-27T10:00:01.123Z",
        "eventName": event,
        "userIdentity": {"principalId": "minioadmin"},
        "responseElements": {"x-amz-request-id": sequencer, "x-amz-id-2": "dd9025bab4ad464b"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "minioadmin"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": {
                "key": escaped,
                "size": 42,
                "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                "sequencer": sequencer,
            },
        },
    }
    return {"EventName": event, "Key": f"{bucket}/{name}", "Records": [record]}


async def test_every_format_reaches_the_journal_with_its_identity(
    broker: Broker, producer: aiokafka.AIOKafkaProducer, start_daemon: StartDaemon
) -> None:
    for topic in ("ce", "minio", "argo"):
        await create_topic(broker.bootstrap, topic)
    before = metric("glue_kafka_records_total", topic="ce", outcome="journaled")

    binary_headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"bin-7"),
        ("ce_source", b"/tenants/a/models"),
        ("ce_type", b"com.example.model.updated"),
        ("ce_subject", b"llama-3"),
        ("content-type", b"application/json"),
    ]
    minio_value = minio_record("models", "llama 3/weights.bin", "s3:ObjectCreated:Put", "1800A1B2C3D4E5F6")
    argo_value = {"model": "llama-3", "replicas": "2"}  # the trigger's payload: values arrive as strings
    await produce(
        producer,
        "ce",
        [
            (b"llama-3", b'{"replicas": 2}', binary_headers),
            (
                None,
                orjson.dumps(CE_STRUCTURED),
                [("content-type", b"application/cloudevents+json; charset=UTF-8")],
            ),
        ],
    )
    await produce(producer, "minio", [(b"models/llama 3/weights.bin", orjson.dumps(minio_value), [])])
    await produce(producer, "argo", [(None, orjson.dumps(argo_value), [("X-Argo-Event-Id", b"4f1c2a")])])

    daemon = await start_daemon(
        kafka_config(
            broker.bootstrap,
            [
                {"name": "ce", "format": "cloudevents"},
                {"name": "minio", "format": "minio"},
                {
                    "name": "argo",
                    "format": "argo",
                    "type": "io.argoproj.sensor.trigger",
                    "source": "argo-events/model-sensor",
                    "idHeader": "X-Argo-Event-Id",
                },
            ],
        )
    )
    await wait_for(lambda: _at_least(daemon, 4), what="4 events journaled")

    binary = await daemon.journal.get("/tenants/a/models bin-7")
    assert binary is not None
    assert binary.type == "com.example.model.updated"
    assert binary.subject == "llama-3"
    event = binary.event()
    assert event.get_data() == {"replicas": 2}
    assert event.get_extension("partitionkey") == "llama-3"  # the record key, per the binding

    structured = await daemon.journal.get(f"{CE_STRUCTURED['source']} c0ffee-1")
    assert structured is not None
    assert structured.type == "com.example.artifact.pushed"
    assert structured.event().get_data() == CE_STRUCTURED["data"]

    minio = [e for e in await daemon.journal.list() if e.source == "minio:models"]
    assert len(minio) == 1
    assert minio[0].type == "minio.ObjectCreated:Put"
    assert minio[0].subject == "llama 3/weights.bin"  # unescaped object key
    assert minio[0].id == events.digest(  # the request's id and node, as MinIO's records carry them
        "models",
        "llama 3/weights.bin",
        "s3:ObjectCreated:Put",
        "",
        "request",
        "1800A1B2C3D4E5F6",
        "dd9025bab4ad464b",
    )

    argo = await daemon.journal.get("argo-events/model-sensor 4f1c2a")
    assert argo is not None
    assert argo.type == "io.argoproj.sensor.trigger"
    assert argo.event().get_data() == argo_value

    # The raw record is kept with the event, so a replay decodes it again the same way.
    delivery = await daemon.journal.delivery(binary.delivery_id)
    assert delivery is not None
    assert (delivery.transport, delivery.endpoint, delivery.format) == ("kafka", "ce", "cloudevents")
    assert delivery.key == b"llama-3"
    assert delivery.headers["ce_id"] == "bin-7"
    assert json.loads(delivery.body) == {"replicas": 2}
    await counted("glue_kafka_records_total", before, 2, topic="ce", outcome="journaled")
    assert metric("glue_kafka_records_total", topic="ce", outcome="journaled") - before == 2


async def _at_least(daemon: app.Daemon, n: int) -> bool:
    return await event_count(daemon.journal) >= n


async def test_secret_headers_do_not_reach_the_journal(
    broker: Broker, producer: aiokafka.AIOKafkaProducer, start_daemon: StartDaemon
) -> None:
    # Argo's Kafka trigger copies secureHeaders into record headers (formats.md §4).
    await create_topic(broker.bootstrap, "argo")
    headers = [("Authorization", b"Bearer s3cr3t-token"), ("X-Request", b"7")]
    await produce(producer, "argo", [(None, b'{"a": 1}', headers)])
    daemon = await start_daemon(
        kafka_config(broker.bootstrap, [{"name": "argo", "format": "argo", "type": "t", "source": "s"}])
    )
    await wait_for(lambda: _at_least(daemon, 1), what="the event")
    (stored,) = await daemon.journal.list()
    delivery = await daemon.journal.delivery(stored.delivery_id)
    assert delivery is not None
    assert dict(delivery.headers) == {"x-request": "7"}
    assert b"s3cr3t" not in stored.cloudevent


async def test_argo_records_carry_their_id_in_the_body_or_deduplicate_within_the_window(
    broker: Broker, producer: aiokafka.AIOKafkaProducer, start_daemon: StartDaemon
) -> None:
    """The Kafka trigger sends static headers only: a payload parameter (dest ``event.id``, src
    ``contextKey: id``) carries the event's id. Without it, equal payloads within dedupWindow are one
    event: the second of two equal records is taken as a retry of the first."""
    for topic in ("with-id", "without-id"):
        await create_topic(broker.bootstrap, topic)
    records: list[Record] = [
        (None, orjson.dumps({"event": {"id": event_id}, "tag": "v1"}), [])
        for event_id in ("4f1c2a", "9b0d7e", "4f1c2a")  # two events, the first delivered twice
    ]
    await produce(producer, "with-id", records)
    await produce(producer, "without-id", [(None, b'{"tag": "v1"}', []), (None, b'{"tag": "v1"}', [])])
    before = metric("glue_kafka_records_total", topic="without-id", outcome="duplicate")
    daemon = await start_daemon(
        kafka_config(
            broker.bootstrap,
            [
                {"name": "with-id", "format": "argo", "type": "t", "source": "s", "idField": "event.id"},
                {"name": "without-id", "format": "argo", "type": "t", "source": "s2"},
            ],
        )
    )
    await counted("glue_kafka_records_total", before, 1, topic="without-id", outcome="duplicate")
    await wait_for(lambda: _at_least(daemon, 3), what="3 events journaled")
    stored = await daemon.journal.list()
    assert sorted(e.id for e in stored if e.source == "s") == ["4f1c2a", "9b0d7e"]
    assert len([e for e in stored if e.source == "s2"]) == 1
