"""Enrichment inside the daemon: a route with an ``enrich`` block matches on the object's tags and renders
its parameters from the manifest next to the weights (moto's S3 server), and the built-in http handler
delivers to a loopback sink what the route decided. MinIO unreachable leaves the event unrouted (a
temporary error of that event) while other events are routed."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from glue import app
from glue import settings as settings_mod
from tests.minio_access import UNREACHABLE, connection
from tests.observability import otlp
from tests.sources.minio_listen.listen_double import record
from tests.support import base_url, daemon_settings, eventually, running

JSON = {"Content-Type": "application/json"}  # what MinIO's webhook target sends


class Sink:
    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str]]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app_ = web.Application()
        app_.router.add_post("/{tail:.*}", self._take)
        self._runner = web.AppRunner(app_)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def _take(self, request: web.Request) -> web.Response:
        await request.read()
        self.received.append((request.path, dict(request.headers)))
        return web.Response(status=204)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    server = Sink()
    await server.start()
    yield server
    await server.stop()


def _settings(
    tmp_path: Path, minio: dict[str, Any], sink_port: int, *more: dict[str, Any]
) -> settings_mod.Settings:
    loaded = daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05},
        endpoints=[
            {"name": "minio", "path": "/minio", "format": "minio"},
            {"name": "events", "path": "/events", "format": "cloudevents"},
        ],
        sources={"minio": minio},
        routes=[
            {
                "name": "reload-model",
                "enrich": {"tags": True, "json": "manifest.json", "timeout": 2},
                "match": 'type == "minio.ObjectCreated:Put" && object.tags.stage == "prod"',
                "handler": "http",
                "params": {
                    "url": f"http://127.0.0.1:{sink_port}/models/{{{{ object.json.name }}}}",
                    "headers": {"X-Format": "{{ object.json.format }}"},
                },
            },
            {
                "name": "audit",
                "match": 'type == "com.example.audit"',
                "handler": "http",
                "params": {"url": f"http://127.0.0.1:{sink_port}/audit"},
            },
            *more,
        ],
    )
    app.load_plugins(loaded)  # the handler modules the routes name, as `glue run` does
    return loaded


def _webhook(bucket: str, key: str) -> bytes:
    return orjson.dumps(
        {
            "EventName": "s3:ObjectCreated:Put",
            "Key": f"{bucket}/{key}",
            "Records": [record(bucket, key, escaped=True)],
        }
    )


async def test_route_matches_on_tags_and_renders_from_the_manifest(
    tmp_path: Path, minio_config: settings_mod.Minio, s3: Any, bucket: str, sink: Sink
) -> None:
    s3.put_object(Bucket=bucket, Key="llm/llama 3/model.safetensors", Body=b"w", Tagging="stage=prod")
    s3.put_object(
        Bucket=bucket, Key="llm/llama 3/manifest.json", Body=b'{"name": "llama-3", "format": "safetensors"}'
    )
    s3.put_object(Bucket=bucket, Key="llm/draft/model.safetensors", Body=b"w", Tagging="stage=dev")
    minio = minio_config.model_dump(by_alias=True, exclude_none=True, mode="json")
    async with running(_settings(tmp_path, minio, sink.port)) as daemon:
        base = base_url(daemon)
        async with aiohttp.ClientSession() as http:
            for key in ("llm/draft/model.safetensors", "llm/llama 3/model.safetensors"):
                async with http.post(f"{base}/minio", data=_webhook(bucket, key), headers=JSON) as response:
                    assert response.status == 202
        await eventually(lambda: len(sink.received) >= 1)
        await asyncio.sleep(0.3)  # time for a wrong second delivery to show
    assert [(path, headers["X-Format"]) for path, headers in sink.received] == [
        ("/models/llama-3", "safetensors")
    ]


async def test_unreachable_minio_delays_only_the_enriched_event(
    tmp_path: Path, credential_files: dict[str, Path], sink: Sink
) -> None:
    minio = connection(UNREACHABLE, credential_files, timeout=1)
    with capture_logs() as logs:
        async with running(_settings(tmp_path, minio, sink.port)) as daemon:
            base = base_url(daemon)
            audit = {
                "specversion": "1.0",
                "id": secrets.token_hex(4),
                "source": "test",
                "type": "com.example.audit",
            }
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{base}/minio", data=_webhook("models", "llm/x/model.safetensors"), headers=JSON
                ) as response:
                    assert response.status == 202
                async with http.post(
                    f"{base}/events",
                    data=orjson.dumps(audit),
                    headers={"Content-Type": "application/cloudevents+json"},
                ) as response:
                    assert response.status == 202
            await eventually(lambda: any(path == "/audit" for path, _ in sink.received))
            await eventually(
                lambda: any(entry["event"] == "event not routed yet: enrichment failed" for entry in logs)
            )
            stored = await daemon.journal.list()
    statuses = {item.type: item.status for item in stored}
    assert statuses["minio.ObjectCreated:Put"] == "pending"
    assert statuses["com.example.audit"] != "pending"
    failed = next(entry for entry in logs if entry["event"] == "event not routed yet: enrichment failed")
    assert "s3://models/llm/x/model.safetensors tags: unreachable" in failed["error"]


async def test_unreachable_minio_holds_back_only_the_routes_that_enrich(
    tmp_path: Path, credential_files: dict[str, Path], sink: Sink
) -> None:
    """A delete-marker event matched by a route that reads nothing of MinIO and by one that does: with
    MinIO unreachable the first runs (once, however many times the event is routed again), the second
    waits, and the event stays pending for it."""
    minio = connection(UNREACHABLE, credential_files, timeout=1)
    forget = {
        "name": "forget-model",
        "match": 'type == "minio.ObjectRemoved:DeleteMarkerCreated"',
        "handler": "http",
        "params": {"url": f"http://127.0.0.1:{sink.port}/forget/{{{{ data.key }}}}"},
    }
    key = "llm/x/model.safetensors"
    marker = record("models", key, event_name="s3:ObjectRemoved:DeleteMarkerCreated", escaped=True)
    marker["s3"]["object"]["versionId"] = "0b9e3f52-7d3a-4c55-9a0e-2b1f1c7e4d10"
    body = orjson.dumps({"EventName": marker["eventName"], "Key": f"models/{key}", "Records": [marker]})
    with capture_logs() as logs:
        async with running(_settings(tmp_path, minio, sink.port, forget)) as daemon:
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{base_url(daemon)}/minio", data=body, headers=JSON) as response,
            ):
                assert response.status == 202
            await eventually(lambda: any(path.startswith("/forget/") for path, _ in sink.received))

            def failures() -> int:
                return sum(entry["event"] == "event not routed yet: enrichment failed" for entry in logs)

            await eventually(lambda: failures() >= 3)  # routed again, and again
            stored = await daemon.journal.list()
            invocations = await daemon.journal.invocations(event_seq=stored[0].seq)
    assert [path for path, _ in sink.received] == ["/forget/llm/x/model.safetensors"]
    assert [item.status for item in stored] == ["pending"]  # reload-model has not decided yet
    assert [item.route for item in invocations] == ["forget-model"]
    failed = next(entry for entry in logs if entry["event"] == "event not routed yet: enrichment failed")
    assert failed["routes"] == ["reload-model"]


@pytest.fixture
async def receiver() -> AsyncIterator[otlp.Receiver]:
    async for running_receiver in otlp.receiving():
        yield running_receiver


async def test_the_reads_of_an_enriched_route_are_in_the_events_trace(
    tmp_path: Path,
    minio_config: settings_mod.Minio,
    s3: Any,
    bucket: str,
    sink: Sink,
    receiver: otlp.Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Traced (glue/tracing.py, spans to the OTLP/HTTP receiver of tests/observability/otlp.py): the
    MinIO SDK's reads are client spans under the event's enrichment span, in the delivery's trace."""
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    s3.put_object(Bucket=bucket, Key="llm/m/model.safetensors", Body=b"w", Tagging="stage=prod")
    s3.put_object(Bucket=bucket, Key="llm/m/manifest.json", Body=b'{"name": "m", "format": "gguf"}')
    minio = minio_config.model_dump(by_alias=True, exclude_none=True, mode="json")
    loaded = _settings(tmp_path, minio, sink.port).model_copy(
        update={"tracing": settings_mod.Tracing(endpoint=receiver.endpoint)}
    )
    async with aiohttp.ClientSession() as http, running(loaded) as daemon:
        webhook = _webhook(bucket, "llm/m/model.safetensors")
        async with http.post(f"{base_url(daemon)}/minio", data=webhook, headers=JSON) as response:
            assert response.status == 202
        await eventually(lambda: sink.received)

    [delivery] = receiver.named("delivery")
    [enrichment] = receiver.named("enrich")
    assert (enrichment.trace_id, enrichment.parent_span_id) == (delivery.trace_id, delivery.span_id)
    reads = receiver.children(enrichment)
    assert len(reads) >= 2 and {read.kind for read in reads} == {"CLIENT"}  # tags, manifest
    urls = [read.attributes.get("http.url") or read.attributes.get("url.full") for read in reads]
    assert all(url and bucket in url and "?" not in url for url in urls), urls  # no query kept
    [attempt] = [span for span in receiver.named("attempt") if span.trace_id == delivery.trace_id]
    assert attempt.parent_span_id == delivery.span_id
    [(_, headers)] = sink.received
    assert headers["traceparent"].split("-")[1] == delivery.trace_id
