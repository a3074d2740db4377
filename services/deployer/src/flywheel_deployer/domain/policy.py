"""A model's deployment policy, and the plan it resolves into for one rollout.

The policy holds the terms as an operator stored them; `Policy.plan` checks them and turns
them into a `Plan` (strategy, steps, arms, thresholds) that a rollout follows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from itertools import pairwise
from typing import Any

from flywheel_common.errors import InvalidArgument
from flywheel_common.names import check_name
from flywheel_deployer.analysis import InsufficientData, StepRule, Thresholds
from flywheel_deployer.domain.bandit import BanditTerms, even_weights

DEFAULT_CANARY_STEPS = (10, 50, 100)
DEFAULT_GATEWAY_READY_TIMEOUT_SECONDS = 300.0


class Strategy(StrEnum):
    DIRECT = "direct"
    CANARY = "canary"
    AB = "ab"
    SHADOW = "shadow"
    BANDIT = "bandit"


@dataclass(frozen=True)
class Arm:
    name: str
    version: int
    weight: int


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
    bandit: BanditTerms | None = None
    """How the arms' weights follow their reward (BANDIT only; `arms` hold the first
    weights, an even split)."""


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
    bandit_arms: tuple[ArmSpec, ...] = ()
    bandit: BanditTerms = field(default_factory=BanditTerms)
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
        check_name("policy.model", self.model)
        self.plan(candidate=2, baseline=1)

    def plan(self, candidate: int, baseline: int, strategy: Strategy | None = None) -> Plan:
        """Resolve the policy for one rollout; A/B arms name versions or candidate/baseline."""
        chosen = strategy or self.strategy
        if chosen is None:
            raise InvalidArgument(
                "strategy must be one of STRATEGY_DIRECT, STRATEGY_CANARY, STRATEGY_AB, "
                "STRATEGY_SHADOW, STRATEGY_BANDIT"
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
        if chosen is Strategy.BANDIT:
            arms = self._bandit_arms(candidate, baseline)
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
            bandit=self.bandit if chosen is Strategy.BANDIT else None,
        )

    def _bandit_arms(self, candidate: int, baseline: int) -> tuple[Arm, ...]:
        specs = self.bandit_arms or (
            ArmSpec("candidate", ArmTarget.CANDIDATE),
            ArmSpec("baseline", ArmTarget.BASELINE),
        )
        if any(spec.weight for spec in specs):
            raise InvalidArgument(
                "bandit arms take their weights from their reward: leave weight_percent at 0"
            )
        resolved = [spec.resolve(candidate, baseline) for spec in specs]
        arms = tuple(
            replace(arm, weight=weight)
            for arm, weight in zip(resolved, even_weights(len(resolved)), strict=True)
        )
        check_arms(arms)
        floor = self.bandit.floor_percent
        if floor < 0 or floor * len(arms) > 100:
            raise InvalidArgument(
                f"bandit.floor_percent must be in 0..{100 // len(arms)} for {len(arms)} arms "
                f"(each keeps it), got {floor}"
            )
        if self.bandit.rebalance_seconds < 0:
            raise InvalidArgument("bandit.rebalance_interval cannot be negative")
        return arms
