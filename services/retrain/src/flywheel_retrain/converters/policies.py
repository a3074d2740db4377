"""Retrain policies between the domain and the contract (API messages and the stored
JSON document)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_common.errors import InvalidArgument
from flywheel_common.timestamps import timedelta_of, timestamp
from flywheel_retrain.converters.documents import from_json, to_json
from flywheel_retrain.converters.fields import (
    SEVERITIES,
    SEVERITY_NUMBERS,
    alert_kind,
    alert_kind_number,
    enum_member,
    enum_number,
    time_of,
)
from flywheel_retrain.domain import (
    AlertTrigger,
    ApprovalMode,
    DecayMetric,
    DecayTrigger,
    ExecutorConfig,
    ExecutorKind,
    FollowUpTrigger,
    GateConfig,
    MetricGoal,
    Policy,
    ScheduleTrigger,
    TrainingData,
)


def policy_of(message: pb.RetrainPolicy) -> Policy:
    """A policy from the contract; INVALID_ARGUMENT for enum numbers it does not have."""
    alert, decay = message.alert_trigger, message.decay_trigger
    if alert.min_severity not in SEVERITIES:
        raise InvalidArgument(f"alert_trigger.min_severity {alert.min_severity} is not a Severity")
    gate, data, executor = message.gate, message.training_data, message.executor
    return Policy(
        model=message.model,
        enabled=message.enabled,
        alert_trigger=AlertTrigger(
            enabled=alert.enabled,
            min_severity=SEVERITIES[alert.min_severity],
            min_drifted_features=alert.min_drifted_features,
            kinds=tuple(alert_kind(kind) for kind in alert.kinds),
            on_concept_drift=alert.on_concept_drift,
        ),
        decay_trigger=DecayTrigger(
            enabled=decay.enabled,
            metric=_decay_metric(decay),
            threshold=decay.threshold,
            consecutive_windows=decay.consecutive_windows,
            min_labeled_count=decay.min_labeled_count,
            relative_to_gate=decay.relative_to_gate,
        ),
        schedule_trigger=ScheduleTrigger(
            enabled=message.schedule_trigger.enabled,
            cron=message.schedule_trigger.cron,
            time_zone=message.schedule_trigger.time_zone,
        ),
        follow_up_trigger=FollowUpTrigger(
            enabled=message.follow_up_trigger.enabled,
            growth=message.follow_up_trigger.growth,
        ),
        cooldown=timedelta_of(message.cooldown, "cooldown"),
        min_new_labeled_samples=message.min_new_labeled_samples,
        max_concurrent_runs=message.max_concurrent_runs,
        approval_mode=enum_member(
            pb.ApprovalMode,
            "APPROVAL_MODE_",
            ApprovalMode,
            message.approval_mode,
            "approval_mode {} is not an ApprovalMode",
        ),
        gate=GateConfig(
            metric=gate.metric,
            goal=enum_member(
                pb.MetricGoal,
                "METRIC_GOAL_",
                MetricGoal,
                gate.goal,
                "gate.goal {} is not a MetricGoal",
            ),
            min_improvement=gate.min_improvement,
            holdout_size=gate.holdout_size,
        ),
        training_data=TrainingData(
            window=timedelta_of(data.window, "training_data.window"),
            include_production_dataset=data.include_production_dataset,
            max_rows=data.max_rows,
            since_change=data.since_change,
            min_rows_since_change=data.min_rows_since_change,
            max_wait=timedelta_of(data.max_wait, "training_data.max_wait"),
        ),
        executor=ExecutorConfig(
            kind=enum_member(
                pb.ExecutorKind,
                "EXECUTOR_KIND_",
                ExecutorKind,
                executor.kind,
                "executor.kind {} is not an ExecutorKind",
            ),
            timeout=timedelta_of(executor.timeout, "executor.timeout"),
            max_retries=executor.max_retries,
            entrypoint_override=executor.entrypoint_override,
            image=executor.image,
            env=dict(executor.env),
        ),
        revision=message.revision,
        updated_by=message.updated_by,
        updated_at=time_of(message, "updated_at"),
    )


def _decay_metric(decay: pb.DecayTrigger) -> DecayMetric:
    if decay.metric not in pb.DecayMetric.values():
        if decay.enabled:
            return DecayMetric.UNSPECIFIED  # the policy's validation names what to set
        raise InvalidArgument(f"decay_trigger.metric {decay.metric} is not a DecayMetric")
    return enum_member(pb.DecayMetric, "DECAY_METRIC_", DecayMetric, decay.metric, "{}")


def _set_duration(target: Any, value: timedelta) -> None:
    if value:
        target.FromTimedelta(value)


def policy_message(policy: Policy) -> pb.RetrainPolicy:
    alert, decay, gate = policy.alert_trigger, policy.decay_trigger, policy.gate
    data, executor = policy.training_data, policy.executor
    message = pb.RetrainPolicy(
        model=policy.model,
        enabled=policy.enabled,
        alert_trigger=pb.AlertTrigger(
            enabled=alert.enabled,
            min_severity=SEVERITY_NUMBERS[alert.min_severity],
            min_drifted_features=alert.min_drifted_features,
            kinds=[alert_kind_number(kind) for kind in alert.kinds],
            on_concept_drift=alert.on_concept_drift,
        ),
        decay_trigger=pb.DecayTrigger(
            enabled=decay.enabled,
            metric=enum_number(pb.DecayMetric, "DECAY_METRIC_", decay.metric),
            threshold=decay.threshold,
            consecutive_windows=decay.consecutive_windows,
            min_labeled_count=decay.min_labeled_count,
            relative_to_gate=decay.relative_to_gate,
        ),
        schedule_trigger=pb.ScheduleTrigger(
            enabled=policy.schedule_trigger.enabled,
            cron=policy.schedule_trigger.cron,
            time_zone=policy.schedule_trigger.time_zone,
        ),
        follow_up_trigger=pb.FollowUpTrigger(
            enabled=policy.follow_up_trigger.enabled,
            growth=policy.follow_up_trigger.growth,
        ),
        min_new_labeled_samples=policy.min_new_labeled_samples,
        max_concurrent_runs=policy.max_concurrent_runs,
        approval_mode=enum_number(pb.ApprovalMode, "APPROVAL_MODE_", policy.approval_mode),
        gate=pb.EvaluationGate(
            metric=gate.metric,
            goal=enum_number(pb.MetricGoal, "METRIC_GOAL_", gate.goal),
            min_improvement=gate.min_improvement,
            holdout_size=gate.holdout_size,
        ),
        training_data=pb.TrainingDataConfig(
            include_production_dataset=data.include_production_dataset,
            max_rows=data.max_rows,
            since_change=data.since_change,
            min_rows_since_change=data.min_rows_since_change,
        ),
        executor=pb.ExecutorConfig(
            kind=enum_number(pb.ExecutorKind, "EXECUTOR_KIND_", executor.kind),
            max_retries=executor.max_retries,
            entrypoint_override=executor.entrypoint_override,
            image=executor.image,
            env=dict(executor.env),
        ),
        revision=policy.revision,
        updated_by=policy.updated_by,
    )
    _set_duration(message.cooldown, policy.cooldown)
    _set_duration(message.training_data.window, data.window)
    _set_duration(message.training_data.max_wait, data.max_wait)
    _set_duration(message.executor.timeout, executor.timeout)
    if policy.updated_at is not None:
        message.updated_at.CopyFrom(timestamp(policy.updated_at))
    return message


def policy_document(policy: Policy) -> dict[str, Any]:
    return to_json(policy_message(policy))


def policy_from_document(document: dict[str, Any]) -> Policy:
    return policy_of(from_json(document, pb.RetrainPolicy()))
