"""Deployment policies and strategies between the domain and the protobuf contract (API
requests, events and the stored JSON document).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format

from flywheel.deployer.v1 import types_pb2 as pb
from flywheel_common.errors import InvalidArgument
from flywheel_common.timestamps import check_times, duration, seconds_of
from flywheel_deployer.analysis import InsufficientData, StepRule, Thresholds
from flywheel_deployer.converters.documents import to_json
from flywheel_deployer.domain import (
    ArmSpec,
    ArmTarget,
    BanditTerms,
    Policy,
    Reward,
    Strategy,
    VersionPolicy,
    VersionPolicyKind,
)
from flywheel_deployer.domain.bandit import DEFAULT_FLOOR_PERCENT, DEFAULT_REBALANCE_SECONDS

STRATEGIES: dict[int, Strategy] = {
    pb.STRATEGY_DIRECT: Strategy.DIRECT,
    pb.STRATEGY_CANARY: Strategy.CANARY,
    pb.STRATEGY_AB: Strategy.AB,
    pb.STRATEGY_SHADOW: Strategy.SHADOW,
    pb.STRATEGY_BANDIT: Strategy.BANDIT,
}
STRATEGY_NUMBERS: dict[Strategy, pb.Strategy.ValueType] = {
    strategy: pb.Strategy.ValueType(number) for number, strategy in STRATEGIES.items()
}
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
_REWARDS = {
    pb.BANDIT_REWARD_UNSPECIFIED: Reward.ACCURACY,
    pb.BANDIT_REWARD_ACCURACY: Reward.ACCURACY,
    pb.BANDIT_REWARD_LATENCY: Reward.LATENCY,
}
_VERSION_POLICY_NUMBERS = {
    VersionPolicyKind.UNSPECIFIED: pb.GATEWAY_VERSION_POLICY_KIND_UNSPECIFIED,
    VersionPolicyKind.LATEST: pb.GATEWAY_VERSION_POLICY_KIND_LATEST,
    VersionPolicyKind.SPECIFIC: pb.GATEWAY_VERSION_POLICY_KIND_SPECIFIC,
    VersionPolicyKind.ALL: pb.GATEWAY_VERSION_POLICY_KIND_ALL,
}
_VERSION_POLICY_KINDS = {number: kind for kind, number in _VERSION_POLICY_NUMBERS.items()}


def strategy_of(number: int) -> Strategy:
    try:
        return STRATEGIES[number]
    except KeyError:
        raise InvalidArgument(
            "strategy must be one of STRATEGY_DIRECT, STRATEGY_CANARY, STRATEGY_AB, "
            "STRATEGY_SHADOW, STRATEGY_BANDIT"
        ) from None


def requested_strategy(number: int) -> Strategy | None:
    """A request's strategy: None when unset, INVALID_ARGUMENT when unknown."""
    return None if number == pb.STRATEGY_UNSPECIFIED else strategy_of(number)


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


def _arms(arms: Iterable[pb.AbArm]) -> tuple[ArmSpec, ...]:
    return tuple(
        ArmSpec(
            arm.name,
            _ARM_TARGETS.get(arm.target, ArmTarget.UNSPECIFIED),
            arm.version,
            arm.weight_percent,
        )
        for arm in arms
    )


def _bandit_terms(bandit: pb.BanditPolicy) -> BanditTerms:
    if bandit.reward not in _REWARDS:
        raise InvalidArgument(
            "bandit.reward must be BANDIT_REWARD_ACCURACY or BANDIT_REWARD_LATENCY"
        )
    return BanditTerms(
        reward=_REWARDS[bandit.reward],
        floor_percent=(
            bandit.floor_percent if bandit.HasField("floor_percent") else DEFAULT_FLOOR_PERCENT
        ),
        rebalance_seconds=(
            seconds_of(bandit.rebalance_interval, "bandit.rebalance_interval")
            if bandit.HasField("rebalance_interval")
            else DEFAULT_REBALANCE_SECONDS
        ),
    )


def policy_of(message: pb.DeploymentPolicy) -> Policy:
    """The policy's terms, unvalidated (Policy.validate and Policy.plan check them)."""
    check_times(message)  # kept as a JSON document, including fields no term reads
    canary, shadow = message.canary, message.shadow
    return Policy(
        model=message.model,
        strategy=STRATEGIES.get(message.strategy),
        auto_rollout_on_promotion=message.auto_rollout_on_promotion,
        canary_steps=tuple(canary.steps_percent),
        canary_rule=StepRule(
            min_seconds=seconds_of(canary.min_step_duration, "canary.min_step_duration"),
            min_requests=canary.min_request_count,
            max_seconds=(
                seconds_of(canary.max_step_duration, "canary.max_step_duration")
                if canary.HasField("max_step_duration")
                else None
            ),
            on_insufficient_data=_INSUFFICIENT.get(
                canary.on_insufficient_data, InsufficientData.WAIT
            ),
        ),
        arms=_arms(message.ab.arms),
        bandit_arms=_arms(message.bandit.arms),
        bandit=_bandit_terms(message.bandit),
        mirror_percent=shadow.mirror_percent,
        shadow_rule=StepRule(
            min_seconds=seconds_of(shadow.min_duration, "shadow.min_duration"),
            min_requests=shadow.min_request_count,
        ),
        promote_shadow_on_success=shadow.promote_on_success,
        thresholds=_thresholds(message.analysis),
        sticky_key=message.sticky_key,
        gateway_ready_timeout_seconds=(
            seconds_of(message.gateway_ready_timeout, "gateway_ready_timeout")
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
