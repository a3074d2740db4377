"""Between the deployer's domain and its protobuf contract (API, events, stored JSON)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC
from itertools import pairwise
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from flywheel.common.v1 import types_pb2 as common
from flywheel.deployer.v1 import events_pb2 as events
from flywheel.deployer.v1 import types_pb2 as pb
from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.registry.v1 import events_pb2 as registry_events
from flywheel.registry.v1 import types_pb2 as registry_types
from flywheel_common.errors import InvalidArgument
from flywheel_common.timestamps import duration, epoch, optional_timestamp, timestamp
from flywheel_deployer.analysis import (
    Check,
    Decision,
    InsufficientData,
    Metric,
    Outcome,
    StepRule,
    Thresholds,
    Window,
)
from flywheel_deployer.domain import (
    AnalysisResult,
    ArmSpec,
    ArmTarget,
    GatewayReadiness,
    MetricWindow,
    Phase,
    Policy,
    Role,
    Rollout,
    RolloutAborted,
    RolloutCompleted,
    RolloutEvent,
    RolloutRolledBack,
    RolloutStarted,
    RolloutStepAdvanced,
    Route,
    Routing,
    RoutingState,
    Step,
    Strategy,
    Trigger,
    VersionPolicy,
    VersionPolicyKind,
)
from flywheel_deployer.handlers.rollouts import Promotion

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
_ARM_TARGETS = {
    pb.ARM_TARGET_CANDIDATE: ArmTarget.CANDIDATE,
    pb.ARM_TARGET_BASELINE: ArmTarget.BASELINE,
    pb.ARM_TARGET_VERSION: ArmTarget.VERSION,
}
_VERSION_POLICY_NUMBERS = {
    VersionPolicyKind.UNSPECIFIED: pb.GATEWAY_VERSION_POLICY_KIND_UNSPECIFIED,
    VersionPolicyKind.LATEST: pb.GATEWAY_VERSION_POLICY_KIND_LATEST,
    VersionPolicyKind.SPECIFIC: pb.GATEWAY_VERSION_POLICY_KIND_SPECIFIC,
    VersionPolicyKind.ALL: pb.GATEWAY_VERSION_POLICY_KIND_ALL,
}
_VERSION_POLICY_KINDS = {number: kind for kind, number in _VERSION_POLICY_NUMBERS.items()}
_DECISION_NUMBERS = {
    Decision.WAIT: pb.ANALYSIS_DECISION_WAIT,
    Decision.ADVANCE: pb.ANALYSIS_DECISION_ADVANCE,
    Decision.PROMOTE: pb.ANALYSIS_DECISION_PROMOTE,
    Decision.ROLLBACK: pb.ANALYSIS_DECISION_ROLLBACK,
    Decision.PAUSE: pb.ANALYSIS_DECISION_PAUSE,
}
_DECISIONS = {number: decision for decision, number in _DECISION_NUMBERS.items()}
_METRIC_NUMBERS = {
    Metric.ERROR_RATE: pb.ANALYSIS_METRIC_ERROR_RATE,
    Metric.LATENCY_P99_RATIO: pb.ANALYSIS_METRIC_LATENCY_P99_RATIO,
    Metric.JS_DIVERGENCE: pb.ANALYSIS_METRIC_JS_DIVERGENCE,
    Metric.ACCURACY_DELTA: pb.ANALYSIS_METRIC_ACCURACY_DELTA,
}
_METRICS = {number: metric for metric, number in _METRIC_NUMBERS.items()}
_OUTCOME_NUMBERS = {
    Outcome.PASSED: pb.CHECK_OUTCOME_PASSED,
    Outcome.FAILED: pb.CHECK_OUTCOME_FAILED,
    Outcome.SKIPPED: pb.CHECK_OUTCOME_SKIPPED,
}
_OUTCOMES = {number: outcome for outcome, number in _OUTCOME_NUMBERS.items()}

PRODUCTION = "production"


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def strategy_of(number: int) -> Strategy:
    try:
        return STRATEGIES[number]
    except KeyError:
        raise InvalidArgument(
            "strategy must be one of STRATEGY_DIRECT, STRATEGY_CANARY, STRATEGY_AB, STRATEGY_SHADOW"
        ) from None


def requested_strategy(number: int) -> Strategy | None:
    """A request's strategy: None when unset, INVALID_ARGUMENT when unknown."""
    return None if number == pb.STRATEGY_UNSPECIFIED else strategy_of(number)


