"""Events the deployer follows: promotions start rollouts, metric windows feed the analysis."""

from __future__ import annotations

from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.registry.v1 import events_pb2 as registry_events
from flywheel_common.consumer import Handler
from flywheel_common.events import Envelope
from flywheel_deployer import converters
from flywheel_deployer.handlers.ports import Deps
from flywheel_deployer.handlers.reconcile import record_window
from flywheel_deployer.handlers.rollouts import follow_promotion

PROMOTIONS_CONSUMER = "deployer.model-events"
METRICS_CONSUMER = "deployer.model-metrics"


def promotion_follower(deps: Deps) -> Handler:
    """flywheel.model-events: a version promoted to `production` starts its rollout."""

    async def handle(envelope: Envelope) -> None:
        if isinstance(envelope.message, registry_events.ModelVersionPromoted):
            await follow_promotion(deps, converters.promotion_of(envelope.message), envelope.id)

    return handle


def window_recorder(deps: Deps) -> Handler:
    """flywheel.model-metrics: store each window once (by its event id), for the analysis."""

    async def handle(envelope: Envelope) -> None:
        if isinstance(envelope.message, drift_events.ModelMetricsWindow):
            window = converters.metric_window_of(envelope.message)
            await record_window(deps, window, METRICS_CONSUMER, envelope.id)

    return handle
