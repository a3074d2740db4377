"""Rollouts as a state machine: what traffic each phase and step sends where.

Free of storage and transport: the engine loads a rollout, asks what routing it implies and
what may happen next, and stores the result with its events in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from itertools import pairwise

from flywheel_common.errors import FailedPrecondition, InvalidArgument
from flywheel_deployer.analysis import InsufficientData, StepRule, Thresholds


class Strategy(StrEnum):
    DIRECT = "direct"
    CANARY = "canary"
    AB = "ab"
    SHADOW = "shadow"


class Phase(StrEnum):
    PENDING = "pending"
    """Waiting for every live gateway to load the versions the first step needs."""
    PROGRESSING = "progressing"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    SUPERSEDED = "superseded"


ACTIVE_PHASES = frozenset({Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED})


class Role(StrEnum):
    STABLE = "stable"
    CANARY = "canary"
    ARM = "arm"


class Trigger(StrEnum):
    PROMOTION = "promotion"
    MANUAL = "manual"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Arm:
    name: str
    version: int
    weight: int


@dataclass(frozen=True)
class Route:
    version: int
    weight: int
    role: Role = Role.STABLE
    arm: str = ""


@dataclass(frozen=True)
class Routing:
    """The desired routing of one model: weighted routes (0% means loaded, no traffic)."""

    routes: tuple[Route, ...] = ()
    sticky_key: str = ""
    shadow_version: int = 0
    shadow_percent: int = 0

    @property
    def versions(self) -> set[int]:
        found = {route.version for route in self.routes}
        if self.shadow_version:
            found.add(self.shadow_version)
        return found

    @property
    def serving_version(self) -> int:
        """The version with the most traffic (0 when nothing is routed)."""
        taking = [route for route in self.routes if route.weight > 0]
        return max(taking, key=lambda route: route.weight).version if taking else 0


@dataclass(frozen=True)
class Plan:
    """A policy resolved for one rollout: the strategy and its numbers."""

    strategy: Strategy
    steps: tuple[int, ...] = (100,)
    rule: StepRule = field(default_factory=lambda: StepRule(min_seconds=0, min_requests=0))
    thresholds: Thresholds = field(default_factory=Thresholds)
    arms: tuple[Arm, ...] = ()
    shadow_percent: int = 100
    promote_shadow_on_success: bool = False
    sticky_key: str = ""
    gateway_ready_timeout_seconds: float = 300.0


def check_steps(steps: tuple[int, ...]) -> None:
    if not steps:
        raise InvalidArgument("a canary needs at least one traffic step, for example 5,25,50,100")
    if any(not 0 < step <= 100 for step in steps):
        raise InvalidArgument(f"canary steps must be percentages in 1..100, got {list(steps)}")
    if any(later <= earlier for earlier, later in pairwise(steps)):
        raise InvalidArgument(f"canary steps must increase strictly, got {list(steps)}")


def check_arms(arms: tuple[Arm, ...]) -> None:
    if len(arms) < 2:
        raise InvalidArgument("an A/B test needs at least two arms")
    names = [arm.name for arm in arms]
    if any(not name for name in names) or len(set(names)) != len(names):
        raise InvalidArgument(f"A/B arms need distinct, non-empty names, got {names}")
    if any(arm.weight < 0 for arm in arms):
        raise InvalidArgument("A/B arm weights cannot be negative")
    total = sum(arm.weight for arm in arms)
    if total != 100:
        raise InvalidArgument(
            f"A/B arm weights must sum to 100, they sum to {total} "
            f"({', '.join(f'{a.name}={a.weight}' for a in arms)})"
        )


def check_rule(rule: StepRule) -> None:
    if rule.min_seconds < 0 or rule.min_requests < 0:
        raise InvalidArgument("minimum step duration and request count cannot be negative")
    if rule.max_seconds is not None and rule.max_seconds < rule.min_seconds:
        raise InvalidArgument("the maximum step duration must not be below the minimum")
    if rule.on_insufficient_data not in InsufficientData:
        raise InvalidArgument("unknown action for insufficient data")


@dataclass(frozen=True)
class Rollout:
    rollout_id: str
    model: str
    version: int
    baseline: int
    """The version serving before the rollout (0: none)."""
    plan: Plan
    phase: Phase
    trigger: Trigger
    started_by: str
    reason: str
    created_at: datetime
    updated_at: datetime
    step_index: int = -1
    """-1 while preparing; then the index into plan.steps (canary, direct)."""
    step_started_at: datetime | None = None
    paused_from: Phase | None = None
    end_reason: str = ""
    superseded_by: str = ""
    finished_at: datetime | None = None
    promoted_version: int = 0
    """For A/B and PromoteNow: the version that took all traffic."""

    @property
    def strategy(self) -> Strategy:
        return self.plan.strategy

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    @property
    def weight(self) -> int:
        """The candidate's share of traffic now."""
        if self.phase is Phase.SUCCEEDED:
            return 100
        if not self.active or self.step_index < 0:
            return 0
        if self.strategy in (Strategy.DIRECT, Strategy.CANARY):
            return self.plan.steps[self.step_index] if self.baseline else 100
        if self.strategy is Strategy.AB:
            return sum(arm.weight for arm in self.plan.arms if arm.version == self.version)
        return 0

    @property
    def last_step(self) -> bool:
        return self.step_index >= len(self.plan.steps) - 1

    def routing(self) -> Routing:
        """What the gateways should do for this rollout's model right now."""
        sticky = self.plan.sticky_key
        if self.phase is Phase.SUCCEEDED:
            final = self.promoted_version or self.version
            return Routing((Route(final, 100),), sticky)
        if not self.active:
            restored = (Route(self.baseline, 100),) if self.baseline else ()
            return Routing(restored, sticky)
        if self.strategy is Strategy.AB:
            arms = tuple(
                Route(arm.version, arm.weight if self.step_index >= 0 else 0, Role.ARM, arm.name)
                for arm in self.plan.arms
            )
            if self.step_index < 0 and self.baseline:
                arms += (Route(self.baseline, 100),)
            return Routing(arms, sticky)
        if self.strategy is Strategy.SHADOW:
            percent = self.plan.shadow_percent if self.step_index >= 0 else 0
            routes: tuple[Route, ...] = (Route(self.baseline, 100),) if self.baseline else ()
            # While preparing the candidate is listed at 0% so that gateways load it.
            if self.step_index < 0:
                routes += (Route(self.version, 0, Role.CANARY),)
            return Routing(routes, sticky, self.version if percent else 0, percent)
        weight = self.weight
        candidate = Route(self.version, weight, Role.CANARY)
        if not self.baseline:
            return Routing((candidate,), sticky)
        return Routing((Route(self.baseline, 100 - weight), candidate), sticky)

    def needed_versions(self) -> set[int]:
        """Versions every live gateway must hold before the next step shifts traffic."""
        if self.strategy is Strategy.AB:
            return {arm.version for arm in self.plan.arms}
        return {self.version}

    # Transitions: each returns the rollout after the change.

    def begin(self, now: datetime) -> Rollout:
        """Gateways hold the versions: the first step takes effect."""
        return replace(
            self, phase=Phase.PROGRESSING, step_index=0, step_started_at=now, updated_at=now
        )

    def advance(self, now: datetime) -> Rollout:
        if self.last_step:
            raise FailedPrecondition("the rollout is at its last step; promote it instead")
        return replace(self, step_index=self.step_index + 1, step_started_at=now, updated_at=now)

    def finish(
        self, phase: Phase, now: datetime, reason: str, promoted_version: int = 0
    ) -> Rollout:
        return replace(
            self,
            phase=phase,
            end_reason=reason,
            finished_at=now,
            updated_at=now,
            paused_from=None,
            promoted_version=promoted_version,
        )

    def supersede(self, by: str, now: datetime) -> Rollout:
        return replace(
            self.finish(Phase.SUPERSEDED, now, f"superseded by rollout {by}"), superseded_by=by
        )

    def pause(self, now: datetime, reason: str) -> Rollout:
        if self.phase is Phase.PAUSED:
            return self
        if not self.active:
            raise FailedPrecondition(
                f"rollout {self.rollout_id} has finished ({self.phase}); only a running "
                "rollout can be paused"
            )
        return replace(
            self, phase=Phase.PAUSED, paused_from=self.phase, updated_at=now, end_reason=reason
        )

    def resume(self, now: datetime) -> Rollout:
        if self.phase is not Phase.PAUSED:
            raise FailedPrecondition(
                f"rollout {self.rollout_id} is {self.phase}; only a paused rollout can resume"
            )
        # The step's clock restarts: analysis judges only what the resumed step serves.
        return replace(
            self,
            phase=self.paused_from or Phase.PROGRESSING,
            paused_from=None,
            step_started_at=now if self.step_index >= 0 else self.step_started_at,
            updated_at=now,
            end_reason="",
        )
