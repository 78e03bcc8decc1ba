"""EventBus messages in traces (glue/tracing.py), against a real JetStream server: a message's
``traceparent`` header is the parent of its delivery span (spans to the OTLP/HTTP receiver of
tests/observability/otlp.py), and the journaled event carries the delivery span's trace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.observability import otlp
from tests.sources.argo_events import bus
from tests.sources.argo_events.test_source import bus_config, events_with
from tests.support import daemon_settings, eventually, metric, running

HEADER = "00-55555555555555555555555555555555-6666666666666666-01"


@pytest.fixture
async def receiver() -> AsyncIterator[otlp.Receiver]:
    async for running_receiver in otlp.receiving():
        yield running_receiver


async def test_a_bus_message_continues_the_trace_of_its_header(
    nats_server: bus.Server, tmp_path: Path, receiver: otlp.Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    config = daemon_settings(
        tmp_path,
        execution={"enabled": False},
        sources={"argoEvents": bus_config(nats_server)},
        tracing={"endpoint": receiver.endpoint},
    )
    tick = bus.message("calendar", "tick", "calendar", {"n": 1})
    async with bus.Publisher(nats_server.url) as publisher, running(config) as daemon:
        await eventually(lambda: metric("glue_source_up", source="argo-events") == 1)
        await publisher.js.publish(
            tick.subject, tick.payload, headers={"Nats-Msg-Id": tick.event_id, "traceparent": HEADER}
        )
        [stored] = await eventually(lambda: events_with(daemon.journal, id=tick.event_id), within=30)

    [delivery] = receiver.named("delivery")
    assert delivery.kind == "CONSUMER"
    assert [delivery.trace_id, delivery.parent_span_id] == HEADER.split("-")[1:3]
    assert delivery.attributes["glue.event_ids"] == [tick.event_id]
    traceparent = stored.event().get_extension("traceparent")
    assert traceparent.split("-")[1:3] == [delivery.trace_id, delivery.span_id]
