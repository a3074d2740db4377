"""Events the retrain trigger follows: drift alerts and metric windows become causes."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel_common.consumer import Handler
from flywheel_common.db import Database
from flywheel_common.events import Envelope
from flywheel_common.inbox import deduplicated
from flywheel_retrain.handlers import Retrainer

METRICS_CONSUMER = "retrain.model-metrics"


def alert_follower(retrainer: Retrainer) -> Handler:
    """flywheel.drift-alerts: an alert that meets the policy queues a run. A redelivered
    alert finds the run it started (runs are unique per trigger), so no inbox is needed."""

    async def handle(envelope: Envelope) -> None:
        if isinstance(envelope.message, drift_events.DriftAlert):
            await retrainer.on_alert(envelope.message)

    return handle


def window_follower(retrainer: Retrainer, database: Database) -> Handler:
    """flywheel.model-metrics: each window is stored once (labels count toward the guards,
    values toward decay); then decay is evaluated, on every delivery, so a decay whose run
    could not start (the registry was down, the process died) starts on redelivery."""

    async def handle(envelope: Envelope) -> None:
        message = envelope.message
        if not isinstance(message, drift_events.ModelMetricsWindow):
            return

        async def record(envelope: Envelope, session: AsyncSession) -> None:
            await retrainer.record_window(session, message)

        await deduplicated(database, METRICS_CONSUMER, record)(envelope)
        cause = await retrainer.decay_cause(message.model, message.version)
        if cause is not None:
            await retrainer.on_decay(message.model, cause)

    return handle
