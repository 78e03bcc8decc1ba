"""An OTLP/HTTP trace receiver: a real aiohttp server taking ``POST /v1/traces`` as an OpenTelemetry
collector does, the body an ``ExportTraceServiceRequest`` in protobuf, decoded with opentelemetry-proto.

It follows the OTLP specification (opentelemetry-proto ``docs/specification.md``, "OTLP/HTTP"): binary
protobuf request (``Content-Type: application/x-protobuf``, optionally ``Content-Encoding: gzip``), a
200 answer carrying an ``ExportTraceServiceResponse``; and ``opentelemetry/proto/trace/v1/trace.proto``
for the span fields read here.
"""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = ["Receiver", "Span", "receiving"]


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


@dataclasses.dataclass(frozen=True)
class Span:
    """One received span, ids in hex as W3C ``traceparent`` writes them."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str  # SERVER, CONSUMER, CLIENT, INTERNAL
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status: str  # UNSET, OK, ERROR
    start_ns: int
    end_ns: int

    @classmethod
    def of(cls, span: trace_pb2.Span, resource: dict[str, Any]) -> Span:
        return cls(
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_span_id=span.parent_span_id.hex(),
            name=span.name,
            kind=trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
            attributes=_attributes(span.attributes),
            resource=resource,
            status=trace_pb2.Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
            start_ns=span.start_time_unix_nano,
            end_ns=span.end_time_unix_nano,
        )


class Receiver:
    """Collects every span exported to it; ``endpoint`` is the base URL (OTEL_EXPORTER_OTLP_ENDPOINT)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self.endpoint = ""

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415, text=f"unsupported content type {request.content_type}")
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        exported = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        self.requests += 1
        for resource_spans in exported.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(Span.of(span, resource) for span in scope_spans.spans)
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    def named(self, prefix: str) -> list[Span]:
        return [span for span in self.spans if span.name.startswith(prefix)]

    def children(self, parent: Span) -> list[Span]:
        return [
            span
            for span in self.spans
            if span.trace_id == parent.trace_id and span.parent_span_id == parent.span_id
        ]


async def receiving() -> AsyncIterator[Receiver]:
    """A receiver on a free loopback port, for a fixture."""
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver._traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await runner.cleanup()
