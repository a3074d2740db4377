"""With an OTLP endpoint configured, a service's spans and metrics reach the collector."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as metrics_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_grpc

EXPORT_TELEMETRY = Path(__file__).with_name("export_telemetry.py")


class Collector(trace_grpc.TraceServiceServicer, metrics_grpc.MetricsServiceServicer):
    """An OTLP/gRPC collector that keeps what it is sent."""

    def __init__(self) -> None:
        self.traces: list[trace_pb.ExportTraceServiceRequest] = []
        self.metrics: list[metrics_pb.ExportMetricsServiceRequest] = []

    async def Export(self, request, context):  # type: ignore[no-untyped-def]
        if isinstance(request, trace_pb.ExportTraceServiceRequest):
            self.traces.append(request)
            return trace_pb.ExportTraceServiceResponse()
        self.metrics.append(request)
        return metrics_pb.ExportMetricsServiceResponse()


async def test_spans_and_metrics_are_exported_over_otlp_when_an_endpoint_is_set() -> None:
    collector = Collector()
    server = grpc.aio.server()
    trace_grpc.add_TraceServiceServicer_to_server(collector, server)
    metrics_grpc.add_MetricsServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(EXPORT_TELEMETRY), f"http://127.0.0.1:{port}"
        )
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        await server.stop(None)

    spans = [
        (resource.resource, span.name)
        for request in collector.traces
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    [(resource, name)] = spans
    assert name == "checkout"
    attributes = {a.key: a.value.string_value for a in resource.attributes}
    assert attributes["service.name"] == "otlp-test"
    assert attributes["service.instance.id"] == "instance-1"
    sums = {
        metric.name: [point.as_int for point in metric.sum.data_points]
        for request in collector.metrics
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert sums["checkouts"] == [3]
