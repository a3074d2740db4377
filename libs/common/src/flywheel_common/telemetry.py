"""OpenTelemetry wiring: traces (OTLP when configured), metrics, a Prometheus endpoint."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import Token
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from prometheus_client import start_http_server

from flywheel_common.settings import TelemetrySettings

log = logging.getLogger(__name__)


class WhileExported(Sampler):
    """Samples as `sampler` does once spans go somewhere (an OTLP exporter, a test's
    processor), and drops every span until then: a dropped span still carries trace ids
    into logs, events and calls, at a third of the cost of recording one no one reads."""

    def __init__(self, sampler: Sampler) -> None:
        self._sampler = sampler
        self.exported = False

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        sampler = self._sampler if self.exported else ALWAYS_OFF
        return sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"WhileExported{{{self._sampler.get_description()}}}"


@dataclass
class Telemetry:
    """The providers of one process, shared by every service it runs; `shutdown` flushes
    pending spans and metrics, and stops the providers when the last of those services
    shuts down (a service stopping must not end the traces of the others)."""

    tracer_provider: TracerProvider
    sampler: WhileExported
    meter_provider: MeterProvider
    metrics_port: int | None
    users: int = 1

    def export_spans(self, processors: Sequence[SpanProcessor]) -> None:
        """Hand finished spans to `processors` too; from then on spans are recorded."""
        for processor in processors:
            self.tracer_provider.add_span_processor(processor)
        if processors:
            self.sampler.exported = True

    def shutdown(self) -> None:
        self.users -= 1
        if self.users > 0:
            self.tracer_provider.force_flush()
            self.meter_provider.force_flush()
            return
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


_installed: Telemetry | None = None
_W3C = TraceContextTextMapPropagator()


def traceparent(span: SpanContext) -> str:
    """The W3C `traceparent` of a span, as events carry it; empty for an invalid span."""
    if not span.is_valid:
        return ""
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-{int(span.trace_flags):02x}"


def trace_context(parent: str) -> Context:
    """The context whose spans continue a `traceparent` (a new trace when it is empty or
    malformed)."""
    return _W3C.extract({"traceparent": parent} if parent else {})


class ServerSpan:
    """The span of one served call: it continues the caller's trace, and is the current span
    within the block.

    While nothing exports spans, the span is made here rather than by the SDK: the same
    non-recording span with fresh ids that the SDK makes once its sampler drops the span, at
    a third of the cost, on every call of every service."""

    __slots__ = ("_token", "span")
    _token: Token[Context]

    def __init__(
        self, tracer: trace.Tracer, name: str, caller: Context | None, attributes: Attributes
    ) -> None:
        installed = _installed
        if installed is None or installed.sampler.exported:
            self.span: Span = tracer.start_span(
                name,
                context=caller,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            )
        else:
            self.span = _dropped_span(caller, installed.tracer_provider.id_generator)

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, *exc_info: object) -> None:
        otel_context.detach(self._token)
        self.span.end()


_NO_FLAGS = TraceFlags(TraceFlags.DEFAULT)
_RANDOM_ID_FLAGS = TraceFlags(TraceFlags.RANDOM_TRACE_ID)


def _dropped_span(caller: Context | None, ids: IdGenerator) -> Span:
    """What the SDK's `Tracer.start_span` makes when the sampler drops the span."""
    parent = trace.get_current_span(caller).get_span_context()
    if parent.is_valid:
        trace_id, random_id = parent.trace_id, parent.trace_flags.random_trace_id
    else:
        trace_id, random_id = ids.generate_trace_id(), ids.is_trace_id_random()
    return NonRecordingSpan(
        SpanContext(
            trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=_RANDOM_ID_FLAGS if random_id else _NO_FLAGS,
            trace_state=parent.trace_state,
        )
    )


@contextmanager
def continued_trace(parent: str) -> Iterator[None]:
    """Within the block, spans and the calls of Flywheel's channels continue `parent` (a
    W3C traceparent; nothing changes when it is empty), with or without a tracer provider:
    a process that records no spans still hands the trace on to the servers it calls."""
    if not parent:
        yield
        return
    token = otel_context.attach(trace_context(parent))
    try:
        yield
    finally:
        otel_context.detach(token)


def configure_telemetry(
    service_name: str,
    instance_id: str,
    settings: TelemetrySettings,
    extra_span_processors: tuple[SpanProcessor, ...] = (),
) -> Telemetry:
    """Install global tracer and meter providers once per process.

    OpenTelemetry allows a single global provider, so later calls (several services in one
    test process) reuse the first installation and only add their span processors.
    """
    global _installed
    if _installed is not None:
        _installed.export_spans(extra_span_processors)
        _installed.users += 1
        return _installed

    resource = Resource.create({SERVICE_NAME: service_name, SERVICE_INSTANCE_ID: instance_id})
    sampler = WhileExported(ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)))
    tracer_provider = TracerProvider(resource=resource, sampler=sampler)
    processors = list(extra_span_processors)
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        processors.insert(
            0,
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True)),
        )
    trace.set_tracer_provider(tracer_provider)

    readers: list[MetricReader] = []
    metrics_port: int | None = None
    if settings.metrics_port >= 0:
        readers.append(PrometheusMetricReader())
        server, _ = start_http_server(settings.metrics_port, addr=settings.metrics_host)
        metrics_port = int(server.server_port)
        log.info("prometheus metrics served", extra={"port": metrics_port})
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=settings.otlp_endpoint, insecure=True)
            )
        )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(meter_provider)

    _installed = Telemetry(tracer_provider, sampler, meter_provider, metrics_port)
    _installed.export_spans(processors)
    return _installed
