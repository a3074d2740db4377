"""Runs and what they record (trigger, dataset, gate verdict, approval) between the
domain and the contract, and the JSON documents run rows keep."""

from __future__ import annotations

from typing import Any

from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_common.timestamps import timestamp
from flywheel_retrain.converters.documents import from_json, to_json
from flywheel_retrain.converters.fields import enum_member, enum_number, time_of
from flywheel_retrain.converters.policies import policy_message
from flywheel_retrain.domain import (
    Approval,
    Dataset,
    GateReport,
    Run,
    RunState,
    Trigger,
    TriggerKind,
)


def trigger_message(trigger: Trigger) -> pb.Trigger:
    message = pb.Trigger(
        kind=enum_number(pb.TriggerKind, "TRIGGER_KIND_", trigger.kind),
        source_id=trigger.source_id,
        triggered_by=trigger.triggered_by,
        reason=trigger.reason,
        actor=trigger.actor,
        traceparent=trigger.traceparent,
    )
    if trigger.occurred_at is not None:
        message.occurred_at.CopyFrom(timestamp(trigger.occurred_at))
    if trigger.change_began_at is not None:
        message.change_began_at.CopyFrom(timestamp(trigger.change_began_at))
    return message


def trigger_document(trigger: Trigger) -> dict[str, Any]:
    return to_json(trigger_message(trigger))


def trigger_from_document(document: dict[str, Any]) -> Trigger:
    message = from_json(document, pb.Trigger())
    return Trigger(
        kind=enum_member(pb.TriggerKind, "TRIGGER_KIND_", TriggerKind, message.kind, "{}"),
        source_id=message.source_id,
        triggered_by=message.triggered_by,
        reason=message.reason,
        actor=message.actor,
        occurred_at=time_of(message, "occurred_at"),
        traceparent=message.traceparent,
        change_began_at=time_of(message, "change_began_at"),
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
    return None if dataset is None else to_json(dataset_message(dataset))


def dataset_from_document(document: dict[str, Any] | None) -> Dataset | None:
    if not document:
        return None
    message = from_json(document, pb.DatasetInfo())
    return Dataset(
        uri=message.uri,
        sha256=message.sha256,
        row_count=message.row_count,
        logged_row_count=message.logged_row_count,
        window_start=time_of(message, "window_start"),
        window_end=time_of(message, "window_end"),
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
    return None if report is None else to_json(gate_message(report))


def gate_from_document(document: dict[str, Any] | None) -> GateReport | None:
    if not document:
        return None
    message = from_json(document, pb.GateResult())
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
        evaluated_at=time_of(message, "evaluated_at"),
    )


def approval_message(approval: Approval) -> pb.Approval:
    message = pb.Approval(
        approved=approval.approved, actor=approval.actor, comment=approval.comment
    )
    if approval.decided_at is not None:
        message.decided_at.CopyFrom(timestamp(approval.decided_at))
    return message


def approval_document(approval: Approval | None) -> dict[str, Any] | None:
    return None if approval is None else to_json(approval_message(approval))


def approval_from_document(document: dict[str, Any] | None) -> Approval | None:
    if not document:
        return None
    message = from_json(document, pb.Approval())
    return Approval(
        message.approved, message.actor, message.comment, time_of(message, "decided_at")
    )


def run_message(run: Run) -> pb.Run:
    message = pb.Run(
        run_id=run.run_id,
        model=run.model,
        state=enum_number(pb.RunState, "RUN_STATE_", run.state),
        trigger=trigger_message(run.trigger),
        base_version=run.base_version,
        candidate_version=run.candidate_version,
        executor=enum_number(pb.ExecutorKind, "EXECUTOR_KIND_", run.executor),
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
        enum_member(pb.RunState, "RUN_STATE_", RunState, n, "states: {} is not a RunState")
        for n in numbers
    )
