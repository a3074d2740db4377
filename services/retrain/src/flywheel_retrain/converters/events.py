"""The contract's events for the domain events a run records, as the outbox stages
them."""

from __future__ import annotations

from google.protobuf.message import Message

from flywheel.retrain.v1 import events_pb2 as events
from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_common.timestamps import duration, timestamp
from flywheel_retrain.converters.fields import enum_number
from flywheel_retrain.converters.runs import dataset_message, gate_message, trigger_message
from flywheel_retrain.domain import (
    CandidateGated,
    RetrainFailed,
    RetrainRequested,
    RetrainStarted,
    RetrainSucceeded,
    RunEvent,
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
                executor=enum_number(pb.ExecutorKind, "EXECUTOR_KIND_", event.executor),
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
                stage=enum_number(events.FailureStage, "FAILURE_STAGE_", event.stage),
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
                outcome=enum_number(events.CandidateOutcome, "CANDIDATE_OUTCOME_", event.outcome),
                actor=event.actor,
                comment=event.comment,
                occurred_at=at,
            )
