"""Spans are recorded only while something exports them; trace ids flow either way."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from flywheel_common.telemetry import WhileExported, trace_context, traceparent

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def provider() -> tuple[TracerProvider, WhileExported, InMemorySpanExporter]:
    sampler = WhileExported(ParentBased(TraceIdRatioBased(1.0)))
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    return tracer_provider, sampler, spans


def test_with_no_exporter_no_span_is_recorded_yet_the_callers_trace_goes_on() -> None:
    tracer_provider, _, spans = provider()
    tracer = tracer_provider.get_tracer(__name__)
    with tracer.start_as_current_span("call", context=trace_context(CALLER)) as span:
        context = span.get_span_context()
    assert not span.is_recording()
    assert spans.get_finished_spans() == ()
    assert context.is_valid
    assert traceparent(context).startswith("00-0af7651916cd43dd8448eb211c80319c-")
    with tracer.start_as_current_span("root") as root:
        assert root.get_span_context().is_valid  # a new trace id, for the logs


def test_once_exported_spans_are_sampled_by_the_ratio_and_the_caller() -> None:
    tracer_provider, sampler, spans = provider()
    sampler.exported = True
    tracer = tracer_provider.get_tracer(__name__)
    with tracer.start_as_current_span("call", context=trace_context(CALLER)) as span:
        assert span.is_recording()
    [finished] = spans.get_finished_spans()
    assert finished.context is not None
    assert finished.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert "TraceIdRatioBased" in sampler.get_description()
