"""Retrain policies: read one (or the default), store one with compare-and-set."""

from __future__ import annotations

from flywheel_retrain.domain import Policy
from flywheel_retrain.handlers.ports import Deps, actor


async def set_policy(deps: Deps, policy: Policy, expected_revision: int | None) -> Policy:
    """Validate and store `policy` as its model's next revision."""
    policy.validate()
    async with deps.unit_of_work() as uow:
        stored = await uow.policies.put(policy, expected_revision, actor(), deps.clock())
    deps.wakeup()  # a schedule may have changed
    return stored


async def get_policy(deps: Deps, model: str) -> tuple[Policy, bool]:
    """The model's policy, and whether it is the default (none stored)."""
    async with deps.unit_of_work() as uow:
        stored = await uow.policies.get(model)
    return (Policy.default(model), True) if stored is None else (stored, False)


async def scheduled_policies(deps: Deps) -> list[Policy]:
    """Policies whose schedule may start runs."""
    async with deps.unit_of_work() as uow:
        policies = await uow.policies.every()
    return [policy for policy in policies if policy.scheduled]
