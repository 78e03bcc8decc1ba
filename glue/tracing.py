"""OpenTelemetry traces, the one module that imports ``opentelemetry``.

A trace follows an event from its delivery to the objects its handlers change:

- one span per delivery (``SERVER`` over HTTP, ``CONSUMER`` from Kafka, the EventBus, MinIO): endpoint,
  format, outcome and event ids; its parent is the delivery's ``traceparent`` header (HTTP header,
  Kafka record header), else the first event's ``traceparent`` extension (CloudEvents distributed
  tracing extension), else none (a new trace);
- an event that arrives without a ``traceparent`` extension gets the delivery span's, before it is
  journaled. The journaled event thus carries its trace context, and every attempt of every
  invocation of it, an hour later, after a restart or from ``glue dlq retry``, continues that trace.
  An extension the producer sent is kept as it was: the extension carries the trace in which the
  event started, and middleware may add one but not change it (CloudEvents, extensions/distributed-
  tracing.md, "Using the Distributed Tracing Extension");
- one span per attempt (route, handler, attempt, outcome, event id, idempotency key), whose parent is
  the event's ``traceparent`` extension;
- a client span for every outbound HTTP request: of aiohttp (Kubernetes, OpenBao, the ``http``
  handler, the MinIO listen stream) by the aiohttp client instrumentation, of urllib3 (the MinIO SDK:
  route enrichment, the archive) by the urllib3 instrumentation; both send the trace context
  (``traceparent``) on each request. URLs are recorded without user info or query;
- one span per enrichment of an event (the MinIO reads of routes with an ``enrich`` block), child of
  the event's ``traceparent``, so those reads are in the event's trace too.

Off unless an OTLP endpoint is configured (``tracing.endpoint`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``):
then :func:`setup` returns None, no provider, exporter or instrumentation exists, and the parts given
None do no tracing work at all (this module is not even imported). The standard ``OTEL_*`` variables
override the ``tracing`` settings, and the SDK reads the rest of them (``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_BSP_*``, ...) itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import yarl
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from glue import settings as settings_mod

__all__ = ["Attempt", "Delivery", "Tracing", "log_fields", "setup"]

_PROPAGATOR = TraceContextTextMapPropagator()

#: The span context of this task's last delivery, for the log lines written after its span ended
#: (the HTTP source's ``delivery`` line).
_last_delivery: contextvars.ContextVar[trace.SpanContext | None] = contextvars.ContextVar(
    "glue_last_delivery", default=None
)

_KINDS = {"http": trace.SpanKind.SERVER}  # every other transport consumes from a broker or stream


def _sampler(config: settings_mod.Tracing, environ: Mapping[str, str]) -> sampling.Sampler:
    """The sampler named by ``OTEL_TRACES_SAMPLER`` (and its ``_ARG``), else by the settings."""
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or config.sampler
    raw = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    try:
        ratio = float(raw) if raw else config.sampler_arg
    except ValueError:
        raise settings_mod.ConfigError(
            "environment", [("OTEL_TRACES_SAMPLER_ARG", f"{raw!r} is not a number")]
        ) from None
    ratio = 1.0 if ratio is None else ratio
    samplers: dict[str, sampling.Sampler] = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": sampling.TraceIdRatioBased(ratio),
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(sampling.TraceIdRatioBased(ratio)),
    }
    if name not in samplers:
        raise settings_mod.ConfigError(
            "environment",
            [("OTEL_TRACES_SAMPLER", f"{name!r} is not one of {', '.join(sorted(samplers))}")],
        )
    return samplers[name]


def _resource(config: settings_mod.Tracing) -> Resource:
    """The settings' service name and attributes, with ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` over them."""
    configured = Resource.create({**config.resource_attributes, "service.name": config.service_name})
    return configured.merge(OTELResourceDetector().detect())


def _exporter(config: settings_mod.Tracing, environ: Mapping[str, str]) -> SpanExporter:
    """The OTLP exporter: the endpoint and protocol of the standard variables, else of the settings."""
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or config.protocol
    ).strip()
    from_environment = any(environ.get(name) for name in settings_mod.OTLP_ENDPOINT_VARIABLES)
    endpoint = None if from_environment else config.endpoint  # None: the exporter reads the variables
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError:
            raise settings_mod.ConfigError(
                "tracing",
                [("protocol", "grpc needs the OTLP gRPC exporter: pip install 'runtime-glue[grpc]'")],
            ) from None
        exporter: SpanExporter = GrpcSpanExporter(endpoint=endpoint)
        return exporter
    if protocol != "http/protobuf":
        raise settings_mod.ConfigError(
            "environment", [("OTEL_EXPORTER_OTLP_PROTOCOL", f"{protocol!r}: use http/protobuf or grpc")]
        )
    if endpoint is not None:
        endpoint = endpoint.rstrip("/") + "/v1/traces"  # as the SDK treats OTEL_EXPORTER_OTLP_ENDPOINT
    return OTLPSpanExporter(endpoint=endpoint)


def _url_filter(url: yarl.URL | str) -> str:
    """A request's URL as a span records it: no user info, no query (either may hold a credential,
    a presigned URL's signature say)."""
    parsed = yarl.URL(url) if isinstance(url, str) else url
    return str(parsed.with_user(None).with_query(None).with_fragment(None))


def setup(
    config: settings_mod.Tracing,
    environ: Mapping[str, str],
    *,
    exporter: SpanExporter | None = None,
) -> Tracing | None:
    """Tracing as configured, or None when no endpoint is set (nothing is created then).
    ``exporter`` replaces the OTLP exporter (a benchmark's own)."""
    if exporter is None and not config.exporting(environ):
        return None
    provider = TracerProvider(resource=_resource(config), sampler=_sampler(config, environ))
    provider.add_span_processor(BatchSpanProcessor(exporter or _exporter(config, environ)))
    return Tracing(provider)


