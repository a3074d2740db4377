"""What the use cases need from outside: a unit of work with its repositories, the registry,
the gateways, a clock and the engine's wakeup."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from flywheel_common.auth import current_principal
from flywheel_common.errors import NotFound
from flywheel_common.unit_of_work import Transaction
from flywheel_deployer.analysis import Window
from flywheel_deployer.domain import (
    GatewayReadiness,
    MetricWindow,
    Phase,
    Policy,
    Rollout,
    RoutingState,
)


class Rollouts(Protocol):
    async def get(self, rollout_id: str, *, for_update: bool = False) -> Rollout | None: ...

    async def active(self, model: str) -> Rollout | None:
        """The model's one rollout not yet finished, locked for this unit of work."""
        ...

    async def by_idempotency_key(self, model: str, key: str) -> Rollout | None: ...

    async def moving_ids(self) -> list[str]:
        """Rollouts the engine moves: pending or progressing."""
        ...

    async def page(
        self, model: str, phases: tuple[Phase, ...] | None, offset: int, limit: int
    ) -> list[Rollout]:
        """Newest first; `phases` None means any phase."""
        ...

    def save(self, rollout: Rollout) -> None: ...


class RoutingStates(Protocol):
    async def get(self, model: str, *, for_update: bool = False) -> RoutingState | None: ...

    def save(self, state: RoutingState) -> None: ...


class MetricWindows(Protocol):
    async def add(self, window: MetricWindow) -> None:
        """Keep a window once; the same window again changes nothing."""
        ...

    async def since(self, model: str, version: int, since: datetime) -> list[Window]:
        """The version's windows that started at or after `since`, oldest first."""
        ...


class Policies(Protocol):
    async def get(self, model: str) -> Policy | None: ...

    async def put(
        self, policy: Policy, expected_revision: int | None, actor: str, at: datetime
    ) -> Policy:
        """The policy stored as the model's next revision; FAILED_PRECONDITION when
        `expected_revision` is given and is not the stored one."""
        ...


class UnitOfWork(Transaction, Protocol):
    """One transaction: committed when the block ends normally, with the events of every
    aggregate saved staged for publication; rolled back when it raises."""

    @property
    def rollouts(self) -> Rollouts: ...

    @property
    def states(self) -> RoutingStates: ...

    @property
    def windows(self) -> MetricWindows: ...

    @property
    def policies(self) -> Policies: ...


class Registry(Protocol):
    async def servable_version(self, model: str, version: int) -> object:
        """NOT_FOUND or FAILED_PRECONDITION unless the version may take traffic."""
        ...


class Fleet(Protocol):
    def pending(self, model: str, versions: set[int]) -> list[str]: ...

    def readiness(self, model: str) -> list[GatewayReadiness]: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Deps:
    unit_of_work: Callable[[], UnitOfWork]
    registry: Registry
    fleet: Fleet
    wakeup: Callable[[], None]
    """Pokes the rollout engine after a change it should act on."""
    clock: Callable[[], datetime] = utc_now


@dataclass(frozen=True)
class RolloutView:
    """A rollout as callers see it: with the gateways a pending one waits for."""

    rollout: Rollout
    pending_gateways: tuple[str, ...] = ()


def view(deps: Deps, rollout: Rollout) -> RolloutView:
    if rollout.phase is not Phase.PENDING:
        return RolloutView(rollout)
    return RolloutView(rollout, tuple(deps.fleet.pending(rollout.model, rollout.needed_versions())))


def actor() -> str:
    """Who is calling: the RPC's principal, or `system` outside any RPC."""
    return current_principal().subject


async def load(uow: UnitOfWork, rollout_id: str) -> Rollout:
    rollout = await uow.rollouts.get(rollout_id, for_update=True)
    if rollout is None:
        raise NotFound(f"rollout {rollout_id!r} does not exist")
    return rollout


async def save(uow: UnitOfWork, rollout: Rollout, now: datetime) -> None:
    """Keep the rollout, and publish the routing it implies when that changed."""
    uow.rollouts.save(rollout)
    current = await uow.states.get(rollout.model, for_update=True)
    following = RoutingState.following(current, rollout, now)
    if following is not current:
        uow.states.save(following)


async def policy_of(uow: UnitOfWork, model: str) -> Policy:
    """The model's stored policy, or the default one."""
    return await uow.policies.get(model) or Policy.default(model)
