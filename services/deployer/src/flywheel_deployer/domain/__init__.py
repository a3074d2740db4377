"""The deployer's rules, free of storage and transport: policies, rollouts as a state
machine, routing, and what the deployer observes.

A use case loads a rollout, calls a transition (which checks its rules and records its
events) and saves it; the unit of work stores the result with its events in one
transaction. Modules, each depending only on those above it:

- `bandit`: Thompson sampling of a bandit's arms' weights from their metric windows.
- `policy`: a model's deployment policy and the plan it resolves into for one rollout.
- `routing`: a model's desired routing (weighted routes, sticky key, mirror).
- `steps`: a rollout's steps and the judgement analysis passed on each.
- `events`: the events rollout transitions record, and what triggered a rollout.
- `rollout`: the Rollout aggregate, its phases and transitions.
- `routing_state`: the routing last published per model, by generation.
- `observations`: gateways' readiness and versions' metric windows.
"""

from flywheel_deployer.domain.bandit import BanditTerms, Evidence, Reward
from flywheel_deployer.domain.events import (
    RolloutAborted,
    RolloutCompleted,
    RolloutEvent,
    RolloutRolledBack,
    RolloutStarted,
    RolloutStepAdvanced,
    Trigger,
)
from flywheel_deployer.domain.observations import GatewayReadiness, MetricWindow
from flywheel_deployer.domain.policy import (
    DEFAULT_CANARY_STEPS,
    DEFAULT_GATEWAY_READY_TIMEOUT_SECONDS,
    Arm,
    ArmSpec,
    ArmTarget,
    Plan,
    Policy,
    Strategy,
    VersionPolicy,
    VersionPolicyKind,
    check_arms,
    check_rule,
    check_steps,
    check_thresholds,
)
from flywheel_deployer.domain.rollout import ACTIVE_PHASES, SYSTEM_ACTOR, Phase, Rollout
from flywheel_deployer.domain.routing import Role, Route, Routing
from flywheel_deployer.domain.routing_state import RoutingChanged, RoutingState
from flywheel_deployer.domain.steps import AnalysisResult, Step

__all__ = [
    "ACTIVE_PHASES",
    "DEFAULT_CANARY_STEPS",
    "DEFAULT_GATEWAY_READY_TIMEOUT_SECONDS",
    "SYSTEM_ACTOR",
    "AnalysisResult",
    "Arm",
    "ArmSpec",
    "ArmTarget",
    "BanditTerms",
    "Evidence",
    "GatewayReadiness",
    "MetricWindow",
    "Phase",
    "Plan",
    "Policy",
    "Reward",
    "Role",
    "Rollout",
    "RolloutAborted",
    "RolloutCompleted",
    "RolloutEvent",
    "RolloutRolledBack",
    "RolloutStarted",
    "RolloutStepAdvanced",
    "Route",
    "Routing",
    "RoutingChanged",
    "RoutingState",
    "Step",
    "Strategy",
    "Trigger",
    "VersionPolicy",
    "VersionPolicyKind",
    "check_arms",
    "check_rule",
    "check_steps",
    "check_thresholds",
]
