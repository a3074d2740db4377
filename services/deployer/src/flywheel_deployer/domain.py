"""Rollouts as a state machine: what traffic each phase and step sends where, and the events
each transition causes.

Free of storage and transport: a use case loads a rollout, calls a transition (which checks
its rules and records its events) and saves it; the unit of work stores the result with its
events in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from itertools import pairwise
from typing import Any

from flywheel_common.errors import FailedPrecondition, InvalidArgument
from flywheel_deployer.analysis import (
    Analysis,
    Check,
    Decision,
    InsufficientData,
    StepRule,
    Thresholds,
    Window,
    analyse,
    merge,
)

SYSTEM_ACTOR = "flywheel-deployer"
"""The actor of decisions the deployer takes on its own (readiness, analysis)."""
DEFAULT_CANARY_STEPS = (10, 50, 100)
DEFAULT_GATEWAY_READY_TIMEOUT_SECONDS = 300.0


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


class VersionPolicyKind(StrEnum):
    UNSPECIFIED = "unspecified"
    LATEST = "latest"
    SPECIFIC = "specific"
    ALL = "all"


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions gateways keep loaded besides the routed and mirrored ones."""

    kind: VersionPolicyKind = VersionPolicyKind.UNSPECIFIED
    latest_n: int = 0
    versions: tuple[int, ...] = ()


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
    gateway_ready_timeout_seconds: float = DEFAULT_GATEWAY_READY_TIMEOUT_SECONDS
    version_policy: VersionPolicy | None = None


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


def check_thresholds(thresholds: Thresholds) -> None:
    for name in ("max_error_rate", "max_latency_p99_ratio", "max_js_divergence"):
        limit = getattr(thresholds, name)
        if limit is not None and limit < 0:
            raise InvalidArgument(f"analysis.{name} cannot be negative, got {limit}")


class ArmTarget(StrEnum):
    UNSPECIFIED = "unspecified"
    CANDIDATE = "candidate"
    BASELINE = "baseline"
    VERSION = "version"


@dataclass(frozen=True)
class ArmSpec:
    """An A/B arm as a policy names it: the candidate, the baseline or a fixed version."""

    name: str
    target: ArmTarget
    version: int = 0
    weight: int = 0

    def resolve(self, candidate: int, baseline: int) -> Arm:
        if self.target is ArmTarget.CANDIDATE:
            version = candidate
        elif self.target is ArmTarget.BASELINE:
            if not baseline:
                raise InvalidArgument(
                    f"A/B arm {self.name!r} targets the baseline, but the model serves no "
                    "version yet"
                )
            version = baseline
        elif self.target is ArmTarget.VERSION:
            if self.version < 1:
                raise InvalidArgument(f"A/B arm {self.name!r} targets a version: set arm.version")
            version = self.version
        else:
            raise InvalidArgument(
                f"A/B arm {self.name!r} needs a target: ARM_TARGET_CANDIDATE, "
                "ARM_TARGET_BASELINE or ARM_TARGET_VERSION"
            )
        return Arm(self.name, version, self.weight)


