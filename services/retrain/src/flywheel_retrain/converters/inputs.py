"""The events the trigger follows (drift alerts, metric windows), as its use cases'
inputs."""

from __future__ import annotations

from datetime import datetime

from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel_retrain.converters.fields import SEVERITIES, alert_kind, time_of
from flywheel_retrain.domain import Alert, Severity, StoredWindow


def alert_of(message: drift_events.DriftAlert) -> tuple[Alert, datetime | None]:
    """A drift alert and when it happened."""
    alert = Alert(
        alert_id=message.alert_id,
        model=message.model,
        version=message.version,
        severity=SEVERITIES.get(message.severity, Severity.NONE),
        kinds=frozenset(alert_kind(k) for k in message.kinds),
        drifted_features=message.features_drifted,
        traceparent=message.traceparent,
        change_began_at=time_of(message, "change_began_at"),
    )
    return alert, time_of(message, "occurred_at")


def window_of(message: drift_events.ModelMetricsWindow, now: datetime) -> StoredWindow:
    """What the trigger keeps of a metric window; one without an end ends `now`."""
    labels = message.label_metrics
    return StoredWindow(
        model=message.model,
        version=message.version,
        window_id=message.window.window_id,
        window_end=time_of(message.window, "end") or now,
        labeled=labels.labeled_count,
        accuracy=labels.accuracy if labels.HasField("accuracy") else None,
        mean_absolute_error=(
            labels.mean_absolute_error if labels.HasField("mean_absolute_error") else None
        ),
        error_rate=(message.error_count / message.request_count if message.request_count else None),
        estimated_accuracy=message.estimate.accuracy if message.HasField("estimate") else None,
        estimated_count=message.estimate.prediction_count,
    )
