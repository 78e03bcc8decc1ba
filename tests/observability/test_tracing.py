"""Traces end to end (glue/tracing.py): a webhook that a route turns into a Kubernetes call, exported
over OTLP/HTTP to a receiver in the test (otlp.py, decoding with opentelemetry-proto), the API calls
made to the Kubernetes API double (tests/handlers/kubernetes/apiserver.py, after the upstream documents
it names)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest
import structlog
import structlog.testing

from glue import app, cli, events, settings
from handlers import kubernetes
from tests import support
from tests.handlers.kubernetes.apiserver import ApiServer
from tests.handlers.kubernetes.conftest import DNSENDPOINTS
from tests.observability import otlp

pytestmark = pytest.mark.slow

INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_SPAN = "00f067aa0ba902b7"

ROUTE = {
    "name": "endpoint-dns",
    "match": 'type == "platform.endpoint.announced"',
    "handler": "externaldns.endpoint",
    "params": {
        "namespace": "{{ data.namespace }}",
        "name": "{{ data.name }}",
        "endpoints": [{"dnsName": "{{ data.host }}", "recordType": "A", "targets": ["{{ data.ip }}"]}],
    },
    "delivery": {"attempts": 3, "backoff": {"initial": 1.5, "multiplier": 1, "max": 1.5, "jitter": 0}},
}


def announced(event_id: str, **extensions: str) -> dict[str, Any]:
    """A structured CloudEvent announcing a DNS name (the route above makes a DNSEndpoint of it)."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "//platform.example/catalog",
        "type": "platform.endpoint.announced",
        "datacontenttype": "application/json",
        "data": {"namespace": "web", "name": "shop", "host": "shop.example.com", "ip": "203.0.113.10"},
        **extensions,
    }