def phases_of(numbers: Sequence[int]) -> tuple[Phase, ...] | None:
    """A request's phase filter: None when it names none; unknown numbers match nothing."""
    return tuple(PHASES[n] for n in numbers if n in PHASES) if numbers else None


# Policies


def _seconds(value: Any) -> float:
    return float(value.ToTimedelta().total_seconds())


def _thresholds(analysis: pb.AnalysisThresholds) -> Thresholds:
    return Thresholds(
        max_error_rate=(analysis.max_error_rate if analysis.HasField("max_error_rate") else None),
        max_latency_p99_ratio=(
            analysis.max_latency_p99_ratio if analysis.HasField("max_latency_p99_ratio") else None
        ),
        max_js_divergence=(
            analysis.max_js_divergence if analysis.HasField("max_js_divergence") else None
        ),
        min_accuracy_delta=(
            analysis.min_accuracy_delta if analysis.HasField("min_accuracy_delta") else None
        ),
    )


def version_policy_of(message: pb.GatewayVersionPolicy) -> VersionPolicy:
    return VersionPolicy(
        _VERSION_POLICY_KINDS.get(message.kind, VersionPolicyKind.UNSPECIFIED),
        message.latest_n,
        tuple(message.versions),
    )


def version_policy_message(policy: VersionPolicy) -> pb.GatewayVersionPolicy:
    return pb.GatewayVersionPolicy(
        kind=_VERSION_POLICY_NUMBERS[policy.kind],
        latest_n=policy.latest_n,
        versions=list(policy.versions),
    )


def policy_of(message: pb.DeploymentPolicy) -> Policy:
    """The policy's terms, unvalidated (Policy.validate and Policy.plan check them)."""
    canary, shadow = message.canary, message.shadow
    return Policy(
        model=message.model,
        strategy=STRATEGIES.get(message.strategy),
        auto_rollout_on_promotion=message.auto_rollout_on_promotion,
        canary_steps=tuple(canary.steps_percent),
        canary_rule=StepRule(
            min_seconds=_seconds(canary.min_step_duration),
            min_requests=canary.min_request_count,
            max_seconds=(
                _seconds(canary.max_step_duration) if canary.HasField("max_step_duration") else None
            ),
            on_insufficient_data=_INSUFFICIENT.get(
                canary.on_insufficient_data, InsufficientData.WAIT
            ),
        ),
        arms=tuple(
            ArmSpec(
                arm.name,
                _ARM_TARGETS.get(arm.target, ArmTarget.UNSPECIFIED),
                arm.version,
                arm.weight_percent,
            )
            for arm in message.ab.arms
        ),
        mirror_percent=shadow.mirror_percent,
        shadow_rule=StepRule(
            min_seconds=_seconds(shadow.min_duration), min_requests=shadow.min_request_count
        ),
        promote_shadow_on_success=shadow.promote_on_success,
        thresholds=_thresholds(message.analysis),
        sticky_key=message.sticky_key,
        gateway_ready_timeout_seconds=(
            _seconds(message.gateway_ready_timeout)
            if message.HasField("gateway_ready_timeout")
            else None
        ),
        version_policy=(
            version_policy_of(message.gateway_version_policy)
            if message.HasField("gateway_version_policy")
            else None
        ),
        revision=message.revision,
        document=to_json(message),
    )


def policy_from_document(document: Mapping[str, Any]) -> Policy:
    return policy_of(json_format.ParseDict(dict(document), pb.DeploymentPolicy()))


_INSUFFICIENT_NUMBERS = {
    InsufficientData.WAIT: pb.INSUFFICIENT_DATA_ACTION_WAIT,
    InsufficientData.PAUSE: pb.INSUFFICIENT_DATA_ACTION_PAUSE,
    InsufficientData.ROLLBACK: pb.INSUFFICIENT_DATA_ACTION_ROLLBACK,
}
_ARM_TARGET_NUMBERS = {target: number for number, target in _ARM_TARGETS.items()}


