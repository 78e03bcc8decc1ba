"""Kafka records in traces (glue/tracing.py) over a real broker: a record's ``traceparent`` header, else
its event's ``traceparent`` extension (``ce_traceparent``), is the parent of its delivery span; the spans
go to the OTLP/HTTP receiver of tests/observability/otlp.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiokafka
import orjson
import pytest

from glue import journal
from tests.observability import otlp
from tests.sources.kafka.conftest import StartDaemon
from tests.sources.kafka.support import (
    Broker,
    Record,
    create_topic,
    event_count,
    kafka_config,
    produce,
    wait_for,
)

HEADER = "00-11111111111111111111111111111111-2222222222222222-01"
EXTENSION = "00-33333333333333333333333333333333-4444444444444444-01"


@pytest.fixture
async def receiver() -> AsyncIterator[otlp.Receiver]:
    async for running in otlp.receiving():
        yield running


def record(n: int, *extra: tuple[str, bytes]) -> Record:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(n).encode()),
        ("ce_source", b"/orders"),
        ("ce_type", b"com.example.order.created"),
        ("content-type", b"application/json"),
        *extra,
    ]
    return (f"order-{n}".encode(), orjson.dumps({"n": n}), headers)


async def test_a_record_continues_the_trace_of_its_header_else_of_its_event(
    broker: Broker,
    producer: aiokafka.AIOKafkaProducer,
    start_daemon: StartDaemon,
    receiver: otlp.Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    await create_topic(broker.bootstrap, "orders")
    await produce(
        producer,
        "orders",
        [
            record(1, ("traceparent", HEADER.encode())),
            record(2, ("ce_traceparent", EXTENSION.encode())),
            record(3),
        ],
    )
    daemon = await start_daemon(
        kafka_config(broker.bootstrap, [{"name": "orders", "format": "cloudevents"}]),
        tracing={"endpoint": receiver.endpoint},
    )
    await wait_for(lambda: _count_is(daemon.journal, 3), what="3 events journaled")
    stored = {n: await daemon.journal.get(n) for n in ("1", "2", "3")}
    await daemon.stop()

    spans = {span.attributes["glue.event_ids"][0]: span for span in receiver.named("delivery")}
    assert {span.kind for span in spans.values()} == {"CONSUMER"}
    assert {span.attributes["glue.transport"] for span in spans.values()} == {"kafka"}
    assert (spans["1"].trace_id, spans["1"].parent_span_id) == (HEADER.split("-")[1], HEADER.split("-")[2])
    assert (spans["2"].trace_id, spans["2"].parent_span_id) == (
        EXTENSION.split("-")[1],
        EXTENSION.split("-")[2],
    )
    assert spans["3"].parent_span_id == ""  # a new trace
    # Journaled with the trace: the delivery span's where the event had none, else the event's own.
    traces = {n: item.event().get_extension("traceparent") for n, item in stored.items() if item is not None}
    assert traces["1"].split("-")[1:3] == [HEADER.split("-")[1], spans["1"].span_id]
    assert traces["2"] == EXTENSION
    assert traces["3"].split("-")[1:3] == [spans["3"].trace_id, spans["3"].span_id]


async def _count_is(store: journal.Journal, n: int) -> bool:
    return await event_count(store) == n
