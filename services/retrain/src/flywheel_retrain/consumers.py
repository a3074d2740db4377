"""Events the retrain trigger follows: drift alerts and metric windows become causes."""

from __future__ import annotations

from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel_common.consumer import Handler
from flywheel_common.events import Envelope
from flywheel_retrain import converters
from flywheel_retrain.handlers.ports import Deps
from flywheel_retrain.handlers.starts import on_alert, on_window

METRICS_CONSUMER = "retrain.model-metrics"


def alert_follower(deps: Deps) -> Handler:
    """flywheel.drift-alerts: an alert that meets the policy queues a run. A redelivered
    alert finds the run it started (runs are unique per trigger), so no inbox is needed."""

    async def handle(envelope: Envelope) -> None:
        if isinstance(envelope.message, drift_events.DriftAlert):
            alert, occurred_at = converters.alert_of(envelope.message)
            await on_alert(deps, alert, occurred_at)

    return handle


def window_follower(deps: Deps) -> Handler:
    """flywheel.model-metrics: each window is stored once (by its event id), then decay is
    evaluated on every delivery."""

    async def handle(envelope: Envelope) -> None:
        if isinstance(envelope.message, drift_events.ModelMetricsWindow):
            window = converters.window_of(envelope.message, deps.clock())
            await on_window(deps, window, METRICS_CONSUMER, envelope.id)

    return handle