@pytest.fixture
async def receiver() -> AsyncIterator[otlp.Receiver]:
    async for running in otlp.receiving():
        yield running


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard variables of the machine running the tests do not decide these tests."""
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
    ):
        monkeypatch.delenv(name, raising=False)


def daemon_settings(tmp_path: Path, kubeconfig: Path, **tracing: Any) -> settings.Settings:
    loaded = support.daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05},
        endpoints=[{"name": "events", "path": "/events", "format": "cloudevents"}],
        routes=[ROUTE],
        clients={"kubernetes": {"kubeconfig": str(kubeconfig)}},
        tracing=tracing,
    )
    app.load_plugins(loaded)
    return loaded


async def post(session: aiohttp.ClientSession, daemon: app.Daemon, body: Any, **headers: str) -> int:
    url = support.base_url(daemon) + "/events"
    headers = {"Content-Type": "application/cloudevents+json", **headers}
    async with session.post(url, data=json.dumps(body), headers=headers) as response:
        return response.status


async def test_a_webhook_is_one_trace_from_its_traceparent_to_the_object(
    apiserver: ApiServer, kubeconfig: Path, receiver: otlp.Receiver, tmp_path: Path
) -> None:
    config = daemon_settings(
        tmp_path,
        kubeconfig,
        endpoint=receiver.endpoint,
        resourceAttributes={"deployment.environment": "ci"},
    )
    # The session exists before tracing starts: its requests are the sender's, not traced by glue.
    async with aiohttp.ClientSession() as session, support.running(config) as daemon:
        assert await post(session, daemon, announced("ep-1"), traceparent=INCOMING) == 202
        dns = await support.eventually(lambda: apiserver.find(DNSENDPOINTS, "web", "shop"), within=30)
    # Stopped: the spans left are exported.

    [delivery] = receiver.named("delivery")
    assert delivery.kind == "SERVER"
    assert (delivery.trace_id, delivery.parent_span_id) == (INCOMING_TRACE, INCOMING_SPAN)
    assert delivery.attributes == {
        "glue.transport": "http",
        "glue.endpoint": "events",
        "glue.format": "cloudevents",
        "glue.outcome": "accepted",
        "glue.event_ids": ["ep-1"],
    }
    assert delivery.resource["service.name"] == "runtime-glue"
    assert delivery.resource["deployment.environment"] == "ci"

    [attempt] = receiver.children(delivery)
    assert attempt.name == "attempt endpoint-dns"
    assert attempt.attributes == {
        "glue.route": "endpoint-dns",
        "glue.handler": "externaldns.endpoint",
        "glue.attempt": 1,
        "glue.event_id": "ep-1",
        "glue.idempotency_key": attempt.attributes["glue.idempotency_key"],
        "glue.outcome": "done",
    }
    assert len(attempt.attributes["glue.idempotency_key"]) >= 16

    calls = receiver.children(attempt)
    assert calls and all(call.kind == "CLIENT" for call in calls)
    assert {span.trace_id for span in receiver.spans if span.kind != "CLIENT"} == {INCOMING_TRACE}
    # The API server saw each write carry the trace context of its client span.
    sent = [write["traceparent"] for write in apiserver.writes]
    assert sent and all(value.split("-")[1] == INCOMING_TRACE for value in sent)
    assert {value.split("-")[2] for value in sent} <= {call.span_id for call in calls}
    # The object names the trace, through the delivery span glue stamped on the event.
    annotation = dns["metadata"]["annotations"][kubernetes.ANNOTATION_TRACEPARENT]
    assert annotation.split("-")[1:3] == [INCOMING_TRACE, delivery.span_id]


async def test_an_events_own_traceparent_is_kept_and_parents_the_delivery(
    apiserver: ApiServer, kubeconfig: Path, receiver: otlp.Receiver, tmp_path: Path
) -> None:
    producer = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    config = daemon_settings(tmp_path, kubeconfig, endpoint=receiver.endpoint)
    async with aiohttp.ClientSession() as session, support.running(config) as daemon:
        assert await post(session, daemon, announced("ep-2", traceparent=producer)) == 202
        dns = await support.eventually(lambda: apiserver.find(DNSENDPOINTS, "web", "shop"), within=30)

    [delivery] = receiver.named("delivery")
    [attempt] = receiver.named("attempt")
    assert delivery.trace_id == attempt.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert delivery.parent_span_id == attempt.parent_span_id == "b7ad6b7169203331"  # the producer's span
    assert dns["metadata"]["annotations"][kubernetes.ANNOTATION_TRACEPARENT] == producer  # as sent


async def test_a_retry_after_a_restart_continues_the_trace(
    apiserver: ApiServer, kubeconfig: Path, receiver: otlp.Receiver, tmp_path: Path
) -> None:
    apiserver.fail("PATCH", "dnsendpoints", 503, times=1)
    config = daemon_settings(tmp_path, kubeconfig, endpoint=receiver.endpoint)
    async with aiohttp.ClientSession() as session, support.running(config) as daemon:
        assert await post(session, daemon, announced("ep-3")) == 202  # no traceparent: a new trace
        await support.eventually(
            lambda: support.metric(
                "glue_invocation_retries_total", route="endpoint-dns", handler="externaldns.endpoint"
            )
        )
    assert apiserver.find(DNSENDPOINTS, "web", "shop") is None  # the retry waits in the journal

    async with support.running(config):  # a new daemon on the same journal
        await support.eventually(lambda: apiserver.find(DNSENDPOINTS, "web", "shop"), within=30)

    [delivery] = receiver.named("delivery")
    assert delivery.parent_span_id == ""  # the trace began here
    attempts = sorted(receiver.children(delivery), key=lambda span: span.attributes["glue.attempt"])
    assert [(a.attributes["glue.attempt"], a.attributes["glue.outcome"]) for a in attempts] == [
        (1, "retry"),
        (2, "done"),
    ]
    assert attempts[0].status == "ERROR" and "503" in attempts[0].attributes["glue.error"]
    assert attempts[1].start_ns > attempts[0].end_ns


async def test_tracing_off_exports_nothing_and_stamps_nothing(
    apiserver: ApiServer, kubeconfig: Path, receiver: otlp.Receiver, tmp_path: Path
) -> None:
    config = daemon_settings(tmp_path, kubeconfig)  # no endpoint: off
    async with aiohttp.ClientSession() as session, support.running(config) as daemon:
        assert daemon.tracing is None
        assert await post(session, daemon, announced("ep-4")) == 202
        dns = await support.eventually(lambda: apiserver.find(DNSENDPOINTS, "web", "shop"), within=30)
        stored = await daemon.journal.get("ep-4")
        assert stored is not None and events.trace_id(stored.event()) is None
    assert kubernetes.ANNOTATION_TRACEPARENT not in dns["metadata"]["annotations"]
    assert [write["traceparent"] for write in apiserver.writes] == [None] * len(apiserver.writes)
    assert receiver.requests == 0


def test_tracing_off_loads_no_opentelemetry(tmp_path: Path) -> None:
    """A daemon without an endpoint takes a delivery without importing OpenTelemetry at all."""
    script = f"""
import asyncio, sys, aiohttp
from glue import app
from tests import support

async def main():
    config = support.daemon_settings(__import__("pathlib").Path({str(tmp_path)!r}),
        endpoints=[{{"name": "events", "path": "/events", "format": "cloudevents"}}])
    async with support.running(config) as daemon, aiohttp.ClientSession() as session:
        body = '{{"specversion": "1.0", "id": "1", "source": "/t", "type": "t"}}'
        async with session.post(support.base_url(daemon) + "/events", data=body,
                                headers={{"Content-Type": "application/cloudevents+json"}}) as response:
            assert response.status == 202, response.status
    print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))

