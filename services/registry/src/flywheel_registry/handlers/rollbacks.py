"""Following the deployer: a rolled-back rollout moves `production` back."""

from __future__ import annotations

from dataclasses import dataclass

from flywheel_registry.handlers.ports import Deps, load_version, lock_model


@dataclass(frozen=True)
class RolloutRolledBack:
    """The deployer rolled a rollout of `model` back."""

    model: str
    restored_version: int
    """The version that serves again (0: none)."""
    rolled_back_version: int
    """The version taken out of traffic (0: none)."""
    rollout_id: str
    reason: str
    actor: str
    """Who rolled back (the deployer, or the operator it names); the audit trail keeps it."""


async def follow_rollback(
    deps: Deps, rollback: RolloutRolledBack, consumer: str, event_id: str
) -> None:
    """Apply the rollback once per event id of `consumer`, in one transaction with the record
    that it was applied."""
    async with deps.unit_of_work() as uow:
        if not await uow.claim(consumer, event_id):
            return
        model = await lock_model(deps, uow, rollback.model)
        restored = (
            await load_version(uow, model, rollback.restored_version)
            if rollback.restored_version
            else None
        )
        rolled_back = (
            await load_version(uow, model, rollback.rolled_back_version)
            if rollback.rolled_back_version
            else None
        )
        model.follow_rollback(
            restored,
            rolled_back,
            actor=rollback.actor,
            rollout_id=rollback.rollout_id,
            reason=rollback.reason,
            now=deps.clock(),
        )
        uow.models.save(model)
        for version in (restored, rolled_back):
            if version is not None:
                uow.versions.save(version)
