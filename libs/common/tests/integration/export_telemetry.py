"""Configures telemetry with an OTLP endpoint, records one span and one counter, flushes.

Usage: python export_telemetry.py OTLP_ENDPOINT
(A process of its own: OpenTelemetry's providers are installed once per process.)
"""

import sys

from flywheel_common.settings import TelemetrySettings
from flywheel_common.telemetry import configure_telemetry

telemetry = configure_telemetry(
    "otlp-test", "instance-1", TelemetrySettings(otlp_endpoint=sys.argv[1], metrics_port=-1)
)
with telemetry.tracer_provider.get_tracer("tests").start_as_current_span("checkout"):
    telemetry.meter_provider.get_meter("tests").create_counter("checkouts").add(3)
telemetry.tracer_provider.force_flush()
telemetry.meter_provider.force_flush()
telemetry.tracer_provider.shutdown()
telemetry.meter_provider.shutdown()