@dataclass(frozen=True)
class Policy:
    """A model's deployment policy: the terms rollouts resolve into a plan.

    Parsed without validation, so that a bad policy fails where it is used, with the field
    to fix; `document` is the policy as stored, which only the converters read.
    """

    model: str
    strategy: Strategy | None = Strategy.DIRECT
    """None when the policy names no strategy, or one this deployer does not know."""
    auto_rollout_on_promotion: bool = False
    canary_steps: tuple[int, ...] = ()
    canary_rule: StepRule = field(default_factory=lambda: StepRule(min_seconds=0, min_requests=0))
    arms: tuple[ArmSpec, ...] = ()
    mirror_percent: int = 0
    shadow_rule: StepRule = field(default_factory=lambda: StepRule(min_seconds=0, min_requests=0))
    promote_shadow_on_success: bool = False
    thresholds: Thresholds = field(default_factory=Thresholds)
    sticky_key: str = ""
    gateway_ready_timeout_seconds: float | None = None
    version_policy: VersionPolicy | None = None
    revision: int = 0
    """The stored revision (0: never stored), for compare-and-set."""
    document: Mapping[str, Any] | None = None

    @classmethod
    def default(cls, model: str) -> Policy:
        """What a model without a stored policy gets: direct rollouts on promotion."""
        return cls(model=model, strategy=Strategy.DIRECT, auto_rollout_on_promotion=True)

    def with_strategy(self, strategy: Strategy | None) -> Policy:
        return self if strategy is None else replace(self, strategy=strategy)

    def validate(self) -> None:
        """Every rule a stored policy must satisfy, with the field to fix in the message."""
        if not self.model:
            raise InvalidArgument("policy.model is required")
        self.plan(candidate=2, baseline=1)

    def plan(self, candidate: int, baseline: int, strategy: Strategy | None = None) -> Plan:
        """Resolve the policy for one rollout; A/B arms name versions or candidate/baseline."""
        chosen = strategy or self.strategy
        if chosen is None:
            raise InvalidArgument(
                "strategy must be one of STRATEGY_DIRECT, STRATEGY_CANARY, STRATEGY_AB, "
                "STRATEGY_SHADOW"
            )
        steps: tuple[int, ...] = (100,)
        rule = StepRule(min_seconds=0, min_requests=0)
        if chosen is Strategy.CANARY:
            steps = self.canary_steps or DEFAULT_CANARY_STEPS
            check_steps(steps)
            rule = self.canary_rule
        arms: tuple[Arm, ...] = ()
        if chosen is Strategy.AB:
            arms = tuple(arm.resolve(candidate, baseline) for arm in self.arms)
            check_arms(arms)
        shadow_percent = 100
        if chosen is Strategy.SHADOW:
            shadow_percent = self.mirror_percent or 100
            if not 0 < shadow_percent <= 100:
                raise InvalidArgument(
                    f"shadow.mirror_percent must be in 1..100, got {self.mirror_percent}"
                )
            rule = self.shadow_rule
        check_rule(rule)
        check_thresholds(self.thresholds)
        return Plan(
            strategy=chosen,
            steps=steps,
            rule=rule,
            thresholds=self.thresholds,
            arms=arms,
            shadow_percent=shadow_percent,
            promote_shadow_on_success=self.promote_shadow_on_success,
            sticky_key=self.sticky_key,
            gateway_ready_timeout_seconds=(
                DEFAULT_GATEWAY_READY_TIMEOUT_SECONDS
                if self.gateway_ready_timeout_seconds is None
                else self.gateway_ready_timeout_seconds
            ),
            version_policy=self.version_policy,
        )


@dataclass(frozen=True)
class AnalysisResult:
    """One judgement of a step, with the numbers behind it, as a rollout keeps it."""

    decision: Decision
    checks: tuple[Check, ...]
    candidate_version: int
    baseline_version: int
    candidate_requests: int
    baseline_requests: int
    window_ids: tuple[str, ...]
    step_index: int
    weight: int
    summary: str
    analyzed_at: datetime | None = None


@dataclass(frozen=True)
class Step:
    """One step a rollout went through."""

    index: int
    weight: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    analysis: AnalysisResult | None = None


@dataclass(frozen=True)
class RolloutStarted:
    rollout_id: str
    model: str
    version: int
    baseline: int
    strategy: Strategy
    policy: Policy | None
    trigger: Trigger
    superseded_rollout_id: str
    actor: str
    reason: str
    occurred_at: datetime


@dataclass(frozen=True)
class RolloutStepAdvanced:
    rollout_id: str
    model: str
    version: int
    baseline: int
    from_step_index: int
    to_step_index: int
    from_weight: int
    to_weight: int
    analysis: AnalysisResult | None
    actor: str
    occurred_at: datetime


@dataclass(frozen=True)
class RolloutCompleted:
    rollout_id: str
    model: str
    version: int
    previous_version: int
    strategy: Strategy
    analysis: AnalysisResult | None
    forced: bool
    actor: str
    reason: str
    duration_seconds: float
    occurred_at: datetime


@dataclass(frozen=True)
class RolloutRolledBack:
    rollout_id: str
    model: str
    rolled_back_version: int
    restored_version: int
    automatic: bool
    analysis: AnalysisResult | None
    actor: str
    reason: str
    occurred_at: datetime


@dataclass(frozen=True)
class RolloutAborted:
    rollout_id: str
    model: str
    version: int
    restored_version: int
    superseded: bool
    superseded_by: str
    actor: str
    reason: str
    occurred_at: datetime


