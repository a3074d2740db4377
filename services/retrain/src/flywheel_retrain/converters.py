"""Between the retrain contract (protobuf) and the domain: messages in, domain values out,
and the JSON documents run rows keep (the contract's JSON form, readable by ops tooling)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.drift.v1 import types_pb2 as drift_types
from flywheel.retrain.v1 import events_pb2 as events
from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_common.errors import InvalidArgument
from flywheel_common.timestamps import duration, timestamp
from flywheel_retrain.domain import (
    Alert,
    AlertTrigger,
    Approval,
    ApprovalMode,
    CandidateGated,
    Dataset,
    DecayMetric,
    DecayTrigger,
    ExecutorConfig,
    ExecutorKind,
    GateConfig,
    GateReport,
    MetricGoal,
    Policy,
    RetrainFailed,
    RetrainRequested,
    RetrainStarted,
    RetrainSucceeded,
    Run,
    RunEvent,
    RunState,
    ScheduleTrigger,
    Severity,
    StoredWindow,
    TrainingData,
    Trigger,
    TriggerKind,
)

E = TypeVar("E", bound=Enum)

_SEVERITIES = {
    drift_types.SEVERITY_UNSPECIFIED: Severity.NONE,
    drift_types.SEVERITY_LOW: Severity.LOW,
    drift_types.SEVERITY_MEDIUM: Severity.MEDIUM,
    drift_types.SEVERITY_HIGH: Severity.HIGH,
    drift_types.SEVERITY_CRITICAL: Severity.CRITICAL,
}
_SEVERITY_NUMBERS = {severity: number for number, severity in _SEVERITIES.items()}


def _member(wrapper: Any, prefix: str, domain: type[E], number: int, what: str) -> E:
    """The domain member named like the contract's value `number`; INVALID_ARGUMENT
    (`what` names the field and its type) for a number the contract does not have."""
    try:
        return domain[wrapper.Name(number).removeprefix(prefix)]
    except (ValueError, KeyError):
        raise InvalidArgument(f"{what.format(number)}") from None


def _number(wrapper: Any, prefix: str, member: Enum) -> Any:
    return wrapper.Value(prefix + member.name)


def _time(message: Any, name: str) -> datetime | None:
    return getattr(message, name).ToDatetime(UTC) if message.HasField(name) else None


def _alert_kind(kind: int) -> str:
    try:
        name = drift_types.AlertKind.Name(drift_types.AlertKind.ValueType(kind))
    except ValueError:
        raise InvalidArgument(f"alert kind {kind} is not an AlertKind") from None
    return name.removeprefix("ALERT_KIND_").lower()


def _alert_kind_number(kind: str) -> drift_types.AlertKind.ValueType:
    return drift_types.AlertKind.Value(f"ALERT_KIND_{kind.upper()}")


# Policies


def policy_of(message: pb.RetrainPolicy) -> Policy:
    """A policy from the contract; INVALID_ARGUMENT for enum numbers it does not have."""
    alert, decay = message.alert_trigger, message.decay_trigger
    if alert.min_severity not in _SEVERITIES:
        raise InvalidArgument(f"alert_trigger.min_severity {alert.min_severity} is not a Severity")
    gate, data, executor = message.gate, message.training_data, message.executor
    return Policy(
        model=message.model,
        enabled=message.enabled,
        alert_trigger=AlertTrigger(
            enabled=alert.enabled,
            min_severity=_SEVERITIES[alert.min_severity],
            min_drifted_features=alert.min_drifted_features,
            kinds=tuple(_alert_kind(kind) for kind in alert.kinds),
            on_concept_drift=alert.on_concept_drift,
        ),
        decay_trigger=DecayTrigger(
            enabled=decay.enabled,
            metric=_decay_metric(decay),
            threshold=decay.threshold,
            consecutive_windows=decay.consecutive_windows,
            min_labeled_count=decay.min_labeled_count,
        ),
        schedule_trigger=ScheduleTrigger(
            enabled=message.schedule_trigger.enabled,
            cron=message.schedule_trigger.cron,
            time_zone=message.schedule_trigger.time_zone,
        ),
        cooldown=message.cooldown.ToTimedelta(),
        min_new_labeled_samples=message.min_new_labeled_samples,
        max_concurrent_runs=message.max_concurrent_runs,
        approval_mode=_member(
            pb.ApprovalMode,
            "APPROVAL_MODE_",
            ApprovalMode,
            message.approval_mode,
            "approval_mode {} is not an ApprovalMode",
        ),
        gate=GateConfig(
            metric=gate.metric,
            goal=_member(
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
            window=data.window.ToTimedelta(),
            include_production_dataset=data.include_production_dataset,
            max_rows=data.max_rows,
        ),
        executor=ExecutorConfig(
            kind=_member(
                pb.ExecutorKind,
                "EXECUTOR_KIND_",
                ExecutorKind,
                executor.kind,
                "executor.kind {} is not an ExecutorKind",
            ),
            timeout=executor.timeout.ToTimedelta(),
            max_retries=executor.max_retries,
            entrypoint_override=executor.entrypoint_override,
            image=executor.image,
            env=dict(executor.env),
        ),
        revision=message.revision,
        updated_by=message.updated_by,
        updated_at=_time(message, "updated_at"),
    )


def _decay_metric(decay: pb.DecayTrigger) -> DecayMetric:
    if decay.metric not in pb.DecayMetric.values():
        if decay.enabled:
            return DecayMetric.UNSPECIFIED  # the policy's validation names what to set
        raise InvalidArgument(f"decay_trigger.metric {decay.metric} is not a DecayMetric")
    return _member(pb.DecayMetric, "DECAY_METRIC_", DecayMetric, decay.metric, "{}")


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
            min_severity=_SEVERITY_NUMBERS[alert.min_severity],
            min_drifted_features=alert.min_drifted_features,
            kinds=[_alert_kind_number(kind) for kind in alert.kinds],
            on_concept_drift=alert.on_concept_drift,
        ),
        decay_trigger=pb.DecayTrigger(
            enabled=decay.enabled,
            metric=_number(pb.DecayMetric, "DECAY_METRIC_", decay.metric),
            threshold=decay.threshold,
            consecutive_windows=decay.consecutive_windows,
            min_labeled_count=decay.min_labeled_count,
        ),
        schedule_trigger=pb.ScheduleTrigger(
            enabled=policy.schedule_trigger.enabled,
            cron=policy.schedule_trigger.cron,
            time_zone=policy.schedule_trigger.time_zone,
        ),
        min_new_labeled_samples=policy.min_new_labeled_samples,
        max_concurrent_runs=policy.max_concurrent_runs,
        approval_mode=_number(pb.ApprovalMode, "APPROVAL_MODE_", policy.approval_mode),
        gate=pb.EvaluationGate(
            metric=gate.metric,
            goal=_number(pb.MetricGoal, "METRIC_GOAL_", gate.goal),
            min_improvement=gate.min_improvement,
            holdout_size=gate.holdout_size,
        ),
        training_data=pb.TrainingDataConfig(
            include_production_dataset=data.include_production_dataset, max_rows=data.max_rows
        ),
        executor=pb.ExecutorConfig(
            kind=_number(pb.ExecutorKind, "EXECUTOR_KIND_", executor.kind),
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
    _set_duration(message.executor.timeout, executor.timeout)
    if policy.updated_at is not None:
        message.updated_at.CopyFrom(timestamp(policy.updated_at))
    return message


def _document(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _parse(document: dict[str, Any], message: Any) -> Any:
    return json_format.ParseDict(document, message, ignore_unknown_fields=True)


def policy_document(policy: Policy) -> dict[str, Any]:
    return _document(policy_message(policy))


def policy_from_document(document: dict[str, Any]) -> Policy:
    return policy_of(_parse(document, pb.RetrainPolicy()))


# Runs and what they record


def trigger_message(trigger: Trigger) -> pb.Trigger:
    message = pb.Trigger(
        kind=_number(pb.TriggerKind, "TRIGGER_KIND_", trigger.kind),
        source_id=trigger.source_id,
        triggered_by=trigger.triggered_by,
        reason=trigger.reason,
        actor=trigger.actor,
    )
    if trigger.occurred_at is not None:
        message.occurred_at.CopyFrom(timestamp(trigger.occurred_at))
    return message


def trigger_document(trigger: Trigger) -> dict[str, Any]:
    return _document(trigger_message(trigger))


def trigger_from_document(document: dict[str, Any]) -> Trigger:
    message = _parse(document, pb.Trigger())
    return Trigger(
        kind=_member(pb.TriggerKind, "TRIGGER_KIND_", TriggerKind, message.kind, "{}"),
        source_id=message.source_id,
        triggered_by=message.triggered_by,
        reason=message.reason,
        actor=message.actor,
        occurred_at=_time(message, "occurred_at"),
    )


def dataset_message(dataset: Dataset) -> pb.DatasetInfo:
    message = pb.DatasetInfo(
        uri=dataset.uri,
        sha256=dataset.sha256,
        row_count=dataset.row_count,
        logged_row_count=dataset.logged_row_count,
        production_dataset_sha256=dataset.production_dataset_sha256,
    )
    if dataset.window_start is not None:
        message.window_start.CopyFrom(timestamp(dataset.window_start))
    if dataset.window_end is not None:
        message.window_end.CopyFrom(timestamp(dataset.window_end))
    return message


def dataset_document(dataset: Dataset | None) -> dict[str, Any] | None:
    return None if dataset is None else _document(dataset_message(dataset))


def dataset_from_document(document: dict[str, Any] | None) -> Dataset | None:
    if not document:
        return None
    message = _parse(document, pb.DatasetInfo())
    return Dataset(
        uri=message.uri,
        sha256=message.sha256,
        row_count=message.row_count,
        logged_row_count=message.logged_row_count,
        window_start=_time(message, "window_start"),
        window_end=_time(message, "window_end"),
        production_dataset_sha256=message.production_dataset_sha256,
    )


def gate_message(report: GateReport) -> pb.GateResult:
    message = pb.GateResult(
        decision=pb.GATE_DECISION_PASSED if report.passed else pb.GATE_DECISION_FAILED,
        metric=report.metric,
        goal=pb.METRIC_GOAL_MAXIMIZE if report.higher_is_better else pb.METRIC_GOAL_MINIMIZE,
        candidate_value=report.candidate_value,
        production_value=report.production_value,
        improvement=report.improvement,
        min_improvement=report.min_improvement,
        holdout_size=report.holdout_size,
        holdout_sha256=report.holdout_sha256,
        summary=report.summary,
    )
    if report.evaluated_at is not None:
        message.evaluated_at.CopyFrom(timestamp(report.evaluated_at))
    return message


def gate_document(report: GateReport | None) -> dict[str, Any] | None:
    return None if report is None else _document(gate_message(report))


def gate_from_document(document: dict[str, Any] | None) -> GateReport | None:
    if not document:
        return None
    message = _parse(document, pb.GateResult())
    return GateReport(
        passed=message.decision == pb.GATE_DECISION_PASSED,
        metric=message.metric,
        higher_is_better=message.goal != pb.METRIC_GOAL_MINIMIZE,
        candidate_value=message.candidate_value,
        production_value=message.production_value,
        improvement=message.improvement,
        min_improvement=message.min_improvement,
        holdout_size=message.holdout_size,
        holdout_sha256=message.holdout_sha256,
        summary=message.summary,
        evaluated_at=_time(message, "evaluated_at"),
    )


def approval_message(approval: Approval) -> pb.Approval:
    message = pb.Approval(
        approved=approval.approved, actor=approval.actor, comment=approval.comment
    )
    if approval.decided_at is not None:
        message.decided_at.CopyFrom(timestamp(approval.decided_at))
    return message


def approval_document(approval: Approval | None) -> dict[str, Any] | None:
    return None if approval is None else _document(approval_message(approval))


def approval_from_document(document: dict[str, Any] | None) -> Approval | None:
    if not document:
        return None
    message = _parse(document, pb.Approval())
    return Approval(message.approved, message.actor, message.comment, _time(message, "decided_at"))


def run_message(run: Run) -> pb.Run:
    message = pb.Run(
        run_id=run.run_id,
        model=run.model,
        state=_number(pb.RunState, "RUN_STATE_", run.state),
        trigger=trigger_message(run.trigger),
        base_version=run.base_version,
        candidate_version=run.candidate_version,
        executor=_number(pb.ExecutorKind, "EXECUTOR_KIND_", run.executor),
        executor_job_id=run.executor_job_id,
        attempt=run.attempt,
        error=run.error,
        policy=policy_message(run.policy),
        created_at=timestamp(run.created_at),
    )
    if run.dataset is not None:
        message.dataset.CopyFrom(dataset_message(run.dataset))
    if run.gate is not None:
        message.gate.CopyFrom(gate_message(run.gate))
    if run.approval is not None:
        message.approval.CopyFrom(approval_message(run.approval))
    if run.started_at is not None:
        message.started_at.CopyFrom(timestamp(run.started_at))
    if run.finished_at is not None:
        message.finished_at.CopyFrom(timestamp(run.finished_at))
    return message


def run_states(numbers: list[int]) -> tuple[RunState, ...]:
    """The states a ListRuns request filters on; INVALID_ARGUMENT for a number the
    contract does not have."""
    return tuple(
        _member(pb.RunState, "RUN_STATE_", RunState, n, "states: {} is not a RunState")
        for n in numbers
    )


def event_message(event: RunEvent) -> Message:
    """The contract's event for a domain event, as the outbox stages it."""
    at = timestamp(event.occurred_at)
    match event:
        case RetrainRequested():
            return events.RetrainRequested(
                run_id=event.run_id,
                model=event.model,
                trigger=trigger_message(event.trigger),
                base_version=event.base_version,
                occurred_at=at,
            )
        case RetrainStarted():
            started = events.RetrainStarted(
                run_id=event.run_id,
                model=event.model,
                executor=_number(pb.ExecutorKind, "EXECUTOR_KIND_", event.executor),
                executor_job_id=event.executor_job_id,
                attempt=event.attempt,
                occurred_at=at,
            )
            if event.dataset is not None:
                started.dataset.CopyFrom(dataset_message(event.dataset))
            return started
        case RetrainSucceeded():
            succeeded = events.RetrainSucceeded(
                run_id=event.run_id,
                model=event.model,
                candidate_version=event.candidate_version,
                attempt=event.attempt,
                training_duration=duration(event.training_seconds),
                occurred_at=at,
            )
            if event.dataset is not None:
                succeeded.dataset.CopyFrom(dataset_message(event.dataset))
            return succeeded
        case RetrainFailed():
            return events.RetrainFailed(
                run_id=event.run_id,
                model=event.model,
                stage=_number(events.FailureStage, "FAILURE_STAGE_", event.stage),
                error=event.error,
                attempt=event.attempt,
                will_retry=event.will_retry,
                log_tail=list(event.log_tail),
                occurred_at=at,
            )
        case CandidateGated():
            return events.CandidateGated(
                run_id=event.run_id,
                model=event.model,
                candidate_version=event.candidate_version,
                production_version=event.production_version,
                gate=gate_message(event.gate) if event.gate is not None else pb.GateResult(),
                outcome=_number(events.CandidateOutcome, "CANDIDATE_OUTCOME_", event.outcome),
                actor=event.actor,
                comment=event.comment,
                occurred_at=at,
            )


# Events followed


def alert_of(message: drift_events.DriftAlert) -> tuple[Alert, datetime | None]:
    """A drift alert and when it happened."""
    alert = Alert(
        alert_id=message.alert_id,
        model=message.model,
        version=message.version,
        severity=_SEVERITIES.get(message.severity, Severity.NONE),
        kinds=frozenset(_alert_kind(k) for k in message.kinds),
        drifted_features=message.features_drifted,
    )
    return alert, _time(message, "occurred_at")


def window_of(message: drift_events.ModelMetricsWindow, now: datetime) -> StoredWindow:
    """What the trigger keeps of a metric window; one without an end ends `now`."""
    labels = message.label_metrics
    return StoredWindow(
        model=message.model,
        version=message.version,
        window_id=message.window.window_id,
        window_end=_time(message.window, "end") or now,
        labeled=labels.labeled_count,
        accuracy=labels.accuracy if labels.HasField("accuracy") else None,
        mean_absolute_error=(
            labels.mean_absolute_error if labels.HasField("mean_absolute_error") else None
        ),
        error_rate=(message.error_count / message.request_count if message.request_count else None),
    )
