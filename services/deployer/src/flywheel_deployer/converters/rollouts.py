"""Rollouts and the events their transitions record, as the API messages and the
flywheel.deployer.v1 events they are published as.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message

from flywheel.deployer.v1 import events_pb2 as events
from flywheel.deployer.v1 import types_pb2 as pb
from flywheel_common.timestamps import duration, optional_timestamp, timestamp
from flywheel_deployer.converters.policies import STRATEGY_NUMBERS, policy_message
from flywheel_deployer.converters.steps import analysis_message, step_message
from flywheel_deployer.domain import (
    AnalysisResult,
    Phase,
    Rollout,
    RolloutAborted,
    RolloutCompleted,
    RolloutEvent,
    RolloutRolledBack,
    RolloutStarted,
    RolloutStepAdvanced,
    Trigger,
)

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


def phases_of(numbers: Sequence[int]) -> tuple[Phase, ...] | None:
    """A request's phase filter: None when it names none; unknown numbers match nothing."""
    return tuple(PHASES[n] for n in numbers if n in PHASES) if numbers else None


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
