"""Reading rollouts and the deployment state of a model."""

from __future__ import annotations

from dataclasses import dataclass

from flywheel_common.auth import require_role
from flywheel_common.errors import InvalidArgument, NotFound
from flywheel_common.settings import Role
from flywheel_deployer.domain import GatewayReadiness, Phase, RoutingState
from flywheel_deployer.handlers.ports import Deps, RolloutView, view

DEFAULT_PAGE_SIZE = 50
MAX_OFFSET = 2**31 - 1
"""Past any page this server issues, and within every database's integer."""
MAX_PAGE_SIZE = 200


@dataclass(frozen=True)
class DeploymentView:
    state: RoutingState
    gateways: list[GatewayReadiness]
    active: RolloutView | None


async def get_rollout(deps: Deps, rollout_id: str) -> RolloutView:
    async with deps.unit_of_work() as uow:
        rollout = await uow.rollouts.get(rollout_id)
    if rollout is None:
        raise NotFound(f"rollout {rollout_id!r} does not exist")
    require_role(Role.READER, rollout.model)
    return view(deps, rollout)


async def list_rollouts(
    deps: Deps, model: str, phases: tuple[Phase, ...] | None, page_size: int, page_token: str
) -> tuple[list[RolloutView], str]:
    """A page of rollouts, newest first, and the token of the next page ("" at the end)."""
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if page_size < 0:
        raise InvalidArgument("page_size cannot be negative")
    offset = 0
    if page_token:
        try:
            offset = int(page_token)
        except ValueError:
            offset = -1
        if not 0 <= offset <= MAX_OFFSET:
            raise InvalidArgument("page_token is not one this server issued")
    async with deps.unit_of_work() as uow:
        rollouts = await uow.rollouts.page(model, phases, offset, size + 1)
    next_token = str(offset + size) if len(rollouts) > size else ""
    return [view(deps, rollout) for rollout in rollouts[:size]], next_token


async def deployment_state(deps: Deps, model: str) -> DeploymentView:
    async with deps.unit_of_work() as uow:
        state = await uow.states.get(model)
        active = await uow.rollouts.active(model)
    if state is None:
        raise NotFound(f"{model!r} has never been deployed")
    return DeploymentView(
        state,
        deps.fleet.readiness(model),
        view(deps, active) if active is not None else None,
    )