def log_fields(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: ``trace_id`` and ``span_id`` of the span the line is written in (else of
    the task's last delivery). Added to the chain only while tracing is on."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        context = _last_delivery.get() or context
    if context.is_valid:
        event_dict.setdefault("trace_id", trace.format_trace_id(context.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(context.span_id))
    return event_dict


def _context_of(traceparent: str | None) -> otel_context.Context | None:
    """The remote parent a ``traceparent`` value names, or None when it is absent or malformed."""
    if not traceparent:
        return None
    extracted = _PROPAGATOR.extract({"traceparent": traceparent})
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


def _traceparent(span: trace.Span) -> str:
    """The W3C ``traceparent`` of a span (also of one not sampled: the trace id still links), as the
    trace-context propagator writes it, without the carrier and context it needs for that."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


class Delivery:
    """The span of one delivery: opened once its events are decoded (the parent may be an event's
    extension), current while they are journaled, closed with the outcome. Its start is the arrival."""

    def __init__(self, tracer: trace.Tracer, transport: str, endpoint: str, format_: str) -> None:
        self._tracer = tracer
        self._kind = _KINDS.get(transport, trace.SpanKind.CONSUMER)
        self._attributes: dict[str, Any] = {
            "glue.transport": transport,
            "glue.endpoint": endpoint,
            "glue.format": format_,
        }
        self._started = time.time_ns()
        self._span: trace.Span | None = None
        self._token: contextvars.Token[otel_context.Context] | None = None
        self.traceparent = ""

    def open(self, header: str | None, extensions: Sequence[str | None] = ()) -> str:
        """Start the span under ``header`` (the delivery's ``traceparent``), else the first event's
        extension, and make it current; returns its ``traceparent``, to stamp on events lacking one."""
        parent = _context_of(header)
        if parent is None and extensions:
            parent = _context_of(extensions[0])
        span = self._tracer.start_span(
            f"delivery {self._attributes['glue.endpoint']}",
            context=parent or otel_context.Context(),  # no parent: a new trace, whatever is current
            kind=self._kind,
            attributes=self._attributes,
            start_time=self._started,
        )
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))
        _last_delivery.set(span.get_span_context())
        self.traceparent = _traceparent(span)
        return self.traceparent

    def close(self, outcome: str, *, ids: Sequence[str] = (), error: str | None = None) -> None:
        """End the span with the delivery's outcome (accepted, duplicate, rejected, ...). Only glue's
        own failure (unavailable, failed) is an error status: a bad delivery is the sender's, as a
        4xx answer is not an error of an HTTP server span."""
        if self._span is None:
            self.open(None)
        span = self._span
        assert span is not None
        attributes: dict[str, Any] = {"glue.outcome": outcome}
        if ids:
            attributes["glue.event_ids"] = list(ids)
        if error is not None:
            attributes["glue.error"] = error
            if outcome in ("unavailable", "failed"):
                span.set_status(trace.StatusCode.ERROR, error)
        span.set_attributes(attributes)
        span.end()
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None


class Attempt:
    """The span of one attempt, current while the handler runs (its client calls are its children)."""

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def ended(self, outcome: str, error: str | None = None) -> None:
        self._span.set_attribute("glue.outcome", outcome)
        if error is not None:
            self._span.set_attribute("glue.error", error)
            if outcome in ("retry", "dead", "dropped"):
                self._span.set_status(trace.StatusCode.ERROR, error)


class Tracing:
    """A tracer provider exporting over OTLP, the aiohttp client instrumented while it runs."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("runtime-glue")
        self._instrumentors = (AioHttpClientInstrumentor(), URLLib3Instrumentor())

    def start(self) -> None:
        """Instrument the HTTP clients: every aiohttp session created from now on, and urllib3 (the
        MinIO SDK), trace their requests."""
        for instrumentor in self._instrumentors:
            instrumentor.instrument(tracer_provider=self.provider, url_filter=_url_filter)

    async def stop(self) -> None:
        """Stop instrumenting, export what is left (in a thread: the exporter blocks)."""
        for instrumentor in self._instrumentors:
            instrumentor.uninstrument()
        await asyncio.to_thread(self.provider.shutdown)

    @contextlib.contextmanager
    def enrichment(self, traceparent: str | None, event_id: str) -> Iterator[None]:
        """The span of an event's enrichment (its MinIO reads are its children)."""
        with self.tracer.start_as_current_span(
            "enrich",
            context=_context_of(traceparent) or otel_context.Context(),
            attributes={"glue.event_id": event_id},
        ):
            yield

    def delivery(self, transport: str, endpoint: str, format_: str) -> Delivery:
        """The span of a delivery that arrives now (opened by :meth:`Delivery.open`)."""
        return Delivery(self.tracer, transport, endpoint, format_)

    @contextlib.contextmanager
    def attempt(
        self,
        traceparent: str | None,
        *,
        route: str,
        handler: str,
        attempt: int,
        event_id: str,
        idempotency_key: str,
    ) -> Iterator[Attempt]:
        """The span of one attempt, child of the event's ``traceparent`` (its delivery's span)."""
        attributes: dict[str, Any] = {
            "glue.route": route,
            "glue.handler": handler,
            "glue.attempt": attempt,
            "glue.event_id": event_id,
            "glue.idempotency_key": idempotency_key,
        }
        with self.tracer.start_as_current_span(
            f"attempt {route}",
            context=_context_of(traceparent) or otel_context.Context(),
            kind=trace.SpanKind.INTERNAL,
            attributes=attributes,
        ) as span:
            yield Attempt(span)
