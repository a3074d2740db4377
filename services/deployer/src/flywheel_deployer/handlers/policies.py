"""Deployment policies: read one (or the default), store one with compare-and-set."""

from __future__ import annotations

from flywheel_deployer.domain import Policy
from flywheel_deployer.handlers.ports import Deps, actor


async def set_policy(deps: Deps, policy: Policy, expected_revision: int | None) -> Policy:
    """Validate and store `policy` as its model's next revision."""
    policy.validate()
    async with deps.unit_of_work() as uow:
        return await uow.policies.put(policy, expected_revision, actor(), deps.clock())


async def get_policy(deps: Deps, model: str) -> tuple[Policy, bool]:
    """The model's policy, and whether it is the default (none stored)."""
    async with deps.unit_of_work() as uow:
        stored = await uow.policies.get(model)
    return (Policy.default(model), True) if stored is None else (stored, False)