def _terms_message(policy: Policy) -> pb.DeploymentPolicy:
    """A policy built in the domain (no stored document), field by field."""
    canary, shadow, limits = policy.canary_rule, policy.shadow_rule, policy.thresholds
    message = pb.DeploymentPolicy(
        canary=pb.CanaryPolicy(
            steps_percent=list(policy.canary_steps),
            min_step_duration=duration(canary.min_seconds),
            min_request_count=canary.min_requests,
            on_insufficient_data=_INSUFFICIENT_NUMBERS[canary.on_insufficient_data],
        ),
        ab=pb.AbPolicy(
            arms=[
                pb.AbArm(
                    name=arm.name,
                    target=_ARM_TARGET_NUMBERS.get(arm.target, pb.ARM_TARGET_UNSPECIFIED),
                    version=arm.version,
                    weight_percent=arm.weight,
                )
                for arm in policy.arms
            ]
        ),
        shadow=pb.ShadowPolicy(
            mirror_percent=policy.mirror_percent,
            min_duration=duration(shadow.min_seconds),
            min_request_count=shadow.min_requests,
            promote_on_success=policy.promote_shadow_on_success,
        ),
        analysis=pb.AnalysisThresholds(
            max_error_rate=limits.max_error_rate,
            max_latency_p99_ratio=limits.max_latency_p99_ratio,
            max_js_divergence=limits.max_js_divergence,
            min_accuracy_delta=limits.min_accuracy_delta,
        ),
        sticky_key=policy.sticky_key,
        revision=policy.revision,
    )
    if canary.max_seconds is not None:
        message.canary.max_step_duration.CopyFrom(duration(canary.max_seconds))
    if policy.gateway_ready_timeout_seconds is not None:
        message.gateway_ready_timeout.CopyFrom(duration(policy.gateway_ready_timeout_seconds))
    if policy.version_policy is not None:
        message.gateway_version_policy.CopyFrom(version_policy_message(policy.version_policy))
    return message


def policy_message(policy: Policy) -> pb.DeploymentPolicy:
    """The policy as stored, with the model and strategy a rollout may have overridden; one
    built in the domain, from its terms (the default policy sets only these three)."""
    if policy.document is not None:
        message = json_format.ParseDict(dict(policy.document), pb.DeploymentPolicy())
    elif policy == Policy.default(policy.model):
        message = pb.DeploymentPolicy()
    else:
        message = _terms_message(policy)
    message.model = policy.model
    if policy.strategy is not None:
        message.strategy = STRATEGY_NUMBERS[policy.strategy]
    message.auto_rollout_on_promotion = policy.auto_rollout_on_promotion
    return message


def policy_document(policy: Policy) -> dict[str, Any]:
    return to_json(policy_message(policy))


def override_of(model: str, message: pb.DeploymentPolicy) -> Policy | None:
    """StartRollout's policy_override, for `model` whatever it names; None when empty."""
    if not message.ByteSize():
        return None
    override = pb.DeploymentPolicy()
    override.CopyFrom(message)
    override.model = model
    return policy_of(override)


# Analysis and steps


def analysis_message(result: AnalysisResult) -> pb.AnalysisResult:
    message = pb.AnalysisResult(
        decision=_DECISION_NUMBERS[result.decision],
        checks=[
            pb.AnalysisCheck(
                metric=_METRIC_NUMBERS[check.metric],
                observed=check.observed,
                threshold=check.threshold,
                candidate_value=check.candidate,
                baseline_value=check.baseline,
                outcome=_OUTCOME_NUMBERS[check.outcome],
            )
            for check in result.checks
        ],
        candidate_version=result.candidate_version,
        baseline_version=result.baseline_version,
        candidate_request_count=result.candidate_requests,
        baseline_request_count=result.baseline_requests,
        window_ids=list(result.window_ids),
        step_index=result.step_index,
        weight_percent=result.weight,
        summary=result.summary,
    )
    analyzed = optional_timestamp(result.analyzed_at)
    if analyzed is not None:
        message.analyzed_at.CopyFrom(analyzed)
    return message


def analysis_of(message: pb.AnalysisResult) -> AnalysisResult:
    return AnalysisResult(
        decision=_DECISIONS.get(message.decision, Decision.WAIT),
        checks=tuple(
            Check(
                _METRICS.get(check.metric, Metric.ERROR_RATE),
                check.observed,
                check.threshold,
                check.candidate_value,
                check.baseline_value,
                _OUTCOMES.get(check.outcome, Outcome.SKIPPED),
            )
            for check in message.checks
        ),
        candidate_version=message.candidate_version,
        baseline_version=message.baseline_version,
        candidate_requests=message.candidate_request_count,
        baseline_requests=message.baseline_request_count,
        window_ids=tuple(message.window_ids),
        step_index=message.step_index,
        weight=message.weight_percent,
        summary=message.summary,
        analyzed_at=(
            message.analyzed_at.ToDatetime(UTC) if message.HasField("analyzed_at") else None
        ),
    )


