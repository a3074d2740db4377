"""Events the registry follows: the deployer's rollbacks move `production` back."""

from __future__ import annotations

from flywheel.deployer.v1 import events_pb2 as deployer_events
from flywheel_common.consumer import Handler
from flywheel_common.events import Envelope
from flywheel_registry.handlers.ports import Deps
from flywheel_registry.handlers.rollbacks import RolloutRolledBack, follow_rollback

CONSUMER_NAME = "registry.deployment-events"


def rollback_follower(deps: Deps) -> Handler:
    """flywheel.deployment-events: a rollback moves `production` back, once per ce_id; the
    other rollout events change nothing the registry owns."""

    async def handle(envelope: Envelope) -> None:
        event = envelope.message
        if isinstance(event, deployer_events.RolloutRolledBack):
            rollback = RolloutRolledBack(
                model=event.model,
                restored_version=event.restored_version,
                rolled_back_version=event.rolled_back_version,
                rollout_id=event.rollout_id,
                reason=event.reason,
                actor=event.actor or envelope.source,
            )
            await follow_rollback(deps, rollback, CONSUMER_NAME, envelope.id)

    return handle