asyncio.run(main())
"""
    environment = {
        name: value for name, value in __import__("os").environ.items() if not name.startswith("OTEL_")
    }
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=environment
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


async def test_the_standard_variables_configure_tracing(
    apiserver: ApiServer,
    kubeconfig: Path,
    receiver: otlp.Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "glue-staging")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "k8s.namespace.name=platform")
    config = daemon_settings(tmp_path, kubeconfig, serviceName="from-the-file")
    async with aiohttp.ClientSession() as session, support.running(config) as daemon:
        assert await post(session, daemon, announced("ep-5")) == 202
        await support.eventually(lambda: apiserver.find(DNSENDPOINTS, "web", "shop"), within=30)

    [delivery] = receiver.named("delivery")
    assert delivery.resource["service.name"] == "glue-staging"  # the variable over the file
    assert delivery.resource["k8s.namespace.name"] == "platform"


async def test_sampled_out_spans_are_not_exported_and_the_trace_id_is_still_stamped(
    apiserver: ApiServer,
    kubeconfig: Path,
    receiver: otlp.Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    config = daemon_settings(tmp_path, kubeconfig, endpoint=receiver.endpoint)
    async with aiohttp.ClientSession() as session, support.running(config) as daemon:
        assert await post(session, daemon, announced("ep-6")) == 202
        dns = await support.eventually(lambda: apiserver.find(DNSENDPOINTS, "web", "shop"), within=30)
    assert receiver.spans == []
    annotation = dns["metadata"]["annotations"][kubernetes.ANNOTATION_TRACEPARENT]
    assert int(annotation.split("-")[3], 16) & 1 == 0  # a trace id to search logs by, not sampled


def test_a_sampler_the_sdk_does_not_know_is_a_clear_error() -> None:
    from glue import tracing

    config = settings.Tracing(endpoint="http://127.0.0.1:4318")
    with pytest.raises(settings.ConfigError, match="OTEL_TRACES_SAMPLER: 'sometimes' is not one of"):
        tracing.setup(config, {"OTEL_TRACES_SAMPLER": "sometimes"})


def test_a_link_template_must_name_the_trace_id() -> None:
    with pytest.raises(settings.ConfigError, match=r"tracing.linkTemplate: .*does not name \{trace_id\}"):
        settings.from_mapping({"tracing": {"linkTemplate": "https://tempo.example/trace"}}, "glue.yaml")


async def test_events_show_and_explain_print_the_trace_id_and_link(
    apiserver: ApiServer,
    kubeconfig: Path,
    receiver: otlp.Receiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import yaml

    template = "https://tempo.example/trace/{trace_id}"
    config = daemon_settings(tmp_path, kubeconfig, endpoint=receiver.endpoint, linkTemplate=template)
    async with aiohttp.ClientSession() as session, support.running(config) as daemon:
        assert await post(session, daemon, announced("ep-7"), traceparent=INCOMING) == 202
        await support.eventually(lambda: apiserver.find(DNSENDPOINTS, "web", "shop"), within=30)
    path = tmp_path / "glue.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "journal": {"path": str(tmp_path / "journal.db")},
                "routes": [ROUTE],
                "tracing": {"linkTemplate": template},
            }
        )
    )
    capsys.readouterr()

    assert await asyncio.to_thread(cli.main, ["events", "show", "ep-7", "--config", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["traceId"] == INCOMING_TRACE
    assert shown["traceLink"] == f"https://tempo.example/trace/{INCOMING_TRACE}"

    assert await asyncio.to_thread(cli.main, ["explain", "--event", "ep-7", "--config", str(path)]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert (row["route"], row["state"], row["traceId"]) == ("endpoint-dns", "done", INCOMING_TRACE)
    assert row["traceLink"] == shown["traceLink"]


async def test_the_http_handler_sends_the_trace_on(receiver: otlp.Receiver, tmp_path: Path) -> None:
    """The receiving end sees the event's own traceparent (``ce-traceparent``) and the trace context of
    the request (``traceparent``, the client span), both in the delivery's trace."""
    seen: list[dict[str, str]] = []

    async def sink(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(dict(request.headers))
        return aiohttp.web.Response(status=204)

    downstream = aiohttp.web.Application()
    downstream.router.add_post("/hook", sink)
    runner = aiohttp.web.AppRunner(downstream, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    config = support.daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05},
        endpoints=[{"name": "events", "path": "/events", "format": "cloudevents"}],
        routes=[{"name": "forward", "match": "true", "handler": "http", "params": {"url": url}}],
        tracing={"endpoint": receiver.endpoint},
    )
    app.load_plugins(config)
    try:
        async with aiohttp.ClientSession() as session, support.running(config) as daemon:
            assert await post(session, daemon, announced("ep-8"), traceparent=INCOMING) == 202
            [headers] = await support.eventually(lambda: seen)
    finally:
        await runner.cleanup()

    [delivery] = receiver.named("delivery")
    [attempt] = receiver.children(delivery)
    [call] = receiver.children(attempt)
    assert headers["ce-traceparent"].split("-")[1:3] == [INCOMING_TRACE, delivery.span_id]
    assert headers["traceparent"].split("-")[1:3] == [INCOMING_TRACE, call.span_id]
    assert call.kind == "CLIENT" and call.name == "POST"