def analysis_document(result: AnalysisResult | None) -> dict[str, Any] | None:
    return None if result is None else to_json(analysis_message(result))


def analysis_from_document(document: Mapping[str, Any] | None) -> AnalysisResult | None:
    if not document:
        return None
    return analysis_of(json_format.ParseDict(dict(document), pb.AnalysisResult()))


def step_message(step: Step) -> pb.RolloutStep:
    message = pb.RolloutStep(index=step.index, weight_percent=step.weight)
    for name, when in (("started_at", step.started_at), ("finished_at", step.finished_at)):
        stamp = optional_timestamp(when)
        if stamp is not None:
            getattr(message, name).CopyFrom(stamp)
    if step.analysis is not None:
        message.analysis.CopyFrom(analysis_message(step.analysis))
    return message


def step_of(message: pb.RolloutStep) -> Step:
    return Step(
        index=message.index,
        weight=message.weight_percent,
        started_at=message.started_at.ToDatetime(UTC) if message.HasField("started_at") else None,
        finished_at=(
            message.finished_at.ToDatetime(UTC) if message.HasField("finished_at") else None
        ),
        analysis=analysis_of(message.analysis) if message.HasField("analysis") else None,
    )


def steps_document(steps: Sequence[Step]) -> list[dict[str, Any]]:
    return [to_json(step_message(step)) for step in steps]


def steps_from_document(documents: Sequence[Mapping[str, Any]] | None) -> tuple[Step, ...]:
    return tuple(
        step_of(json_format.ParseDict(dict(each), pb.RolloutStep())) for each in documents or ()
    )


# Rollouts and their events


def rollout_message(rollout: Rollout, pending_gateways: Sequence[str] = ()) -> pb.Rollout:
    message = pb.Rollout(
        rollout_id=rollout.rollout_id,
        model=rollout.model,
        version=rollout.version,
        baseline_version=rollout.baseline,
        strategy=STRATEGY_NUMBERS[rollout.strategy],
        phase=PHASE_NUMBERS[rollout.phase],
        policy=policy_message(rollout.policy) if rollout.policy is not None else None,
        step_index=rollout.step_index,
        weight_percent=rollout.weight,
        steps=[step_message(step) for step in rollout.steps],
        pending_gateways=list(pending_gateways),
        trigger=TRIGGER_NUMBERS[rollout.trigger],
        started_by=rollout.started_by,
        reason=rollout.reason,
        end_reason=rollout.end_reason,
        superseded_by=rollout.superseded_by,
        created_at=timestamp(rollout.created_at),
        updated_at=timestamp(rollout.updated_at),
    )
    if rollout.last_analysis is not None:
        message.last_analysis.CopyFrom(analysis_message(rollout.last_analysis))
    finished = optional_timestamp(rollout.finished_at)
    if finished is not None:
        message.finished_at.CopyFrom(finished)
    return message


def _analysis_or_none(result: AnalysisResult | None) -> pb.AnalysisResult | None:
    return None if result is None else analysis_message(result)


def event_message(event: RolloutEvent) -> Message:
    """A rollout's domain event as the flywheel.deployer.v1 event it is published as."""
    at = timestamp(event.occurred_at)
    match event:
        case RolloutStarted():
            return events.RolloutStarted(
                rollout_id=event.rollout_id,
                model=event.model,
                version=event.version,
                baseline_version=event.baseline,
                strategy=STRATEGY_NUMBERS[event.strategy],
                policy=policy_message(event.policy) if event.policy is not None else None,
                trigger=TRIGGER_NUMBERS[event.trigger],
                superseded_rollout_id=event.superseded_rollout_id,
                actor=event.actor,
                reason=event.reason,
                occurred_at=at,
            )
        case RolloutStepAdvanced():
            return events.RolloutStepAdvanced(
                rollout_id=event.rollout_id,
                model=event.model,
                version=event.version,
                baseline_version=event.baseline,
                from_step_index=event.from_step_index,
                to_step_index=event.to_step_index,
                from_weight_percent=event.from_weight,
                to_weight_percent=event.to_weight,
                analysis=_analysis_or_none(event.analysis),
                actor=event.actor,
                occurred_at=at,
            )
        case RolloutCompleted():
            return events.RolloutCompleted(
                rollout_id=event.rollout_id,
                model=event.model,
                version=event.version,
                previous_version=event.previous_version,
                strategy=STRATEGY_NUMBERS[event.strategy],
                analysis=_analysis_or_none(event.analysis),
                forced=event.forced,
                actor=event.actor,
                reason=event.reason,
                duration=duration(event.duration_seconds),
                occurred_at=at,
            )
        case RolloutRolledBack():
            return events.RolloutRolledBack(
                rollout_id=event.rollout_id,
                model=event.model,
                rolled_back_version=event.rolled_back_version,
                restored_version=event.restored_version,
                automatic=event.automatic,
                analysis=_analysis_or_none(event.analysis),
                actor=event.actor,
                reason=event.reason,
                occurred_at=at,
            )
        case RolloutAborted():
            return events.RolloutAborted(
                rollout_id=event.rollout_id,
                model=event.model,
                version=event.version,
                restored_version=event.restored_version,
                superseded=event.superseded,
                superseded_by=event.superseded_by,
                actor=event.actor,
                reason=event.reason,
                occurred_at=at,
            )


