"""What operators do to rollouts: pause, resume, promote now, abort, roll back."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from flywheel_common.auth import require_role
from flywheel_common.errors import FailedPrecondition, InvalidArgument
from flywheel_common.names import check_name
from flywheel_common.settings import Role
from flywheel_deployer.domain import Phase, Rollout
from flywheel_deployer.handlers.ports import (
    Deps,
    RolloutView,
    actor,
    load,
    policy_of,
    save,
    view,
)


async def pause(deps: Deps, rollout_id: str, reason: str) -> RolloutView:
    return await _change(
        deps, rollout_id, lambda rollout, now: rollout.pause(now, reason or f"paused by {actor()}")
    )


async def resume(deps: Deps, rollout_id: str) -> RolloutView:
    return await _change(deps, rollout_id, lambda rollout, now: rollout.resume(now))


async def promote_now(deps: Deps, rollout_id: str, version: int, reason: str) -> RolloutView:
    """End the rollout with `version` (default: its candidate) taking all traffic."""

    def change(rollout: Rollout, now: datetime) -> Rollout:
        who = actor()
        return rollout.promote_now(version, now, reason or f"promoted now by {who}", who)

    return await _change(deps, rollout_id, change)


async def abort(deps: Deps, rollout_id: str, reason: str) -> RolloutView:
    def change(rollout: Rollout, now: datetime) -> Rollout:
        who = actor()
        return rollout.abort(now, reason or f"aborted by {who}", who)

    return await _change(deps, rollout_id, change)


async def rollback(deps: Deps, model: str, to_version: int, reason: str) -> RolloutView:
    """All traffic to a named older version at once; the registry moves `production`."""
    check_name("model", model)
    if to_version < 1:
        raise InvalidArgument("to_version must name the version to roll back to")
    await deps.registry.servable_version(model, to_version)
    async with deps.unit_of_work() as uow:
        state = await uow.states.get(model)
        running = await uow.rollouts.active(model)
        if state is None and running is None:
            raise FailedPrecondition(f"{model!r} is not deployed; nothing to roll back")
        now, who = deps.clock(), actor()
        why = reason or f"rolled back to version {to_version} by {who}"
        rolled_back = state.routing.serving_version if state is not None else 0
        if running is not None:
            rolled_back = running.version
            uow.rollouts.save(running.finish(Phase.ROLLED_BACK, now, why))
        elif rolled_back == to_version:
            raise FailedPrecondition(f"{model!r} already serves version {to_version}")
        rollout = Rollout.rollback(
            uuid.uuid4().hex,
            model,
            to_version,
            rolled_back,
            await policy_of(uow, model),
            actor=who,
            reason=why,
            now=now,
            ended=running,
        )
        await save(uow, rollout, now)
    deps.wakeup()
    return view(deps, rollout)


async def _change(
    deps: Deps, rollout_id: str, change: Callable[[Rollout, datetime], Rollout]
) -> RolloutView:
    async with deps.unit_of_work() as uow:
        before = await load(uow, rollout_id)
        require_role(Role.WRITER, before.model)
        now = deps.clock()
        after = change(before, now)
        if after != before:
            await save(uow, after, now)
    deps.wakeup()
    return view(deps, after)
