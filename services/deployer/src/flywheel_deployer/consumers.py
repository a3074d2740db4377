"""Events the deployer follows: promotions start rollouts, metric windows feed the analysis."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.registry.v1 import events_pb2 as registry_events
from flywheel_common.consumer import Handler
from flywheel_common.events import Envelope
from flywheel_common.inbox import TransactionalHandler
from flywheel_deployer.handlers import Deployer

PROMOTIONS_CONSUMER = "deployer.model-events"
METRICS_CONSUMER = "deployer.model-metrics"


def promotion_follower(deployer: Deployer) -> Handler:
    """flywheel.model-events: a version promoted to `production` starts its rollout.

    The event id is the rollout's idempotency key, so a redelivered promotion returns the
    rollout it started, even one that has since been rolled back, and never starts another.
    """

    async def handle(envelope: Envelope) -> None:
        if isinstance(envelope.message, registry_events.ModelVersionPromoted):
            await deployer.on_promotion(envelope.message, envelope.id)

    return handle


def window_recorder(deployer: Deployer) -> TransactionalHandler:
    """flywheel.model-metrics: store each window once, for the canary analysis."""

    async def handle(envelope: Envelope, session: AsyncSession) -> None:
        if isinstance(envelope.message, drift_events.ModelMetricsWindow):
            await deployer.record_window(session, envelope.message)

    return handle
