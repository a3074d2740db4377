"""Spans are recorded only while something exports them; trace ids flow either way."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from flywheel_common import telemetry
from flywheel_common.telemetry import ServerSpan, WhileExported, trace_context, traceparent

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


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> telemetry.Telemetry:
    """A process's telemetry, as `configure_telemetry` installs it: nothing exports its spans
    yet."""
    tracer_provider, sampler, _ = provider()
    installed = telemetry.Telemetry(tracer_provider, sampler, MeterProvider(), None)
    monkeypatch.setattr(telemetry, "_installed", installed)
    return installed


@pytest.mark.parametrize("caller", [CALLER, ""], ids=["continued", "new trace"])
def test_a_server_span_no_one_exports_carries_the_ids_the_sdk_would_give_it(
    installed: telemetry.Telemetry, caller: str
) -> None:
    tracer = installed.tracer_provider.get_tracer(__name__)
    made_by_sdk = tracer.start_span("call", context=trace_context(caller)).get_span_context()
    with ServerSpan(tracer, "call", trace_context(caller), {"rpc.method": "M"}) as span:
        assert trace.get_current_span() is span
        context = span.get_span_context()
    assert trace.get_current_span() is not span
    assert not span.is_recording()
    assert context.is_valid
    assert not context.is_remote
    assert context.trace_flags == made_by_sdk.trace_flags
    assert context.trace_state == made_by_sdk.trace_state
    if caller:
        assert context.trace_id == made_by_sdk.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert context.span_id != made_by_sdk.span_id


def test_once_exported_a_server_span_is_recorded_with_its_attributes(
    installed: telemetry.Telemetry,
) -> None:
    spans = InMemorySpanExporter()
    installed.export_spans([SimpleSpanProcessor(spans)])
    tracer = installed.tracer_provider.get_tracer(__name__)
    with ServerSpan(tracer, "call", trace_context(CALLER), {"rpc.method": "M"}) as span:
        assert span.is_recording()
        assert trace.get_current_span() is span
    [finished] = spans.get_finished_spans()
    assert finished.name == "call"
    assert finished.kind is trace.SpanKind.SERVER
    assert finished.attributes == {"rpc.method": "M"}
    assert finished.context is not None
    assert finished.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
