"""Events the registry follows: the deployer's rollbacks move `production` back."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from flywheel.deployer.v1 import events_pb2 as deployer_events
from flywheel_common.auth import Principal, set_current_principal
from flywheel_common.events import Envelope
from flywheel_common.inbox import TransactionalHandler
from flywheel_common.settings import Role
from flywheel_registry.handlers import Registry

CONSUMER_NAME = "registry.deployment-events"


def rollback_follower(registry: Registry) -> TransactionalHandler:
    """A transactional handler for flywheel.deployment-events (dedupe on ce_id around it)."""

    async def handle(envelope: Envelope, session: AsyncSession) -> None:
        event = envelope.message
        if not isinstance(event, deployer_events.RolloutRolledBack):
            return  # the other rollout events change nothing the registry owns
        # The audit trail names who rolled back: the deployer (or the operator it names).
        set_current_principal(Principal(subject=event.actor or envelope.source, role=Role.ADMIN))
        await registry.restore_production_after_rollback(
            session,
            event.model,
            restored=event.restored_version,
            rolled_back=event.rolled_back_version,
            rollout_id=event.rollout_id,
            reason=event.reason,
        )

    return handle
