"""Between the retrain contract (protobuf) and the domain, the database and the defaults."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from google.protobuf import json_format

from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.drift.v1 import types_pb2 as drift_types
from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_common.errors import InvalidArgument
from flywheel_retrain import domain
from flywheel_retrain.evaluation import METRICS
from flywheel_retrain.executors import command_line
from flywheel_retrain.storage import RunRow, WindowRow

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_HOLDOUT_SIZE = 200
DEFAULT_WINDOW = timedelta(days=7)


def to_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def from_json(data: dict[str, Any] | None, message: Any) -> Any:
    return json_format.ParseDict(data or {}, message)


def default_policy(model: str) -> pb.RetrainPolicy:
    """What a model gets until someone sets a policy: alerts of MEDIUM severity or more and
    concept drift retrain, at most once an hour, promoted automatically when the candidate
    is at least as accurate as production on the newest 200 labeled predictions."""
    policy = pb.RetrainPolicy(
        model=model,
        enabled=True,
        alert_trigger=pb.AlertTrigger(
            enabled=True,
            min_severity=drift_types.SEVERITY_MEDIUM,
            min_drifted_features=1,
            on_concept_drift=True,
        ),
        max_concurrent_runs=1,
        approval_mode=pb.APPROVAL_MODE_AUTOMATIC,
        gate=pb.EvaluationGate(
            metric="accuracy", goal=pb.METRIC_GOAL_MAXIMIZE, holdout_size=DEFAULT_HOLDOUT_SIZE
        ),
        training_data=pb.TrainingDataConfig(include_production_dataset=True),
        executor=pb.ExecutorConfig(max_retries=1),
    )
    policy.cooldown.FromTimedelta(timedelta(hours=1))
    policy.training_data.window.FromTimedelta(DEFAULT_WINDOW)
    return policy


def validate_policy(policy: pb.RetrainPolicy) -> None:
    """INVALID_ARGUMENT naming the first field to fix."""
    if not MODEL_NAME.match(policy.model):
        raise InvalidArgument(f"policy.model {policy.model!r} must match {MODEL_NAME.pattern}")
    alert = policy.alert_trigger
    if alert.min_drifted_features < 0:
        raise InvalidArgument("alert_trigger.min_drifted_features cannot be negative")
    if alert.min_severity not in drift_types.Severity.values():
        raise InvalidArgument(f"alert_trigger.min_severity {alert.min_severity} is not a Severity")
    decay = policy.decay_trigger
    if decay.enabled:
        if (
            decay.metric == pb.DECAY_METRIC_UNSPECIFIED
            or decay.metric not in pb.DecayMetric.values()
        ):
            raise InvalidArgument(
                "decay_trigger.metric is required when decay is enabled: ACCURACY, "
                "MEAN_ABSOLUTE_ERROR or ERROR_RATE"
            )
        if not math.isfinite(decay.threshold):
            raise InvalidArgument("decay_trigger.threshold must be a finite number")
    if decay.consecutive_windows < 0 or decay.min_labeled_count < 0:
        raise InvalidArgument("decay_trigger counts cannot be negative")
    schedule = policy.schedule_trigger
    if schedule.enabled and not croniter.is_valid(schedule.cron):
        raise InvalidArgument(
            f"schedule_trigger.cron {schedule.cron!r} is not a five-field cron expression "
            "such as '0 3 * * 1'"
        )
    if schedule.time_zone:
        try:
            ZoneInfo(schedule.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidArgument(
                f"schedule_trigger.time_zone {schedule.time_zone!r} is not an IANA time zone"
            ) from None
    if policy.cooldown.ToTimedelta() < timedelta(0):
        raise InvalidArgument("cooldown cannot be negative")
    if policy.min_new_labeled_samples < 0 or policy.max_concurrent_runs < 0:
        raise InvalidArgument("min_new_labeled_samples and max_concurrent_runs cannot be negative")
    gate = policy.gate
    if gate.metric and gate.metric not in METRICS:
        raise InvalidArgument(f"gate.metric {gate.metric!r} is not one of {sorted(METRICS)}")
    if gate.goal not in pb.MetricGoal.values():
        raise InvalidArgument(f"gate.goal {gate.goal} is not a MetricGoal")
    if not math.isfinite(gate.min_improvement):
        raise InvalidArgument("gate.min_improvement must be a finite number")
    if gate.holdout_size < 0:
        raise InvalidArgument("gate.holdout_size cannot be negative")
    data = policy.training_data
    if data.window.ToTimedelta() < timedelta(0) or data.max_rows < 0:
        raise InvalidArgument("training_data.window and training_data.max_rows cannot be negative")
    executor = policy.executor
    if executor.kind not in pb.ExecutorKind.values():
        raise InvalidArgument(f"executor.kind {executor.kind} is not an ExecutorKind")
    if executor.timeout.ToTimedelta() < timedelta(0):
        raise InvalidArgument("executor.timeout cannot be negative")
    if not 0 <= executor.max_retries <= 10:
        raise InvalidArgument("executor.max_retries must be between 0 and 10")
    if executor.entrypoint_override:
        try:
            command_line(executor.entrypoint_override)
        except ValueError as error:
            raise InvalidArgument(f"executor.entrypoint_override: {error}") from None
    for name in executor.env:
        if not _ENV_NAME.match(name):
            raise InvalidArgument(f"executor.env name {name!r} is not a valid variable name")


def alert_rule(policy: pb.RetrainPolicy) -> domain.AlertRule:
    trigger = policy.alert_trigger
    kinds = [_alert_kind(k) for k in trigger.kinds] or ["data", "prediction"]
    return domain.AlertRule(
        enabled=policy.enabled and trigger.enabled,
        min_severity=domain.Severity(max(trigger.min_severity, drift_types.SEVERITY_LOW)),
        min_drifted_features=trigger.min_drifted_features,
        kinds=frozenset(kinds),
        on_concept_drift=trigger.on_concept_drift,
    )


def decay_rule(policy: pb.RetrainPolicy) -> domain.DecayRule:
    trigger = policy.decay_trigger
    return domain.DecayRule(
        enabled=policy.enabled and trigger.enabled,
        higher_is_better=trigger.metric == pb.DECAY_METRIC_ACCURACY,
        threshold=trigger.threshold,
        consecutive_windows=max(trigger.consecutive_windows, 1),
        min_labeled=trigger.min_labeled_count,
    )


def guards(policy: pb.RetrainPolicy, *, manual: bool, ignore_cooldown: bool) -> domain.Guards:
    return domain.Guards(
        cooldown=timedelta(0) if ignore_cooldown else policy.cooldown.ToTimedelta(),
        max_concurrent_runs=max(policy.max_concurrent_runs, 1),
        # New labels gate automatic runs; a person asking for a run has their reasons.
        min_new_labeled_samples=0 if manual else policy.min_new_labeled_samples,
    )


def gate(policy: pb.RetrainPolicy) -> domain.Gate:
    name = policy.gate.metric or "accuracy"
    goal = policy.gate.goal
    higher = (
        METRICS[name].higher_is_better
        if goal == pb.METRIC_GOAL_UNSPECIFIED
        else (goal == pb.METRIC_GOAL_MAXIMIZE)
    )
    return domain.Gate(name, higher, policy.gate.min_improvement)


def holdout_size(policy: pb.RetrainPolicy) -> int:
    return int(policy.gate.holdout_size or DEFAULT_HOLDOUT_SIZE)


def alert_of(message: drift_events.DriftAlert) -> domain.Alert:
    return domain.Alert(
        alert_id=message.alert_id,
        model=message.model,
        version=message.version,
        severity=domain.Severity(message.severity),
        kinds=frozenset(_alert_kind(k) for k in message.kinds),
        drifted_features=message.features_drifted,
    )


def decay_value(metric: int, window: WindowRow) -> float | None:
    """The decay metric of a stored window, None when the window cannot tell."""
    if metric == pb.DECAY_METRIC_ACCURACY:
        return window.accuracy
    if metric == pb.DECAY_METRIC_MEAN_ABSOLUTE_ERROR:
        return window.mean_absolute_error
    return window.error_rate


def _alert_kind(kind: int) -> str:
    name = drift_types.AlertKind.Name(drift_types.AlertKind.ValueType(kind))
    return name.removeprefix("ALERT_KIND_").lower()


def run_message(row: RunRow) -> pb.Run:
    run = pb.Run(
        run_id=row.run_id,
        model=row.model,
        state=pb.RunState.ValueType(row.state),
        trigger=from_json(row.trigger, pb.Trigger()),
        base_version=row.base_version,
        candidate_version=row.candidate_version,
        executor=pb.ExecutorKind.ValueType(row.executor),
        executor_job_id=row.executor_job_id,
        attempt=row.attempt,
        error=row.error,
        policy=from_json(row.policy, pb.RetrainPolicy()),
    )
    if row.dataset:
        run.dataset.CopyFrom(from_json(row.dataset, pb.DatasetInfo()))
    if row.gate:
        run.gate.CopyFrom(from_json(row.gate, pb.GateResult()))
    if row.approval:
        run.approval.CopyFrom(from_json(row.approval, pb.Approval()))
    run.created_at.FromDatetime(row.created_at)
    if row.started_at:
        run.started_at.FromDatetime(row.started_at)
    if row.finished_at:
        run.finished_at.FromDatetime(row.finished_at)
    return run
