"""Between the deployer's domain and its protobuf contract (API, events, stored JSON)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from flywheel.common.v1 import types_pb2 as common
from flywheel.deployer.v1 import events_pb2 as events
from flywheel.deployer.v1 import types_pb2 as pb
from flywheel_common.errors import InvalidArgument
from flywheel_common.timestamps import now, optional_timestamp, timestamp
from flywheel_deployer.analysis import (
    Analysis,
    Decision,
    InsufficientData,
    Metric,
    Outcome,
    StepRule,
    Thresholds,
)
from flywheel_deployer.domain import (
    Arm,
    Phase,
    Plan,
    Role,
    Rollout,
    Route,
    Routing,
    Strategy,
    Trigger,
    check_arms,
    check_rule,
    check_steps,
)

STRATEGIES: dict[int, Strategy] = {
    pb.STRATEGY_DIRECT: Strategy.DIRECT,
    pb.STRATEGY_CANARY: Strategy.CANARY,
    pb.STRATEGY_AB: Strategy.AB,
    pb.STRATEGY_SHADOW: Strategy.SHADOW,
}
STRATEGY_NUMBERS: dict[Strategy, pb.Strategy.ValueType] = {
    strategy: pb.Strategy.ValueType(number) for number, strategy in STRATEGIES.items()
}
PHASE_NUMBERS = {
    Phase.PENDING: pb.ROLLOUT_PHASE_PENDING,
    Phase.PROGRESSING: pb.ROLLOUT_PHASE_PROGRESSING,
    Phase.PAUSED: pb.ROLLOUT_PHASE_PAUSED,
    Phase.SUCCEEDED: pb.ROLLOUT_PHASE_SUCCEEDED,
    Phase.ROLLED_BACK: pb.ROLLOUT_PHASE_ROLLED_BACK,
    Phase.ABORTED: pb.ROLLOUT_PHASE_ABORTED,
    Phase.SUPERSEDED: pb.ROLLOUT_PHASE_SUPERSEDED,
}
PHASES: dict[int, Phase] = {number: phase for phase, number in PHASE_NUMBERS.items()}
TRIGGER_NUMBERS = {
    Trigger.PROMOTION: pb.ROLLOUT_TRIGGER_PROMOTION,
    Trigger.MANUAL: pb.ROLLOUT_TRIGGER_MANUAL,
    Trigger.ROLLBACK: pb.ROLLOUT_TRIGGER_ROLLBACK,
}
ROLE_NUMBERS = {
    Role.STABLE: common.TRAFFIC_ROLE_STABLE,
    Role.CANARY: common.TRAFFIC_ROLE_CANARY,
    Role.ARM: common.TRAFFIC_ROLE_ARM,
}
ROLES = {number: role for role, number in ROLE_NUMBERS.items()}
_INSUFFICIENT = {
    pb.INSUFFICIENT_DATA_ACTION_UNSPECIFIED: InsufficientData.WAIT,
    pb.INSUFFICIENT_DATA_ACTION_WAIT: InsufficientData.WAIT,
    pb.INSUFFICIENT_DATA_ACTION_PAUSE: InsufficientData.PAUSE,
    pb.INSUFFICIENT_DATA_ACTION_ROLLBACK: InsufficientData.ROLLBACK,
}
_DECISIONS = {
    Decision.WAIT: pb.ANALYSIS_DECISION_WAIT,
    Decision.ADVANCE: pb.ANALYSIS_DECISION_ADVANCE,
    Decision.PROMOTE: pb.ANALYSIS_DECISION_PROMOTE,
    Decision.ROLLBACK: pb.ANALYSIS_DECISION_ROLLBACK,
    Decision.PAUSE: pb.ANALYSIS_DECISION_PAUSE,
}
_METRICS = {
    Metric.ERROR_RATE: pb.ANALYSIS_METRIC_ERROR_RATE,
    Metric.LATENCY_P99_RATIO: pb.ANALYSIS_METRIC_LATENCY_P99_RATIO,
    Metric.JS_DIVERGENCE: pb.ANALYSIS_METRIC_JS_DIVERGENCE,
    Metric.ACCURACY_DELTA: pb.ANALYSIS_METRIC_ACCURACY_DELTA,
}
_OUTCOMES = {
    Outcome.PASSED: pb.CHECK_OUTCOME_PASSED,
    Outcome.FAILED: pb.CHECK_OUTCOME_FAILED,
    Outcome.SKIPPED: pb.CHECK_OUTCOME_SKIPPED,
}

DEFAULT_CANARY_STEPS = (10, 50, 100)
DEFAULT_GATEWAY_READY_TIMEOUT_SECONDS = 300.0


def to_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def policy_from_json(data: dict[str, Any]) -> pb.DeploymentPolicy:
    return json_format.ParseDict(data, pb.DeploymentPolicy())


def default_policy(model: str) -> pb.DeploymentPolicy:
    """What a model without a stored policy gets: direct rollouts on promotion."""
    return pb.DeploymentPolicy(
        model=model, strategy=pb.STRATEGY_DIRECT, auto_rollout_on_promotion=True
    )


def strategy_of(number: int) -> Strategy:
    try:
        return STRATEGIES[number]
    except KeyError:
        raise InvalidArgument(
            "strategy must be one of STRATEGY_DIRECT, STRATEGY_CANARY, STRATEGY_AB, STRATEGY_SHADOW"
        ) from None


def _thresholds(analysis: pb.AnalysisThresholds) -> Thresholds:
    def value(name: str) -> float | None:
        return getattr(analysis, name) if analysis.HasField(name) else None  # type: ignore[arg-type]

    thresholds = Thresholds(
        max_error_rate=value("max_error_rate"),
        max_latency_p99_ratio=value("max_latency_p99_ratio"),
        max_js_divergence=value("max_js_divergence"),
        min_accuracy_delta=value("min_accuracy_delta"),
    )
    for name in ("max_error_rate", "max_latency_p99_ratio", "max_js_divergence"):
        limit = getattr(thresholds, name)
        if limit is not None and limit < 0:
            raise InvalidArgument(f"analysis.{name} cannot be negative, got {limit}")
    return thresholds


def _rule(seconds: float, requests: int, policy: pb.DeploymentPolicy) -> StepRule:
    canary = policy.canary
    return StepRule(
        min_seconds=seconds,
        min_requests=requests,
        max_seconds=(
            canary.max_step_duration.ToTimedelta().total_seconds()
            if canary.HasField("max_step_duration")
            else None
        ),
        on_insufficient_data=_INSUFFICIENT.get(canary.on_insufficient_data, InsufficientData.WAIT),
    )


def validate_policy(policy: pb.DeploymentPolicy) -> None:
    """Every rule a stored policy must satisfy, with the field to fix in the message."""
    if not policy.model:
        raise InvalidArgument("policy.model is required")
    plan_of(policy, candidate=2, baseline=1)


def plan_of(
    policy: pb.DeploymentPolicy,
    candidate: int,
    baseline: int,
    strategy: Strategy | None = None,
) -> Plan:
    """Resolve a policy for one rollout; A/B arms name versions or candidate/baseline."""
    chosen = strategy or strategy_of(policy.strategy)
    steps: tuple[int, ...] = (100,)
    rule = StepRule(min_seconds=0, min_requests=0)
    if chosen is Strategy.CANARY:
        steps = tuple(policy.canary.steps_percent) or DEFAULT_CANARY_STEPS
        check_steps(steps)
        rule = _rule(
            policy.canary.min_step_duration.ToTimedelta().total_seconds(),
            policy.canary.min_request_count,
            policy,
        )
    arms: tuple[Arm, ...] = ()
    if chosen is Strategy.AB:
        arms = tuple(_arm(arm, candidate, baseline) for arm in policy.ab.arms)
        check_arms(arms)
    shadow_percent = 100
    if chosen is Strategy.SHADOW:
        shadow_percent = policy.shadow.mirror_percent or 100
        if not 0 < shadow_percent <= 100:
            raise InvalidArgument(
                f"shadow.mirror_percent must be in 1..100, got {policy.shadow.mirror_percent}"
            )
        rule = StepRule(
            min_seconds=policy.shadow.min_duration.ToTimedelta().total_seconds(),
            min_requests=policy.shadow.min_request_count,
        )
    check_rule(rule)
    timeout = (
        policy.gateway_ready_timeout.ToTimedelta().total_seconds()
        if policy.HasField("gateway_ready_timeout")
        else DEFAULT_GATEWAY_READY_TIMEOUT_SECONDS
    )
    return Plan(
        strategy=chosen,
        steps=steps,
        rule=rule,
        thresholds=_thresholds(policy.analysis),
        arms=arms,
        shadow_percent=shadow_percent,
        promote_shadow_on_success=policy.shadow.promote_on_success,
        sticky_key=policy.sticky_key,
        gateway_ready_timeout_seconds=timeout,
    )


def _arm(arm: pb.AbArm, candidate: int, baseline: int) -> Arm:
    if arm.target == pb.ARM_TARGET_CANDIDATE:
        version = candidate
    elif arm.target == pb.ARM_TARGET_BASELINE:
        if not baseline:
            raise InvalidArgument(
                f"A/B arm {arm.name!r} targets the baseline, but the model serves no version yet"
            )
        version = baseline
    elif arm.target == pb.ARM_TARGET_VERSION:
        if arm.version < 1:
            raise InvalidArgument(f"A/B arm {arm.name!r} targets a version: set arm.version")
        version = arm.version
    else:
        raise InvalidArgument(
            f"A/B arm {arm.name!r} needs a target: ARM_TARGET_CANDIDATE, ARM_TARGET_BASELINE "
            "or ARM_TARGET_VERSION"
        )
    return Arm(arm.name, version, arm.weight_percent)


def analysis_message(
    analysis: Analysis,
    rollout: Rollout,
) -> pb.AnalysisResult:
    return pb.AnalysisResult(
        decision=_DECISIONS[analysis.decision],
        checks=[
            pb.AnalysisCheck(
                metric=_METRICS[check.metric],
                observed=check.observed,
                threshold=check.threshold,
                candidate_value=check.candidate,
                baseline_value=check.baseline,
                outcome=_OUTCOMES[check.outcome],
            )
            for check in analysis.checks
        ],
        candidate_version=rollout.version,
        baseline_version=rollout.baseline,
        candidate_request_count=analysis.candidate.requests,
        baseline_request_count=analysis.baseline.requests,
        window_ids=list(analysis.candidate.window_ids),
        step_index=rollout.step_index,
        weight_percent=rollout.weight,
        summary=analysis.summary,
        analyzed_at=now(),
    )


def deployment_state(
    model: str,
    routing: Routing,
    strategy: Strategy,
    generation: int,
    rollout_id: str,
    version_policy: pb.GatewayVersionPolicy | None = None,
) -> events.DeploymentState:
    state = events.DeploymentState(
        model=model,
        routes=[
            pb.TrafficRoute(
                version=route.version,
                weight_percent=route.weight,
                role=ROLE_NUMBERS[route.role],
                arm=route.arm,
            )
            for route in routing.routes
        ],
        strategy=STRATEGY_NUMBERS[strategy],
        sticky_key=routing.sticky_key,
        generation=generation,
        rollout_id=rollout_id,
        updated_at=now(),
    )
    if routing.shadow_version:
        state.shadow.version = routing.shadow_version
        state.shadow.mirror_percent = routing.shadow_percent
    if version_policy is not None:
        state.gateway_version_policy.CopyFrom(version_policy)
    return state


def routing_of(state: events.DeploymentState) -> Routing:
    """The routing a published state describes (the inverse of `deployment_state`)."""
    return Routing(
        tuple(
            Route(r.version, r.weight_percent, ROLES.get(r.role, Role.STABLE), r.arm)
            for r in state.routes
        ),
        state.sticky_key,
        state.shadow.version if state.HasField("shadow") else 0,
        state.shadow.mirror_percent if state.HasField("shadow") else 0,
    )


def rollout_message(
    rollout: Rollout,
    policy: pb.DeploymentPolicy,
    steps: list[dict[str, Any]],
    last_analysis: dict[str, Any] | None,
    pending_gateways: list[str] | None = None,
) -> pb.Rollout:
    message = pb.Rollout(
        rollout_id=rollout.rollout_id,
        model=rollout.model,
        version=rollout.version,
        baseline_version=rollout.baseline,
        strategy=STRATEGY_NUMBERS[rollout.strategy],
        phase=PHASE_NUMBERS[rollout.phase],
        policy=policy,
        step_index=rollout.step_index,
        weight_percent=rollout.weight,
        steps=[json_format.ParseDict(step, pb.RolloutStep()) for step in steps],
        pending_gateways=pending_gateways or [],
        trigger=TRIGGER_NUMBERS[rollout.trigger],
        started_by=rollout.started_by,
        reason=rollout.reason,
        end_reason=rollout.end_reason,
        superseded_by=rollout.superseded_by,
        created_at=timestamp(rollout.created_at),
        updated_at=timestamp(rollout.updated_at),
    )
    if last_analysis:
        message.last_analysis.CopyFrom(json_format.ParseDict(last_analysis, pb.AnalysisResult()))
    finished = optional_timestamp(rollout.finished_at)
    if finished is not None:
        message.finished_at.CopyFrom(finished)
    return message
