"""In-memory stand-ins for the deployer's ports: a unit of work that records what it would
stage in the outbox, a registry, gateways, a clock and a wakeup."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from flywheel_common.errors import FailedPrecondition, NotFound
from flywheel_deployer.analysis import Window
from flywheel_deployer.domain import (
    ACTIVE_PHASES,
    GatewayReadiness,
    MetricWindow,
    Phase,
    Policy,
    Rollout,
    RolloutEvent,
    RoutingState,
)
from flywheel_deployer.handlers.ports import Deps
from flywheel_testing.fakes import FakeClock, InMemoryUnitOfWork


@dataclass
class Store:
    """What the database holds, and every event committed, in commit order."""

    rollouts: dict[str, Rollout] = field(default_factory=dict)
    states: dict[str, RoutingState] = field(default_factory=dict)
    windows: list[MetricWindow] = field(default_factory=list)
    policies: dict[str, Policy] = field(default_factory=dict)
    claimed: set[tuple[str, str]] = field(default_factory=set)
    events: list[RolloutEvent] = field(default_factory=list)
    """Staged on flywheel.deployment-events."""
    published: list[RoutingState] = field(default_factory=list)
    """Staged on flywheel.deployments."""

    def of_type(self, kind: type[RolloutEvent]) -> list[RolloutEvent]:
        return [event for event in self.events if isinstance(event, kind)]


class FakeRollouts:
    def __init__(self, rows: dict[str, Rollout]) -> None:
        self.rows = rows
        self.saved: dict[str, Rollout] = {}

    async def get(self, rollout_id: str, *, for_update: bool = False) -> Rollout | None:
        return self.saved.get(rollout_id) or self.rows.get(rollout_id)

    async def active(self, model: str) -> Rollout | None:
        found = [r for r in self.rows.values() if r.model == model and r.phase in ACTIVE_PHASES]
        return found[0] if found else None

    async def by_idempotency_key(self, model: str, key: str) -> Rollout | None:
        found = [r for r in self.rows.values() if (r.model, r.idempotency_key) == (model, key)]
        return found[0] if found else None

    async def moving_ids(self) -> list[str]:
        moving = (Phase.PENDING, Phase.PROGRESSING)
        return [r.rollout_id for r in self.rows.values() if r.phase in moving]

    async def page(
        self, model: str, phases: tuple[Phase, ...] | None, offset: int, limit: int
    ) -> list[Rollout]:
        found = [
            r
            for r in self.rows.values()
            if (not model or r.model == model) and (phases is None or r.phase in phases)
        ]
        found.sort(key=lambda r: (-r.created_at.timestamp(), r.rollout_id))
        return found[offset : offset + limit]

    def save(self, rollout: Rollout) -> None:
        self.saved[rollout.rollout_id] = rollout
        self.rows[rollout.rollout_id] = replace(rollout, events=())


class FakeStates:
    def __init__(self, rows: dict[str, RoutingState]) -> None:
        self.rows = rows
        self.saved: list[RoutingState] = []

    async def get(self, model: str, *, for_update: bool = False) -> RoutingState | None:
        return self.rows.get(model)

    def save(self, state: RoutingState) -> None:
        self.saved.append(state)
        self.rows[state.model] = replace(state, events=())


class FakeWindows:
    def __init__(self, rows: list[MetricWindow]) -> None:
        self.rows = rows

    async def add(self, window: MetricWindow) -> None:
        key = (window.model, window.version, window.summary.window_id)
        if all((w.model, w.version, w.summary.window_id) != key for w in self.rows):
            self.rows.append(window)

    async def since(self, model: str, version: int, since: datetime) -> list[Window]:
        found = [
            w for w in self.rows if (w.model, w.version) == (model, version) and w.start >= since
        ]
        return [w.summary for w in sorted(found, key=lambda w: w.start)]


class FakePolicies:
    def __init__(self, rows: dict[str, Policy]) -> None:
        self.rows = rows

    async def get(self, model: str) -> Policy | None:
        return self.rows.get(model)

    async def put(
        self, policy: Policy, expected_revision: int | None, actor: str, at: datetime
    ) -> Policy:
        stored = self.rows.get(policy.model)
        current = stored.revision if stored is not None else 0
        if expected_revision is not None and expected_revision != current:
            raise FailedPrecondition(f"the policy of {policy.model!r} is at revision {current}")
        self.rows[policy.model] = replace(policy, revision=current + 1)
        return self.rows[policy.model]


class FakeUnitOfWork(InMemoryUnitOfWork[Store]):
    """The store as repositories; a commit records the events of every aggregate saved."""

    def _open(self, store: Store) -> None:
        self.rollouts = FakeRollouts(dict(store.rollouts))
        self.states = FakeStates(dict(store.states))
        self.windows = FakeWindows(list(store.windows))
        self.policies = FakePolicies(dict(store.policies))

    def _commit(self, store: Store) -> None:
        store.rollouts, store.states = self.rollouts.rows, self.states.rows
        store.windows, store.policies = self.windows.rows, self.policies.rows
        for rollout in self.rollouts.saved.values():
            store.events.extend(rollout.events)
        for state in self.states.saved:
            store.published.extend(change.state for change in state.events)


class FakeRegistry:
    def __init__(self, *versions: tuple[str, int]) -> None:
        self.servable = set(versions)

    async def servable_version(self, model: str, version: int) -> object:
        if (model, version) not in self.servable:
            raise NotFound(f"{model!r} has no version {version}")
        return object()


@dataclass
class FakeFleet:
    waiting: dict[str, list[str]] = field(default_factory=dict)
    """Per model, the gateways that do not hold its versions yet."""

    def pending(self, model: str, versions: set[int]) -> list[str]:
        return list(self.waiting.get(model, []))

    def readiness(self, model: str) -> list[GatewayReadiness]:
        return []


@dataclass
class Pokes:
    count: int = 0

    def __call__(self) -> None:
        self.count += 1


@dataclass
class World:
    store: Store
    registry: FakeRegistry
    fleet: FakeFleet
    clock: FakeClock
    pokes: Pokes
    deps: Deps


def world(model: str = "iris", versions: int = 5) -> World:
    store, registry = Store(), FakeRegistry(*((model, v) for v in range(1, versions + 1)))
    fleet, clock, pokes = FakeFleet(), FakeClock(), Pokes()
    deps = Deps(lambda: FakeUnitOfWork(store), registry, fleet, pokes, clock)
    return World(store, registry, fleet, clock, pokes, deps)
