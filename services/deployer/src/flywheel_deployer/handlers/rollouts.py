"""Starting rollouts: on request, or when the registry promotes a version to production."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from flywheel_common.errors import FailedPrecondition, InvalidArgument
from flywheel_common.names import check_name
from flywheel_deployer.domain import Policy, Rollout, Strategy, Trigger
from flywheel_deployer.handlers.ports import Deps, RolloutView, actor, policy_of, save, view

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartRollout:
    model: str
    version: int
    strategy: Strategy | None = None
    """Replaces the policy's strategy."""
    policy_override: Policy | None = None
    """Replaces the model's stored policy for this rollout."""
    reason: str = ""
    supersede: bool = False
    """Replace a running rollout of the model instead of failing."""
    idempotency_key: str = ""
    """A second start with the same key returns the first rollout."""
    trigger: Trigger = Trigger.MANUAL


@dataclass(frozen=True)
class Promotion:
    """The registry moved an alias of a model to a version."""

    model: str
    version: int
    to_production: bool
    by_rollback: bool
    """The registry following one of the deployer's rollbacks."""
    reason: str = ""
    actor: str = ""


async def start_rollout(deps: Deps, command: StartRollout) -> RolloutView:
    model, version = command.model, command.version
    check_name("model", model)
    if version < 1:
        raise InvalidArgument(f"version must be 1 or more, not {version}")
    await deps.registry.servable_version(model, version)
    async with deps.unit_of_work() as uow:
        if command.idempotency_key:
            existing = await uow.rollouts.by_idempotency_key(model, command.idempotency_key)
            if existing is not None:
                return view(deps, existing)
        policy = command.policy_override or await policy_of(uow, model)
        policy = policy.with_strategy(command.strategy)
        running = await uow.rollouts.active(model)
        state = await uow.states.get(model)
        serving = state.routing.serving_version if state is not None else 0
        baseline = running.baseline if running is not None else serving
        if baseline == version:
            baseline = 0 if running is None else running.baseline
        now, who, rollout_id = deps.clock(), actor(), uuid.uuid4().hex
        if running is not None:
            if not command.supersede:
                raise FailedPrecondition(
                    f"rollout {running.rollout_id} of {model!r} is still {running.phase}; "
                    "set supersede to replace it, or end it first"
                )
            uow.rollouts.save(running.supersede(rollout_id, now, version=version, actor=who))
        rollout = Rollout.start(
            rollout_id,
            model,
            version,
            baseline,
            policy,
            trigger=command.trigger,
            actor=who,
            reason=command.reason,
            now=now,
            idempotency_key=command.idempotency_key,
            superseding=running.rollout_id if running is not None else "",
        )
        await save(uow, rollout, now)
    deps.wakeup()
    return view(deps, rollout)


async def follow_promotion(deps: Deps, promotion: Promotion, event_id: str) -> None:
    """A version became `production`: roll it out if the model's policy says so.

    The event id is the rollout's idempotency key, so a redelivered promotion returns the
    rollout it started, even one that has since been rolled back, and never starts another.
    """
    model, version = promotion.model, promotion.version
    if not promotion.to_production or promotion.by_rollback:
        return  # a rollback's promotion follows traffic that is already there
    async with deps.unit_of_work() as uow:
        policy = await policy_of(uow, model)
        state = await uow.states.get(model)
        running = await uow.rollouts.active(model)
    if not policy.auto_rollout_on_promotion:
        log.info("promotion without automatic rollout", extra={"model": model})
        return
    serving = state.routing.serving_version if state is not None else 0
    if running is None and serving == version:
        return  # already serving it
    if running is not None and running.version == version:
        return  # already rolling it out
    await start_rollout(
        deps,
        StartRollout(
            model,
            version,
            reason=promotion.reason
            or f"promoted to production by {promotion.actor or 'the registry'}",
            supersede=True,
            idempotency_key=f"promotion:{event_id}",
            trigger=Trigger.PROMOTION,
        ),
    )
