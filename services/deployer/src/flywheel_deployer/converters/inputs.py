"""The events the deployer follows (promotions, metric windows), as its use cases' inputs."""

from __future__ import annotations

from itertools import pairwise

from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.registry.v1 import events_pb2 as registry_events
from flywheel.registry.v1 import types_pb2 as registry_types
from flywheel_common.timestamps import datetime_of
from flywheel_deployer.analysis import Window
from flywheel_deployer.domain import MetricWindow
from flywheel_deployer.handlers.rollouts import Promotion

PRODUCTION = "production"


def promotion_of(event: registry_events.ModelVersionPromoted) -> Promotion:
    return Promotion(
        model=event.model,
        version=event.version,
        to_production=event.alias == PRODUCTION,
        by_rollback=event.cause == registry_types.ALIAS_CHANGE_CAUSE_ROLLBACK,
        reason=event.reason,
        actor=event.actor,
    )


def metric_window_of(window: drift_events.ModelMetricsWindow) -> MetricWindow:
    outputs: dict[str, int] = {}
    for output in window.output_histograms:
        histogram = output.histogram
        labels = list(histogram.categories) or [
            f"{lo:g}..{hi:g}" for lo, hi in pairwise(histogram.bin_edges)
        ]
        for label, count in zip(labels, histogram.counts, strict=False):
            key = f"{output.output}:{label}"
            outputs[key] = outputs.get(key, 0) + int(count)
    label_metrics = window.label_metrics
    return MetricWindow(
        model=window.model,
        version=window.version,
        start=datetime_of(window.window.start, "window.start"),
        end=datetime_of(window.window.end, "window.end"),
        summary=Window(
            window_id=window.window.window_id,
            requests=window.request_count,
            errors=window.error_count,
            latency_p99_ms=window.latency.p99_ms,
            outputs=outputs,
            labeled=label_metrics.labeled_count,
            accuracy=label_metrics.accuracy if label_metrics.HasField("accuracy") else None,
        ),
    )