async def test_log_lines_carry_the_trace_and_span(
    apiserver: ApiServer, kubeconfig: Path, receiver: otlp.Receiver, tmp_path: Path
) -> None:
    from glue import tracing

    captured = structlog.testing.LogCapture()
    structlog.configure(processors=[tracing.log_fields, captured], cache_logger_on_first_use=False)
    config = daemon_settings(tmp_path, kubeconfig, endpoint=receiver.endpoint)
    try:
        async with aiohttp.ClientSession() as session, support.running(config) as daemon:
            assert await post(session, daemon, announced("ep-9"), traceparent=INCOMING) == 202
            await support.eventually(lambda: apiserver.find(DNSENDPOINTS, "web", "shop"), within=30)
    finally:
        structlog.reset_defaults()

    [delivery] = receiver.named("delivery")
    [attempt] = receiver.children(delivery)
    by_event = {line["event"]: line for line in captured.entries}
    assert (by_event["delivery"]["trace_id"], by_event["delivery"]["span_id"]) == (
        INCOMING_TRACE,
        delivery.span_id,
    )
    for line in ("dnsendpoint applied", "dispatched"):
        assert (by_event[line]["trace_id"], by_event[line]["span_id"]) == (INCOMING_TRACE, attempt.span_id)
    assert "trace_id" not in by_event["listening"]  # written outside any delivery or attempt


async def test_a_replayed_recording_continues_the_recorded_trace(
    receiver: otlp.Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    recorded = events.Delivery(
        transport="http",
        endpoint="events",
        format="cloudevents",
        headers={"content-type": "application/cloudevents+json", "traceparent": INCOMING},
        body=json.dumps(announced("ep-10")).encode(),
    )
    recording = tmp_path / "recording.jsonl"
    recording.write_text(json.dumps(recorded.to_record()) + "\n")
    path = tmp_path / "glue.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "journal": {"path": str(tmp_path / "replayed.db")},
                "endpoints": [{"name": "events", "path": "/events", "format": "cloudevents"}],
                "tracing": {"endpoint": receiver.endpoint},
            }
        )
    )

    assert await asyncio.to_thread(cli.main, ["replay", str(recording), "--config", str(path)]) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, ["events", "show", "ep-10", "--config", str(path)]) == 0

    [delivery] = receiver.named("delivery")
    assert (delivery.trace_id, delivery.parent_span_id) == (INCOMING_TRACE, INCOMING_SPAN)
    assert json.loads(capsys.readouterr().out)["cloudevent"]["traceparent"].split("-")[1:3] == [
        INCOMING_TRACE,
        delivery.span_id,
    ]


async def test_a_rejected_delivery_is_a_span_with_its_reason_and_journals_nothing(
    kubeconfig: Path, receiver: otlp.Receiver, tmp_path: Path
) -> None:
    config = daemon_settings(tmp_path, kubeconfig, endpoint=receiver.endpoint)
    bad = {key: value for key, value in announced("ep-11").items() if key != "source"}
    async with aiohttp.ClientSession() as session, support.running(config) as daemon:
        assert await post(session, daemon, bad, traceparent=INCOMING) == 400
        assert await daemon.journal.list(limit=10) == []

    [delivery] = receiver.named("delivery")
    assert (delivery.trace_id, delivery.parent_span_id) == (INCOMING_TRACE, INCOMING_SPAN)
    assert delivery.attributes["glue.outcome"] == "rejected"
    assert "source" in delivery.attributes["glue.error"]
    assert delivery.status == "UNSET"  # the sender's mistake, not glue's failure
    assert "glue.event_ids" not in delivery.attributes


def test_grpc_without_its_exporter_installed_says_what_to_install() -> None:
    from glue import tracing

    try:
        import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the grpc extra is installed here")
    config = settings.Tracing(endpoint="http://127.0.0.1:4317", protocol="grpc")
    with pytest.raises(settings.ConfigError, match=r"tracing: protocol: .*'runtime-glue\[grpc\]'"):
        tracing.setup(config, {})
