"""Argo's Kafka EventBus through the Kafka source (topic format ``argo-eventbus``) over a real broker.

Records as argo-events ``pkg/eventbus/kafka/eventsource/source_conn.go`` writes them: key
``<eventSource>.<eventName>``, the EventSource's CloudEvent JSON as value, no headers. The same
``eventSources`` entries as the JetStream source pick and unwrap them by key.
"""

from __future__ import annotations

import base64

import aiokafka
import orjson

from glue import app, journal
from tests.formats import payloads
from tests.sources.argo_events import bus
from tests.sources.kafka.conftest import StartDaemon
from tests.sources.kafka.support import Broker, counted, create_topic, kafka_config, metric, produce, wait_for

TOKEN = "glpat-kafka-bus-token"


async def test_argo_kafka_bus_records_are_selected_by_key_unwrapped_and_scrubbed(
    broker: Broker, producer: aiokafka.AIOKafkaProducer, start_daemon: StartDaemon
) -> None:
    topic = "argo-events-default"  # <namespace>-<eventBusName>, Argo's default topic name
    await create_topic(broker.bootstrap, topic)
    ignored = metric("glue_kafka_records_total", topic=topic, outcome="ignored")
    duplicates = metric("glue_kafka_records_total", topic=topic, outcome="duplicate")
    gitlab_headers = payloads.gitlab_headers(idempotency_key=None) | {"x-gitlab-token": TOKEN}
    gitlab = bus.message(
        "gitlab-hooks",
        "push",
        "gitlab",
        bus.webhook_data(gitlab_headers, payloads.gitlab_push(), plural=True),
    )
    calendar = bus.message("calendar", "tick", "calendar", {"n": 1})
    other = bus.message("sqs", "queue", "sqs", {"n": 2})
    poison = b"not json"
    await produce(
        producer,
        topic,
        [
            (b"gitlab-hooks.push", gitlab.payload, []),
            (b"calendar.tick", calendar.payload, []),
            (b"calendar.tick", calendar.payload, []),  # a redelivery
            (b"sqs.queue", other.payload, []),
            (b"calendar.broken", poison, []),
        ],
    )
    daemon = await start_daemon(
        kafka_config(
            broker.bootstrap,
            [
                {
                    "name": topic,
                    "format": "argo-eventbus",
                    "eventSources": [{"name": "gitlab-hooks", "unwrap": "gitlab"}, "calendar"],
                }
            ],
        )
    )
    await counted("glue_kafka_records_total", ignored, 1, topic=topic, outcome="ignored")
    await wait_for(lambda: _rejected(daemon), what="the poison record rejected")
    await wait_for(lambda: _count(daemon.journal, 2), what="two events")
    await counted("glue_kafka_records_total", duplicates, 1, topic=topic, outcome="duplicate")
    assert len(await daemon.journal.list(limit=100)) == 2  # the redelivered record is the same event

    push = await daemon.journal.get(f"{payloads.PROJECT_URL} {gitlab_headers['x-gitlab-webhook-uuid']}")
    assert push is not None and push.type == "gitlab.push"
    tick = await daemon.journal.get(f"calendar {calendar.event_id}")
    assert tick is not None and tick.event().get_data() == {"n": 1}
    assert await daemon.journal.get(f"sqs {other.event_id}") is None

    delivery = await daemon.journal.delivery(push.delivery_id)
    assert (
        delivery is not None
        and delivery.format == "argo-eventbus+gitlab"
        and delivery.key == b"gitlab-hooks.push"
    )
    kept_data = base64.b64decode(orjson.loads(delivery.body)["data_base64"])
    assert b"X-Gitlab-Event" in kept_data and TOKEN.encode() not in kept_data
    assert TOKEN.encode() not in push.cloudevent


async def _rejected(daemon: app.Daemon) -> bool:
    return any("not valid JSON" in r.reason for r in await daemon.journal.rejected())


async def _count(store: journal.Journal, n: int) -> bool:
    return len(await store.list(limit=100)) >= n