# Routing states


def state_message(state: RoutingState) -> events.DeploymentState:
    routing = state.routing
    message = events.DeploymentState(
        model=state.model,
        routes=[
            pb.TrafficRoute(
                version=route.version,
                weight_percent=route.weight,
                role=ROLE_NUMBERS[route.role],
                arm=route.arm,
            )
            for route in routing.routes
        ],
        strategy=STRATEGY_NUMBERS[state.strategy],
        sticky_key=routing.sticky_key,
        generation=state.generation,
        rollout_id=state.rollout_id,
        updated_at=timestamp(state.updated_at),
    )
    if routing.shadow_version:
        message.shadow.version = routing.shadow_version
        message.shadow.mirror_percent = routing.shadow_percent
    if state.version_policy is not None:
        message.gateway_version_policy.CopyFrom(version_policy_message(state.version_policy))
    return message


def routing_of(state: events.DeploymentState) -> Routing:
    """The routing a published state describes (the inverse of `state_message`)."""
    return Routing(
        tuple(
            Route(r.version, r.weight_percent, ROLES.get(r.role, Role.STABLE), r.arm)
            for r in state.routes
        ),
        state.sticky_key,
        state.shadow.version if state.HasField("shadow") else 0,
        state.shadow.mirror_percent if state.HasField("shadow") else 0,
    )


def state_of(message: events.DeploymentState) -> RoutingState:
    return RoutingState(
        model=message.model,
        routing=routing_of(message),
        strategy=STRATEGIES.get(message.strategy, Strategy.DIRECT),
        generation=message.generation,
        rollout_id=message.rollout_id,
        updated_at=message.updated_at.ToDatetime(UTC),
        version_policy=(
            version_policy_of(message.gateway_version_policy)
            if message.HasField("gateway_version_policy")
            else None
        ),
    )


def readiness_message(gateway: GatewayReadiness) -> pb.GatewayReadiness:
    return pb.GatewayReadiness(
        gateway_id=gateway.gateway_id,
        live=gateway.live,
        ready_versions=list(gateway.ready_versions),
        last_heartbeat_at=epoch(gateway.heartbeat_at),
    )


# Events the deployer follows


def promotion_of(event: registry_events.ModelVersionPromoted) -> Promotion:
    return Promotion(
        model=event.model,
        version=event.version,
        to_production=event.alias == PRODUCTION,
        by_rollback=event.cause == registry_types.ALIAS_CHANGE_CAUSE_ROLLBACK,
        reason=event.reason,
        actor=event.actor,
    )


def metric_window_of(window: drift_events.ModelMetricsWindow) -> MetricWindow:
    outputs: dict[str, int] = {}
    for output in window.output_histograms:
        histogram = output.histogram
        labels = list(histogram.categories) or [
            f"{lo:g}..{hi:g}" for lo, hi in pairwise(histogram.bin_edges)
        ]
        for label, count in zip(labels, histogram.counts, strict=False):
            key = f"{output.output}:{label}"
            outputs[key] = outputs.get(key, 0) + int(count)
    label_metrics = window.label_metrics
    return MetricWindow(
        model=window.model,
        version=window.version,
        start=window.window.start.ToDatetime(UTC),
        end=window.window.end.ToDatetime(UTC),
        summary=Window(
            window_id=window.window.window_id,
            requests=window.request_count,
            errors=window.error_count,
            latency_p99_ms=window.latency.p99_ms,
            outputs=outputs,
            labeled=label_metrics.labeled_count,
            accuracy=label_metrics.accuracy if label_metrics.HasField("accuracy") else None,
        ),
    )
