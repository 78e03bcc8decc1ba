"""The generic JetStream source in a real daemon against a real JetStream server: each listed subject's
messages are decoded in its format (the CloudEvents NATS binding, binary with ``ce-`` headers or
structured; MinIO's NATS target), journaled once, acknowledged only then; a poison message is rejected
and terminated; a subject not listed is not taken; credentials in the headers are not stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.js import api as js_api

from glue import journal, settings
from tests.formats import payloads
from tests.sources.argo_events import bus
from tests.support import daemon_settings, eventually, metric, running

STREAM = "platform"


def stream_config(server: bus.Server, **extra: Any) -> dict[str, Any]:
    return {
        "url": server.url,
        "stream": STREAM,
        "durable": "glue-platform",
        "subjects": [
            {"subject": "ce.>", "format": "cloudevents"},
            {"subject": "minio.*", "format": "minio"},
        ],
        "ackWait": 2,
        "reconnectInitial": 0.05,
        "reconnectMax": 0.2,
        **extra,
    }


def counted(outcome: str) -> float:
    return metric("glue_eventbus_messages_total", source="jetstream", outcome=outcome)


class Producer:
    """A connection that publishes to the stream ``platform`` (made on first use)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.nc: Any = None
        self.js: Any = None

    async def __aenter__(self) -> Producer:
        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()
        await self.js.add_stream(
            js_api.StreamConfig(name=STREAM, subjects=["ce.>", "minio.*", "other.*"], duplicate_window=300)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        await self.js.publish(subject, payload, headers=headers)

    async def consumer(self) -> Any:
        return await self.js.consumer_info(STREAM, "glue-platform")


async def journaled(store: journal.Journal, n: int) -> list[journal.StoredEvent]:
    rows = await store.list(limit=100)
    return rows if len(rows) >= n else []


def _stored(tmp_path: Path) -> bytes:
    """Every byte the daemon's journal wrote."""
    return b"".join(path.read_bytes() for path in tmp_path.glob("journal.db*"))


async def all_acknowledged(producer: Producer) -> bool:
    info = await producer.consumer()
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("ce.>", "ce.orders.created", True),
        ("ce.>", "ce", False),
        ("minio.*", "minio.models", True),
        ("minio.*", "minio.models.put", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
        (">", "anything.at.all", True),
        ("exact", "exact", True),
    ],
)
def test_subjects_match_as_nats_matches_them(pattern: str, subject: str, matches: bool) -> None:
    assert settings.subject_matches(pattern, subject) is matches


async def test_each_subject_is_decoded_in_its_format_once_and_acknowledged(
    nats_server: bus.Server, tmp_path: Path
) -> None:
    config = daemon_settings(
        tmp_path, sources={"jetstream": stream_config(nats_server)}, execution={"enabled": False}
    )
    structured = payloads.ce_structured(event_id="evt-structured", source="/orders")
    binary = payloads.ce_binary_headers(event_id="evt-binary", source="/orders")
    record = payloads.minio_record("models/llama/weights.safetensors")
    async with Producer(nats_server.url) as producer, running(config) as daemon:
        await eventually(lambda: metric("glue_source_up", source="jetstream") == 1)
        await producer.publish(
            "ce.orders.created",
            orjson.dumps(structured),
            {"content-type": "application/cloudevents+json", "Authorization": "Bearer s3cr3t"},
        )
        await producer.publish("ce.orders.paid", orjson.dumps({"amount": 5}), binary)
        await producer.publish("minio.models", orjson.dumps(payloads.minio_envelope(record)))
        await producer.publish("other.thing", b"not taken")  # no listed subject: never delivered
        # The same CloudEvent again (a producer's retry): the same event.
        await producer.publish(
            "ce.orders.created", orjson.dumps(structured), {"content-type": "application/cloudevents+json"}
        )
        rows = await eventually(lambda: journaled(daemon.journal, 3))
        await eventually(lambda: all_acknowledged(producer))
        got = {(row.event().get_source(), row.event().get_id()) for row in rows}
        assert len(rows) == 3
        assert ("/orders", "evt-structured") in got and ("/orders", "evt-binary") in got
        [minio] = [row.event() for row in rows if row.event().get_source() != "/orders"]
        assert minio.get_type() == "minio.ObjectCreated:Put"
        paid = next(row.event() for row in rows if row.event().get_id() == "evt-binary")
        assert paid.get_data() == {"amount": 5}
        assert counted("duplicate") >= 1
        info = await producer.consumer()
        assert info.config.filter_subjects == ["ce.>", "minio.*"]
        assert info.num_pending == 0  # other.thing was not for this consumer
        assert b"s3cr3t" not in _stored(tmp_path)  # the Authorization header is not kept


async def test_a_poison_message_is_rejected_and_terminated(nats_server: bus.Server, tmp_path: Path) -> None:
    config = daemon_settings(tmp_path, sources={"jetstream": stream_config(nats_server)})
    async with Producer(nats_server.url) as producer, running(config) as daemon:
        await eventually(lambda: metric("glue_source_up", source="jetstream") == 1)
        rejected = counted("rejected")
        await producer.publish(
            "ce.orders.broken", b"{not json", {"content-type": "application/cloudevents+json"}
        )
        await eventually(lambda: counted("rejected") > rejected)
        [kept] = await daemon.journal.rejected()
        assert kept.delivery.endpoint == STREAM and kept.delivery.format == "cloudevents"
        assert kept.delivery.headers["nats-subject"] == "ce.orders.broken"
        assert "not valid JSON" in kept.reason
        await eventually(lambda: all_acknowledged(producer))  # terminated: never sent again
        assert (await producer.consumer()).num_redelivered == 0


async def test_a_deleted_consumer_is_made_again_and_reading_goes_on(
    nats_server: bus.Server, tmp_path: Path
) -> None:
    config = daemon_settings(tmp_path, sources={"jetstream": stream_config(nats_server)})
    first, second = (payloads.ce_structured(event_id=f"evt-{n}", source="/orders") for n in (1, 2))
    headers = {"content-type": "application/cloudevents+json"}
    async with Producer(nats_server.url) as producer, running(config) as daemon:
        await eventually(lambda: metric("glue_source_up", source="jetstream") == 1)
        await producer.publish("ce.orders.created", orjson.dumps(first), headers)
        await eventually(lambda: journaled(daemon.journal, 1))
        reconnects = metric("glue_source_reconnects_total", source="jetstream")
        await producer.js.delete_consumer(STREAM, "glue-platform")
        await eventually(lambda: metric("glue_source_reconnects_total", source="jetstream") > reconnects)
        await eventually(lambda: metric("glue_source_up", source="jetstream") == 1)
        await producer.publish("ce.orders.created", orjson.dumps(second), headers)
        rows = await eventually(lambda: journaled(daemon.journal, 2))
        assert {row.event().get_id() for row in rows} == {"evt-1", "evt-2"}
