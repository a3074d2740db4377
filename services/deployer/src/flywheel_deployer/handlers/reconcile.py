"""The engine's pass: move every pending or progressing rollout one decision along."""

from __future__ import annotations

import logging
from datetime import datetime

from flywheel_deployer.domain import Evidence, MetricWindow, Phase, Rollout, Strategy
from flywheel_deployer.handlers.ports import Deps, UnitOfWork, save

log = logging.getLogger(__name__)

MOVING = (Phase.PENDING, Phase.PROGRESSING)


async def reconcile(deps: Deps) -> None:
    """One pass; a rollout whose step fails is logged and retried on the next pass."""
    async with deps.unit_of_work() as uow:
        ids = await uow.rollouts.moving_ids()
    for rollout_id in ids:
        try:
            await step(deps, rollout_id)
        except Exception:
            log.exception("rollout step failed", extra={"rollout_id": rollout_id})


async def step(deps: Deps, rollout_id: str) -> None:
    """Prepare a pending rollout or judge a progressing one, in one transaction."""
    async with deps.unit_of_work() as uow:
        rollout = await uow.rollouts.get(rollout_id, for_update=True)
        if rollout is None or rollout.phase not in MOVING:
            return
        now = deps.clock()
        if rollout.phase is Phase.PENDING:
            after = prepare(deps, rollout, now)
        else:
            after = await judge(uow, rollout, now)
        if after == rollout:
            return
        await save(uow, after, now)
    if (after.phase, after.step_index) != (rollout.phase, rollout.step_index):
        deps.wakeup()


def prepare(deps: Deps, rollout: Rollout, now: datetime) -> Rollout:
    """PENDING: wait until every live gateway holds what the first step needs."""
    return rollout.prepare(deps.fleet.pending(rollout.model, rollout.needed_versions()), now)


async def judge(uow: UnitOfWork, rollout: Rollout, now: datetime) -> Rollout:
    """PROGRESSING: analyse the step (canary, shadow) over the stored windows, act on it;
    or move a bandit's traffic after every arm's windows since it began."""
    if rollout.strategy is Strategy.BANDIT:
        evidence = [
            Evidence.of(await uow.windows.since(rollout.model, arm.version, rollout.created_at))
            for arm in rollout.plan.arms
        ]
        return rollout.rebalance(evidence, now)
    if not rollout.judged:
        return rollout
    step_start = rollout.step_started_at or rollout.created_at
    candidate = await uow.windows.since(rollout.model, rollout.version, step_start)
    baseline = await uow.windows.since(rollout.model, rollout.baseline, rollout.created_at)
    return rollout.judge(rollout.assess(candidate, baseline, now), now)


async def record_window(deps: Deps, window: MetricWindow, consumer: str, event_id: str) -> None:
    """Keep a metric window for the analysis, once per event id of `consumer`."""
    async with deps.unit_of_work() as uow:
        if await uow.claim(consumer, event_id):
            await uow.windows.add(window)
    deps.wakeup()