RolloutEvent = (
    RolloutStarted | RolloutStepAdvanced | RolloutCompleted | RolloutRolledBack | RolloutAborted
)


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
    policy: Policy | None = None
    """The policy the rollout started with, as reported with it."""
    idempotency_key: str = ""
    steps: tuple[Step, ...] = ()
    last_analysis: AnalysisResult | None = None
    events: tuple[RolloutEvent, ...] = field(default=(), compare=False, repr=False)
    """What the transitions since the rollout was loaded caused, oldest first."""

    @classmethod
    def start(
        cls,
        rollout_id: str,
        model: str,
        version: int,
        baseline: int,
        policy: Policy,
        *,
        trigger: Trigger,
        actor: str,
        reason: str,
        now: datetime,
        idempotency_key: str = "",
        superseding: str = "",
    ) -> Rollout:
        """A new rollout of `version`, waiting for the gateways to load it."""
        plan = policy.plan(version, baseline)
        if plan.strategy is Strategy.SHADOW and not baseline:
            raise FailedPrecondition(
                f"a shadow rollout needs a version serving {model!r} to mirror; deploy one first"
            )
        started = RolloutStarted(
            rollout_id=rollout_id,
            model=model,
            version=version,
            baseline=baseline,
            strategy=plan.strategy,
            policy=policy,
            trigger=trigger,
            superseded_rollout_id=superseding,
            actor=actor,
            reason=reason,
            occurred_at=now,
        )
        return cls(
            rollout_id=rollout_id,
            model=model,
            version=version,
            baseline=baseline,
            plan=plan,
            phase=Phase.PENDING,
            trigger=trigger,
            started_by=actor,
            reason=reason,
            created_at=now,
            updated_at=now,
            policy=policy,
            idempotency_key=idempotency_key,
            events=(started,),
        )

    @classmethod
    def rollback(
        cls,
        rollout_id: str,
        model: str,
        to_version: int,
        rolled_back: int,
        policy: Policy,
        *,
        actor: str,
        reason: str,
        now: datetime,
        ended: Rollout | None = None,
    ) -> Rollout:
        """All traffic back to `to_version` at once: a rollout that has already succeeded.

        The event names `ended`, the running rollout this one stops, when there is one."""
        event = RolloutRolledBack(
            rollout_id=ended.rollout_id if ended is not None else rollout_id,
            model=model,
            rolled_back_version=rolled_back,
            restored_version=to_version,
            automatic=False,
            analysis=None,
            actor=actor,
            reason=reason,
            occurred_at=now,
        )
        return cls(
            rollout_id=rollout_id,
            model=model,
            version=to_version,
            baseline=rolled_back,
            plan=policy.plan(to_version, rolled_back, Strategy.DIRECT),
            phase=Phase.SUCCEEDED,
            trigger=Trigger.ROLLBACK,
            started_by=actor,
            reason=reason,
            created_at=now,
            updated_at=now,
            end_reason=reason,
            finished_at=now,
            policy=policy,
            events=(event,),
        )

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

    def require_active(self, verb: str) -> None:
        if self.phase not in ACTIVE_PHASES:
            raise FailedPrecondition(
                f"rollout {self.rollout_id} has finished ({self.phase}); it cannot be {verb}"
            )

    # Transitions: each returns the rollout after the change, with the events it caused.

    def _record(self, event: RolloutEvent, **changes: Any) -> Rollout:
        return replace(self, events=(*self.events, event), **changes)

    def begin(self, now: datetime) -> Rollout:
        """Gateways hold the versions: the first step takes effect."""
        started = replace(
            self, phase=Phase.PROGRESSING, step_index=0, step_started_at=now, updated_at=now
        )
        return started._open_step(now)._record(
            RolloutStepAdvanced(
                rollout_id=self.rollout_id,
                model=self.model,
                version=self.version,
                baseline=self.baseline,
                from_step_index=-1,
                to_step_index=0,
                from_weight=0,
                to_weight=started.weight,
                analysis=None,
                actor=SYSTEM_ACTOR,
                occurred_at=now,
            )
        )

    def advance(self, now: datetime, analysis: AnalysisResult | None = None) -> Rollout:
        """The next step, after `analysis` passed the current one."""
        if self.last_step:
            raise FailedPrecondition("the rollout is at its last step; promote it instead")
        advanced = replace(
            self._close_step(now, analysis),
            step_index=self.step_index + 1,
            step_started_at=now,
            updated_at=now,
        )
        return advanced._open_step(now)._record(
            RolloutStepAdvanced(
                rollout_id=self.rollout_id,
                model=self.model,
                version=self.version,
                baseline=self.baseline,
                from_step_index=self.step_index,
                to_step_index=advanced.step_index,
                from_weight=self.weight,
                to_weight=advanced.weight,
                analysis=analysis,
                actor=SYSTEM_ACTOR,
                occurred_at=now,
            )
        )

    def finish(
        self, phase: Phase, now: datetime, reason: str, promoted_version: int = 0
    ) -> Rollout:
        """End in `phase`; the named transitions that call it record what it means."""
        return replace(
            self,
            phase=phase,
            end_reason=reason,
            finished_at=now,
            updated_at=now,
            paused_from=None,
            promoted_version=promoted_version,
        )

    def complete(
        self,
        now: datetime,
        reason: str,
        *,
        analysis: AnalysisResult | None = None,
        forced: bool = False,
        actor: str = SYSTEM_ACTOR,
        promoted_version: int = 0,
    ) -> Rollout:
        """The candidate (or `promoted_version`) takes all traffic."""
        ended = self._close_step(now, analysis) if analysis is not None else self
        ended = ended.finish(Phase.SUCCEEDED, now, reason, promoted_version)
        return ended._record(
            RolloutCompleted(
                rollout_id=self.rollout_id,
                model=self.model,
                version=promoted_version or self.version,
                previous_version=self.baseline,
                strategy=self.strategy,
                analysis=analysis,
                forced=forced,
                actor=actor,
                reason=reason,
                duration_seconds=(now - self.created_at).total_seconds(),
                occurred_at=now,
            )
        )

    def roll_back(
        self, now: datetime, reason: str, analysis: AnalysisResult | None = None
    ) -> Rollout:
        """The deployer takes the candidate out of traffic: the baseline serves again."""
        ended = self._close_step(now, analysis) if analysis is not None else self
        ended = ended.finish(Phase.ROLLED_BACK, now, reason)
        return ended._record(
            RolloutRolledBack(
                rollout_id=self.rollout_id,
                model=self.model,
                rolled_back_version=self.version,
                restored_version=self.baseline,
                automatic=True,
                analysis=analysis,
                actor=SYSTEM_ACTOR,
                reason=reason,
                occurred_at=now,
            )
        )

    def abort(self, now: datetime, reason: str, actor: str) -> Rollout:
        self.require_active("aborted")
        ended = self.finish(Phase.ABORTED, now, reason)
        return ended._record(
            RolloutAborted(
                rollout_id=self.rollout_id,
                model=self.model,
                version=self.version,
                restored_version=self.baseline,
                superseded=False,
                superseded_by="",
                actor=actor,
                reason=reason,
                occurred_at=now,
            )
        )

    def supersede(self, by: str, now: datetime, *, version: int = 0, actor: str = "") -> Rollout:
        """Replaced by rollout `by` (of `version`)."""
        ended = replace(
            self.finish(Phase.SUPERSEDED, now, f"superseded by rollout {by}"), superseded_by=by
        )
        return ended._record(
            RolloutAborted(
                rollout_id=self.rollout_id,
                model=self.model,
                version=self.version,
                restored_version=self.baseline,
                superseded=True,
                superseded_by=by,
                actor=actor,
                reason=f"superseded by a rollout of version {version}",
                occurred_at=now,
            )
        )

    def promote_now(self, version: int, now: datetime, reason: str, actor: str) -> Rollout:
        """An operator ends the rollout early: `version` (default the candidate) takes all."""
        self.require_active("promoted")
        target = version or self.version
        allowed = {self.version} | {arm.version for arm in self.plan.arms}
        if target not in allowed:
            raise InvalidArgument(
                f"version {target} is not part of rollout {self.rollout_id}; choose one of "
                + ", ".join(str(v) for v in sorted(allowed))
            )
        return self.complete(
            now,
            reason,
            forced=True,
            actor=actor,
            promoted_version=target if target != self.version else 0,
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

    # The engine's decisions.

    def prepare(self, pending_gateways: list[str], now: datetime) -> Rollout:
        """PENDING: once every live gateway holds what the first step needs, start it; roll
        back if they take longer than the plan allows."""
        if pending_gateways:
            timeout = self.plan.gateway_ready_timeout_seconds
            if (now - self.created_at).total_seconds() < timeout:
                return self
            return self.roll_back(
                now,
                f"gateways {', '.join(pending_gateways)} did not report version "
                f"{self.version} ready within {timeout:.0f}s",
            )
        if self.strategy is Strategy.DIRECT or (
            self.strategy is Strategy.CANARY and not self.baseline
        ):
            return self.complete(now, "every live gateway holds the version")
        return self.begin(now)

    @property
    def judged(self) -> bool:
        """Whether analysis moves this rollout (A/B arms hold until an operator ends them)."""
        return self.phase is Phase.PROGRESSING and self.strategy in (
            Strategy.CANARY,
            Strategy.SHADOW,
        )

    def assess(
        self, candidate: Sequence[Window], baseline: Sequence[Window], now: datetime
    ) -> Analysis:
        """Analyse the current step: the candidate over the step, the baseline over the
        whole rollout (at a 100% step it serves nothing)."""
        step_start = self.step_started_at or self.created_at
        return analyse(
            self.plan.rule,
            self.plan.thresholds,
            merge(candidate),
            merge(baseline),
            (now - step_start).total_seconds(),
            self.last_step,
        )

    def analysed(self, analysis: Analysis, now: datetime) -> AnalysisResult:
        return AnalysisResult(
            decision=analysis.decision,
            checks=analysis.checks,
            candidate_version=self.version,
            baseline_version=self.baseline,
            candidate_requests=analysis.candidate.requests,
            baseline_requests=analysis.baseline.requests,
            window_ids=analysis.candidate.window_ids,
            step_index=self.step_index,
            weight=self.weight,
            summary=analysis.summary,
            analyzed_at=now,
        )

    def judge(self, analysis: Analysis, now: datetime) -> Rollout:
        """PROGRESSING canary or shadow: act on the analysis of the current step."""
        if analysis.decision is Decision.WAIT:
            return self
        result = self.analysed(analysis, now)
        judged = replace(self, last_analysis=result)
        if analysis.decision is Decision.ROLLBACK:
            return judged.roll_back(now, analysis.summary, result)
        if analysis.decision is Decision.PAUSE:
            return judged.pause(now, analysis.summary)
        if self.strategy is Strategy.SHADOW and not self.plan.promote_shadow_on_success:
            return judged  # the candidate passed; an operator promotes it
        if self.strategy is Strategy.SHADOW or analysis.decision is Decision.PROMOTE:
            return judged.complete(now, analysis.summary, analysis=result)
        return judged.advance(now, result)

    def _open_step(self, now: datetime) -> Rollout:
        return replace(self, steps=(*self.steps, Step(self.step_index, self.weight, now)))

    def _close_step(self, now: datetime, analysis: AnalysisResult | None) -> Rollout:
        if not self.steps:
            return self
        last = replace(self.steps[-1], finished_at=now, analysis=analysis)
        return replace(self, steps=(*self.steps[:-1], last))


@dataclass(frozen=True)
class RoutingChanged:
    """The gateways must be told: `state` is the model's routing, at its generation."""

    state: RoutingState


@dataclass(frozen=True)
class RoutingState:
    """The routing last published for one model, numbered by generation."""

    model: str
    routing: Routing
    strategy: Strategy
    generation: int
    rollout_id: str
    updated_at: datetime
    version_policy: VersionPolicy | None = None
    events: tuple[RoutingChanged, ...] = field(default=(), compare=False, repr=False)

    @staticmethod
    def following(current: RoutingState | None, rollout: Rollout, now: datetime) -> RoutingState:
        """The state after `rollout`'s change: `current` when the routing is the same,
        else the next generation, recording that it changed."""
        routing = rollout.routing()
        if current is not None and current.routing == routing:
            return current
        state = RoutingState(
            model=rollout.model,
            routing=routing,
            strategy=rollout.strategy,
            generation=(current.generation if current is not None else 0) + 1,
            rollout_id=rollout.rollout_id,
            updated_at=now,
            version_policy=rollout.plan.version_policy,
        )
        return replace(state, events=(RoutingChanged(state),))


@dataclass(frozen=True)
class MetricWindow:
    """One window of one version's metrics, as the drift detector summarised it."""

    model: str
    version: int
    start: datetime
    end: datetime
    summary: Window


@dataclass(frozen=True)
class GatewayReadiness:
    """What one gateway holds ready of one model."""

    gateway_id: str
    live: bool
    ready_versions: tuple[int, ...]
    heartbeat_at: float
    """Seconds since the epoch of its last heartbeat."""
